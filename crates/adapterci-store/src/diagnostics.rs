//! Read-only diagnostics for benchmarks and operators: the text of a query's rows, such as an `EXPLAIN` plan.

use adapterci_core::ports::StoreError;
use sea_orm::{ConnectionTrait, Statement};

use crate::SeaStore;
use crate::error::backend;

impl SeaStore {
    /// Runs `sql` and returns the first column of every row as text (for `EXPLAIN …` on either backend).
    pub async fn query_text(&self, sql: &str) -> Result<Vec<String>, StoreError> {
        let statement = Statement::from_string(self.db.get_database_backend(), sql.to_string());
        let rows = self.db.query_all_raw(statement).await.map_err(backend(format!("running {sql:?}")))?;
        let mut lines = Vec::with_capacity(rows.len());
        for row in rows {
            let line = match row.try_get_by_index::<String>(0) {
                Ok(text) => text,
                // SQLite's EXPLAIN QUERY PLAN puts the text in its fourth column.
                Err(_) => row.try_get_by_index::<String>(3).map_err(backend(format!("reading {sql:?}")))?,
            };
            lines.push(line);
        }
        Ok(lines)
    }
}
