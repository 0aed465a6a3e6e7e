//! Runs every migration up, down and up again on SQLite, checking the tables (and the columns a migration adds to
//! an existing table) appear and disappear.

use adapterci_migrations::{MigrationStatus, Migrator, MigratorTrait};
use sea_orm_migration::SchemaManager;
use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

/// Every table the migrations create, in the order of the migrations.
const TABLES: [&str; 14] = [
    "pipelines",
    "runs",
    "watches",
    "adapter_versions",
    "adapter_channels",
    "adapter_channel_events",
    "adapter_tags",
    "registry_publishes",
    "registry_sweeps",
    "run_schedules",
    "webhook_deliveries",
    "run_step_metrics",
    "registry_event_attempts",
    "registry_events",
];
/// The tables the newest migration creates.
const NEWEST: [&str; 0] = [];
/// The columns the newest migration adds to older tables, as (table, column).
const NEWEST_COLUMNS: [(&str, &str); 2] = [("registry_events", "claimed_by"), ("registry_events", "lease_until")];

async fn newest_columns_present(db: &DatabaseConnection) -> Vec<(&'static str, &'static str)> {
    let manager = SchemaManager::new(db);
    let mut present = Vec::new();
    for (table, column) in NEWEST_COLUMNS {
        if manager.has_column(table, column).await.expect("has_column") {
            present.push((table, column));
        }
    }
    present
}

async fn tables_present(db: &DatabaseConnection) -> Vec<&'static str> {
    let manager = SchemaManager::new(db);
    let mut present = Vec::new();
    for table in TABLES {
        if manager.has_table(table).await.expect("has_table") {
            present.push(table);
        }
    }
    present
}

/// Every table in the database but SQLite's and the migrator's own, by name.
async fn all_tables(db: &DatabaseConnection) -> Vec<String> {
    let query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                 AND name <> 'seaql_migrations' ORDER BY name";
    let rows = db.query_all_raw(Statement::from_string(DbBackend::Sqlite, query)).await.expect("list the tables");
    rows.iter().map(|row| row.try_get::<String>("", "name").expect("a table name")).collect()
}

#[tokio::test]
async fn every_migration_goes_up_and_down() {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    assert!(tables_present(&db).await.is_empty());

    Migrator::up(&db, None).await.unwrap();
    assert_eq!(tables_present(&db).await, TABLES);
    // a table a new migration adds is listed above (so the step-down test knows the newest)
    let mut listed: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    listed.sort();
    assert_eq!(all_tables(&db).await, listed, "TABLES lists every table the migrations create");
    let statuses = Migrator::get_migration_with_status(&db).await.unwrap();
    assert!(statuses.iter().all(|m| m.status() == MigrationStatus::Applied));

    Migrator::down(&db, None).await.unwrap();
    assert!(tables_present(&db).await.is_empty());
    let statuses = Migrator::get_migration_with_status(&db).await.unwrap();
    assert!(statuses.iter().all(|m| m.status() == MigrationStatus::Pending));

    Migrator::up(&db, None).await.unwrap();
    assert_eq!(tables_present(&db).await, TABLES);
}

#[tokio::test]
async fn one_step_down_reverts_only_the_newest_migration() {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    Migrator::down(&db, Some(1)).await.unwrap();
    let statuses = Migrator::get_migration_with_status(&db).await.unwrap();
    let (newest, older) = statuses.split_last().expect("migrations exist");
    assert_eq!(newest.status(), MigrationStatus::Pending, "{}", newest.name());
    assert!(older.iter().all(|m| m.status() == MigrationStatus::Applied));
    let older_tables: Vec<&str> = TABLES.into_iter().filter(|t| !NEWEST.contains(t)).collect();
    assert_eq!(tables_present(&db).await, older_tables, "only the newest migration's tables are gone");
    assert!(newest_columns_present(&db).await.is_empty(), "the columns it added are gone");
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(tables_present(&db).await, TABLES);
    assert_eq!(newest_columns_present(&db).await, NEWEST_COLUMNS);
}
