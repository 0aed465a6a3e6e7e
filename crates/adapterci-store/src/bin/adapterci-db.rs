//! `adapterci-db migrate|status`: applies pending migrations to the metadata database, or lists every migration
//! this build knows and whether the database has it. `adapterctl db` runs it (adapterctl names no database
//! crate). The database URL comes from `ADAPTERCI_DATABASE_URL` (never a command-line argument, which other
//! users of the machine could read). Prints one JSON object on stdout; errors go to stderr with exit code 1.

use std::process::ExitCode;

use adapterci_store::SeaStore;

/// The variable holding the database URL (the one adapterd reads too).
const ADAPTERCI_DATABASE_URL: &str = "ADAPTERCI_DATABASE_URL";
const USAGE: &str = "usage: ADAPTERCI_DATABASE_URL=URL adapterci-db migrate|status";
/// What `--help` prints (on stdout, exit 0).
const HELP: &str = "adapterci-db: the metadata database's migrations (what `adapterctl db` runs)

usage: ADAPTERCI_DATABASE_URL=URL adapterci-db migrate|status

  migrate   apply the pending migrations (serialized by a lock on PostgreSQL), then list them all
  status    list every migration this build knows and whether the database has it

The URL (sqlite://PATH?mode=rwc or postgres://...) is read from ADAPTERCI_DATABASE_URL only, never from the
command line. Prints one JSON object on stdout: {\"applied_now\": [...], \"migrations\": [{\"name\", \"applied\"}]}.
Exit codes: 0 done, 1 the database refused or failed, 2 bad usage.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let action = match args.as_slice() {
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        [action] if action == "migrate" || action == "status" => action.clone(),
        _ => {
            eprintln!("error: expected one argument, migrate or status\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Ok(url) = std::env::var(ADAPTERCI_DATABASE_URL) else {
        eprintln!("error: {ADAPTERCI_DATABASE_URL} is not set\n{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&action, &url)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(action: &str, url: &str) -> Result<serde_json::Value, adapterci_core::ports::StoreError> {
    let store = SeaStore::connect_without_migrating(url).await?;
    let applied_now = if action == "migrate" { store.migrate().await? } else { Vec::new() };
    let migrations: Vec<serde_json::Value> = store
        .migration_status()
        .await?
        .into_iter()
        .map(|migration| serde_json::json!({"name": migration.name, "applied": migration.applied}))
        .collect();
    Ok(serde_json::json!({"applied_now": applied_now, "migrations": migrations}))
}
