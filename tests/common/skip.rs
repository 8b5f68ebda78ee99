//! Tests that cannot run here (a tool or PostgreSQL missing) say so instead of passing quietly:
//! each skip is printed and appended to the file SUBLEDGER_TEST_SKIPS names, which scripts/test
//! counts in its summary line ("N passed, N failed, N skipped"). Under CI=true nothing may be
//! skipped: every skip is a failure there.

use std::io::Write as _;
use std::process::Command;

/// Records that the calling test is skipped for `reason`; panics under CI=true.
#[track_caller]
pub fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "under CI=true this test must run, but {reason}"
    );
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    eprintln!("skipped: {test}: {reason}");
    if let Ok(path) = std::env::var("SUBLEDGER_TEST_SKIPS")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(file, "{test}: {reason}");
    }
}

/// Whether `tool` is on PATH; if not, the calling test is skipped (a failure under CI=true).
#[track_caller]
pub fn tool_installed(tool: &str, install_hint: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        skip(&format!("{tool} is not installed ({install_hint})"));
    }
    found
}
