//! A password in the database URL is never printed: not by --help (which shows environment
//! values), not in any error, not at any log level, whichever way the URL arrives.

mod common;

use std::process::Stdio;

use common::process::BINARY;

const PASSWORD: &str = "topsecret-5f2c";

/// Runs the binary with everything logged; returns (success, stdout and stderr together).
async fn run(args: &[&str], database_url_env: Option<&str>) -> (bool, String) {
    let mut command = tokio::process::Command::new(BINARY);
    command
        .args(args)
        .env("RUST_LOG", "trace")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null());
    if let Some(url) = database_url_env {
        command.env("DATABASE_URL", url);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("the command ends")
        .expect("run subledger");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[track_caller]
fn assert_no_password(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD) && !text.contains("5f2c"),
        "{what} printed the password:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_hides_the_database_url_of_the_environment() {
    let url = format!("postgres://u:{PASSWORD}@127.0.0.1:1/x");
    for command in ["serve", "migrate", "verify", "export"] {
        let (success, text) = run(&[command, "--help"], Some(&url)).await;
        assert!(success, "{command} --help: {text}");
        assert!(
            text.contains("DATABASE_URL"),
            "{command} --help names the variable"
        );
        assert_no_password(&format!("{command} --help"), &text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_logs_never_show_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let urls = [
        format!("POSTGRES://u:{PASSWORD}@127.0.0.1/x"),
        format!("mysql://u:{PASSWORD}@127.0.0.1/x"),
        format!("mysql://u:{PASSWORD}"),
        format!("postgres://u:{PASSWORD}@127.0.0.1:1/x"),
        format!("postgres://u:{PASSWORD}@127.0.0.1:1,127.0.0.1:2/x"),
        format!("postgres://u:{PASSWORD}@127.0.0.1:5432,h2:x/x"),
        format!("postgres://u:{PASSWORD}@127.0.0.1:1/x?target_session_attrs=standby"),
        format!("postgres://u:{PASSWORD}@127.0.0.1:1/x?connect_timeout=soon"),
    ];
    for url in &urls {
        for command in ["migrate", "verify"] {
            let (success, text) = run(&[command, "--database-url", url], None).await;
            assert!(!success, "{command} with {url} should fail: {text}");
            assert_no_password(&format!("{command} --database-url"), &text);
            let (success, text) = run(&[command], Some(url)).await;
            assert!(!success);
            assert_no_password(&format!("{command} with DATABASE_URL"), &text);
            let file = dir.path().join("url");
            std::fs::write(&file, format!("{url}\n")).unwrap();
            let (success, text) = run(
                &[command, "--database-url-file", file.to_str().unwrap()],
                None,
            )
            .await;
            assert!(!success);
            assert_no_password(&format!("{command} --database-url-file"), &text);
        }
    }
}

/// A URL that works, read from a file, with every log level on: migrate, then verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_url_from_a_file_is_not_logged_either() {
    if std::env::var("SUBLEDGER_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
        common::skip::skip("PostgreSQL tests are skipped (SUBLEDGER_TEST_SKIP_POSTGRES=1)");
        return;
    }
    let Some(db) = common::TestDb::new(common::Backend::Postgres).await else {
        return;
    };
    // The machine's PostgreSQL trusts local connections, so any password is accepted: the
    // point is that this one is never printed.
    let url = db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    );
    assert!(
        url.contains(PASSWORD),
        "the test URL carries the password: {}",
        db.url
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("url");
    std::fs::write(&file, &url).unwrap();
    for command in ["migrate", "verify"] {
        let (success, text) = run(
            &[command, "--database-url-file", file.to_str().unwrap()],
            None,
        )
        .await;
        assert!(success, "{command}: {text}");
        assert_no_password(command, &text);
    }
}
