//! What differs between the SQL databases keyward speaks: how a
//! parameter is written, how values travel, how a batch of last-used
//! times is written, and how a migration holds off other migrators. The
//! engine ([`super::SqlEngine`]) writes everything else once.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::row::{Row, Value};
use crate::token::KeyId;

/// One SQL database, over its pool.
#[async_trait]
pub(crate) trait Dialect: fmt::Debug + Send + Sync + 'static {
    /// The keys table, qualified as the database needs.
    fn table(&self) -> String;

    /// Parameters are written `?1` in the engine's statements; a database
    /// that writes them otherwise (`$1`) rewrites them here.
    fn placeholders(&self, sql: String) -> String {
        sql
    }

    /// A bound JSON text parameter, as the JSON column's type.
    fn json_in(&self, param: &str) -> String {
        param.to_string()
    }

    /// The JSON column, read as text.
    fn json_out(&self, column: &str) -> String {
        column.to_string()
    }

    /// The name of the two-argument minimum function.
    fn least(&self) -> &'static str;

    /// Runs `sql` with `args`; how many rows it changed.
    async fn execute(&self, sql: &Arc<str>, args: Vec<Value>) -> Result<u64, sqlx::Error>;

    /// Runs a `SELECT` of every column of the keys table.
    async fn fetch_rows(&self, sql: &Arc<str>, args: Vec<Value>) -> Result<Vec<Row>, sqlx::Error>;

    /// Runs `sql`, which answers at most one row of one integer column:
    /// `None` for no row, `Some(None)` for a `NULL`.
    async fn fetch_int(
        &self,
        sql: &Arc<str>,
        args: Vec<Value>,
    ) -> Result<Option<Option<i64>>, sqlx::Error>;

    /// Moves each key's `last_used_at` forward to the batch's instant (the
    /// latest, when a key is in it twice), never back.
    async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), sqlx::Error>;

    /// Starts the migration transaction, holding off every other
    /// migrator of the database until it ends, with the table of applied
    /// versions created.
    async fn begin_migration(&self) -> Result<Box<dyn Migration>, sqlx::Error>;
}

/// A migration transaction: see [`super::migrate`].
#[async_trait]
pub(crate) trait Migration: Send {
    /// The latest version applied, if any.
    async fn applied(&mut self) -> Result<Option<i64>, sqlx::Error>;

    /// Runs the statements of `version` and records it.
    async fn apply(&mut self, version: i64, sql: &str) -> Result<(), sqlx::Error>;

    /// Makes it all visible at once.
    async fn commit(self: Box<Self>) -> Result<(), sqlx::Error>;
}
