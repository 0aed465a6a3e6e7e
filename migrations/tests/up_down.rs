//! Runs every migration up, down and up again on SQLite, checking the tables appear and disappear.

use adapterci_migrations::{MigrationStatus, Migrator, MigratorTrait};
use sea_orm_migration::SchemaManager;
use sea_orm_migration::sea_orm::{Database, DatabaseConnection};

const TABLES: [&str; 4] = ["pipelines", "runs", "watches", "adapter_versions"];

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

#[tokio::test]
async fn every_migration_goes_up_and_down() {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    assert!(tables_present(&db).await.is_empty());

    Migrator::up(&db, None).await.unwrap();
    assert_eq!(tables_present(&db).await, TABLES);
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
    assert_eq!(tables_present(&db).await, TABLES, "the original tables are older than the newest migration");
    Migrator::up(&db, None).await.unwrap();
}
