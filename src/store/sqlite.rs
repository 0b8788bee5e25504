//! [`SqliteStore`]: keys in an embedded SQLite file.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row as _;

use super::sql::{
    adjust_expr, after_text, columns, credit_taken, credit_untaken, due_clause, limit, map_err,
    to_sql, Row,
};
use super::{ChangeListener, Credit, KeyStore, RefillDue, Subscribers, SweepDue};
use crate::error::StoreError;
use crate::key::KeyRecord;
use crate::token::KeyId;

/// Versioned schema changes, applied in order, each once. Timestamps are
/// microseconds since the Unix epoch (UTC) in `INTEGER` columns.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS keyward_keys (
        id TEXT PRIMARY KEY NOT NULL,
        prefix TEXT NOT NULL,
        hash BLOB NOT NULL,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        permissions TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER,
        last_used_at INTEGER,
        metadata TEXT,
        version INTEGER NOT NULL,
        rate_limit_max INTEGER,
        rate_limit_per_ms INTEGER,
        remaining INTEGER,
        refill_amount INTEGER,
        refill_every_secs INTEGER,
        last_refill_at INTEGER,
        inactivity_deadline INTEGER,
        inactivity_before_secs INTEGER,
        expiry_deadline INTEGER,
        expiry_before_secs INTEGER,
        rolled_from TEXT
    ) STRICT;
    CREATE INDEX IF NOT EXISTS keyward_keys_tenant ON keyward_keys (tenant, id);
    CREATE INDEX IF NOT EXISTS keyward_keys_expires ON keyward_keys (expires_at)
        WHERE expires_at IS NOT NULL;
    CREATE INDEX IF NOT EXISTS keyward_keys_activity
        ON keyward_keys (coalesce(last_used_at, created_at));
    CREATE INDEX IF NOT EXISTS keyward_keys_revoked ON keyward_keys (revoked_at)
        WHERE revoked_at IS NOT NULL;",
    ),
    // Step 6: a key replaced by a roll names its successor (for keys
    // rolled before, the newest key rolled from it).
    (
        2,
        "ALTER TABLE keyward_keys ADD COLUMN rolled_to TEXT;
        UPDATE keyward_keys SET rolled_to = (
            SELECT n.id FROM keyward_keys AS n WHERE n.rolled_from = keyward_keys.id
            ORDER BY n.created_at DESC, n.id DESC LIMIT 1
        );",
    ),
];

/// Keys in one SQLite file (WAL mode, `synchronous = FULL`: a key whose
/// creation returned survives a crash or power loss), created and migrated
/// on first open. The embedded default: one process, or a few on one
/// machine sharing the file.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), keyward::StoreError> {
/// use keyward::store::SqliteStore;
///
/// let dir = std::env::temp_dir().join(format!("keyward-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).expect("temp dir");
/// let store = SqliteStore::open(dir.join("keyward.db")).await?;
/// # drop(store);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
///
/// Changes made through this store (and its clones) are reported to
/// subscribers at once; another process writing the same file is seen
/// after the cache time limit
/// ([`KeywardBuilder::cache_ttl`](crate::KeywardBuilder::cache_ttl)).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    subscribers: Arc<Subscribers>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings
    /// its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the file cannot be opened, created
    /// or migrated.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(map_err("opening the SQLite database"))?;
        Self::with_pool(pool).await
    }

    /// A private in-memory database, gone when the store (and its clones)
    /// are dropped: for tests.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if SQLite cannot start.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(map_err("configuring SQLite"))?;
        // One connection that never closes: the database lives in it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(map_err("opening an in-memory SQLite database"))?;
        Self::with_pool(pool).await
    }

    /// Uses a pool the host configured; brings the schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the migration fails.
    pub async fn with_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        migrate(&pool).await?;
        Ok(Self {
            pool,
            subscribers: Arc::default(),
        })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let err = map_err("migrating the SQLite schema");
    let mut conn = pool.acquire().await.map_err(&err)?;
    // IMMEDIATE takes the write lock first: two processes opening one new
    // file migrate one after the other.
    let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
        .await
        .map_err(&err)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS keyward_migrations (
            version INTEGER PRIMARY KEY NOT NULL,
            applied_at INTEGER NOT NULL
        ) STRICT",
    )
    .execute(&mut *tx)
    .await
    .map_err(&err)?;
    let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM keyward_migrations")
        .fetch_one(&mut *tx)
        .await
        .map_err(&err)?;
    for (version, sql) in MIGRATIONS {
        if applied.is_some_and(|a| a >= *version) {
            continue;
        }
        sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(&err)?;
        sqlx::query("INSERT INTO keyward_migrations (version, applied_at) VALUES (?1, ?2)")
            .bind(version)
            .bind(Utc::now().timestamp_micros())
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
    }
    tx.commit().await.map_err(&err)
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(us: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| sqlx::Error::Decode("timestamp out of range".into()))
}

fn opt_time(us: Option<i64>) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    us.map(time).transpose()
}

fn decode(row: &SqliteRow) -> Result<Row, sqlx::Error> {
    Ok(Row {
        id: row.try_get(0)?,
        prefix: row.try_get(1)?,
        hash: row.try_get(2)?,
        tenant: row.try_get(3)?,
        name: row.try_get(4)?,
        permissions: row.try_get(5)?,
        created_by: row.try_get(6)?,
        created_at: time(row.try_get(7)?)?,
        expires_at: opt_time(row.try_get(8)?)?,
        revoked_at: opt_time(row.try_get(9)?)?,
        last_used_at: opt_time(row.try_get(10)?)?,
        metadata: row.try_get(11)?,
        version: row.try_get(12)?,
        rate_limit_max: row.try_get(13)?,
        rate_limit_per_ms: row.try_get(14)?,
        remaining: row.try_get(15)?,
        refill_amount: row.try_get(16)?,
        refill_every_secs: row.try_get(17)?,
        last_refill_at: opt_time(row.try_get(18)?)?,
        inactivity_deadline: opt_time(row.try_get(19)?)?,
        inactivity_before_secs: row.try_get(20)?,
        expiry_deadline: opt_time(row.try_get(21)?)?,
        expiry_before_secs: row.try_get(22)?,
        rolled_from: row.try_get(23)?,
        rolled_to: row.try_get(24)?,
    })
}

fn records(rows: Vec<SqliteRow>) -> Result<Vec<KeyRecord>, StoreError> {
    rows.iter()
        .map(|r| decode(r).map_err(map_err("reading a key"))?.into_record())
        .collect()
}

impl SqliteStore {
    /// What a take that answered `left` means: uses left, or, when nothing
    /// was taken, why ([`credit_untaken`]).
    async fn credit_after(&self, id: &KeyId, left: Option<i64>) -> Result<Credit, StoreError> {
        if let Some(left) = left {
            return Ok(credit_taken(left));
        }
        let row: Option<Option<i64>> =
            sqlx::query_scalar("SELECT remaining FROM keyward_keys WHERE id = ?1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err("reading uses left"))?;
        Ok(credit_untaken(row))
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let r = Row::from_record(record)?;
        let done = sqlx::query(concat!(
            "INSERT INTO keyward_keys (",
            columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0, ?13, ?14, ?15, ?16, \
             ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24) ON CONFLICT (id) DO NOTHING"
        ))
        .bind(r.id)
        .bind(r.prefix)
        .bind(r.hash)
        .bind(r.tenant)
        .bind(r.name)
        .bind(r.permissions)
        .bind(r.created_by)
        .bind(micros(r.created_at))
        .bind(r.expires_at.map(micros))
        .bind(r.revoked_at.map(micros))
        .bind(r.last_used_at.map(micros))
        .bind(r.metadata)
        .bind(r.rate_limit_max)
        .bind(r.rate_limit_per_ms)
        .bind(r.remaining)
        .bind(r.refill_amount)
        .bind(r.refill_every_secs)
        .bind(r.last_refill_at.map(micros))
        .bind(r.inactivity_deadline.map(micros))
        .bind(r.inactivity_before_secs)
        .bind(r.expiry_deadline.map(micros))
        .bind(r.expiry_before_secs)
        .bind(r.rolled_from)
        .bind(r.rolled_to)
        .execute(&self.pool)
        .await
        .map_err(map_err("inserting a key"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Duplicate(record.id));
        }
        self.subscribers.changed(&record.id);
        Ok(())
    }

    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM keyward_keys WHERE id = ?1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err("reading a key"))?;
        row.map(|r| decode(&r).map_err(map_err("reading a key"))?.into_record())
            .transpose()
    }

    async fn update(&self, record: &KeyRecord) -> Result<u64, StoreError> {
        let r = Row::from_record(record)?;
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE keyward_keys SET name = ?1, permissions = ?2, expires_at = ?3, \
             revoked_at = ?4, metadata = ?5, rate_limit_max = ?6, rate_limit_per_ms = ?7, \
             refill_amount = ?8, refill_every_secs = ?9, inactivity_deadline = ?10, \
             inactivity_before_secs = ?11, expiry_deadline = ?12, expiry_before_secs = ?13, \
             rolled_to = ?14, version = version + 1 \
             WHERE id = ?15 AND version = ?16 RETURNING version",
        )
        .bind(r.name)
        .bind(r.permissions)
        .bind(r.expires_at.map(micros))
        .bind(r.revoked_at.map(micros))
        .bind(r.metadata)
        .bind(r.rate_limit_max)
        .bind(r.rate_limit_per_ms)
        .bind(r.refill_amount)
        .bind(r.refill_every_secs)
        .bind(r.inactivity_deadline.map(micros))
        .bind(r.inactivity_before_secs)
        .bind(r.expiry_deadline.map(micros))
        .bind(r.expiry_before_secs)
        .bind(r.rolled_to)
        .bind(&r.id)
        .bind(r.version)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err("updating a key"))?;
        match version {
            Some(v) => {
                self.subscribers.changed(&record.id);
                u64::try_from(v).map_err(|_| StoreError::Corrupt("negative version".into()))
            }
            None => {
                let exists: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM keyward_keys WHERE id = ?1")
                        .bind(&r.id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err("updating a key"))?;
                Err(match exists {
                    Some(_) => StoreError::Conflict(record.id),
                    None => StoreError::NotFound(record.id),
                })
            }
        }
    }

    async fn delete(&self, id: &KeyId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM keyward_keys WHERE id = ?1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(map_err("deleting a key"))?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            self.subscribers.changed(id);
        }
        Ok(deleted)
    }

    async fn list_by_tenant(
        &self,
        tenant: &str,
        after: Option<&KeyId>,
        limit_: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM keyward_keys WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        ))
        .bind(tenant)
        .bind(after_text(after))
        .bind(limit(limit_))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err("listing keys"))?;
        records(rows)
    }

    async fn scan(
        &self,
        after: Option<&KeyId>,
        limit_: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM keyward_keys WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))
        .bind(after_text(after))
        .bind(limit(limit_))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err("scanning keys"))?;
        records(rows)
    }

    async fn scan_due(
        &self,
        due: &SweepDue,
        after: Option<&KeyId>,
        limit_: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM keyward_keys WHERE id > ?1 AND (",
            due_clause!(),
            ") ORDER BY id LIMIT ?6"
        ))
        .bind(after_text(after))
        .bind(micros(due.now))
        .bind(due.expiring_before.map(micros))
        .bind(due.idle_since.map(micros))
        .bind(due.ended_before.map(micros))
        .bind(limit(limit_))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err("scanning keys due for maintenance"))?;
        records(rows)
    }

    async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError> {
        let err = map_err("recording last use");
        let mut tx = self.pool.begin().await.map_err(&err)?;
        for (id, at) in batch {
            sqlx::query(
                "UPDATE keyward_keys SET last_used_at = ?2 \
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )
            .bind(id.as_str())
            .bind(micros(*at))
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        }
        tx.commit().await.map_err(&err)
    }

    async fn consume_credit(
        &self,
        id: &KeyId,
        refill: Option<RefillDue>,
    ) -> Result<Credit, StoreError> {
        let err = map_err("consuming a use");
        // Two statements, each atomic. The refill only fires once per
        // period (it moves last_refill_at), so racing callers cannot
        // refill twice; the take only succeeds while uses are left.
        if let Some(r) = refill {
            sqlx::query(
                "UPDATE keyward_keys SET remaining = ?2, last_refill_at = ?3 \
                 WHERE id = ?1 AND remaining IS NOT NULL AND refill_amount IS NOT NULL \
                 AND (last_refill_at IS NULL OR last_refill_at <= ?4)",
            )
            .bind(id.as_str())
            .bind(to_sql(r.amount))
            .bind(micros(r.now))
            .bind(micros(r.if_refilled_before))
            .execute(&self.pool)
            .await
            .map_err(&err)?;
        }
        let left: Option<i64> = sqlx::query_scalar(
            "UPDATE keyward_keys SET remaining = remaining - 1 \
             WHERE id = ?1 AND remaining > 0 RETURNING remaining",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(&err)?;
        self.credit_after(id, left).await
    }

    async fn adjust_credits(&self, id: &KeyId, delta: i64) -> Result<Credit, StoreError> {
        let err = map_err("moving uses");
        let left: Option<i64> = sqlx::query_scalar(concat!(
            "UPDATE keyward_keys SET remaining = ",
            adjust_expr!(),
            " WHERE id = ?1 AND remaining IS NOT NULL AND remaining + min(?2, 0) >= 0 \
             RETURNING remaining"
        ))
        .bind(id.as_str())
        .bind(delta.max(-i64::MAX))
        .fetch_optional(&self.pool)
        .await
        .map_err(&err)?;
        self.credit_after(id, left).await
    }

    fn subscribe(&self, listener: Weak<dyn ChangeListener>) -> bool {
        self.subscribers.add(listener);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written before step 6 (schema 1) with a key rolled
    /// twice: migration 2 names the newest successor, so the old key can
    /// be neither reactivated nor rolled again after the upgrade.
    #[tokio::test]
    async fn migration_2_names_the_successors_of_keys_rolled_before() {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").expect("options");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .expect("pool");
        sqlx::raw_sql(MIGRATIONS[0].1)
            .execute(&pool)
            .await
            .expect("schema 1");
        sqlx::raw_sql(
            "CREATE TABLE keyward_migrations (version INTEGER PRIMARY KEY NOT NULL, \
             applied_at INTEGER NOT NULL) STRICT;
             INSERT INTO keyward_migrations VALUES (1, 0);",
        )
        .execute(&pool)
        .await
        .expect("version 1");
        for (id, created, from) in [
            ("oldkey01", 1, None),
            ("second01", 2, Some("oldkey01")),
            ("third001", 3, Some("oldkey01")),
            ("plainkey", 4, None),
        ] {
            sqlx::query(
                "INSERT INTO keyward_keys (id, prefix, hash, tenant, name, permissions, \
                 created_by, created_at, version, rolled_from) \
                 VALUES (?1, 'sk_' || ?1 || '_', zeroblob(32), 'acme', 'k', '[]', 'a', ?2, 0, ?3)",
            )
            .bind(id)
            .bind(created)
            .bind(from)
            .execute(&pool)
            .await
            .expect("old row");
        }
        let store = SqliteStore::with_pool(pool).await.expect("migrates");
        let get = |id: &str| {
            let store = store.clone();
            let id: KeyId = id.parse().expect("id");
            async move { store.get(&id).await.expect("get").expect("exists") }
        };
        assert_eq!(
            get("oldkey01").await.rolled_to,
            Some("third001".parse().expect("id"))
        );
        assert_eq!(get("second01").await.rolled_to, None);
        assert_eq!(get("plainkey").await.rolled_to, None);
    }
}
