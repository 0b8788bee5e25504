//! Rate limits per key and quotas per tenant.
//!
//! A [`RateLimit`] allows `max` requests at once and refills continuously
//! at `max` per `per` (GCRA, the generic cell rate algorithm, via
//! `governor`): a client sending steadily gets `max` per `per`; an idle
//! client may burst up to `max`.
//!
//! The check sits behind the [`RateLimiter`] trait so a distributed limiter
//! (shared by a fleet of instances) can replace the in-process
//! [`LocalLimiter`] without touching the core.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use governor::clock::Clock as _;
use governor::state::keyed::HashMapStateStore;
use governor::Quota;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::token::KeyId;

/// `max` requests per `per`, with bursts of up to `max`.
///
/// ```
/// use keyward::RateLimit;
///
/// let limit = RateLimit::per_minute(200)?;
/// assert_eq!(limit.max(), 200);
/// # Ok::<(), keyward::InvalidRateLimit>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    max: u32,
    per_ms: u64,
}

/// A [`RateLimit`] with a zero count or a period under a millisecond or
/// over a year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate limit: use at least 1 request per period, with a period from 1 ms to 365 days"
)]
pub struct InvalidRateLimit;

impl RateLimit {
    /// `max` requests per `per`.
    ///
    /// # Errors
    /// [`InvalidRateLimit`] for `max` 0 or `per` outside 1 ms – 365 days.
    pub fn new(max: u32, per: Duration) -> Result<Self, InvalidRateLimit> {
        let per_ms = per.num_milliseconds();
        if max == 0 || per_ms < 1 || per > Duration::days(365) {
            return Err(InvalidRateLimit);
        }
        Ok(Self {
            max,
            per_ms: per_ms as u64,
        })
    }

    /// `max` requests per second.
    ///
    /// # Errors
    /// [`InvalidRateLimit`] for 0.
    pub fn per_second(max: u32) -> Result<Self, InvalidRateLimit> {
        Self::new(max, Duration::seconds(1))
    }

    /// `max` requests per minute.
    ///
    /// # Errors
    /// [`InvalidRateLimit`] for 0.
    pub fn per_minute(max: u32) -> Result<Self, InvalidRateLimit> {
        Self::new(max, Duration::minutes(1))
    }

    /// `max` requests per hour.
    ///
    /// # Errors
    /// [`InvalidRateLimit`] for 0.
    pub fn per_hour(max: u32) -> Result<Self, InvalidRateLimit> {
        Self::new(max, Duration::hours(1))
    }

    /// Requests allowed per period, and the largest burst.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The period.
    pub fn per(&self) -> Duration {
        Duration::milliseconds(self.per_ms as i64)
    }

    fn quota(&self) -> Quota {
        // per / max, at least 1 ns so that the quota is valid.
        let nanos = (u128::from(self.per_ms) * 1_000_000 / u128::from(self.max)).max(1);
        let period = std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let burst = NonZeroU32::new(self.max).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

/// What a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Bucket<'a> {
    /// One key's own limit.
    Key(KeyId),
    /// A tenant's quota, shared by all its keys.
    Tenant(&'a str),
}

/// The answer of a [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; one request was counted.
    Allow,
    /// Over the limit; the earliest time a retry can succeed.
    Deny {
        /// How long to wait.
        retry_after: Duration,
    },
}

/// Counts requests against limits. Implement it to share limits between
/// instances (e.g. in Redis); keyward's core only calls
/// [`RateLimiter::check`].
///
/// ```
/// use async_trait::async_trait;
/// use chrono::{DateTime, Utc};
/// use keyward::{Bucket, Decision, RateLimit, RateLimiter};
///
/// /// Lets everything through: for a host that limits elsewhere.
/// #[derive(Debug)]
/// struct Unlimited;
///
/// #[async_trait]
/// impl RateLimiter for Unlimited {
///     async fn check(&self, _: Bucket<'_>, _: RateLimit, _: DateTime<Utc>) -> Decision {
///         Decision::Allow
///     }
/// }
/// ```
#[async_trait]
pub trait RateLimiter: fmt::Debug + Send + Sync + 'static {
    /// Counts one request in `bucket` under `limit` at `now`. A limiter that
    /// cannot reach its backend decides itself whether to fail open or
    /// closed.
    async fn check(&self, bucket: Bucket<'_>, limit: RateLimit, now: DateTime<Utc>) -> Decision;
}

/// Adapts keyward's [`Clock`] to governor's, so that tests move limits with
/// a [`ManualClock`](crate::ManualClock).
#[derive(Clone)]
struct GovClock(Arc<dyn Clock>);

impl governor::clock::Clock for GovClock {
    type Instant = std::time::Duration;

    fn now(&self) -> std::time::Duration {
        let nanos = self.0.now().timestamp_nanos_opt().unwrap_or(0).max(0);
        std::time::Duration::from_nanos(nanos as u64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owned {
    Key(KeyId),
    Tenant(Box<str>),
}

type Keyed = governor::RateLimiter<
    Owned,
    HashMapStateStore<Owned>,
    GovClock,
    governor::middleware::NoOpMiddleware<std::time::Duration>,
>;

/// Checks between evictions of idle state.
const EVICT_EVERY: u64 = 4096;

/// The in-process limiter: GCRA state per key and per tenant, in memory.
///
/// Memory stays bounded: state that has fully refilled (indistinguishable
/// from a key never seen) is evicted every 4,096 checks and on
/// [`LocalLimiter::evict_idle`].
pub struct LocalLimiter {
    clock: GovClock,
    // One governor limiter per distinct limit; keys with the same limit
    // share one map.
    by_limit: Mutex<HashMap<RateLimit, Arc<Keyed>>>,
    checks: AtomicU64,
}

impl fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("tracked", &self.tracked())
            .finish()
    }
}

impl LocalLimiter {
    /// A limiter reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock: GovClock(clock),
            by_limit: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request; see [`RateLimiter::check`].
    pub fn check_now(&self, bucket: Bucket<'_>, limit: RateLimit) -> Decision {
        if self.checks.fetch_add(1, Ordering::Relaxed) % EVICT_EVERY == EVICT_EVERY - 1 {
            self.evict_idle();
        }
        let limiter = {
            let mut map = self.by_limit.lock().unwrap_or_else(PoisonError::into_inner);
            map.entry(limit)
                .or_insert_with(|| {
                    Arc::new(governor::RateLimiter::new(
                        limit.quota(),
                        HashMapStateStore::default(),
                        self.clock.clone(),
                    ))
                })
                .clone()
        };
        let key = match bucket {
            Bucket::Key(id) => Owned::Key(id),
            Bucket::Tenant(t) => Owned::Tenant(t.into()),
        };
        match limiter.check_key(&key) {
            Ok(()) => Decision::Allow,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision::Deny {
                    retry_after: Duration::from_std(wait).unwrap_or(Duration::MAX),
                }
            }
        }
    }

    /// Drops state that has fully refilled, and limiters left empty.
    pub fn evict_idle(&self) {
        let mut map = self.by_limit.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, l| {
            l.retain_recent();
            l.shrink_to_fit();
            !l.is_empty()
        });
    }

    /// Number of keys and tenants with state held.
    pub fn tracked(&self) -> usize {
        let map = self.by_limit.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().map(|l| l.len()).sum()
    }
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    async fn check(&self, bucket: Bucket<'_>, limit: RateLimit, _now: DateTime<Utc>) -> Decision {
        self.check_now(bucket, limit)
    }
}

/// The limiter a [`Keyward`](crate::Keyward) uses: the built-in one is
/// called directly (no boxed future on the hot path).
#[derive(Debug, Clone)]
pub(crate) enum Limiter {
    Local(Arc<LocalLimiter>),
    Custom(Arc<dyn RateLimiter>),
}

impl Limiter {
    pub(crate) async fn check(
        &self,
        bucket: Bucket<'_>,
        limit: RateLimit,
        now: DateTime<Utc>,
    ) -> Decision {
        match self {
            Self::Local(l) => l.check_now(bucket, limit),
            Self::Custom(l) => l.check(bucket, limit, now).await,
        }
    }

    pub(crate) fn evict_idle(&self) {
        if let Self::Local(l) = self {
            l.evict_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn limits_validate() {
        assert!(RateLimit::per_minute(0).is_err());
        assert!(RateLimit::new(1, Duration::zero()).is_err());
        assert!(RateLimit::new(1, Duration::days(366)).is_err());
        assert!(RateLimit::new(u32::MAX, Duration::milliseconds(1)).is_ok());
    }

    #[test]
    fn burst_then_refill_with_retry_after() {
        let clock = ManualClock::default();
        let l = LocalLimiter::new(Arc::new(clock.clone()));
        let limit = RateLimit::per_minute(200).expect("valid");
        let id = KeyId::random().expect("entropy");
        let allowed = (0..250)
            .filter(|_| l.check_now(Bucket::Key(id), limit) == Decision::Allow)
            .count();
        assert_eq!(allowed, 200);
        assert_eq!(
            l.check_now(Bucket::Key(id), limit),
            Decision::Deny {
                retry_after: Duration::milliseconds(300)
            }
        );
        clock.advance(Duration::milliseconds(300));
        assert_eq!(l.check_now(Bucket::Key(id), limit), Decision::Allow);
    }

    #[test]
    fn idle_state_is_evicted() {
        let clock = ManualClock::default();
        let l = LocalLimiter::new(Arc::new(clock.clone()));
        let limit = RateLimit::per_second(10).expect("valid");
        for _ in 0..100 {
            let id = KeyId::random().expect("entropy");
            l.check_now(Bucket::Key(id), limit);
        }
        l.check_now(Bucket::Tenant("acme"), limit);
        assert_eq!(l.tracked(), 101);
        clock.advance(Duration::seconds(2));
        l.evict_idle();
        assert_eq!(l.tracked(), 0);
    }
}
