//! Opening the database (SQLite or PostgreSQL, from a URL) and running its migrations.

use std::sync::Arc;
use std::time::Duration;

use adapterci_core::ports::{Clock, StoreError, SystemClock};
use adapterci_migrations::{MigrationStatus, Migrator, MigratorTrait};
use chrono::{DateTime, Utc};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

use crate::convert::to_stored_time;
use crate::error::backend;

/// How long a SQLite writer waits for another process's write lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections to a SQLite file: WAL lets readers run beside the one writer.
const SQLITE_FILE_CONNECTIONS: u32 = 4;
const POSTGRES_CONNECTIONS: u32 = 16;
/// Serializes concurrent `migrate` calls of several replicas on one PostgreSQL database.
const POSTGRES_MIGRATION_LOCK: i64 = 0x6164_6170_7465_7263; // "adaptrc"

/// The metadata store: a pool of connections to SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SeaStore {
    pub(crate) db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SeaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeaStore").field("backend", &self.db.get_database_backend()).finish_non_exhaustive()
    }
}

/// One migration and whether the database has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationInfo {
    pub name: String,
    pub applied: bool,
}

/// How often opening a SQLite file is retried while another connection holds the lock that WAL set-up needs.
const SQLITE_LOCKED_RETRIES: u32 = 40;

impl SeaStore {
    /// Opens `url` (`sqlite://path?mode=rwc`, `sqlite::memory:`, `postgres://user:pass@host/db`) and applies
    /// pending migrations.
    pub async fn connect(url: &str) -> Result<SeaStore, StoreError> {
        let store = SeaStore::connect_without_migrating(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens `url` without touching the schema, for `adapterctl db status`.
    pub async fn connect_without_migrating(url: &str) -> Result<SeaStore, StoreError> {
        let shown = redact_password(url);
        let mut options = ConnectOptions::new(url);
        options.sqlx_logging(false);
        if url.starts_with("sqlite:") {
            // Each connection to an in-memory database would see its own empty database.
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            options.max_connections(if in_memory { 1 } else { SQLITE_FILE_CONNECTIONS });
            options.map_sqlx_sqlite_opts(move |sqlite| {
                let sqlite = sqlite.busy_timeout(SQLITE_BUSY_TIMEOUT).foreign_keys(true);
                if in_memory {
                    sqlite
                } else {
                    sqlite.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal)
                }
            });
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            options.max_connections(POSTGRES_CONNECTIONS);
        } else {
            return Err(StoreError::Backend(format!(
                "unsupported database url {shown:?}: expected sqlite://PATH?mode=rwc, sqlite::memory: or postgres://"
            )));
        }
        // Switching a new SQLite file to WAL needs an exclusive lock and fails at once with "database is locked"
        // (no busy handler) when another process opens the same file at that moment: retry, briefly.
        let mut attempt = 0;
        let db = loop {
            match Database::connect(options.clone()).await {
                Ok(db) => break db,
                Err(error) if attempt < SQLITE_LOCKED_RETRIES && error.to_string().contains("database is locked") => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10 * u64::from(attempt))).await;
                }
                Err(error) => return Err(backend(format!("connecting to {shown}"))(error)),
            }
        };
        Ok(SeaStore { db, clock: Arc::new(SystemClock) })
    }

    /// Uses `clock` for every timestamp the store writes.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SeaStore {
        self.clock = clock;
        self
    }

    /// Applies every pending migration in one transaction and returns the names applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let context = "applying migrations";
        let txn = self.begin_write().await.map_err(backend(context))?;
        if self.db.get_database_backend() == DatabaseBackend::Postgres {
            let lock = Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [POSTGRES_MIGRATION_LOCK.into()],
            );
            txn.execute_raw(lock).await.map_err(backend(context))?;
        }
        let pending = Migrator::get_pending_migrations(&txn).await.map_err(backend(context))?;
        Migrator::up(&txn, None).await.map_err(backend(context))?;
        txn.commit().await.map_err(backend(context))?;
        let applied: Vec<String> = pending.iter().map(|m| m.name().to_string()).collect();
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "applied database migrations");
        }
        Ok(applied)
    }

    /// Every migration this build knows, oldest first, and whether the database has it.
    pub async fn migration_status(&self) -> Result<Vec<MigrationInfo>, StoreError> {
        let migrations =
            Migrator::get_migration_with_status(&self.db).await.map_err(backend("reading migration status"))?;
        Ok(migrations
            .iter()
            .map(|m| MigrationInfo { name: m.name().to_string(), applied: m.status() == MigrationStatus::Applied })
            .collect())
    }

    /// Runs `sql` as is; tests use it to plant rows this code would never write.
    #[doc(hidden)]
    pub async fn execute_unprepared(&self, sql: &str) -> Result<u64, StoreError> {
        let result = self.db.execute_unprepared(sql).await.map_err(backend(format!("executing {sql:?}")))?;
        Ok(result.rows_affected())
    }

    /// The time to record, at the precision every backend keeps.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        to_stored_time(self.clock.now())
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// read transaction that later tries to write can fail at once with SQLITE_BUSY, waiting cannot help it.
    pub(crate) async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        self.db.begin_with_options(options).await
    }
}

/// `url` with any password replaced, for messages and logs.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expect: &str) {
        assert_eq!(redact_password(url), expect);
    }

    #[test]
    fn passwords_never_reach_messages() {
        check("postgres://ci:s3cret@db:5432/adapterci", "postgres://ci:***@db:5432/adapterci");
        check("postgres://ci@db/adapterci", "postgres://ci@db/adapterci");
        check("postgres://ci:p@ss@db/adapterci", "postgres://ci:***@db/adapterci");
        check("sqlite://data/meta.db?mode=rwc", "sqlite://data/meta.db?mode=rwc");
        check("sqlite::memory:", "sqlite::memory:");
    }
}
