//! `subledger serve --config FILE` (src/config_file.rs): the example deploy/subledger.toml shows
//! every option of `serve --help` with its default, so that it cannot drift; a file is taken
//! under the environment, which is taken under the flags; an unknown key is refused.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;

use common::process::{BINARY, START_WAIT, free_address};
use common::{eventually, offering};
use tokio::process::{Child, Command};

const EXAMPLE: &str = "deploy/subledger.toml";
/// What the example writes after an option that has no default.
const UNSET: &str = "(unset";

/// One option as `serve --help` shows it.
#[derive(Debug)]
struct HelpOption {
    takes_value: bool,
    default: Option<String>,
}

/// Every long option of `serve --help`, but --help and --config themselves.
fn serve_help_options() -> BTreeMap<String, HelpOption> {
    let output = std::process::Command::new(BINARY)
        .args(["serve", "--help"])
        .env_clear()
        .output()
        .expect("run serve --help");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("utf-8 help");
    let mut options = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        let flag = trimmed
            .strip_prefix("--")
            .or_else(|| trimmed.strip_prefix("-h, --"));
        if let Some(flag) = flag.filter(|_| line.starts_with("  ")) {
            let name = flag.split([' ', '\t']).next().unwrap().to_owned();
            let takes_value = flag.contains('<');
            options.insert(
                name.clone(),
                HelpOption {
                    takes_value,
                    default: None,
                },
            );
            current = Some(name);
        } else if let (Some(name), Some(at)) = (&current, line.find("[default: ")) {
            let rest = &line[at + "[default: ".len()..];
            let value = rest[..rest.find(']').expect("closing bracket")].to_owned();
            options.get_mut(name).unwrap().default = Some(value);
        }
    }
    options.remove("help");
    options.remove("config");
    options
}

/// Each `# key = value` (or uncommented) line of the example: key -> (value as TOML text, and
/// whether it is marked as having no default).
fn example_options() -> BTreeMap<String, (String, bool)> {
    let text = std::fs::read_to_string(EXAMPLE).expect("read the example");
    let mut options = BTreeMap::new();
    for line in text.lines() {
        let line = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        if !key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            continue;
        }
        let (value, unset) = match value.find(UNSET) {
            Some(at) => (value[..at].trim().to_owned(), true),
            None => (value.trim().to_owned(), false),
        };
        assert!(
            options.insert(key.to_owned(), (value, unset)).is_none(),
            "{key} twice"
        );
    }
    options
}

/// A TOML value as the command line spells it (a string without its quotes).
fn as_command_line(toml_value: &str) -> String {
    let table: toml::Table = toml::from_str(&format!("v = {toml_value}")).expect("a TOML value");
    match &table["v"] {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Boolean(flag) => flag.to_string(),
        other => panic!("no option takes {other:?}"),
    }
}

#[test]
fn the_example_shows_every_serve_option_with_its_default() {
    let help = serve_help_options();
    let example = example_options();
    assert_eq!(
        help.keys().collect::<Vec<_>>(),
        example.keys().collect::<Vec<_>>(),
        "{EXAMPLE} against `serve --help`: the same options"
    );
    for (name, option) in &help {
        let (value, unset) = &example[name];
        match (&option.default, option.takes_value) {
            (Some(default), _) => {
                assert!(!unset, "{name} has a default ({default}), not unset");
                assert_eq!(&as_command_line(value), default, "{name}'s default");
            }
            (None, false) => assert_eq!(value, "false", "{name} is a switch, off by default"),
            (None, true) => assert!(unset, "{name} has no default: its line must say {UNSET}"),
        }
    }
}

/// `subledger serve` with these arguments and environment, its output to the test's stderr.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(BINARY)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("SUBLEDGER_LISTEN")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start subledger")
}

/// Waits until a server answers CreateOffering at `address`.
async fn serves_at(address: SocketAddr) {
    let endpoint = format!("http://{address}");
    let mut client = eventually("a server listening", START_WAIT, || {
        subledger::proto::subscription_ledger_client::SubscriptionLedgerClient::connect(
            endpoint.clone(),
        )
    })
    .await;
    client
        .create_offering(offering(&format!("o{}", address.port()), 10, 0))
        .await
        .expect("CreateOffering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_with_its_defaults_uncommented_serves() {
    let dir = tempfile::tempdir().unwrap();
    let defaults: String = example_options()
        .into_iter()
        .filter(|(_, (_, unset))| !unset)
        .map(|(key, (value, _))| format!("{key} = {value}\n"))
        .collect();
    let config = dir.path().join("subledger.toml");
    std::fs::write(&config, defaults).unwrap();
    let address = free_address();
    let data = dir.path().join("data");
    let _server = spawn(
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &address.to_string(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    serves_at(address).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (in_file, in_env, in_flag) = (free_address(), free_address(), free_address());
    let config = dir.path().join("subledger.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "listen = \"{in_file}\"\ndata-dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let file_only = spawn(&["--config", config], &[]);
    serves_at(in_file).await;
    drop(file_only);

    let env_over_file = spawn(
        &[],
        &[
            ("SUBLEDGER_CONFIG", config),
            ("SUBLEDGER_LISTEN", &in_env.to_string()),
        ],
    );
    serves_at(in_env).await;
    drop(env_over_file);

    let in_env_text = in_env.to_string();
    let _flag_over_both = spawn(
        &["--config", config, "--listen", &in_flag.to_string()],
        &[("SUBLEDGER_LISTEN", &in_env_text)],
    );
    serves_at(in_flag).await;
}

#[tokio::test]
async fn an_unknown_key_or_a_broken_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (text, says) in [
        ("lisen = \"127.0.0.1:1\"\n", "\"lisen\" is not an option"),
        ("listen = \n", "not TOML"),
        ("[serve]\nlisten = \"x\"\n", "is a table"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let output = Command::new(BINARY)
            .args(["serve", "--config", config.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{text}: {stderr}");
    }
}
