//! The persisted audit trail: events written to a table of the key
//! database by a background writer, read back newest first, and pruned
//! after the retention period. Written once over a [`Dialect`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tokio::sync::{mpsc, oneshot};

use super::{map_err, Dialect, Kind, Value};
use crate::audit::{AuditEvent, AuditPage, AuditQuery, AuditRecord, AuditSink, AuditTrail};
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;

/// The columns of the audit table after `seq`, in order.
const COLUMNS: [(&str, Kind); 9] = [
    ("at", Kind::Time),
    ("action", Kind::Text),
    ("outcome", Kind::Text),
    ("reason", Kind::Text),
    ("actor", Kind::Text),
    ("tenant", Kind::Text),
    ("key_id", Kind::Text),
    ("key_prefix", Kind::Text),
    ("related_key_id", Kind::Text),
];
/// What a query reads: `seq`, then [`COLUMNS`].
const READ: [Kind; 10] = [
    Kind::Int,
    Kind::Time,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
];
/// Most events one insert statement writes.
const BATCH: usize = 256;
/// How long a query waits for events recorded before it to be written.
const FLUSH_WAIT: StdDuration = StdDuration::from_secs(2);
/// How long the writer waits before writing a failed batch again.
const RETRY_AFTER: StdDuration = StdDuration::from_secs(1);

/// How the persisted audit trail behaves: see
/// [`SqliteStore::audit_trail`](crate::SqliteStore::audit_trail).
///
/// ```
/// use keyward::AuditSettings;
/// let settings = AuditSettings::default().retention(Some(chrono::Duration::days(90)));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct AuditSettings {
    retention: Option<Duration>,
    queue: usize,
    prune_every: StdDuration,
    clock: Arc<dyn Clock>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention: Some(Duration::days(400)),
            queue: 10_000,
            prune_every: StdDuration::from_secs(3600),
            clock: Arc::new(SystemClock),
        }
    }
}

impl AuditSettings {
    /// How long events are kept; `None` keeps them forever. Defaults to
    /// 400 days (a year and its audit, with room to spare).
    pub fn retention(mut self, retention: Option<Duration>) -> Self {
        self.retention = retention;
        self
    }

    /// How many events may wait to be written. While the database is slow
    /// or down and the queue is full, new events are dropped, counted by
    /// [`SqlAuditTrail::dropped`] and logged; verification never waits for
    /// the trail. Defaults to 10,000.
    pub fn queue(mut self, events: usize) -> Self {
        self.queue = events.max(1);
        self
    }

    /// How often events past the retention period are deleted. Defaults
    /// to an hour.
    pub fn prune_every(mut self, every: StdDuration) -> Self {
        self.prune_every = every.max(StdDuration::from_secs(1));
        self
    }

    /// The clock that says which events are past the retention period.
    /// Defaults to the system clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

/// The statements, built once for a dialect.
#[derive(Debug)]
struct Statements {
    select: Arc<str>,
    prune: Arc<str>,
}

/// What the writer is asked to do.
enum Job {
    Write(Box<AuditEvent>),
    /// Answer once every event queued before is written.
    Flush(oneshot::Sender<()>),
}

/// The audit trail in the key database: an [`AuditSink`] for
/// [`KeywardBuilder::audit`](crate::KeywardBuilder::audit) and an
/// [`AuditTrail`] that reads it back, per tenant and per key. Events are
/// queued and written by a background task in batches, so a verification
/// never waits for the database; events past the retention period are
/// deleted hourly. Clones share the queue.
#[derive(Clone)]
pub struct SqlAuditTrail {
    inner: Arc<Shared>,
}

struct Shared {
    db: Arc<dyn Dialect>,
    sql: Statements,
    jobs: mpsc::Sender<Job>,
    dropped: AtomicU64,
    retention: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for SqlAuditTrail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlAuditTrail")
            .field("table", &self.inner.db.audit_table())
            .field("retention", &self.inner.retention)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl SqlAuditTrail {
    /// Starts the writer over `db`, whose audit table is migrated.
    /// Needs a tokio runtime.
    pub(crate) fn start(db: impl Dialect, settings: AuditSettings) -> Self {
        let db: Arc<dyn Dialect> = Arc::new(db);
        let t = db.audit_table();
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        let select = format!(
            "SELECT seq, {} FROM {t} \
             WHERE (?1 IS NULL OR tenant = ?1) \
             AND (?2 IS NULL OR key_id = ?2 OR related_key_id = ?2) \
             AND (?3 IS NULL OR seq < ?3) \
             ORDER BY seq DESC LIMIT ?4",
            names.join(", ")
        );
        let prune = format!("DELETE FROM {t} WHERE at < ?1");
        let sql = Statements {
            select: db.placeholders(select).into(),
            prune: db.placeholders(prune).into(),
        };
        let (jobs, queue) = mpsc::channel(settings.queue);
        let inner = Arc::new(Shared {
            db,
            sql,
            jobs,
            dropped: AtomicU64::new(0),
            retention: settings.retention,
            clock: settings.clock,
        });
        tokio::spawn(write_events(
            Arc::downgrade(&inner),
            queue,
            settings.prune_every,
        ));
        Self { inner }
    }

    /// How many events were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every event recorded before the call is written (or
    /// the writer has stopped). Call it before shutting down.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.inner.jobs.send(Job::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Deletes the events past the retention period now; how many.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database cannot be written.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        self.inner.prune().await
    }
}

impl Shared {
    async fn prune(&self) -> Result<u64, StoreError> {
        let Some(retention) = self.retention else {
            return Ok(0);
        };
        let cutoff = self
            .clock
            .now()
            .checked_sub_signed(retention)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.db
            .execute(&self.sql.prune, vec![Value::Time(Some(cutoff))])
            .await
            .map_err(map_err("pruning the audit trail"))
    }

    async fn insert(&self, batch: &[Box<AuditEvent>]) -> Result<(), StoreError> {
        let t = self.db.audit_table();
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        let mut rows = Vec::with_capacity(batch.len());
        let mut args = Vec::with_capacity(batch.len() * COLUMNS.len());
        for event in batch {
            let first = args.len() + 1;
            let params: Vec<String> = (first..first + COLUMNS.len())
                .map(|n| format!("?{n}"))
                .collect();
            rows.push(format!("({})", params.join(", ")));
            args.extend(values_of(event));
        }
        let sql = format!(
            "INSERT INTO {t} ({}) VALUES {}",
            names.join(", "),
            rows.join(", ")
        );
        let sql: Arc<str> = self.db.placeholders(sql).into();
        self.db
            .execute(&sql, args)
            .await
            .map(|_| ())
            .map_err(map_err("writing the audit trail"))
    }
}

/// The columns of `event`, in [`COLUMNS`] order.
fn values_of(event: &AuditEvent) -> [Value; 9] {
    let text = |s: Option<&str>| Value::Text(s.map(str::to_string));
    [
        Value::Time(Some(event.at)),
        text(Some(event.action.as_str())),
        text(Some(event.outcome.as_str())),
        text(event.outcome.reason()),
        text(event.actor.as_deref()),
        text(event.tenant.as_deref()),
        text(event.key_id.as_ref().map(|k| k.as_str())),
        text(event.key_prefix.as_ref().map(|p| p.as_str())),
        text(event.related_key_id.as_ref().map(|k| k.as_str())),
    ]
}

/// A row of [`READ`] as a record.
fn record_of(row: Vec<Value>) -> Result<AuditRecord, StoreError> {
    let corrupt = || StoreError::Corrupt("an audit row of an unexpected shape".into());
    let mut it = row.into_iter();
    let seq = match it.next() {
        Some(Value::Int(Some(n))) => u64::try_from(n).map_err(|_| corrupt())?,
        _ => return Err(corrupt()),
    };
    let at = match it.next() {
        Some(Value::Time(Some(t))) => t,
        _ => return Err(corrupt()),
    };
    let mut text = || match it.next() {
        Some(Value::Text(t)) => Ok(t),
        _ => Err(corrupt()),
    };
    Ok(AuditRecord {
        seq,
        at,
        action: text()?.ok_or_else(corrupt)?,
        outcome: text()?.ok_or_else(corrupt)?,
        reason: text()?,
        actor: text()?,
        tenant: text()?,
        key_id: text()?,
        key_prefix: text()?,
        related_key_id: text()?,
    })
}

/// The writer: takes up to [`BATCH`] queued events at a time and writes
/// them in one statement, retrying a failed batch until it is written;
/// prunes on a timer. Ends when every [`SqlAuditTrail`] is gone and the
/// queue is empty.
async fn write_events(
    trail: std::sync::Weak<Shared>,
    mut queue: mpsc::Receiver<Job>,
    prune_every: StdDuration,
) {
    let mut prune = tokio::time::interval(prune_every);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<Box<AuditEvent>> = Vec::with_capacity(BATCH);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        tokio::select! {
            job = queue.recv() => {
                let Some(job) = job else { return };
                take(job, &mut batch, &mut waiting);
                while batch.len() < BATCH {
                    match queue.try_recv() {
                        Ok(job) => take(job, &mut batch, &mut waiting),
                        Err(_) => break,
                    }
                }
            }
            _ = prune.tick() => {
                let Some(shared) = trail.upgrade() else { return };
                if let Err(e) = shared.prune().await {
                    tracing::warn!(target: "keyward::audit", error = %e, "could not prune the audit trail");
                }
                continue;
            }
        }
        while !batch.is_empty() {
            let Some(shared) = trail.upgrade() else {
                return;
            };
            match shared.insert(&batch).await {
                Ok(()) => batch.clear(),
                Err(e) => {
                    tracing::warn!(target: "keyward::audit", error = %e, events = batch.len(), "could not write audit events; retrying");
                    drop(shared);
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

fn take(job: Job, batch: &mut Vec<Box<AuditEvent>>, waiting: &mut Vec<oneshot::Sender<()>>) {
    match job {
        Job::Write(event) => batch.push(event),
        Job::Flush(done) => waiting.push(done),
    }
}

impl AuditSink for SqlAuditTrail {
    fn record(&self, event: &AuditEvent) {
        match self
            .inner
            .jobs
            .try_send(Job::Write(Box::new(event.clone())))
        {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // The first, then every thousandth: a flood must not
                // become a flood of logs.
                if dropped % 1000 == 1 {
                    tracing::error!(target: "keyward::audit", dropped, "the audit queue is full; audit events are being dropped");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[async_trait]
impl AuditTrail for SqlAuditTrail {
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        // Read what this instance recorded before the call.
        let _ = tokio::time::timeout(FLUSH_WAIT, self.flush()).await;
        let int = |n: Option<u64>| Value::Int(n.map(|n| i64::try_from(n).unwrap_or(i64::MAX)));
        let size = query.page_size();
        let args = vec![
            Value::Text(query.tenant_filter().map(str::to_string)),
            Value::Text(query.key_filter().map(|k| k.as_str().to_string())),
            int(query.before_filter()),
            int(Some(size as u64 + 1)),
        ];
        let rows = self
            .inner
            .db
            .fetch_values(&self.inner.sql.select, args, &READ)
            .await
            .map_err(map_err("reading the audit trail"))?;
        let records = rows
            .into_iter()
            .map(record_of)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AuditPage::from_newest(records.into_iter(), query))
    }
}
