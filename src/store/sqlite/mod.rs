//! [`SqliteStore`]: keys in an embedded SQLite file. What SQLite does
//! differently from the [SQL engine](super::sql) is here: instants are
//! microseconds in `INTEGER` columns, and a migration takes the write
//! lock first.

mod reads;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Sqlite as Db, Transaction};

use super::forward_store;
use super::sql::{map_err, migrate, queries_over_pool, Dialect, Migration, Row, SqlEngine, Value};
use crate::error::StoreError;
use crate::token::KeyId;
use reads::Reads;

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
    // A key replaced by a roll names its successor (for keys rolled
    // before, the newest key rolled from it).
    (
        2,
        "ALTER TABLE keyward_keys ADD COLUMN rolled_to TEXT;
        UPDATE keyward_keys SET rolled_to = (
            SELECT n.id FROM keyward_keys AS n WHERE n.rolled_from = keyward_keys.id
            ORDER BY n.created_at DESC, n.id DESC LIMIT 1
        );",
    ),
    // The audit trail (`SqliteStore::audit_trail`): `seq` is never
    // reused, so a page cursor stays valid after pruning.
    (
        3,
        "CREATE TABLE IF NOT EXISTS keyward_audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            action TEXT NOT NULL,
            outcome TEXT NOT NULL,
            reason TEXT,
            actor TEXT,
            tenant TEXT,
            key_id TEXT,
            key_prefix TEXT,
            related_key_id TEXT
        ) STRICT;
        CREATE INDEX IF NOT EXISTS keyward_audit_tenant ON keyward_audit (tenant, seq);
        CREATE INDEX IF NOT EXISTS keyward_audit_key ON keyward_audit (key_id, seq);
        CREATE INDEX IF NOT EXISTS keyward_audit_related ON keyward_audit (related_key_id, seq)
            WHERE related_key_id IS NOT NULL;
        CREATE INDEX IF NOT EXISTS keyward_audit_at ON keyward_audit (at);",
    ),
    // Access rules (IP allowlists, not_before, roles, named limits), the
    // credits a key spent, and the roles defined at run time.
    (
        4,
        "ALTER TABLE keyward_keys ADD COLUMN allowed_ips TEXT;
        ALTER TABLE keyward_keys ADD COLUMN not_before INTEGER;
        ALTER TABLE keyward_keys ADD COLUMN roles TEXT;
        ALTER TABLE keyward_keys ADD COLUMN limits TEXT;
        ALTER TABLE keyward_keys ADD COLUMN credits_spent INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE IF NOT EXISTS keyward_roles (
            name TEXT PRIMARY KEY NOT NULL,
            permissions TEXT NOT NULL
        ) STRICT;",
    ),
    // Leaked keys marked exposed; a detail (a leak's url and source) in
    // the audit trail; webhook endpoints and the outbox of deliveries.
    (
        5,
        "ALTER TABLE keyward_keys ADD COLUMN exposed_at INTEGER;
        ALTER TABLE keyward_audit ADD COLUMN detail TEXT;
        CREATE TABLE IF NOT EXISTS keyward_webhook_endpoints (
            id TEXT PRIMARY KEY NOT NULL,
            tenant TEXT NOT NULL,
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            event_types TEXT NOT NULL,
            description TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX IF NOT EXISTS keyward_webhook_endpoints_tenant
            ON keyward_webhook_endpoints (tenant, id);
        CREATE TABLE IF NOT EXISTS keyward_webhook_outbox (
            id TEXT PRIMARY KEY NOT NULL,
            message_id TEXT NOT NULL,
            endpoint_id TEXT NOT NULL,
            tenant TEXT NOT NULL,
            event_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            next_attempt_at INTEGER NOT NULL,
            retrying_since INTEGER NOT NULL,
            lease_owner TEXT,
            lease_until INTEGER,
            last_error TEXT
        ) STRICT;
        CREATE INDEX IF NOT EXISTS keyward_webhook_outbox_due
            ON keyward_webhook_outbox (state, next_attempt_at);
        CREATE INDEX IF NOT EXISTS keyward_webhook_outbox_endpoint
            ON keyward_webhook_outbox (endpoint_id);",
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
/// use keyward::SqliteStore;
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
///
/// A store opened by path reads a key by id (the read of a cold verify)
/// on the calling thread, through one of up to four read-only connections:
/// a primary-key read from SQLite's page cache, microseconds, where sqlx
/// would hand the command to a connection's worker thread and back. When
/// no read connection is free, or SQLite would have to wait, the pool
/// reads instead. That read is not bounded by
/// [`KeywardBuilder::store_timeout`](crate::KeywardBuilder::store_timeout):
/// a read slower than a millisecond, or a failed one, sends key reads to
/// the pool for ten seconds. Everything else goes through the pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    engine: Arc<SqlEngine>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings
    /// its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the file cannot be opened, created
    /// or migrated.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        // No ping before each use: a connection to a local file does not
        // go stale, and the ping is a round trip to the connection's
        // worker thread on every store read.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(map_err("opening the SQLite database"))?;
        Self::start(pool, Reads::open(path).map(Arc::new)).await
    }

    /// A private in-memory database, gone when the store (and its clones)
    /// are dropped: for tests.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if SQLite cannot start.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let pool = memory_pool().await;
        Self::with_pool(pool.map_err(map_err("opening an in-memory SQLite database"))?).await
    }

    /// Uses a pool the host configured; brings the schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the migration fails.
    pub async fn with_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        Self::start(pool, None).await
    }

    /// The store over `pool`, reading keys through `reads` where it can
    /// (a file [`SqliteStore::open`] opened).
    async fn start(pool: SqlitePool, reads: Option<Arc<Reads>>) -> Result<Self, StoreError> {
        let dialect = Sqlite {
            pool: pool.clone(),
            reads,
        };
        migrate(&dialect, MIGRATIONS, "migrating the SQLite schema").await?;
        Ok(Self {
            pool,
            engine: Arc::new(SqlEngine::new(dialect)),
        })
    }

    /// An audit trail in this database (table `keyward_audit`): give it
    /// to [`KeywardBuilder::audit`](crate::KeywardBuilder::audit), and to
    /// the management router to read it back. Starts a background writer,
    /// so it needs a tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use keyward::{AuditQuery, AuditSettings, AuditTrail, Catalog, Keyward, SqliteStore};
    ///
    /// let store = SqliteStore::in_memory().await?;
    /// let trail = store.audit_trail(AuditSettings::default());
    /// let catalog = Catalog::builder().resource("contacts", ["read", "write"]).build()?;
    /// let keys = Keyward::builder(store, catalog).audit(trail.clone()).build()?;
    /// let page = trail.query(&AuditQuery::new().tenant("acme")).await?;
    /// assert!(page.events.is_empty());
    /// # drop(keys);
    /// # Ok(())
    /// # }
    /// ```
    pub fn audit_trail(
        &self,
        settings: crate::store::AuditSettings,
    ) -> crate::store::SqlAuditTrail {
        crate::store::SqlAuditTrail::start(
            Sqlite {
                pool: self.pool.clone(),
                reads: None,
            },
            settings,
        )
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn engine(&self) -> &SqlEngine {
        &self.engine
    }
}

forward_store!([] SqliteStore, this => this.engine());

/// A pool over a private in-memory database: one connection that never
/// closes, since the database lives in it.
async fn memory_pool() -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
}

/// SQLite, over a pool.
#[derive(Debug)]
struct Sqlite {
    pool: SqlitePool,
    /// Point reads of keys on the calling thread, for a file opened by
    /// path.
    reads: Option<Arc<Reads>>,
}

queries_over_pool!(
    Sqlite,
    Db,
    bind_time: |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros()),
    read_time: |row: &SqliteRow, i| time(row.try_get(i)?)
);

fn time(us: Option<i64>) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    us.map(|us| {
        DateTime::from_timestamp_micros(us)
            .ok_or_else(|| sqlx::Error::Decode("timestamp out of range".into()))
    })
    .transpose()
}

#[async_trait]
impl Dialect for Sqlite {
    fn table(&self) -> String {
        "keyward_keys".into()
    }

    fn audit_table(&self) -> String {
        "keyward_audit".into()
    }

    fn roles_table(&self) -> String {
        "keyward_roles".into()
    }

    fn endpoints_table(&self) -> String {
        "keyward_webhook_endpoints".into()
    }

    fn outbox_table(&self) -> String {
        "keyward_webhook_outbox".into()
    }

    fn least(&self) -> &'static str {
        "min"
    }

    fn batch_param(&self, _n: usize) -> String {
        "?".to_string()
    }

    fn fetch_rows_now(&self, sql: &str, args: &[Value]) -> Option<Vec<Row>> {
        self.reads.as_ref()?.rows(sql, args)
    }

    async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for (id, at) in batch {
            sqlx::query(
                "UPDATE keyward_keys SET last_used_at = ?2 \
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )
            .bind(id.as_str())
            .bind(at.timestamp_micros())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    async fn begin_migration(&self) -> Result<Box<dyn Migration>, sqlx::Error> {
        // IMMEDIATE takes the write lock first: two processes opening one
        // new file migrate one after the other.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS keyward_migrations (
                version INTEGER PRIMARY KEY NOT NULL,
                applied_at INTEGER NOT NULL
            ) STRICT",
        )
        .execute(&mut *tx)
        .await?;
        Ok(Box::new(SqliteMigration(tx)))
    }
}

/// A migration transaction on SQLite.
struct SqliteMigration(Transaction<'static, Db>);

#[async_trait]
impl Migration for SqliteMigration {
    async fn applied(&mut self) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT max(version) FROM keyward_migrations")
            .fetch_one(&mut *self.0)
            .await
    }

    async fn apply(&mut self, version: i64, sql: &str) -> Result<(), sqlx::Error> {
        let sql = AssertSqlSafe(sql.to_string());
        sqlx::raw_sql(sql).execute(&mut *self.0).await?;
        sqlx::query("INSERT INTO keyward_migrations (version, applied_at) VALUES (?1, ?2)")
            .bind(version)
            .bind(Utc::now().timestamp_micros())
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), sqlx::Error> {
        self.0.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::COLUMNS;
    use crate::store::KeyStore;

    /// A key read on the calling thread (a file opened by path) is the
    /// key the pool reads; a row the read connections cannot decode is
    /// left to the pool, which reports it.
    #[tokio::test]
    async fn point_reads_match_the_pool_and_leave_faults_to_it() {
        let dir = std::env::temp_dir().join(format!("keyward-reads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("keys.db");
        let store = SqliteStore::open(&path).await.expect("open");
        let pool_only = SqliteStore::with_pool(store.pool().clone())
            .await
            .expect("pool");
        sqlx::query(
            "INSERT INTO keyward_keys (id, prefix, hash, tenant, name, permissions, \
             created_by, created_at, version, expires_at, metadata, remaining, \
             rate_limit_max, rate_limit_per_ms) \
             VALUES ('readkey1', 'sk_readkey1_', randomblob(32), 'acme', 'zapier', \
             '[\"contacts:read\"]', 'boss', 1700000000123456, 3, 1800000000000001, \
             '{\"plan\":\"pro\"}', 7, 10, 1000)",
        )
        .execute(store.pool())
        .await
        .expect("row");
        let id: KeyId = "readkey1".parse().expect("id");
        let fast = store.get(&id).await.expect("get").expect("exists");
        let pooled = pool_only.get(&id).await.expect("get").expect("exists");
        assert_eq!(fast, pooled);
        assert_eq!(fast.remaining, Some(7));
        assert_eq!(
            fast.expires_at.map(|t| t.timestamp_micros()),
            Some(1_800_000_000_000_001)
        );

        let reads = Reads::open(&path).expect("read connections");
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        let sql = format!(
            "SELECT {} FROM keyward_keys WHERE id = ?1",
            names.join(", ")
        );
        let by_id = [Value::Text(Some("readkey1".into()))];
        assert_eq!(reads.rows(&sql, &by_id).map(|r| r.len()), Some(1));
        let missing = [Value::Text(Some("nokey001".into()))];
        assert_eq!(reads.rows(&sql, &missing).map(|r| r.len()), Some(0));
        assert_eq!(
            store.get(&"nokey001".parse().expect("id")).await.ok(),
            Some(None)
        );

        // An instant SQLite holds but chrono cannot: not decoded here, and
        // the store's answer is the pool's error.
        sqlx::query("UPDATE keyward_keys SET expires_at = 9223372036854775807")
            .execute(store.pool())
            .await
            .expect("update");
        assert!(reads.rows(&sql, &by_id).is_none());
        // The row was at fault, not the connection: kept, and reads go on.
        assert_eq!(reads.rows(&sql, &missing).map(|r| r.len()), Some(0));
        let (fast, pooled) = (store.get(&id).await, pool_only.get(&id).await);
        assert!(fast.is_err());
        assert_eq!(
            fast.map_err(|e| e.to_string()),
            pooled.map_err(|e| e.to_string())
        );
        drop((store, pool_only, reads));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A database of schema 1 (before keys named their successor) with a key rolled
    /// twice: migration 2 names the newest successor, so the old key can
    /// be neither reactivated nor rolled again after the upgrade.
    #[tokio::test]
    async fn migration_2_names_the_successors_of_keys_rolled_before() {
        let pool = memory_pool().await.expect("pool");
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

    /// A database of schema 3 with a usage-limited key: migration 4 adds
    /// the access rules (none), `credits_spent` (0) and the roles table,
    /// and the key keeps working, spending by cost.
    #[tokio::test]
    async fn migration_4_keeps_keys_of_schema_3() {
        let pool = memory_pool().await.expect("pool");
        for (_, sql) in &MIGRATIONS[..3] {
            let sql: &'static str = sql;
            sqlx::raw_sql(sql).execute(&pool).await.expect("schema 1-3");
        }
        sqlx::raw_sql(
            "CREATE TABLE keyward_migrations (version INTEGER PRIMARY KEY NOT NULL, \
             applied_at INTEGER NOT NULL) STRICT;
             INSERT INTO keyward_migrations VALUES (1, 0), (2, 0), (3, 0);
             INSERT INTO keyward_keys (id, prefix, hash, tenant, name, permissions, \
             created_by, created_at, version, remaining) \
             VALUES ('oldkey01', 'sk_oldkey01_', zeroblob(32), 'acme', 'k', '[]', 'a', 1, 0, 10);",
        )
        .execute(&pool)
        .await
        .expect("schema 3 with a key");
        let store = SqliteStore::with_pool(pool).await.expect("migrates");
        let id: KeyId = "oldkey01".parse().expect("id");
        let old = store.get(&id).await.expect("get").expect("exists");
        assert_eq!(old.allowed_ips, None);
        assert_eq!(old.not_before, None);
        assert!(old.roles.is_empty() && old.limits.is_empty());
        assert_eq!(old.credits_spent, 0);
        let spent = store.consume_credit(&id, 4, None).await.expect("consume");
        assert_eq!(spent, crate::store::Credit::Consumed { remaining: 6 });
        let after = store.get(&id).await.expect("get").expect("exists");
        assert_eq!(after.credits_spent, 4);
        assert!(store.roles().await.expect("roles").is_empty());
    }
}
