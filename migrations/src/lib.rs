//! Ordered schema migrations of the metadata store, each with up and down.
//!
//! The store runs pending migrations when it connects; `adapterctl db migrate|status` will drive the same
//! [`Migrator`]. A migration, once released, is never edited: a schema change is a new file.

use sea_orm_migration::{MigrationTrait, async_trait};

mod m20261126_000001_create_pipelines;
mod m20261126_000002_create_runs;
mod m20261126_000003_create_watches;
mod m20261126_000004_create_adapter_versions;
mod m20261126_000101_create_adapter_channels;
mod m20261126_000102_create_registry_gc_guard;
mod m20261126_000201_create_run_schedules;
mod m20261126_000202_create_webhook_deliveries;
mod m20261126_000301_create_run_step_metrics;
mod m20261126_000401_create_registry_event_attempts;
mod m20261128_000402_create_registry_events;
mod m20261128_000403_add_registry_event_leases;

pub use sea_orm_migration::{MigrationStatus, MigratorTrait};

/// Every migration of the metadata store, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_pipelines::Migration),
            Box::new(m20261126_000002_create_runs::Migration),
            Box::new(m20261126_000003_create_watches::Migration),
            Box::new(m20261126_000004_create_adapter_versions::Migration),
            Box::new(m20261126_000101_create_adapter_channels::Migration),
            Box::new(m20261126_000102_create_registry_gc_guard::Migration),
            Box::new(m20261126_000201_create_run_schedules::Migration),
            Box::new(m20261126_000202_create_webhook_deliveries::Migration),
            Box::new(m20261126_000301_create_run_step_metrics::Migration),
            Box::new(m20261126_000401_create_registry_event_attempts::Migration),
            Box::new(m20261128_000402_create_registry_events::Migration),
            Box::new(m20261128_000403_add_registry_event_leases::Migration),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_names_are_ordered_and_follow_the_naming_scheme() {
        let names: Vec<String> = Migrator::migrations().iter().map(|m| m.name().to_string()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "migrations must be listed oldest first");
        for name in &names {
            let parts: Vec<&str> = name.splitn(3, '_').collect();
            assert_eq!(parts.len(), 3, "{name}");
            assert!(parts[0].len() == 9 && parts[0].starts_with('m'), "{name}: expected mYYYYMMDD");
            assert!(parts[1].len() == 6 && parts[1].bytes().all(|b| b.is_ascii_digit()), "{name}: expected NNNNNN");
        }
    }
}
