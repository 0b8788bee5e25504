//! The SQL engine: every [`KeyStore`] operation, written once over a
//! small [`Dialect`] (SQLite, PostgreSQL). The statements, the column
//! list, the conversions, the migration runner and the mapping of driver
//! errors live here; a dialect only says how its database differs.

mod audit;
mod dialect;
mod outbox;
mod row;

pub use audit::{AuditSettings, SqlAuditTrail};

pub(crate) use dialect::{queries_over_pool, Dialect, Migration, Queries};
pub(crate) use row::{Kind, Row, Value, COLUMNS};

use std::sync::Arc;

use chrono::{DateTime, Utc};

use async_trait::async_trait;

use super::{
    insert_or_holder, ChangeListener, Credit, Delivery, KeyStore, Outbox, RefillDue,
    RoleDefinition, Subscribers, SweepDue,
};
use crate::error::StoreError;
use crate::key::KeyRecord;
use crate::token::KeyId;
use row::{position, to_sql, UPDATED};

/// [`SweepDue::matches`] in SQL, with `?2` = now, `?3` = expiring_before,
/// `?4` = idle_since, `?5` = ended_before (`NULL` bounds select nothing).
/// Each branch is a range on one indexed column or expression:
/// `expires_at`, `coalesce(last_used_at, created_at)`, `revoked_at`.
const DUE: &str = "(revoked_at IS NULL AND expires_at > ?2 AND expires_at <= ?3) \
     OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2) \
         AND coalesce(last_used_at, created_at) <= ?4) \
     OR revoked_at <= ?5 \
     OR (revoked_at IS NULL AND expires_at <= ?5)";

/// `remaining` moved by `?2` uses ([`KeyStore::adjust_credits`]), never
/// past the largest count keyward stores.
///
/// [`KeyStore::adjust_credits`]: crate::store::KeyStore::adjust_credits
const ADJUSTED: &str = "CASE WHEN ?2 > 0 AND remaining > 9223372036854775807 - ?2 \
     THEN 9223372036854775807 ELSE remaining + ?2 END";

/// The statements, built once for a dialect.
#[derive(Debug)]
struct Statements {
    /// `SELECT` of every column, without a condition.
    select: String,
    insert: Arc<str>,
    get: Arc<str>,
    update: Arc<str>,
    exists: Arc<str>,
    delete: Arc<str>,
    list: Arc<str>,
    scan: Arc<str>,
    scan_ids: Arc<str>,
    due: Arc<str>,
    refill: Arc<str>,
    take: Arc<str>,
    remaining: Arc<str>,
    adjust: Arc<str>,
    roles: Arc<str>,
    put_role: Arc<str>,
}

impl Statements {
    fn new(d: &dyn Dialect) -> Self {
        let t = d.table();
        let param = |n: usize, kind: Kind| match kind {
            Kind::Json => d.json_in(&format!("?{n}")),
            _ => format!("?{n}"),
        };
        let kind = |name: &str| COLUMNS[position(name)].1;
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        let read: Vec<String> = COLUMNS
            .iter()
            .map(|(n, k)| match k {
                Kind::Json => d.json_out(n),
                _ => (*n).to_string(),
            })
            .collect();
        let values: Vec<String> = (1..).zip(COLUMNS).map(|(i, (_, k))| param(i, k)).collect();
        let sets: Vec<String> = (1..)
            .zip(UPDATED)
            .map(|(i, n)| format!("{n} = {}", param(i, kind(n))))
            .collect();
        let (id, version) = (UPDATED.len() + 1, UPDATED.len() + 2);
        let select = format!("SELECT {} FROM {t}", read.join(", "));
        let least = d.least();
        let s = |sql: String| -> Arc<str> { d.placeholders(sql).into() };
        Self {
            select: select.clone(),
            insert: s(format!(
                "INSERT INTO {t} ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING RETURNING version",
                names.join(", "),
                values.join(", ")
            )),
            get: s(format!("{select} WHERE id = ?1")),
            update: s(format!(
                "UPDATE {t} SET {}, version = version + 1 \
                 WHERE id = ?{id} AND version = ?{version} RETURNING version",
                sets.join(", ")
            )),
            exists: s(format!("SELECT CAST(1 AS BIGINT) FROM {t} WHERE id = ?1")),
            delete: s(format!("DELETE FROM {t} WHERE id = ?1 RETURNING version")),
            list: s(format!(
                "{select} WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
            )),
            scan: s(format!("{select} WHERE id > ?1 ORDER BY id LIMIT ?2")),
            scan_ids: s(format!(
                "SELECT id FROM {t} WHERE id > ?1 ORDER BY id LIMIT ?2"
            )),
            due: s(format!(
                "{select} WHERE id > ?1 AND ({DUE}) ORDER BY id LIMIT ?6"
            )),
            refill: s(format!(
                "UPDATE {t} SET remaining = ?2, last_refill_at = ?3 \
                 WHERE id = ?1 AND remaining IS NOT NULL AND refill_amount IS NOT NULL \
                 AND (last_refill_at IS NULL OR last_refill_at <= ?4)"
            )),
            take: s(format!(
                "UPDATE {t} SET remaining = remaining - ?2, \
                 credits_spent = credits_spent + ?2 \
                 WHERE id = ?1 AND remaining >= ?2 AND remaining > 0 RETURNING remaining"
            )),
            roles: s(format!(
                "SELECT name, permissions FROM {r} ORDER BY name",
                r = d.roles_table()
            )),
            put_role: s(format!(
                "INSERT INTO {r} (name, permissions) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET permissions = excluded.permissions",
                r = d.roles_table()
            )),
            remaining: s(format!("SELECT remaining FROM {t} WHERE id = ?1")),
            adjust: s(format!(
                "UPDATE {t} SET remaining = {ADJUSTED} WHERE id = ?1 \
                 AND remaining IS NOT NULL AND remaining + {least}(?2, 0) >= 0 \
                 RETURNING remaining"
            )),
        }
    }
}

/// Every [`KeyStore`] operation over a [`Dialect`],
/// reporting each change to the store's subscribers.
#[derive(Debug)]
pub(crate) struct SqlEngine {
    dialect: Box<dyn Dialect>,
    sql: Statements,
    outbox: outbox::OutboxStatements,
    subscribers: Arc<Subscribers>,
    /// Whether the subscribers hear of every writer's changes
    /// ([`KeyStore::feed_sees_every_writer`]).
    every_writer: bool,
}

fn text(s: &str) -> Value {
    Value::Text(Some(s.to_string()))
}

fn int(n: i64) -> Value {
    Value::Int(Some(n))
}

fn time(t: Option<DateTime<Utc>>) -> Value {
    Value::Time(t)
}

/// `None` ids become the empty string, which sorts before every id.
fn after(after: Option<&KeyId>) -> Value {
    text(after.map_or("", |a| a.as_str()))
}

/// Page sizes as SQL integers.
fn limit(n: usize) -> Value {
    int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Records [`KeyStore::insert_many`] writes in one statement: 30 columns
/// each, 3,000 parameters, within SQLite's (32,766) and PostgreSQL's
/// (65,535) limits.
const INSERT_BATCH: usize = 100;

/// `(?first, ?first+1, …)`: one row of every column, JSON as the dialect
/// binds it.
fn values_row(d: &dyn Dialect, first: usize) -> String {
    let params: Vec<String> = (first..)
        .zip(COLUMNS)
        .map(|(i, (_, k))| match k {
            Kind::Json => d.json_in(&d.batch_param(i)),
            _ => d.batch_param(i),
        })
        .collect();
    format!("({})", params.join(", "))
}

impl SqlEngine {
    /// [`KeyStore::insert_many`] for at most [`INSERT_BATCH`] records:
    /// one multi-row insert that skips taken ids, then one read of the
    /// records that hold them.
    async fn insert_chunk(
        &self,
        chunk: &[KeyRecord],
    ) -> Result<Vec<Option<KeyRecord>>, StoreError> {
        let d = &*self.dialect;
        let t = d.table();
        let mut args = Vec::with_capacity(chunk.len() * COLUMNS.len());
        let mut rows = Vec::with_capacity(chunk.len());
        for record in chunk {
            let mut values = Row::from_record(record)?.into_values();
            values[position("version")] = int(0);
            rows.push(values_row(d, args.len() + 1));
            args.extend(values);
        }
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        let sql: Arc<str> = d
            .placeholders(format!(
                "INSERT INTO {t} ({}) VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
                names.join(", "),
                rows.join(", ")
            ))
            .into();
        let err = map_err("importing keys");
        let stored = d
            .fetch_values(&sql, args, &[Kind::Text])
            .await
            .map_err(&err)?;
        let stored: std::collections::HashSet<String> = stored
            .into_iter()
            .filter_map(|mut r| match r.pop() {
                Some(Value::Text(Some(id))) => Some(id),
                _ => None,
            })
            .collect();
        let taken: Vec<&KeyRecord> = chunk
            .iter()
            .filter(|r| !stored.contains(r.id.as_str()))
            .collect();
        let mut held = std::collections::HashMap::new();
        if !taken.is_empty() {
            let params: Vec<String> = (1..=taken.len()).map(|i| d.batch_param(i)).collect();
            let sql: Arc<str> = d
                .placeholders(format!(
                    "{} WHERE id IN ({})",
                    self.sql.select,
                    params.join(", ")
                ))
                .into();
            let ids = taken.iter().map(|r| text(r.id.as_str())).collect();
            for record in self.rows(&sql, ids, "reading taken key ids").await? {
                held.insert(record.id, record);
            }
        }
        let mut placed = Vec::with_capacity(chunk.len());
        for record in chunk {
            placed.push(if stored.contains(record.id.as_str()) {
                self.subscribers.changed(&record.id);
                None
            } else if let Some(holder) = held.remove(&record.id) {
                Some(holder)
            } else {
                // Deleted between the two statements: once more, alone.
                insert_or_holder(self, record).await?
            });
        }
        Ok(placed)
    }

    /// The engine of `dialect`; its schema must be migrated already
    /// ([`migrate`]).
    pub(crate) fn new(dialect: impl Dialect) -> Self {
        let sql = Statements::new(&dialect);
        let outbox = outbox::OutboxStatements::new(&dialect);
        Self {
            dialect: Box::new(dialect),
            sql,
            outbox,
            subscribers: Arc::default(),
            every_writer: false,
        }
    }

    /// Says the subscribers hear of every writer's changes (a database
    /// whose triggers report them).
    #[cfg(feature = "postgres")]
    pub(crate) fn reports_every_writer(&mut self) {
        self.every_writer = true;
    }

    /// Who is told of changes.
    #[cfg(feature = "postgres")]
    pub(crate) fn subscribers(&self) -> &Arc<Subscribers> {
        &self.subscribers
    }

    /// What a take that answered `left` means: uses left, or, when nothing
    /// was taken, why, from the key's `remaining` column.
    async fn credit_after(&self, id: &KeyId, left: Option<i64>) -> Result<Credit, StoreError> {
        if let Some(left) = left {
            return Ok(Credit::Consumed {
                remaining: u64::try_from(left).unwrap_or(0),
            });
        }
        let row = self
            .dialect
            .fetch_int(&self.sql.remaining, vec![text(id.as_str())])
            .await
            .map_err(map_err("reading uses left"))?;
        Ok(match row {
            None => Credit::Missing,
            Some(None) => Credit::Unlimited,
            Some(Some(_)) => Credit::Exhausted,
        })
    }

    /// Runs a write that answers one integer row when it changed a row,
    /// with `deliveries` in its transaction if there are any.
    async fn write_then(
        &self,
        sql: &Arc<str>,
        args: Vec<Value>,
        deliveries: &[Delivery],
    ) -> Result<Option<Option<i64>>, sqlx::Error> {
        if deliveries.is_empty() {
            self.dialect.fetch_int(sql, args).await
        } else {
            let then = self.enqueue_all(deliveries);
            self.dialect.fetch_int_then(sql, args, then).await
        }
    }

    async fn rows(
        &self,
        sql: &Arc<str>,
        args: Vec<Value>,
        what: &'static str,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = self.dialect.fetch_rows(sql, args).await;
        records(rows.map_err(map_err(what))?)
    }
}

/// The records of rows of the keys table.
fn records(rows: Vec<Row>) -> Result<Vec<KeyRecord>, StoreError> {
    rows.into_iter().map(Row::into_record).collect()
}

#[async_trait]
impl KeyStore for SqlEngine {
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.insert_with(record, &[]).await
    }

    async fn insert_with(
        &self,
        record: &KeyRecord,
        deliveries: &[Delivery],
    ) -> Result<(), StoreError> {
        let mut values = Row::from_record(record)?.into_values();
        // A new key starts at version 0, whatever the record says.
        values[position("version")] = int(0);
        let done = self.write_then(&self.sql.insert, values, deliveries).await;
        if done.map_err(map_err("inserting a key"))?.is_none() {
            return Err(StoreError::Duplicate(record.id));
        }
        self.subscribers.changed(&record.id);
        Ok(())
    }

    async fn insert_many(
        &self,
        records: &[KeyRecord],
    ) -> Result<Vec<Option<KeyRecord>>, StoreError> {
        let mut placed = Vec::with_capacity(records.len());
        for chunk in records.chunks(INSERT_BATCH) {
            placed.extend(self.insert_chunk(chunk).await?);
        }
        Ok(placed)
    }

    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let args = vec![text(id.as_str())];
        let mut rows = match self.dialect.fetch_rows_now(&self.sql.get, &args) {
            Some(rows) => records(rows)?,
            None => self.rows(&self.sql.get, args, "reading a key").await?,
        };
        Ok(rows.pop())
    }

    async fn update(&self, record: &KeyRecord) -> Result<u64, StoreError> {
        self.update_with(record, &[]).await
    }

    async fn update_with(
        &self,
        record: &KeyRecord,
        deliveries: &[Delivery],
    ) -> Result<u64, StoreError> {
        let row = Row::from_record(record)?;
        let mut args: Vec<Value> = UPDATED.iter().map(|c| row.get(c)).collect();
        args.push(row.get("id"));
        args.push(row.get("version"));
        let err = map_err("updating a key");
        let version = self.write_then(&self.sql.update, args, deliveries).await;
        if let Some(Some(v)) = version.map_err(&err)? {
            self.subscribers.changed(&record.id);
            return u64::try_from(v).map_err(|_| StoreError::Corrupt("negative version".into()));
        }
        let id = vec![row.get("id")];
        let exists = self.dialect.fetch_int(&self.sql.exists, id).await;
        Err(match exists.map_err(&err)? {
            Some(_) => StoreError::Conflict(record.id),
            None => StoreError::NotFound(record.id),
        })
    }

    async fn delete(&self, id: &KeyId) -> Result<bool, StoreError> {
        self.delete_with(id, &[]).await
    }

    async fn delete_with(&self, id: &KeyId, deliveries: &[Delivery]) -> Result<bool, StoreError> {
        let done = self.write_then(&self.sql.delete, vec![text(id.as_str())], deliveries);
        let deleted = done.await.map_err(map_err("deleting a key"))?.is_some();
        if deleted {
            self.subscribers.changed(id);
        }
        Ok(deleted)
    }

    async fn list_by_tenant(
        &self,
        tenant: &str,
        after_id: Option<&KeyId>,
        page: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let args = vec![text(tenant), after(after_id), limit(page)];
        self.rows(&self.sql.list, args, "listing keys").await
    }

    async fn scan(
        &self,
        after_id: Option<&KeyId>,
        page: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let args = vec![after(after_id), limit(page)];
        self.rows(&self.sql.scan, args, "scanning keys").await
    }

    async fn scan_ids(
        &self,
        after_id: Option<&KeyId>,
        page: usize,
    ) -> Result<Vec<KeyId>, StoreError> {
        let args = vec![after(after_id), limit(page)];
        let rows = self
            .dialect
            .fetch_values(&self.sql.scan_ids, args, &[Kind::Text])
            .await;
        let rows = rows.map_err(map_err("scanning key ids"))?;
        rows.into_iter()
            .map(|row| match row.as_slice() {
                [Value::Text(Some(id))] => id
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("invalid key id {id:?}"))),
                _ => Err(StoreError::Corrupt("invalid key id row".into())),
            })
            .collect()
    }

    async fn scan_due(
        &self,
        due: &SweepDue,
        after_id: Option<&KeyId>,
        page: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let args = vec![
            after(after_id),
            time(Some(due.now)),
            time(due.expiring_before),
            time(due.idle_since),
            time(due.ended_before),
            limit(page),
        ];
        let what = "scanning keys due for maintenance";
        self.rows(&self.sql.due, args, what).await
    }

    async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError> {
        let done = self.dialect.record_last_used(batch).await;
        done.map_err(map_err("recording last use"))
    }

    async fn consume_credit(
        &self,
        id: &KeyId,
        cost: u64,
        refill: Option<RefillDue>,
    ) -> Result<Credit, StoreError> {
        let err = map_err("consuming a use");
        // Two statements, each atomic. The refill only fires once per
        // period (it moves last_refill_at), so racing callers cannot
        // refill twice; the take only succeeds while uses are left.
        if let Some(r) = refill {
            let args = vec![
                text(id.as_str()),
                int(to_sql(r.amount)),
                time(Some(r.now)),
                time(Some(r.if_refilled_before)),
            ];
            self.dialect
                .execute(&self.sql.refill, args)
                .await
                .map_err(&err)?;
        }
        let left = self
            .dialect
            .fetch_int(&self.sql.take, vec![text(id.as_str()), int(to_sql(cost))]);
        let left = left.await.map_err(&err)?.flatten();
        self.credit_after(id, left).await
    }

    async fn adjust_credits(&self, id: &KeyId, delta: i64) -> Result<Credit, StoreError> {
        let args = vec![text(id.as_str()), int(delta.max(-i64::MAX))];
        let left = self.dialect.fetch_int(&self.sql.adjust, args).await;
        let left = left.map_err(map_err("moving uses"))?.flatten();
        self.credit_after(id, left).await
    }

    async fn roles(&self) -> Result<Vec<RoleDefinition>, StoreError> {
        let kinds: &'static [Kind] = &[Kind::Text, Kind::Text];
        let rows = self.dialect.fetch_values(&self.sql.roles, vec![], kinds);
        let rows = rows.await.map_err(map_err("reading roles"))?;
        rows.into_iter()
            .map(|row| match row.as_slice() {
                [Value::Text(Some(name)), Value::Text(Some(perms))] => {
                    let permissions = serde_json::from_str(perms).map_err(|_| {
                        StoreError::Corrupt(format!("role {name:?}: invalid permissions"))
                    })?;
                    Ok(RoleDefinition {
                        name: name.clone(),
                        permissions,
                    })
                }
                _ => Err(StoreError::Corrupt("invalid role row".into())),
            })
            .collect()
    }

    async fn put_role(&self, role: &RoleDefinition) -> Result<(), StoreError> {
        let perms = serde_json::to_string(&role.permissions)
            .map_err(|_| StoreError::Corrupt("cannot encode role permissions".into()))?;
        let args = vec![text(&role.name), text(&perms)];
        let done = self.dialect.execute(&self.sql.put_role, args).await;
        done.map_err(map_err("writing a role"))?;
        // Any cached key may hold the role.
        self.subscribers.reset();
        Ok(())
    }

    fn subscribe(&self, listener: std::sync::Weak<dyn ChangeListener>) -> bool {
        self.subscribers.add(listener);
        true
    }

    fn outbox(&self) -> Option<&dyn Outbox> {
        Some(self)
    }

    fn feed_sees_every_writer(&self) -> bool {
        self.every_writer
    }
}

/// Brings a database's schema up to date: each of `migrations` not yet
/// applied, in order, in one transaction that holds off every other
/// migrator.
///
/// # Errors
/// [`StoreError::Unavailable`] if a statement fails; nothing is applied.
pub(crate) async fn migrate(
    dialect: &dyn Dialect,
    migrations: &[(i64, &str)],
    what: &'static str,
) -> Result<(), StoreError> {
    let err = map_err(what);
    let mut tx = dialect.begin_migration().await.map_err(&err)?;
    let applied = tx.applied().await.map_err(&err)?;
    for (version, sql) in migrations {
        if applied.is_some_and(|a| a >= *version) {
            continue;
        }
        tx.apply(*version, sql).await.map_err(&err)?;
    }
    tx.commit().await.map_err(&err)
}

/// Maps a driver error: data it cannot decode is [`StoreError::Corrupt`];
/// everything else (connection, pool, I/O, lock timeouts, server errors)
/// is [`StoreError::Unavailable`] with the driver's error as the source.
pub(crate) fn map_err(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(format!("{what}: {e}")),
        other => StoreError::unavailable(format!("{what} failed"), other),
    }
}
