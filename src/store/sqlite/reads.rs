//! Point reads of a key on the calling thread. SQLite answers a
//! primary-key read from its page cache in microseconds; sqlx hands every
//! command to a connection's worker thread and back, which costs several
//! times the read. A few read-only connections (rusqlite, over the same
//! bundled SQLite) answer [`KeyStore::get`](crate::store::KeyStore::get),
//! the read of a cold verify, without that hand-off. Whatever they cannot
//! answer at once (no free connection, SQLite busy, any error) goes
//! through the pool as before, which reports it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::DateTime;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OpenFlags};

use crate::store::sql::{Kind, Row, Value, COLUMNS};

/// How many read connections a store opens at most: concurrent cold
/// reads past this go through the pool.
const MAX_READERS: usize = 4;

/// The read-only connections of one database file.
#[derive(Debug)]
pub(super) struct Reads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Connections open, idle or in use.
    open: AtomicUsize,
}

impl Reads {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
        }
    }

    /// The rows `sql` (a `SELECT` of every column of the keys table, by
    /// primary key) answers with `args`, in [`COLUMNS`] order; `None` when
    /// no connection is free or the read fails, for the pool to do it.
    pub(super) fn rows(&self, sql: &str, args: &[Value]) -> Option<Vec<Row>> {
        let conn = self.take()?;
        match read(&conn, sql, args) {
            Ok(rows) => {
                self.idle().push(conn);
                Some(rows)
            }
            Err(e) => {
                // A connection that failed is not reused.
                self.open.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "SQLite read connection failed; reading through the pool");
                None
            }
        }
    }

    /// An idle connection, or a new one while fewer than
    /// [`MAX_READERS`] are open.
    fn take(&self) -> Option<Connection> {
        if let Some(conn) = self.idle().pop() {
            return Some(conn);
        }
        let opened = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_READERS).then_some(n + 1)
            });
        opened.ok()?;
        match connect(&self.path) {
            Ok(conn) => Some(conn),
            Err(e) => {
                self.open.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "cannot open a SQLite read connection");
                None
            }
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // The list holds no invariant a panic could break.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A read-only connection that never waits: a reader of a WAL database
/// is not held up by writers, and where SQLite would wait (recovery of
/// another process's crash) the pool reads instead, with its timeout.
fn connect(path: &PathBuf) -> rusqlite::Result<Connection> {
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
