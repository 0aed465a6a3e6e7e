//! The `adapterci-db` tool (what `adapterctl db migrate|status` runs) on a real SQLite file and, where installed,
//! a real PostgreSQL: status lists every migration as pending on a new database, migrate applies them all once,
//! a second migrate applies nothing, and bad input is a clear error with its exit code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use adapterci_testkit::postgres::PostgresServer;
use adapterci_testkit::servers::postgres_or_skip;
use serde_json::Value;

fn tool(action: &str, database: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_adapterci-db"));
    command.arg(action).env_remove("ADAPTERCI_DATABASE_URL");
    if let Some(url) = database {
        command.env("ADAPTERCI_DATABASE_URL", url);
    }
    command.output().unwrap()
}

fn report(action: &str, database: &str) -> Value {
    let output = tool(action, Some(database));
    assert!(output.status.success(), "{action}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn states(report: &Value) -> Vec<bool> {
    report["migrations"].as_array().unwrap().iter().map(|m| m["applied"].as_bool().unwrap()).collect()
}

fn migrate_then_status(database: &str) {
    let before = report("status", database);
    let count = states(&before).len();
    assert!(count >= 8, "every migration is listed: {before}");
    assert!(states(&before).iter().all(|applied| !applied), "a new database has none: {before}");
    let migrated = report("migrate", database);
    assert_eq!(migrated["applied_now"].as_array().unwrap().len(), count, "{migrated}");
    assert!(states(&migrated).iter().all(|applied| *applied), "{migrated}");
    let again = report("migrate", database);
    assert_eq!(again["applied_now"], serde_json::json!([]), "a second migrate applies nothing");
    assert!(states(&report("status", database)).iter().all(|applied| *applied));
}

#[test]
fn migrate_and_status_on_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    migrate_then_status(&format!("sqlite://{}/meta.db?mode=rwc", dir.path().display()));
}

#[test]
fn migrate_and_status_on_postgres() {
    if !postgres_or_skip(module_path!()) {
        return;
    }
    let server = PostgresServer::start().expect("start PostgreSQL");
    migrate_then_status(&server.create_database().expect("createdb"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let check = |output: Output, code: i32, expect: &str| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(expect), "expected {expect:?} in {stderr:?}");
        assert!(output.stdout.is_empty());
    };
    check(tool("status", None), 2, "ADAPTERCI_DATABASE_URL is not set");
    check(tool("upgrade", Some("sqlite::memory:")), 2, "expected one argument, migrate or status");
    check(tool("status", Some("mysql://db/x")), 1, "unsupported database url");
}

#[test]
fn help_says_what_it_does_and_succeeds() {
    for flag in ["--help", "-h"] {
        let output = tool(flag, None);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{flag}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("usage: ADAPTERCI_DATABASE_URL=URL adapterci-db migrate|status"), "{stdout}");
        assert!(stdout.contains("migrate") && stdout.contains("status") && stdout.contains("Exit codes"), "{stdout}");
    }
}
