//! How database failures become `StoreError`s, and the bounded retry loop behind every optimistic write.
//!
//! The store has no error enum of its own: every failure is a [`StoreError`] from the core crate, so callers
//! handle one type whatever the backend. Messages say which operation failed and on what.

use std::fmt::Display;
use std::future::Future;
use std::ops::Deref;

use adapterci_core::ports::StoreError;
use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// How often an optimistic write is tried before the store gives up with [`StoreError::Conflict`]. Each lost
/// race means another writer made progress, so this bounds the wait under contention, not the throughput.
pub(crate) const MAX_ATTEMPTS: usize = 100;

/// Why one attempt of a write did not complete.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// Another writer got there first (a unique key, a changed row, a busy database): try again.
    Retry(String),
    Fail(StoreError),
}

impl From<StoreError> for AttemptError {
    fn from(err: StoreError) -> Self {
        AttemptError::Fail(err)
    }
}

/// Turns a database error met while doing `context` into an attempt error: races are retried, the rest fail.
pub(crate) fn attempt_err(context: impl Display) -> impl FnOnce(DbErr) -> AttemptError {
    move |err| {
        if is_race(&err) {
            AttemptError::Retry(format!("{context}: {err}"))
        } else {
            AttemptError::Fail(backend(context)(err))
        }
    }
}

/// Turns a database error met while doing `context` into a backend error.
pub(crate) fn backend(context: impl Display) -> impl FnOnce(DbErr) -> StoreError {
    move |err| match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(detail)) => {
            StoreError::Conflict { what: format!("{context}: {detail}") }
        }
        _ => StoreError::Backend(format!("{context}: {err}")),
    }
}

/// Unique-key violations, SQLite's busy/locked answers and PostgreSQL's serialization failures and deadlocks
/// all mean that a concurrent writer won; the attempt can be repeated against the new state.
fn is_race(err: &DbErr) -> bool {
    if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
        return true;
    }
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx_err)) | DbErr::Query(RuntimeErr::SqlxError(sqlx_err))) = err else {
        return false;
    };
    let Some(database_err) = sqlx_err.deref().as_database_error() else {
        return false;
    };
    // SQLite: 5 BUSY, 6 LOCKED, 261 BUSY_RECOVERY, 517 BUSY_SNAPSHOT. PostgreSQL: 40001, 40P01.
    matches!(database_err.code().as_deref(), Some("5" | "6" | "261" | "517" | "40001" | "40P01"))
}

/// Runs `attempt` until it completes or fails for good, at most [`MAX_ATTEMPTS`] times.
pub(crate) async fn retrying<T, F, Fut>(what: impl Display, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let mut last_race = String::new();
    for _ in 0..MAX_ATTEMPTS {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(AttemptError::Fail(err)) => return Err(err),
            Err(AttemptError::Retry(race)) => {
                tracing::debug!(what = %what, race = %race, "write lost a race, retrying");
                last_race = race;
            }
        }
    }
    Err(StoreError::Conflict { what: format!("{what}: gave up after {MAX_ATTEMPTS} attempts ({last_race})") })
}
