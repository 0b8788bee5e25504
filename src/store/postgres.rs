//! [`PostgresStore`]: keys in PostgreSQL, shared by a fleet of instances,
//! with `LISTEN/NOTIFY` to keep their caches current.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row as _};
use tokio::sync::oneshot;

use super::sql::{
    adjust_expr, after_text, columns, credit_taken, credit_untaken, due_clause, limit, map_err,
    to_sql, Row,
};
use super::{ChangeListener, Credit, KeyStore, RefillDue, Subscribers, SweepDue};
use crate::error::StoreError;
use crate::key::KeyRecord;
use crate::token::KeyId;

/// The channel every keyward table notifies on; the payload is
/// `schema:id`.
const CHANNEL: &str = "keyward_keys";

/// Versioned schema changes, applied in order, each once, under an
/// advisory lock so that instances starting together migrate once. `{s}`
/// is the quoted schema.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"CREATE TABLE {s}.keyward_keys (
        id TEXT COLLATE "C" PRIMARY KEY,
        prefix TEXT NOT NULL,
        hash BYTEA NOT NULL,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        permissions TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ,
        revoked_at TIMESTAMPTZ,
        last_used_at TIMESTAMPTZ,
        metadata JSONB,
        version BIGINT NOT NULL,
        rate_limit_max BIGINT,
        rate_limit_per_ms BIGINT,
        remaining BIGINT,
        refill_amount BIGINT,
        refill_every_secs BIGINT,
        last_refill_at TIMESTAMPTZ,
        inactivity_deadline TIMESTAMPTZ,
        inactivity_before_secs BIGINT,
        expiry_deadline TIMESTAMPTZ,
        expiry_before_secs BIGINT,
        rolled_from TEXT,
        -- Finite and within what every client can decode (no 'infinity').
        CONSTRAINT keyward_keys_times CHECK (
            created_at BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(expires_at, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(revoked_at, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(last_used_at, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(last_refill_at, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(inactivity_deadline, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
            AND coalesce(expiry_deadline, created_at) BETWEEN '0001-01-01Z' AND '9999-12-31 23:59:59.999999Z'
        )
    );
    CREATE INDEX keyward_keys_tenant ON {s}.keyward_keys (tenant, id);
    CREATE INDEX keyward_keys_expires ON {s}.keyward_keys (expires_at)
        WHERE expires_at IS NOT NULL;
    CREATE INDEX keyward_keys_activity
        ON {s}.keyward_keys ((coalesce(last_used_at, created_at)));
    CREATE INDEX keyward_keys_revoked ON {s}.keyward_keys (revoked_at)
        WHERE revoked_at IS NOT NULL;
    -- Every change a verify could see is announced, whoever makes it (an
    -- operator's UPDATE too); only last-use and usage-count bookkeeping,
    -- which caches do not hold, is not.
    CREATE FUNCTION {s}.keyward_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':*');
        ELSIF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || OLD.id);
        ELSIF TG_OP = 'INSERT' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || NEW.id);
        ELSIF ROW(NEW.id, NEW.prefix, NEW.hash, NEW.tenant, NEW.name, NEW.permissions,
                  NEW.created_by, NEW.created_at, NEW.expires_at, NEW.revoked_at,
                  NEW.metadata, NEW.version, NEW.rate_limit_max, NEW.rate_limit_per_ms,
                  NEW.remaining IS NULL, NEW.refill_amount, NEW.refill_every_secs,
                  NEW.inactivity_deadline, NEW.inactivity_before_secs,
                  NEW.expiry_deadline, NEW.expiry_before_secs, NEW.rolled_from)
              IS DISTINCT FROM
              ROW(OLD.id, OLD.prefix, OLD.hash, OLD.tenant, OLD.name, OLD.permissions,
                  OLD.created_by, OLD.created_at, OLD.expires_at, OLD.revoked_at,
                  OLD.metadata, OLD.version, OLD.rate_limit_max, OLD.rate_limit_per_ms,
                  OLD.remaining IS NULL, OLD.refill_amount, OLD.refill_every_secs,
                  OLD.inactivity_deadline, OLD.inactivity_before_secs,
                  OLD.expiry_deadline, OLD.expiry_before_secs, OLD.rolled_from) THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || OLD.id);
            IF NEW.id IS DISTINCT FROM OLD.id THEN
                PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || NEW.id);
            END IF;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER keyward_keys_notify
        AFTER INSERT OR UPDATE OR DELETE ON {s}.keyward_keys
        FOR EACH ROW EXECUTE FUNCTION {s}.keyward_notify();
    CREATE TRIGGER keyward_keys_notify_truncate
        AFTER TRUNCATE ON {s}.keyward_keys
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.keyward_notify();"#,
    ),
    (2, MIGRATION_2),
];

/// Step 6: `rolled_to` marks a key replaced by a roll (it can be neither
/// reactivated nor rolled again, and draws on its successor's uses); the
/// change feed announces it like every other column a verify reads.
/// Keys rolled before name the newest key rolled from them.
const MIGRATION_2: &str = r#"ALTER TABLE {s}.keyward_keys ADD COLUMN rolled_to TEXT;
    UPDATE {s}.keyward_keys AS o SET rolled_to = n.id
        FROM (SELECT DISTINCT ON (rolled_from) rolled_from, id FROM {s}.keyward_keys
              WHERE rolled_from IS NOT NULL ORDER BY rolled_from, created_at DESC, id DESC) AS n
        WHERE n.rolled_from = o.id;
    CREATE OR REPLACE FUNCTION {s}.keyward_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':*');
        ELSIF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || OLD.id);
        ELSIF TG_OP = 'INSERT' THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || NEW.id);
        ELSIF ROW(NEW.id, NEW.prefix, NEW.hash, NEW.tenant, NEW.name, NEW.permissions,
                  NEW.created_by, NEW.created_at, NEW.expires_at, NEW.revoked_at,
                  NEW.metadata, NEW.version, NEW.rate_limit_max, NEW.rate_limit_per_ms,
                  NEW.remaining IS NULL, NEW.refill_amount, NEW.refill_every_secs,
                  NEW.inactivity_deadline, NEW.inactivity_before_secs,
                  NEW.expiry_deadline, NEW.expiry_before_secs, NEW.rolled_from,
                  NEW.rolled_to)
              IS DISTINCT FROM
              ROW(OLD.id, OLD.prefix, OLD.hash, OLD.tenant, OLD.name, OLD.permissions,
                  OLD.created_by, OLD.created_at, OLD.expires_at, OLD.revoked_at,
                  OLD.metadata, OLD.version, OLD.rate_limit_max, OLD.rate_limit_per_ms,
                  OLD.remaining IS NULL, OLD.refill_amount, OLD.refill_every_secs,
                  OLD.inactivity_deadline, OLD.inactivity_before_secs,
                  OLD.expiry_deadline, OLD.expiry_before_secs, OLD.rolled_from,
                  OLD.rolled_to) THEN
            PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || OLD.id);
            IF NEW.id IS DISTINCT FROM OLD.id THEN
                PERFORM pg_notify('keyward_keys', TG_TABLE_SCHEMA || ':' || NEW.id);
            END IF;
        END IF;
        RETURN NULL;
    END $$;"#;

/// Statements, built once for the chosen schema.
#[derive(Debug)]
struct Sql {
    insert: Arc<str>,
    get: Arc<str>,
    update: Arc<str>,
    exists: Arc<str>,
    delete: Arc<str>,
    list: Arc<str>,
    scan: Arc<str>,
    due: Arc<str>,
    last_used: Arc<str>,
    refill: Arc<str>,
    take: Arc<str>,
    remaining: Arc<str>,
    adjust: Arc<str>,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let t = format!("{}.keyward_keys", quote(schema));
        let select = format!(
            "SELECT {} FROM {t}",
            columns!().replace(" metadata,", " metadata::text,")
        );
        let s = |sql: String| -> Arc<str> { sql.into() };
        Self {
            insert: s(format!(
                "INSERT INTO {t} ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 $12::jsonb, 0, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24) \
                 ON CONFLICT (id) DO NOTHING",
                columns!()
            )),
            get: s(format!("{select} WHERE id = $1")),
            update: s(format!(
                "UPDATE {t} SET name = $1, permissions = $2, expires_at = $3, revoked_at = $4, \
                 metadata = $5::jsonb, rate_limit_max = $6, rate_limit_per_ms = $7, \
                 refill_amount = $8, refill_every_secs = $9, inactivity_deadline = $10, \
                 inactivity_before_secs = $11, expiry_deadline = $12, expiry_before_secs = $13, \
                 rolled_to = $14, version = version + 1 WHERE id = $15 AND version = $16 \
                 RETURNING version"
            )),
            exists: s(format!("SELECT 1::int4 FROM {t} WHERE id = $1")),
            delete: s(format!("DELETE FROM {t} WHERE id = $1")),
            list: s(format!(
                "{select} WHERE tenant = $1 AND id > $2 ORDER BY id LIMIT $3"
            )),
            scan: s(format!("{select} WHERE id > $1 ORDER BY id LIMIT $2")),
            due: s(format!(
                "{select} WHERE id > $1 AND ({}) ORDER BY id LIMIT $6",
                due_clause!().replace('?', "$")
            )),
            last_used: s(format!(
                "UPDATE {t} AS k SET last_used_at = b.at \
                 FROM (SELECT id, max(at) AS at FROM unnest($1::text[], $2::timestamptz[]) \
                       AS u(id, at) GROUP BY id) AS b \
                 WHERE k.id = b.id AND (k.last_used_at IS NULL OR k.last_used_at < b.at)"
            )),
            refill: s(format!(
                "UPDATE {t} SET remaining = $2, last_refill_at = $3 \
                 WHERE id = $1 AND remaining IS NOT NULL AND refill_amount IS NOT NULL \
                 AND (last_refill_at IS NULL OR last_refill_at <= $4)"
            )),
            take: s(format!(
                "UPDATE {t} SET remaining = remaining - 1 \
                 WHERE id = $1 AND remaining > 0 RETURNING remaining"
            )),
            remaining: s(format!("SELECT remaining FROM {t} WHERE id = $1")),
            adjust: s(format!(
                "UPDATE {t} SET remaining = {} WHERE id = $1 AND remaining IS NOT NULL \
                 AND remaining + LEAST($2, 0) >= 0 RETURNING remaining",
                adjust_expr!().replace("?2", "$2")
            )),
        }
    }
}

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
/// use keyward::store::PostgresStore;
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
    sql: Sql,
    subscribers: Arc<Subscribers>,
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
        migrate(&self.pool, &self.schema).await?;
        let subscribers = Arc::<Subscribers>::default();
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(listen(
            self.pool.clone(),
            self.schema.clone(),
            Arc::downgrade(&subscribers),
            stopped,
        ));
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                sql: Sql::new(&self.schema),
                pool: self.pool,
                subscribers,
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

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    fn q(sql: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
        // Built once from constants and a checked schema name.
        AssertSqlSafe(sql.clone())
    }
}

async fn migrate(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
    let err = map_err("migrating the PostgreSQL schema");
    let s = quote(schema);
    let mut tx = pool.begin().await.map_err(&err)?;
    // One migrator at a time across the fleet.
    sqlx::query("SELECT pg_advisory_xact_lock(7406525837612401)")
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.keyward_migrations (
             version BIGINT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    )))
    .execute(&mut *tx)
    .await
    .map_err(&err)?;
    let applied: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT max(version) FROM {s}.keyward_migrations"
    )))
    .fetch_one(&mut *tx)
    .await
    .map_err(&err)?;
    for (version, sql) in MIGRATIONS {
        if applied.is_some_and(|a| a >= *version) {
            continue;
        }
        sqlx::raw_sql(AssertSqlSafe(sql.replace("{s}", &s)))
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {s}.keyward_migrations (version) VALUES ($1)"
        )))
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
    }
    tx.commit().await.map_err(&err)
}

/// How often each store pings the channel, to prove its listening
/// connection alive.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Silence on the channel after which the listening connection is taken
/// for dead (a half-open TCP connection never errors by itself).
const SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// The listener task: reports each notification for our schema; on every
/// (re)connection tells subscribers to forget everything, since
/// notifications sent while not listening are lost. A ping through the
/// pool every [`PING_EVERY`] keeps the channel busy; [`SILENCE_LIMIT`]
/// without any notification means the connection is dead: reconnect.
async fn listen(
    pool: PgPool,
    schema: String,
    subscribers: Weak<Subscribers>,
    mut stop: oneshot::Receiver<()>,
) {
    let prefix = format!("{schema}:");
    // The schema name is checked (no quotes possible).
    let ping_sql: Arc<str> = format!("SELECT pg_notify('{CHANNEL}', '{schema}:~ping')").into();
    let listened = std::sync::atomic::AtomicBool::new(false);
    let mut backoff = Duration::from_millis(100);
    loop {
        listened.store(false, std::sync::atomic::Ordering::Relaxed);
        let session = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            listened.store(true, std::sync::atomic::Ordering::Relaxed);
            match subscribers.upgrade() {
                Some(s) => s.reset(),
                None => return Ok(()),
            }
            let watchdog = tokio::time::sleep(SILENCE_LIMIT);
            tokio::pin!(watchdog);
            loop {
                // Only the watchdog branch cancels try_recv, and then the
                // listener is dropped anyway.
                let received = tokio::select! {
                    r = listener.try_recv() => r?,
                    () = &mut watchdog => return Err(sqlx::Error::Protocol(
                        "no notification (not even our own ping) for 45 s".into(),
                    )),
                };
                watchdog
                    .as_mut()
                    .reset(tokio::time::Instant::now() + SILENCE_LIMIT);
                let Some(s) = subscribers.upgrade() else {
                    return Ok(());
                };
                match received {
                    Some(n) => match n.payload().strip_prefix(&prefix) {
                        Some("*") => s.reset(),
                        Some(id) => {
                            if let Ok(id) = id.parse() {
                                s.changed(&id);
                            }
                        }
                        None => {}
                    },
                    // Lost and reconnected: anything may have been missed.
                    None => s.reset(),
                }
            }
        };
        let pings = async {
            loop {
                tokio::time::sleep(PING_EVERY).await;
                // A failed ping shows up as silence on the listener.
                let _ = sqlx::query(AssertSqlSafe(ping_sql.clone()))
                    .execute(&pool)
                    .await;
            }
        };
        let result: Result<(), sqlx::Error> = tokio::select! {
            _ = &mut stop => return,
            r = session => r,
            () = pings => Ok(()),
        };
        match result {
            Ok(()) | Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(
                    target: "keyward",
                    error = %e,
                    "PostgreSQL change feed lost; caches fall back to their time limit until it is back"
                );
                if let Some(s) = subscribers.upgrade() {
                    s.reset();
                }
            }
        }
        if listened.load(std::sync::atomic::Ordering::Relaxed) {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn decode(row: &PgRow) -> Result<Row, sqlx::Error> {
    Ok(Row {
        id: row.try_get(0)?,
        prefix: row.try_get(1)?,
        hash: row.try_get(2)?,
        tenant: row.try_get(3)?,
        name: row.try_get(4)?,
        permissions: row.try_get(5)?,
        created_by: row.try_get(6)?,
        created_at: row.try_get(7)?,
        expires_at: row.try_get(8)?,
        revoked_at: row.try_get(9)?,
        last_used_at: row.try_get(10)?,
        metadata: row.try_get(11)?,
        version: row.try_get(12)?,
        rate_limit_max: row.try_get(13)?,
        rate_limit_per_ms: row.try_get(14)?,
        remaining: row.try_get(15)?,
        refill_amount: row.try_get(16)?,
        refill_every_secs: row.try_get(17)?,
        last_refill_at: row.try_get(18)?,
        inactivity_deadline: row.try_get(19)?,
        inactivity_before_secs: row.try_get(20)?,
        expiry_deadline: row.try_get(21)?,
        expiry_before_secs: row.try_get(22)?,
        rolled_from: row.try_get(23)?,
        rolled_to: row.try_get(24)?,
    })
}

fn records(rows: Vec<PgRow>) -> Result<Vec<KeyRecord>, StoreError> {
    rows.iter()
        .map(|r| decode(r).map_err(map_err("reading a key"))?.into_record())
        .collect()
}

impl PostgresStore {
    /// What a take that answered `left` means: uses left, or, when nothing
    /// was taken, why ([`credit_untaken`]).
    async fn credit_after(&self, id: &KeyId, left: Option<i64>) -> Result<Credit, StoreError> {
        if let Some(left) = left {
            return Ok(credit_taken(left));
        }
        let row: Option<Option<i64>> = sqlx::query_scalar(Self::q(&self.inner.sql.remaining))
            .bind(id.as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map_err("reading uses left"))?;
        Ok(credit_untaken(row))
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let r = Row::from_record(record)?;
        let done = sqlx::query(Self::q(&self.inner.sql.insert))
            .bind(r.id)
            .bind(r.prefix)
            .bind(r.hash)
            .bind(r.tenant)
            .bind(r.name)
            .bind(r.permissions)
            .bind(r.created_by)
            .bind(r.created_at)
            .bind(r.expires_at)
            .bind(r.revoked_at)
            .bind(r.last_used_at)
            .bind(r.metadata)
            .bind(r.rate_limit_max)
            .bind(r.rate_limit_per_ms)
            .bind(r.remaining)
            .bind(r.refill_amount)
            .bind(r.refill_every_secs)
            .bind(r.last_refill_at)
            .bind(r.inactivity_deadline)
            .bind(r.inactivity_before_secs)
            .bind(r.expiry_deadline)
            .bind(r.expiry_before_secs)
            .bind(r.rolled_from)
            .bind(r.rolled_to)
            .execute(&self.inner.pool)
            .await
            .map_err(map_err("inserting a key"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Duplicate(record.id));
        }
        self.inner.subscribers.changed(&record.id);
        Ok(())
    }

    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(Self::q(&self.inner.sql.get))
            .bind(id.as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map_err("reading a key"))?;
        row.map(|r| decode(&r).map_err(map_err("reading a key"))?.into_record())
            .transpose()
    }

    async fn update(&self, record: &KeyRecord) -> Result<u64, StoreError> {
        let r = Row::from_record(record)?;
        let version: Option<i64> = sqlx::query_scalar(Self::q(&self.inner.sql.update))
            .bind(r.name)
            .bind(r.permissions)
            .bind(r.expires_at)
            .bind(r.revoked_at)
            .bind(r.metadata)
            .bind(r.rate_limit_max)
            .bind(r.rate_limit_per_ms)
            .bind(r.refill_amount)
            .bind(r.refill_every_secs)
            .bind(r.inactivity_deadline)
            .bind(r.inactivity_before_secs)
            .bind(r.expiry_deadline)
            .bind(r.expiry_before_secs)
            .bind(r.rolled_to)
            .bind(&r.id)
            .bind(r.version)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map_err("updating a key"))?;
        match version {
            Some(v) => {
                self.inner.subscribers.changed(&record.id);
                u64::try_from(v).map_err(|_| StoreError::Corrupt("negative version".into()))
            }
            None => {
                let exists: Option<i32> = sqlx::query_scalar(Self::q(&self.inner.sql.exists))
                    .bind(&r.id)
                    .fetch_optional(&self.inner.pool)
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
        let done = sqlx::query(Self::q(&self.inner.sql.delete))
            .bind(id.as_str())
            .execute(&self.inner.pool)
            .await
            .map_err(map_err("deleting a key"))?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            self.inner.subscribers.changed(id);
        }
        Ok(deleted)
    }

    async fn list_by_tenant(
        &self,
        tenant: &str,
        after: Option<&KeyId>,
        limit_: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(Self::q(&self.inner.sql.list))
            .bind(tenant)
            .bind(after_text(after))
            .bind(limit(limit_))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map_err("listing keys"))?;
        records(rows)
    }

    async fn scan(
        &self,
        after: Option<&KeyId>,
        limit_: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(Self::q(&self.inner.sql.scan))
            .bind(after_text(after))
            .bind(limit(limit_))
            .fetch_all(&self.inner.pool)
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
        let rows = sqlx::query(Self::q(&self.inner.sql.due))
            .bind(after_text(after))
            .bind(due.now)
            .bind(due.expiring_before)
            .bind(due.idle_since)
            .bind(due.ended_before)
            .bind(limit(limit_))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map_err("scanning keys due for maintenance"))?;
        records(rows)
    }

    async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError> {
        let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
        let ats: Vec<DateTime<Utc>> = batch.iter().map(|(_, at)| *at).collect();
        sqlx::query(Self::q(&self.inner.sql.last_used))
            .bind(ids)
            .bind(ats)
            .execute(&self.inner.pool)
            .await
            .map_err(map_err("recording last use"))?;
        Ok(())
    }

    async fn consume_credit(
        &self,
        id: &KeyId,
        refill: Option<RefillDue>,
    ) -> Result<Credit, StoreError> {
        let err = map_err("consuming a use");
        let pool = &self.inner.pool;
        // Two statements, each atomic; see SqliteStore for why that is
        // enough.
        if let Some(r) = refill {
            sqlx::query(Self::q(&self.inner.sql.refill))
                .bind(id.as_str())
                .bind(to_sql(r.amount))
                .bind(r.now)
                .bind(r.if_refilled_before)
                .execute(pool)
                .await
                .map_err(&err)?;
        }
        let left: Option<i64> = sqlx::query_scalar(Self::q(&self.inner.sql.take))
            .bind(id.as_str())
            .fetch_optional(pool)
            .await
            .map_err(&err)?;
        self.credit_after(id, left).await
    }

    async fn adjust_credits(&self, id: &KeyId, delta: i64) -> Result<Credit, StoreError> {
        let err = map_err("moving uses");
        let pool = &self.inner.pool;
        let left: Option<i64> = sqlx::query_scalar(Self::q(&self.inner.sql.adjust))
            .bind(id.as_str())
            .bind(delta.max(-i64::MAX))
            .fetch_optional(pool)
            .await
            .map_err(&err)?;
        self.credit_after(id, left).await
    }

    fn subscribe(&self, listener: Weak<dyn ChangeListener>) -> bool {
        self.inner.subscribers.add(listener);
        true
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
