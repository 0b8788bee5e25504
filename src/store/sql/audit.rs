//! The persisted audit trail: events written to a table of the key
//! database by a background writer, read back newest first, and pruned
//! after the retention period. Written once over a [`Dialect`].

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tokio::sync::{mpsc, oneshot};

use super::{map_err, Dialect, Kind, Value};
use crate::audit::{
    AuditAction, AuditEvent, AuditPage, AuditQuery, AuditRecord, AuditSink, AuditTrail,
};
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;

/// The columns of the audit table after `seq`, in order.
const COLUMNS: [&str; 10] = [
    "at",
    "action",
    "outcome",
    "reason",
    "actor",
    "tenant",
    "key_id",
    "key_prefix",
    "related_key_id",
    "detail",
];
/// What a query reads: `seq`, then [`COLUMNS`].
const READ: [Kind; 11] = [
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
    Kind::Text,
];
/// Most events one insert statement writes.
const BATCH: usize = 256;
/// How long a query waits for events recorded before it to be written.
const FLUSH_WAIT: StdDuration = StdDuration::from_secs(2);
/// How long [`SqlAuditTrail::flush`] waits at most.
const FLUSH_LIMIT: StdDuration = StdDuration::from_secs(5);
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
    refusals_per_second: u32,
    prune_every: StdDuration,
    clock: Arc<dyn Clock>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention: Some(Duration::days(400)),
            queue: 10_000,
            refusals_per_second: 20,
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

    /// How many refused verifications may wait to be written. While the
    /// database is slow or down and that many wait, further refusals are
    /// dropped, counted by [`SqlAuditTrail::dropped`] and logged;
    /// verification never waits for the trail. Management events are
    /// never dropped for want of room: they come from authenticated
    /// managers, not from anyone with a made-up token. Defaults to 10,000.
    pub fn queue(mut self, events: usize) -> Self {
        self.queue = events.max(1);
        self
    }

    /// How many refused verifications a second are kept; more in the same
    /// second are dropped and counted. Only refusals of a key whose secret
    /// was proven (revoked, expired, rate-limited, …: they name the key's
    /// tenant) are kept at all; an unknown key or a wrong secret costs no
    /// row, so a flood of made-up tokens cannot fill the database.
    /// Defaults to 20.
    pub fn refusals_per_second(mut self, refusals: u32) -> Self {
        self.refusals_per_second = refusals;
        self
    }

    /// How often events past the retention period are deleted. Defaults
    /// to an hour.
    pub fn prune_every(mut self, every: StdDuration) -> Self {
        self.prune_every = every.max(StdDuration::from_secs(1));
        self
    }

    /// The clock that says which events are past the retention period,
    /// and which second a refusal falls in. Defaults to the system clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
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
/// deleted hourly. Clones share the queue; the writer stops once every
/// clone is gone and the queue is written.
#[derive(Clone)]
pub struct SqlAuditTrail {
    inner: Arc<Shared>,
}

struct Shared {
    writer: Arc<Writer>,
    /// Unbounded: management events are never dropped; refusals are
    /// bounded by `refusals_waiting`.
    jobs: mpsc::UnboundedSender<Job>,
    refusals_waiting: Arc<AtomicUsize>,
    queue: usize,
    refusals_per_second: u32,
    /// The current second and the refusals kept in it.
    second: Mutex<(i64, u32)>,
    dropped: Arc<AtomicU64>,
}

/// What the writer needs: the database and the retention rule.
struct Writer {
    db: Arc<dyn Dialect>,
    prune: Arc<str>,
    retention: Option<Duration>,
    clock: Arc<dyn Clock>,
    /// Events the database refused outright (shared with the trail).
    lost: Arc<AtomicU64>,
}

impl fmt::Debug for SqlAuditTrail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlAuditTrail")
            .field("table", &self.inner.writer.db.audit_table())
            .field("retention", &self.inner.writer.retention)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl SqlAuditTrail {
    /// Starts the writer over `db`, whose audit table is migrated.
    /// Needs a tokio runtime.
    pub(crate) fn start(db: impl Dialect, settings: AuditSettings) -> Self {
        let db: Arc<dyn Dialect> = Arc::new(db);
        let prune = format!("DELETE FROM {} WHERE at < ?1", db.audit_table());
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Arc::new(Writer {
            prune: db.placeholders(prune).into(),
            db,
            retention: settings.retention,
            clock: settings.clock,
            lost: dropped.clone(),
        });
        let (jobs, queue) = mpsc::unbounded_channel();
        let refusals_waiting = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_events(
            writer.clone(),
            queue,
            refusals_waiting.clone(),
            settings.prune_every,
        ));
        Self {
            inner: Arc::new(Shared {
                writer,
                jobs,
                refusals_waiting,
                queue: settings.queue,
                refusals_per_second: settings.refusals_per_second,
                second: Mutex::new((i64::MIN, 0)),
                dropped,
            }),
        }
    }

    /// How many events were not kept: refusals past the queue or the
    /// per-second cap, and events the database refused outright.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every event recorded before the call is written, for 5
    /// seconds at most (the database may be down); whether they were.
    /// Call it before shutting down.
    pub async fn flush(&self) -> bool {
        let (done, written) = oneshot::channel();
        if self.inner.jobs.send(Job::Flush(done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(FLUSH_LIMIT, written).await, Ok(Ok(())))
    }

    /// Deletes the events past the retention period now; how many.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database cannot be written.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        self.inner.writer.prune().await
    }

    /// Whether a refused verification is kept: it names a tenant, and
    /// this second's allowance is not spent.
    fn keeps_refusal(&self, event: &AuditEvent) -> bool {
        if event.tenant.is_none() {
            return false;
        }
        let now = self.inner.writer.clock.now().timestamp();
        let mut second = self
            .inner
            .second
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if second.0 != now {
            *second = (now, 0);
        }
        if second.1 >= self.inner.refusals_per_second {
            return false;
        }
        second.1 += 1;
        true
    }
}

impl Writer {
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
            .execute(&self.prune, vec![Value::Time(Some(cutoff))])
            .await
            .map_err(map_err("pruning the audit trail"))
    }

    async fn insert(&self, batch: &[AuditEvent]) -> Result<(), sqlx::Error> {
        let mut rows = Vec::with_capacity(batch.len());
        let mut args = Vec::with_capacity(batch.len() * COLUMNS.len());
        for event in batch {
            let first = args.len() + 1;
            let params: Vec<String> = (first..first + COLUMNS.len())
                .map(|n| self.db.batch_param(n))
                .collect();
            rows.push(format!("({})", params.join(", ")));
            args.extend(values_of(event));
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.db.audit_table(),
            COLUMNS.join(", "),
            rows.join(", ")
        );
        let sql: Arc<str> = self.db.placeholders(sql).into();
        self.db.execute(&sql, args).await.map(|_| ())
    }

    /// Writes `batch`, however long the database is away. Events the
    /// database refuses outright (not an outage: a value it will never
    /// take) are then written one by one, and those it still refuses are
    /// dropped, counted and logged, so that one bad event cannot stop the
    /// trail.
    async fn write(&self, batch: &[AuditEvent]) {
        loop {
            match self.insert(batch).await {
                Ok(()) => return,
                Err(e) if refused(&e) => break,
                Err(e) => {
                    tracing::warn!(target: "keyward::audit", error = %e, events = batch.len(), "could not write audit events; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
        for event in batch {
            loop {
                match self.insert(std::slice::from_ref(event)).await {
                    Ok(()) => break,
                    Err(e) if refused(&e) => {
                        self.lost.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(target: "keyward::audit", error = %e, action = event.action.as_str(), "the database refused an audit event; it is dropped");
                        break;
                    }
                    Err(_) => tokio::time::sleep(RETRY_AFTER).await,
                }
            }
        }
    }
}

/// Whether the database refused the statement itself (it will refuse it
/// again), rather than being unreachable.
fn refused(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Database(_) | sqlx::Error::Encode(_) | sqlx::Error::TypeNotFound { .. }
    )
}

/// The columns of `event`, in [`COLUMNS`] order.
fn values_of(event: &AuditEvent) -> [Value; 10] {
    // PostgreSQL takes no U+0000 in text; a host's actor name could hold
    // one.
    let text = |s: Option<&str>| Value::Text(s.map(|s| s.replace('\0', "")));
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
        text(event.detail.as_deref()),
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
        detail: text()?,
    })
}

/// The writer: takes up to [`BATCH`] queued events at a time and writes
/// them in one statement; prunes on a timer. Ends when every
/// [`SqlAuditTrail`] is gone and every queued event is written.
async fn write_events(
    writer: Arc<Writer>,
    mut queue: mpsc::UnboundedReceiver<Job>,
    refusals_waiting: Arc<AtomicUsize>,
    prune_every: StdDuration,
) {
    let mut prune = tokio::time::interval(prune_every);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(BATCH);
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
                if let Err(e) = writer.prune().await {
                    tracing::warn!(target: "keyward::audit", error = %e, "could not prune the audit trail");
                }
                continue;
            }
        }
        if !batch.is_empty() {
            writer.write(&batch).await;
            let refusals = batch
                .iter()
                .filter(|e| e.action == AuditAction::Verify)
                .count();
            refusals_waiting.fetch_sub(refusals, Ordering::Relaxed);
            batch.clear();
        }
        crate::telemetry::audit_queue(queue.len());
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

fn take(job: Job, batch: &mut Vec<AuditEvent>, waiting: &mut Vec<oneshot::Sender<()>>) {
    match job {
        Job::Write(event) => batch.push(*event),
        Job::Flush(done) => waiting.push(done),
    }
}

impl AuditSink for SqlAuditTrail {
    fn record(&self, event: &AuditEvent) {
        if event.action == AuditAction::Verify {
            if !self.keeps_refusal(event) {
                if event.tenant.is_some() {
                    self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                    crate::telemetry::audit_dropped();
                }
                return;
            }
            let waiting = self.inner.refusals_waiting.fetch_add(1, Ordering::Relaxed);
            if waiting >= self.inner.queue {
                self.inner.refusals_waiting.fetch_sub(1, Ordering::Relaxed);
                let dropped = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                crate::telemetry::audit_dropped();
                // The first, then every thousandth: a flood must not
                // become a flood of logs.
                if dropped % 1000 == 1 {
                    tracing::error!(target: "keyward::audit", dropped, "the audit queue is full; refused verifications are being dropped");
                }
                return;
            }
        }
        if self
            .inner
            .jobs
            .send(Job::Write(Box::new(event.clone())))
            .is_err()
        {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            crate::telemetry::audit_dropped();
        }
    }
}

#[async_trait]
impl AuditTrail for SqlAuditTrail {
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        // Read what this instance recorded before the call.
        let _ = tokio::time::timeout(FLUSH_WAIT, self.flush()).await;
        let db = &self.inner.writer.db;
        // Only the filters asked for, so that each query can use its index.
        let mut conditions = Vec::new();
        let mut args = Vec::new();
        if let Some(tenant) = query.tenant_filter() {
            args.push(Value::Text(Some(tenant.to_string())));
            conditions.push(format!("tenant = ?{}", args.len()));
        }
        if let Some(key) = query.key_filter() {
            args.push(Value::Text(Some(key.as_str().to_string())));
            let n = args.len();
            conditions.push(format!("(key_id = ?{n} OR related_key_id = ?{n})"));
        }
        if let Some(before) = query.before_filter() {
            args.push(Value::Int(Some(i64::try_from(before).unwrap_or(i64::MAX))));
            conditions.push(format!("seq < ?{}", args.len()));
        }
        let size = query.page_size();
        args.push(Value::Int(Some(
            i64::try_from(size + 1).unwrap_or(i64::MAX),
        )));
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT seq, {} FROM {} {filter} ORDER BY seq DESC LIMIT ?{}",
            COLUMNS.join(", "),
            db.audit_table(),
            args.len()
        );
        let sql: Arc<str> = db.placeholders(sql).into();
        let rows = db
            .fetch_values(&sql, args, &READ)
            .await
            .map_err(map_err("reading the audit trail"))?;
        let records = rows
            .into_iter()
            .map(record_of)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AuditPage::from_newest(records.into_iter(), query))
    }
}
