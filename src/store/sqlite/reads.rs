//! Point reads of a key on the calling thread. SQLite answers a
//! primary-key read from its page cache in microseconds; sqlx hands every
//! command to a connection's worker thread and back, which costs several
//! times the read. A few read-only connections (rusqlite, over the same
//! bundled SQLite) answer [`KeyStore::get`](crate::store::KeyStore::get),
//! the read of a cold verify, without that hand-off. Whatever they cannot
//! answer at once (no free connection, SQLite busy, any error) goes
//! through the pool as before, which reports it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::DateTime;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OpenFlags};

use crate::store::sql::{Kind, Row, Value, COLUMNS};

/// How many read connections a store opens at most: concurrent cold
/// reads past this go through the pool.
const MAX_READERS: usize = 4;

/// A read slower than this (a disk that is slow or busy, a page cache
/// under pressure) blocks the calling thread too long: reads go through
/// the pool for [`PAUSE`] after it.
const SLOW_READ: Duration = Duration::from_millis(1);

/// How long reads go through the pool after a slow or failed read.
const PAUSE: Duration = Duration::from_secs(10);

/// The read-only connections of one database file.
#[derive(Debug)]
pub(super) struct Reads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Connections open, idle or in use.
    open: AtomicUsize,
    /// The start of [`Reads::paused_until`]'s clock.
    epoch: Instant,
    /// Microseconds since `epoch` before which reads go through the pool.
    paused_until: AtomicU64,
}

impl Reads {
    /// Read connections to the database file at `path`, which the pool
    /// has opened: the path made absolute, so that every connection opens
    /// the file the pool did, and one connection opened now, so that a
    /// file that cannot be read this way shows at once. `None`, with a
    /// warning, if it cannot: the store reads through the pool.
    pub(super) fn open(path: &Path) -> Option<Self> {
        let opened = std::fs::canonicalize(path)
            .map_err(|e| e.to_string())
            .and_then(|path| Ok((connect(&path).map_err(|e| e.to_string())?, path)));
        match opened {
            Ok((conn, path)) => Some(Self {
                path,
                idle: Mutex::new(vec![conn]),
                open: AtomicUsize::new(1),
                epoch: Instant::now(),
                paused_until: AtomicU64::new(0),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "SQLite read connections unavailable; keys are read through the pool");
                None
            }
        }
    }

    /// The rows `sql` (a `SELECT` of every column of the keys table, by
    /// primary key) answers with `args`, in [`COLUMNS`] order; `None` when
    /// no connection is free, reads are paused, or the read fails, for the
    /// pool to do it (and report what went wrong).
    ///
    /// The read runs on the calling thread and is not bounded by the
    /// store timeout: a read slower than [`SLOW_READ`], or any failure
    /// other than a row this version cannot decode, sends reads to the
    /// pool for [`PAUSE`].
    pub(super) fn rows(&self, sql: &str, args: &[Value]) -> Option<Vec<Row>> {
        if self.since_epoch() < self.paused_until.load(Ordering::Relaxed) {
            return None;
        }
        let reader = self.take()?;
        let started = Instant::now();
        let rows = read(reader.conn(), sql, args);
        let took = started.elapsed();
        match rows {
            Ok(rows) => {
                if took > SLOW_READ {
                    self.pause(&format!("a key read took {} us", took.as_micros()));
                }
                self.idle().push(reader.keep());
                Some(rows)
            }
            // The row, not the connection: the pool reads it and reports.
            Err(e) if undecodable(&e) => {
                self.idle().push(reader.keep());
                None
            }
            // `reader` is dropped: a connection that failed is not reused.
            Err(e) => {
                self.pause(&e.to_string());
                None
            }
        }
    }

    fn since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Reads go through the pool for [`PAUSE`]; said once per pause.
    fn pause(&self, why: &str) {
        let until = self.since_epoch().saturating_add(PAUSE.as_micros() as u64);
        let before = self.paused_until.swap(until, Ordering::Relaxed);
        if before <= self.since_epoch() {
            tracing::warn!(
                reason = why,
                pause_secs = PAUSE.as_secs(),
                "SQLite key reads on the calling thread paused; reading through the pool"
            );
        }
    }

    /// An idle connection, or a new one while fewer than
    /// [`MAX_READERS`] are open.
    fn take(&self) -> Option<Reader<'_>> {
        if let Some(conn) = self.idle().pop() {
            return Some(Reader::new(self, conn));
        }
        let opened = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_READERS).then_some(n + 1)
            });
        opened.ok()?;
        match connect(&self.path) {
            Ok(conn) => Some(Reader::new(self, conn)),
            Err(e) => {
                self.open.fetch_sub(1, Ordering::Relaxed);
                self.pause(&e.to_string());
                None
            }
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // The list holds no invariant a panic could break.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection taken from [`Reads`]: counted as open until it is
/// given back ([`Reader::keep`]) or dropped, whatever happens between.
struct Reader<'r> {
    reads: &'r Reads,
    conn: Option<Connection>,
}

impl<'r> Reader<'r> {
    fn new(reads: &'r Reads, conn: Connection) -> Self {
        Self {
            reads,
            conn: Some(conn),
        }
    }

    fn conn(&self) -> &Connection {
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("kept once, at the end"))
    }

    /// The connection, to be put back among the idle ones.
    fn keep(mut self) -> Connection {
        self.conn
            .take()
            .unwrap_or_else(|| unreachable!("kept once"))
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.reads.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A failure of the row read, not of the connection: a value of a type or
/// range this version does not read.
fn undecodable(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
    )
}

/// A read-only connection. A reader of a WAL database is not held up by
/// writers; where SQLite would wait for a lock (another process's crash
/// being recovered) it answers busy at once and the pool reads instead,
/// with its timeout. (SQLite may still retry briefly inside a read when
/// the WAL index is being rebuilt; [`SLOW_READ`] catches a read that
/// took long.)
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::ZERO)?;
    Ok(conn)
}

fn read(conn: &Connection, sql: &str, args: &[Value]) -> rusqlite::Result<Vec<Row>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(args.iter().map(param)))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(COLUMNS.len());
        for (i, (_, kind)) in COLUMNS.iter().enumerate() {
            values.push(match kind {
                Kind::Text | Kind::Json => Value::Text(row.get(i)?),
                Kind::Bytes => Value::Bytes(row.get(i)?),
                Kind::Int => Value::Int(row.get(i)?),
                Kind::Time => Value::Time(match row.get::<_, Option<i64>>(i)? {
                    // Microseconds, as `super::time` reads them; out of
                    // range, the pool's read reports the row as corrupt.
                    Some(us) => Some(
                        DateTime::from_timestamp_micros(us)
                            .ok_or(rusqlite::Error::IntegralValueOutOfRange(i, us))?,
                    ),
                    None => None,
                }),
            });
        }
        out.push(Row::from_values(values));
    }
    Ok(out)
}

/// A bound value as SQLite stores it (instants as microseconds).
fn param(value: &Value) -> Sql {
    match value {
        Value::Text(Some(t)) => Sql::Text(t.clone()),
        Value::Bytes(Some(b)) => Sql::Blob(b.clone()),
        Value::Int(Some(n)) => Sql::Integer(*n),
        Value::Time(Some(t)) => Sql::Integer(t.timestamp_micros()),
        Value::Text(None) | Value::Bytes(None) | Value::Int(None) | Value::Time(None) => Sql::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that is not a database: no read connections (the store
    /// reads through its pool); a connection that fails mid-way pauses
    /// the reads, and gives its place back.
    #[test]
    fn failures_leave_reads_to_the_pool() {
        let dir = std::env::temp_dir().join(format!("keyward-readers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        assert!(Reads::open(&dir.join("absent.db")).is_none());

        let path = dir.join("keys.db");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY)")
            .expect("table");
        let reads = Reads::open(&path).expect("opens");
        // A statement the connection cannot prepare: a failure of the
        // connection's kind, not of a row.
        assert!(reads.rows("SELECT nothing FROM nowhere", &[]).is_none());
        assert_eq!(
            reads.open.load(Ordering::Relaxed),
            0,
            "the failed one is closed"
        );
        assert!(reads.since_epoch() < reads.paused_until.load(Ordering::Relaxed));
        // Paused: not even a good statement is read here.
        assert!(reads.rows("SELECT id FROM t", &[]).is_none());
        assert_eq!(reads.open.load(Ordering::Relaxed), 0);
        std::fs::remove_dir_all(&dir).ok();
    }
}
