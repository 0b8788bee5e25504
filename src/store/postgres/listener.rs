//! The change feed: one `LISTEN` connection per store, telling the
//! store's subscribers of every change any writer makes, and to forget
//! everything whenever the connection was lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use sqlx::AssertSqlSafe;
use tokio::sync::oneshot;

use crate::store::Subscribers;

/// The channel every keyward table notifies on; the payload is
/// `schema:id`.
pub(super) const CHANNEL: &str = "keyward_keys";

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
pub(super) async fn listen(
    pool: PgPool,
    schema: String,
    subscribers: Weak<Subscribers>,
    mut stop: oneshot::Receiver<()>,
) {
    // However this ends (stopped, the pool closed, the task dropped with
    // its runtime), caches stop trusting the feed.
    let _lost = FeedLost(subscribers.clone());
    let prefix = format!("{schema}:");
    // The schema name is checked (no quotes possible).
    let ping_sql: Arc<str> = format!("SELECT pg_notify('{CHANNEL}', '{schema}:~ping')").into();
    let listened = AtomicBool::new(false);
    let mut backoff = Duration::from_millis(100);
    loop {
        listened.store(false, Ordering::Relaxed);
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
            r = session(&pool, &prefix, &subscribers, &listened) => r,
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
                    s.feed(false);
                    s.reset();
                }
            }
        }
        if listened.load(Ordering::Relaxed) {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One listening connection, until it fails, falls silent, or nobody
/// subscribes any more (`Ok`). Sets `listened` once it listens.
async fn session(
    pool: &PgPool,
    prefix: &str,
    subscribers: &Weak<Subscribers>,
    listened: &AtomicBool,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    listened.store(true, Ordering::Relaxed);
    match subscribers.upgrade() {
        Some(s) => {
            s.reset();
            s.feed(true);
        }
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
            Some(n) => match n.payload().strip_prefix(prefix) {
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
}

/// Tells the subscribers, when the listener ends, that changes are no
/// longer reported: caches fall back to their time limit.
struct FeedLost(Weak<Subscribers>);

impl Drop for FeedLost {
    fn drop(&mut self) {
        if let Some(s) = self.0.upgrade() {
            s.feed(false);
            s.reset();
        }
    }
}
