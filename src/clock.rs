//! Injectable time.
//!
//! Every rule that depends on time (expiry, last-used coalescing, and the
//! policies built on them) asks a [`Clock`], never the system directly, so
//! tests move time with a [`ManualClock`] instead of sleeping.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

/// A source of the current time.
///
/// Implementations must be cheap: [`Keyward::verify`](crate::Keyward::verify)
/// reads the clock once per call.
///
/// ```
/// use chrono::{DateTime, TimeZone, Utc};
/// use keyward::Clock;
///
/// /// A clock frozen at one instant.
/// #[derive(Debug)]
/// struct Frozen(DateTime<Utc>);
///
/// impl Clock for Frozen {
///     fn now(&self) -> DateTime<Utc> {
///         self.0
///     }
/// }
///
/// let clock = Frozen(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
/// assert_eq!(clock.now().to_rfc3339(), "2030-01-01T00:00:00+00:00");
/// ```
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock. The default clock of [`Keyward`](crate::Keyward).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to: for tests.
///
/// Clones share the same time, so a test keeps one handle and gives a clone
/// to [`KeywardBuilder::clock`](crate::KeywardBuilder::clock).
///
/// ```
/// use chrono::Duration;
/// use keyward::{Clock, ManualClock};
///
/// let clock = ManualClock::default();
/// let start = clock.now();
/// clock.advance(Duration::days(90));
/// assert_eq!(clock.now() - start, Duration::days(90));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    // Nanoseconds since the Unix epoch; an atomic so reads never lock.
    nanos: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock stopped at `at`.
    ///
    /// Instants outside the range representable in nanoseconds (years
    /// 1678–2262) are clamped to that range.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            nanos: Arc::new(AtomicI64::new(to_nanos(at))),
        }
    }

    /// Moves the clock forward (or backward, for a negative duration).
    pub fn advance(&self, by: Duration) {
        let by = by.num_nanoseconds().unwrap_or(if by < Duration::zero() {
            i64::MIN
        } else {
            i64::MAX
        });
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        self.nanos.store(to_nanos(at), Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    /// A clock stopped at 2030-01-01T00:00:00Z, a fixed instant so that test
    /// output is reproducible.
    fn default() -> Self {
        Self::new(DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default())
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

fn to_nanos(at: DateTime<Utc>) -> i64 {
    at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::default();
        let b = a.clone();
        a.advance(Duration::minutes(5));
        assert_eq!(a.now(), b.now());
        let t = DateTime::from_timestamp(2_000_000_000, 0).expect("valid");
        b.set(t);
        assert_eq!(a.now(), t);
    }

    #[test]
    fn advance_saturates_instead_of_overflowing() {
        let c = ManualClock::default();
        c.advance(Duration::MAX);
        assert_eq!(c.now(), DateTime::from_timestamp_nanos(i64::MAX));
    }
}
