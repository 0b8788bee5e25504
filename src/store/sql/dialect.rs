//! What differs between the SQL databases keyward speaks: how a
//! parameter is written, how values travel, how a batch of last-used
//! times is written, and how a migration holds off other migrators. The
//! engine ([`super::SqlEngine`]) writes everything else once.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::row::{Kind, Row, Value};
use crate::token::KeyId;

/// Running statements: written once for every dialect by
/// [`queries_over_pool!`](super::queries_over_pool).
#[async_trait]
pub(crate) trait Queries: Send + Sync {
    /// Runs `sql` with `args`; how many rows it changed.
    async fn execute(&self, sql: &Arc<str>, args: Vec<Value>) -> Result<u64, sqlx::Error>;

    /// Runs a `SELECT` of every column of the keys table.
    async fn fetch_rows(&self, sql: &Arc<str>, args: Vec<Value>) -> Result<Vec<Row>, sqlx::Error>;

    /// Runs a `SELECT` whose columns are of `kinds`, in order.
    async fn fetch_values(
        &self,
        sql: &Arc<str>,
        args: Vec<Value>,
        kinds: &'static [Kind],
    ) -> Result<Vec<Vec<Value>>, sqlx::Error>;

    /// Runs `sql`, which answers at most one row of one integer column:
    /// `None` for no row, `Some(None)` for a `NULL`.
    async fn fetch_int(
        &self,
        sql: &Arc<str>,
        args: Vec<Value>,
    ) -> Result<Option<Option<i64>>, sqlx::Error>;

    /// [`Queries::fetch_int`], and, if it answered a row, each of `then`,
    /// in one transaction: a change and what it causes, both or neither.
    async fn fetch_int_then(
        &self,
        sql: &Arc<str>,
        args: Vec<Value>,
        then: Vec<(Arc<str>, Vec<Value>)>,
    ) -> Result<Option<Option<i64>>, sqlx::Error>;
}

/// One SQL database, over its pool.
#[async_trait]
pub(crate) trait Dialect: Queries + fmt::Debug + 'static {
    /// The keys table, qualified as the database needs.
    fn table(&self) -> String;

    /// The audit table, qualified as the database needs.
    fn audit_table(&self) -> String;

    /// The roles table, qualified as the database needs.
    fn roles_table(&self) -> String;

    /// The webhook endpoints table, qualified as the database needs.
    fn endpoints_table(&self) -> String;

    /// The webhook outbox table, qualified as the database needs.
    fn outbox_table(&self) -> String;

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

    /// How a parameter of a long statement (a batch insert) is written:
    /// `?N` by default, rewritten by [`Dialect::placeholders`]. SQLite
    /// takes a bare `?`: each `?N` is a named parameter there, and the
    /// driver looks every name up in a list, which makes binding a long
    /// statement quadratic.
    fn batch_param(&self, n: usize) -> String {
        format!("?{n}")
    }

    /// The rows of `sql`, a `SELECT` of every column of the keys table by
    /// primary key, read on the calling thread without awaiting, where
    /// the database answers that in microseconds (a local SQLite file);
    /// `None` to read through the pool.
    fn fetch_rows_now(&self, _sql: &str, _args: &[Value]) -> Option<Vec<Row>> {
        None
    }

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

/// Implements [`Queries`] for a dialect type with a `pool` field of sqlx
/// database `$db`: values bind and decode by [`COLUMNS`](super::COLUMNS),
/// instants through `$bind_time` and `$read_time`.
macro_rules! queries_over_pool {
    ($dialect:ty, $db:ty, bind_time: $bind_time:expr, read_time: $read_time:expr) => {
        type Query<'q> = sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>;

        fn bind(query: Query<'_>, args: Vec<$crate::store::sql::Value>) -> Query<'_> {
            use $crate::store::sql::Value;
            args.into_iter().fold(query, |q, v| match v {
                Value::Text(t) => q.bind(t),
                Value::Bytes(b) => q.bind(b),
                Value::Int(n) => q.bind(n),
                Value::Time(t) => q.bind($bind_time(t)),
            })
        }

        fn decode(
            row: &<$db as sqlx::Database>::Row,
            kinds: impl Iterator<Item = $crate::store::sql::Kind>,
        ) -> Result<Vec<$crate::store::sql::Value>, sqlx::Error> {
            use sqlx::Row as _;
            use $crate::store::sql::{Kind, Value};
            let mut values = Vec::new();
            for (i, kind) in kinds.enumerate() {
                values.push(match kind {
                    Kind::Text | Kind::Json => Value::Text(row.try_get(i)?),
                    Kind::Bytes => Value::Bytes(row.try_get(i)?),
                    Kind::Int => Value::Int(row.try_get(i)?),
                    Kind::Time => Value::Time($read_time(row, i)?),
                });
            }
            Ok(values)
        }

        /// A statement the engine built once, from constants (and a
        /// checked schema name).
        fn q(sql: &std::sync::Arc<str>) -> Query<'static> {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        }

        #[async_trait::async_trait]
        impl $crate::store::sql::Queries for $dialect {
            async fn execute(
                &self,
                sql: &std::sync::Arc<str>,
                args: Vec<$crate::store::sql::Value>,
            ) -> Result<u64, sqlx::Error> {
                let done = bind(q(sql), args).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn fetch_rows(
                &self,
                sql: &std::sync::Arc<str>,
                args: Vec<$crate::store::sql::Value>,
            ) -> Result<Vec<$crate::store::sql::Row>, sqlx::Error> {
                let rows = bind(q(sql), args).fetch_all(&self.pool).await?;
                let kinds = || $crate::store::sql::COLUMNS.iter().map(|(_, k)| *k);
                rows.iter()
                    .map(|r| decode(r, kinds()).map($crate::store::sql::Row::from_values))
                    .collect()
            }

            async fn fetch_values(
                &self,
                sql: &std::sync::Arc<str>,
                args: Vec<$crate::store::sql::Value>,
                kinds: &'static [$crate::store::sql::Kind],
            ) -> Result<Vec<Vec<$crate::store::sql::Value>>, sqlx::Error> {
                let rows = bind(q(sql), args).fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|r| decode(r, kinds.iter().copied()))
                    .collect()
            }

            async fn fetch_int(
                &self,
                sql: &std::sync::Arc<str>,
                args: Vec<$crate::store::sql::Value>,
            ) -> Result<Option<Option<i64>>, sqlx::Error> {
                use sqlx::Row as _;
                let row = bind(q(sql), args).fetch_optional(&self.pool).await?;
                row.map(|r| r.try_get(0)).transpose()
            }

            async fn fetch_int_then(
                &self,
                sql: &std::sync::Arc<str>,
                args: Vec<$crate::store::sql::Value>,
                then: Vec<(std::sync::Arc<str>, Vec<$crate::store::sql::Value>)>,
            ) -> Result<Option<Option<i64>>, sqlx::Error> {
                use sqlx::Row as _;
                let mut tx = self.pool.begin().await?;
                let row = bind(q(sql), args).fetch_optional(&mut *tx).await?;
                let found: Option<Option<i64>> = row.map(|r| r.try_get(0)).transpose()?;
                if found.is_some() {
                    for (sql, args) in then {
                        bind(q(&sql), args).execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                Ok(found)
            }
        }
    };
}
pub(crate) use queries_over_pool;
