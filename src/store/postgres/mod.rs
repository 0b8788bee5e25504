//! [`PostgresStore`]: keys in a shared PostgreSQL database, with
//! cross-instance cache invalidation through `LISTEN/NOTIFY`. What
//! PostgreSQL does differently from the [SQL engine](super::sql) is here:
//! `$n` parameters, `timestamptz` and `jsonb` columns, one statement for
//! a batch of last uses, an advisory lock for migrations. The schema is
//! in `schema.rs`, the change feed in `listener.rs`.

mod listener;
mod schema;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Postgres as Db, Transaction};
use tokio::sync::oneshot;

use super::forward_store;
use super::sql::{map_err, migrate, queries_over_pool, Dialect, Migration, SqlEngine};
use crate::error::StoreError;
use crate::token::KeyId;
use listener::listen;
use schema::migrations;

/// A schema name as a quoted identifier; names are checked by
/// [`valid_schema`] first, so quoting cannot be escaped.
fn quote(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// Lower-case letters, digits and `_`, starting with a letter or `_`, at
/// most 63 bytes: a schema name that needs no escaping.
fn valid_schema(schema: &str) -> bool {
    let b = schema.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Keys in a PostgreSQL table (`keyward_keys` in the chosen schema,
/// `public` by default), created and migrated on connect. For fleets of
/// instances sharing one database.
///
/// Every change to a key fires a `NOTIFY` (from a trigger, so changes
/// made by any writer count); each store `LISTEN`s on its own connection
/// and tells its subscribers at once, which is how a revocation on one
/// instance reaches every other instance's verification cache within
/// milliseconds. When that connection drops, subscribers are told to
/// forget everything on reconnect, and the cache time limit bounds
/// staleness meanwhile.
///
/// ```no_run
/// # async fn demo() -> Result<(), keyward::StoreError> {
/// use keyward::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://keyward@localhost/app").await?;
/// // Or in a schema of its own, on the host's pool:
/// # let pool: sqlx::PgPool = todo!();
/// let store = PostgresStore::builder(pool).schema("auth").build().await?;
/// # Ok(())
/// # }
/// ```
///
/// TLS, pool sizes and timeouts are the pool's: build a `PgPool` with the
/// options (and sqlx TLS feature) your deployment needs and pass it to
/// [`PostgresStore::builder`]. The listener takes one connection from the
/// pool for as long as the store lives.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    /// The schema, quoted.
    schema: String,
    engine: SqlEngine,
    /// Dropping it stops the listener task.
    _stop: oneshot::Sender<()>,
}

/// Configures a [`PostgresStore`]; see [`PostgresStore::builder`].
#[derive(Debug)]
#[must_use]
pub struct PostgresStoreBuilder {
    pool: PgPool,
    schema: String,
}

impl PostgresStoreBuilder {
    /// Keeps the table in this schema (created if missing). Default:
    /// `public`. Lower-case letters, digits and `_` only.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Migrates the schema and starts listening for changes. Call it
    /// within a tokio runtime.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database cannot be reached or
    /// migrated, or the schema name is invalid.
    pub async fn build(self) -> Result<PostgresStore, StoreError> {
        if !valid_schema(&self.schema) {
            return Err(StoreError::Unavailable {
                message: format!(
                    "invalid schema name {:?}: use lower-case letters, digits and _",
                    self.schema.chars().take(64).collect::<String>()
                ),
                source: None,
            });
        }
        let dialect = Postgres {
            pool: self.pool.clone(),
            schema: quote(&self.schema),
        };
        let migrations = migrations(&dialect.schema);
        let migrations: Vec<(i64, &str)> =
            migrations.iter().map(|(v, s)| (*v, s.as_str())).collect();
        migrate(&dialect, &migrations, "migrating the PostgreSQL schema").await?;
        let schema = dialect.schema.clone();
        let mut engine = SqlEngine::new(dialect);
        // Triggers report every writer's changes, once the listener
        // listens (until then, and while it is down, the feed is not live).
        engine.reports_every_writer();
        engine.subscribers().feed(false);
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(listen(
            self.pool.clone(),
            self.schema.clone(),
            Arc::downgrade(engine.subscribers()),
            stopped,
        ));
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool: self.pool,
                schema,
                engine,
                _stop: stop,
            }),
        })
    }
}

impl PostgresStore {
    /// Connects to `url` with a pool of 10 connections, in schema
    /// `public`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database cannot be reached or
    /// migrated.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(map_err("connecting to PostgreSQL"))?;
        Self::builder(pool).build().await
    }

    /// Starts configuring a store on the host's pool.
    pub fn builder(pool: PgPool) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            pool,
            schema: "public".into(),
        }
    }

    /// An audit trail in this database (table `keyward_audit` in the
    /// store's schema), shared by every instance of a fleet: give it to
    /// [`KeywardBuilder::audit`](crate::KeywardBuilder::audit), and to the
    /// management router to read it back. Starts a background writer, so
    /// it needs a tokio runtime. Each instance prunes; pruning twice is
    /// harmless.
    pub fn audit_trail(
        &self,
        settings: crate::store::AuditSettings,
    ) -> crate::store::SqlAuditTrail {
        crate::store::SqlAuditTrail::start(
            Postgres {
                pool: self.inner.pool.clone(),
                schema: self.inner.schema.clone(),
            },
            settings,
        )
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    fn engine(&self) -> &SqlEngine {
        &self.inner.engine
    }
}

forward_store!([] PostgresStore, this => this.engine());

/// PostgreSQL, over a pool, in one schema.
#[derive(Debug)]
struct Postgres {
    pool: PgPool,
    /// The schema, quoted.
    schema: String,
}

queries_over_pool!(
    Postgres,
    Db,
    bind_time: |t: Option<DateTime<Utc>>| t,
    read_time: |row: &PgRow, i| row.try_get(i)
);

#[async_trait]
impl Dialect for Postgres {
    fn table(&self) -> String {
        format!("{}.keyward_keys", self.schema)
    }

    fn audit_table(&self) -> String {
        format!("{}.keyward_audit", self.schema)
    }

    fn roles_table(&self) -> String {
        format!("{}.keyward_roles", self.schema)
    }

    fn endpoints_table(&self) -> String {
        format!("{}.keyward_webhook_endpoints", self.schema)
    }

    fn outbox_table(&self) -> String {
        format!("{}.keyward_webhook_outbox", self.schema)
    }

    fn placeholders(&self, sql: String) -> String {
        sql.replace('?', "$")
    }

    fn json_in(&self, param: &str) -> String {
        format!("{param}::jsonb")
    }

    fn json_out(&self, column: &str) -> String {
        format!("{column}::text")
    }

    fn least(&self) -> &'static str {
        "LEAST"
    }

    async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), sqlx::Error> {
        let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
        let ats: Vec<DateTime<Utc>> = batch.iter().map(|(_, at)| *at).collect();
        let sql = format!(
            "UPDATE {} AS k SET last_used_at = b.at \
             FROM (SELECT id, max(at) AS at FROM unnest($1::text[], $2::timestamptz[]) \
                   AS u(id, at) GROUP BY id) AS b \
             WHERE k.id = b.id AND (k.last_used_at IS NULL OR k.last_used_at < b.at)",
            self.table()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(ids)
            .bind(ats)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn begin_migration(&self) -> Result<Box<dyn Migration>, sqlx::Error> {
        let s = &self.schema;
        let mut tx = self.pool.begin().await?;
        // One migrator at a time across the fleet.
        sqlx::query("SELECT pg_advisory_xact_lock(7406525837612401)")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.keyward_migrations (
                 version BIGINT PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );"
        )))
        .execute(&mut *tx)
        .await?;
        Ok(Box::new(PgMigration {
            tx,
            schema: s.clone(),
        }))
    }
}

/// A migration transaction on PostgreSQL.
struct PgMigration {
    tx: Transaction<'static, Db>,
    schema: String,
}

#[async_trait]
impl Migration for PgMigration {
    async fn applied(&mut self) -> Result<Option<i64>, sqlx::Error> {
        let sql = format!(
            "SELECT max(version) FROM {}.keyward_migrations",
            self.schema
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&mut *self.tx)
            .await
    }

    async fn apply(&mut self, version: i64, sql: &str) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&mut *self.tx)
            .await?;
        let record = format!(
            "INSERT INTO {}.keyward_migrations (version) VALUES ($1)",
            self.schema
        );
        sqlx::query(AssertSqlSafe(record))
            .bind(version)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::valid_schema;

    #[test]
    fn schema_names_need_no_escaping() {
        for ok in ["public", "auth", "_k", "tenant_42"] {
            assert!(valid_schema(ok), "{ok}");
        }
        for bad in [
            "",
            "Auth",
            "9lives",
            "a-b",
            "a\"b",
            "a;drop",
            &"x".repeat(64),
        ] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }
}
