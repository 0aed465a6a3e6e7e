//! Metadata store on sea-orm: SQLite by default (one file, WAL), PostgreSQL at scale.
//!
//! [`SeaStore`] implements the four metadata ports of `adapterci-core` (pipelines, runs, watches and the
//! adapter version index). It is the only crate besides `adapterci-migrations` that names sea-orm. Every write
//! that others may race is optimistic (a conditional update or a unique key) and retried a bounded number of
//! times, so the same code is safe on SQLite with several processes and on PostgreSQL with several replicas.

mod adapters;
mod channels;
mod connect;
mod convert;
mod diagnostics;
mod entity;
mod error;
mod event_attempts;
pub mod failpoint;
mod gc_guard;
mod pipelines;
mod retention;
mod run_metrics;
mod runs;
mod scheduling;
mod watches;

pub use connect::{MigrationInfo, SeaStore};
