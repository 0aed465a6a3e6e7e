//! `adapterctl db migrate|status` runs the adapterci-db tool (tested itself on SQLite and PostgreSQL in
//! adapterci-store) with the action as its argument and the database URL in its environment, never on its command
//! line, and renders the JSON report it prints. A stand-in script plays the tool here so the hand-over is checked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

const REPORT: &str = r#"{"applied_now": ["m2"], "migrations": [{"name": "m1", "applied": true}, {"name": "m2", "applied": true}, {"name": "m3", "applied": false}]}"#;

fn fake_tool(dir: &std::path::Path) -> std::path::PathBuf {
    let tool = dir.join("fake-db");
    let script = format!(
        "#!/bin/sh\n[ \"$#\" = 1 ] || exit 9\n[ \"$ADAPTERCI_DATABASE_URL\" = sqlite://x.db ] || {{ echo \"bad url: $ADAPTERCI_DATABASE_URL\" >&2; exit 1; }}\n[ \"$1\" = migrate ] && {{ echo '{REPORT}'; exit 0; }}\necho 'cannot reach the database' >&2\nexit 1\n"
    );
    std::fs::write(&tool, script).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    tool
}

fn adapterctl(tool: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adapterctl"))
        .args(args)
        .env("ADAPTERCI_DB_TOOL", tool)
        .env_remove("ADAPTERCI_DATABASE_URL")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn the_report_is_rendered_and_the_url_travels_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let tool = fake_tool(dir.path());
    let out = adapterctl(&tool, &["db", "migrate", "--database", "sqlite://x.db"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Vec<&str>> = stdout.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [vec!["MIGRATION", "STATE"], vec!["m1", "applied"], vec!["m2", "applied", "now"], vec!["m3", "pending"]]
    );
    let json = adapterctl(&tool, &["db", "migrate", "--database", "sqlite://x.db", "-o", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["applied_now"], serde_json::json!(["m2"]));
}

#[test]
fn a_failing_or_missing_tool_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let tool = fake_tool(dir.path());
    let out = adapterctl(&tool, &["db", "status", "--database", "sqlite://x.db"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "error: adapterci-db status failed: cannot reach the database");
    let missing = adapterctl(std::path::Path::new("/nonexistent/adapterci-db"), &["db", "status", "--database", "x"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot run /nonexistent/adapterci-db"));
    let no_url = adapterctl(&tool, &["db", "status"]);
    assert_eq!(no_url.status.code(), Some(2), "the database is required: {}", String::from_utf8_lossy(&no_url.stderr));
}
