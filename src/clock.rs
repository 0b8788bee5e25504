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

    /// The current instant in microseconds since the Unix epoch: what
    /// [`Keyward::verify`](crate::Keyward::verify) reads, once per call.
    ///
    /// The default converts [`Clock::now`]. Override it when the clock can
    /// answer more cheaply; it must agree with `now` to within a few
    /// milliseconds.
    fn now_micros(&self) -> i64 {
        self.now().timestamp_micros()
    }
}

/// The system's wall clock. The default clock of [`Keyward`](crate::Keyward).
///
/// [`Clock::now`] reads the precise wall clock. [`Clock::now_micros`], which
/// verification reads, is coarse: the operating system's coarse monotonic
/// clock (resolution 1–4 ms on Linux, where a read costs a few nanoseconds
/// instead of 25–40) plus the wall-clock offset, re-read every 100 ms. It
/// stays within the coarse clock's resolution of the precise clock, so
/// expiry and rate limits are decided to within a few milliseconds; for up
/// to 100 ms after the wall clock is stepped, or after a resume from
/// suspend (which the monotonic clock does not count), it may lag by the
/// step. On platforms without a monotonic coarse clock (Unix other than
/// Linux, Android, macOS, FreeBSD and DragonFly) it reads the wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn now_micros(&self) -> i64 {
        if coarse::MONOTONIC {
            coarse::now_micros()
        } else {
            coarse::wall_micros()
        }
    }
}

/// The coarse wall clock behind [`SystemClock::now_micros`].
mod coarse {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::OnceLock;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Whether coarsetime reads a monotonic clock here. Elsewhere it reads
    /// `gettimeofday`, which is not monotonic: a backward step would
    /// freeze the offset scheme, so the wall clock is read instead.
    pub(super) const MONOTONIC: bool = cfg!(any(
        windows,
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd",
        target_os = "dragonfly"
    ));

    /// How often the wall-clock offset is re-read, in microseconds: picks
    /// up steps of the wall clock (an administrator, NTP) and time spent
    /// suspended, which the monotonic clock does not count. One precise
    /// read per 100 ms costs nothing measurable.
    const REBASE_US: i64 = 100_000;

    static ORIGIN: OnceLock<coarsetime::Instant> = OnceLock::new();
    /// Wall clock minus coarse monotonic time, in microseconds.
    static OFFSET: AtomicI64 = AtomicI64::new(i64::MIN);
    /// Coarse monotonic time of the last rebase, in microseconds.
    static REBASED: AtomicI64 = AtomicI64::new(i64::MIN);

    fn monotonic_micros() -> i64 {
        let origin = *ORIGIN.get_or_init(coarsetime::Instant::now_without_cache_update);
        // Not `Instant::now`: it also writes a shared cached value, a
        // contended cache line when several threads verify.
        let elapsed = coarsetime::Instant::now_without_cache_update().duration_since(origin);
        i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
    }

    pub(super) fn wall_micros() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or_else(
            |e| -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
            |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        )
    }

    pub(super) fn now_micros() -> i64 {
        let mono = monotonic_micros();
        let offset = OFFSET.load(Ordering::Relaxed);
        if offset == i64::MIN || mono.saturating_sub(REBASED.load(Ordering::Relaxed)) >= REBASE_US {
            // Racing rebases each store a valid offset.
            let offset = wall_micros().saturating_sub(mono);
            OFFSET.store(offset, Ordering::Relaxed);
            REBASED.store(mono, Ordering::Relaxed);
            return mono.saturating_add(offset);
        }
        mono.saturating_add(offset)
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

    fn now_micros(&self) -> i64 {
        self.nanos.load(Ordering::SeqCst).div_euclid(1_000)
    }
}

fn to_nanos(at: DateTime<Utc>) -> i64 {
    at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Clock microseconds as a time (out of range: the nearest end).
pub(crate) fn micros_to_time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(if us < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
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
    fn micros_agree_with_now() {
        let c =
            ManualClock::new(DateTime::from_timestamp(2_000_000_000, 123_456_789).expect("valid"));
        assert_eq!(c.now_micros(), c.now().timestamp_micros());
        c.set(DateTime::from_timestamp(-1, 999_999_999).expect("valid"));
        assert_eq!(c.now_micros(), c.now().timestamp_micros());
    }

    #[test]
    fn the_coarse_system_clock_stays_close_to_the_precise_one() {
        for _ in 0..1_000 {
            let before = Utc::now().timestamp_micros();
            let coarse = SystemClock.now_micros();
            let after = Utc::now().timestamp_micros();
            // Coarse clocks tick every 1-10 ms; allow a generous margin for
            // a loaded machine, but not a wrong epoch or unit.
            assert!(coarse <= after + 50_000, "{coarse} far ahead of {after}");
            assert!(coarse >= before - 50_000, "{coarse} far behind {before}");
        }
    }

    #[test]
    fn advance_saturates_instead_of_overflowing() {
        let c = ManualClock::default();
        c.advance(Duration::MAX);
        assert_eq!(c.now(), DateTime::from_timestamp_nanos(i64::MAX));
    }
}
