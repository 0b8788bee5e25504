//! Rate limits per key and quotas per tenant.
//!
//! A [`RateLimit`] allows `max` requests at once and refills continuously
//! at `max` per `per` (GCRA, the generic cell rate algorithm, with the
//! same decisions as `governor`, which a test checks): a client sending
//! steadily gets `max` per `per`; an idle client may burst up to `max`.
//!
//! [`Keyward`](crate::Keyward) keeps each key's limiter state (one
//! word) inside its cached entry and each tenant's beside the tenant's
//! name, so a verify touches no map and takes no lock for its limits. A
//! distributed limiter (shared by a fleet of instances) replaces that
//! through the [`RateLimiter`] trait without touching the core;
//! [`LocalLimiter`] is the same algorithm as a standalone limiter.

mod gcra;
mod meter;
mod named;
#[cfg(feature = "redis")]
mod shared;
mod stash;
mod tenants;

pub(crate) use gcra::{gcra_now, wait, Gcra};
pub(crate) use meter::{Counted, KeySlot, Limits, Refusal, Step, Subject};
pub(crate) use named::{checked as checked_limits, Costs, NamedSlot, NamedStates};
pub use named::{Charge, InvalidNamedLimit, NamedDecision, NamedLimit, MAX_NAMED_LIMITS};
#[cfg(feature = "redis")]
pub use shared::{
    Accuracy, LimiterClock, OnOutage, RedisLimiter, RedisLimiterBuilder, RedisLimiterError,
};
pub(crate) use stash::Stash;
pub(crate) use tenants::Tenant;
use tenants::Tenants;

use std::collections::HashMap;
use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::AuditSink;
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
    max: NonZeroU32,
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
        let Some(max) = NonZeroU32::new(max) else {
            return Err(InvalidRateLimit);
        };
        if per_ms < 1 || per > Duration::days(365) {
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
        self.max.get()
    }

    /// The period.
    pub fn per(&self) -> Duration {
        Duration::milliseconds(self.per_ms as i64)
    }

    /// Whether this limit is no looser than `bound`: no larger burst and
    /// no higher sustained rate. `10/min` is within `20/min` and within
    /// `10/s`; `2/s` is not within `60/min` (twice the rate), and `60/min`
    /// is not within `1/s` (the same rate, but bursts of 60).
    ///
    /// ```
    /// use keyward::RateLimit;
    /// let ten_a_minute = RateLimit::per_minute(10)?;
    /// assert!(ten_a_minute.is_within(&RateLimit::per_minute(20)?));
    /// assert!(!RateLimit::per_second(1)?.is_within(&ten_a_minute));
    /// # Ok::<(), keyward::InvalidRateLimit>(())
    /// ```
    pub fn is_within(&self, bound: &RateLimit) -> bool {
        // rate = max / per: self.max / self.per <= bound.max / bound.per.
        let rate_within = u128::from(self.max.get()) * u128::from(bound.per_ms)
            <= u128::from(bound.max.get()) * u128::from(self.per_ms);
        self.max <= bound.max && rate_within
    }

    /// The GCRA parameters of this limit.
    pub(crate) fn gcra(&self) -> Gcra {
        // per / max, at least 1 ns; per is at most a year, so the window
        // (per rounded down to a multiple of the emission interval) fits.
        let per_ns = self.per_ms.saturating_mul(1_000_000);
        let max = u64::from(self.max.get());
        let emission_ns = NonZeroU64::new(per_ns / max).unwrap_or(NonZeroU64::MIN);
        Gcra {
            emission_ns,
            tolerance_ns: emission_ns.get().saturating_mul(max - 1),
        }
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
#[non_exhaustive]
pub enum Decision {
    /// Go ahead; one request was counted.
    Allow,
    /// Over the limit; the earliest time a retry can succeed.
    Deny {
        /// How long to wait.
        retry_after: Duration,
    },
    /// The limiter could not decide (its backend is down) and fails
    /// closed: the request is refused with
    /// [`VerifyError::LimiterUnavailable`](crate::VerifyError::LimiterUnavailable)
    /// (HTTP 503). Limits counted before it (the key's, when a quota's
    /// limiter is the one unavailable) stay counted.
    Unavailable,
}

/// Counts requests against limits. Implement it to share limits between
/// instances (e.g. in Redis). For each limit of a request, in order (the
/// key's, its tenant's quota, the quota of the tenant it acts for),
/// keyward asks [`RateLimiter::try_check`] and, when that has no answer,
/// awaits [`RateLimiter::check`]. A request a later limit refuses stays
/// counted by the earlier ones: keyward gives nothing back to a host's
/// limiter.
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

    /// Answers at once, without awaiting, when the limiter can (from
    /// state it holds locally); `None` when it must ask its backend, and
    /// then [`RateLimiter::check`] is awaited instead. A `Some` counts the
    /// request exactly as `check` would.
    ///
    /// Verification answers from its cache, without a task switch, only
    /// when every limit of the request is answered here; the default,
    /// `None`, makes every verify await `check`. It runs inside the
    /// caller's poll, outside the store timeout: it must not block or do
    /// I/O.
    fn try_check(
        &self,
        bucket: Bucket<'_>,
        limit: RateLimit,
        now: DateTime<Utc>,
    ) -> Option<Decision> {
        let _ = (bucket, limit, now);
        None
    }

    /// Called once by [`KeywardBuilder::build`](crate::KeywardBuilder::build)
    /// with the instance's audit sink, for events of the limiter's own
    /// (e.g. [`AuditAction::LimiterOutage`](crate::AuditAction::LimiterOutage)).
    /// The default ignores it.
    fn attach_audit(&self, audit: Arc<dyn AuditSink>) {
        let _ = audit;
    }

    /// Counts a request against every named limit of `key` in `charges`
    /// (each with its own cost), atomically: all pass and are charged, or
    /// none is charged and [`NamedDecision::Deny`] names the one that
    /// refused. [`LocalLimiter`] and `RedisLimiter` implement it; the
    /// default answers [`NamedDecision::Unavailable`], so a limiter that
    /// cannot count named limits fails closed for keys that carry them
    /// rather than letting them through unlimited.
    async fn check_named(
        &self,
        key: KeyId,
        charges: &[Charge<'_>],
        now: DateTime<Utc>,
    ) -> NamedDecision {
        let _ = (key, charges, now);
        NamedDecision::Unavailable
    }

    /// [`RateLimiter::check_named`] without awaiting, when the limiter
    /// can answer from local state; as [`RateLimiter::try_check`].
    fn try_check_named(
        &self,
        key: KeyId,
        charges: &[Charge<'_>],
        now: DateTime<Utc>,
    ) -> Option<NamedDecision> {
        let _ = (key, charges, now);
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owned {
    Key(KeyId),
    Tenant(Box<str>),
}

/// Checks between evictions of idle state.
const EVICT_EVERY: u64 = 4096;

/// A standalone in-process limiter: GCRA state per bucket and limit, in
/// one map behind a mutex. [`Keyward`](crate::Keyward) does not need it
/// (it keeps limiter state in its cache entries); it is here for hosts
/// that limit other things the same way, and as the reference a custom
/// [`RateLimiter`] can be tested against.
///
/// Memory stays bounded: state that has fully refilled (indistinguishable
/// from a bucket never seen) is evicted every 4,096 checks and on
/// [`LocalLimiter::evict_idle`].
pub struct LocalLimiter {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    named: NamedStates,
}

#[derive(Default)]
struct State {
    tats: HashMap<(Owned, RateLimit), AtomicU64>,
    checks: u64,
}

impl State {
    /// Counts a use of the map; every 4,096th evicts what has refilled.
    fn tick(&mut self, now_ns: u64) {
        self.checks += 1;
        if self.checks.is_multiple_of(EVICT_EVERY) {
            self.tats.retain(|_, t| !Gcra::idle(*t.get_mut(), now_ns));
        }
    }
}

fn owned(bucket: Bucket<'_>) -> Owned {
    match bucket {
        Bucket::Key(id) => Owned::Key(id),
        Bucket::Tenant(t) => Owned::Tenant(t.into()),
    }
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
            clock,
            state: Mutex::default(),
            named: NamedStates::default(),
        }
    }

    /// Counts a request against named limits of `key`, all or none; see
    /// [`RateLimiter::check_named`].
    pub fn check_named_now(&self, key: KeyId, charges: &[Charge<'_>]) -> NamedDecision {
        self.check_named_at(key, charges, self.clock.now_micros())
    }

    pub(crate) fn check_named_at(
        &self,
        key: KeyId,
        charges: &[Charge<'_>],
        now_us: i64,
    ) -> NamedDecision {
        let slots: Vec<NamedSlot> = charges
            .iter()
            .map(|c| NamedSlot {
                name: c.name.into(),
                limit: c.limit,
                gcra: c.limit.gcra(),
            })
            .collect();
        let by_name: Vec<(&str, u32)> = charges.iter().map(|c| (c.name, c.cost)).collect();
        let costs = Costs {
            cost: 0,
            by_name: &by_name,
            one: None,
        };
        match self.named.charge(&key, &slots, &costs, gcra_now(now_us)) {
            Ok(()) => NamedDecision::Allow,
            Err((limit, ns)) => NamedDecision::Deny {
                limit,
                retry_after: wait(ns),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request; see [`RateLimiter::check`].
    pub fn check_now(&self, bucket: Bucket<'_>, limit: RateLimit) -> Decision {
        self.check_at(bucket, limit, self.clock.now_micros())
    }

    /// Counts one request at `now_us` (clock microseconds) rather than at
    /// this limiter's clock.
    pub(crate) fn check_at(&self, bucket: Bucket<'_>, limit: RateLimit, now_us: i64) -> Decision {
        let now = gcra_now(now_us);
        let mut state = self.lock();
        state.tick(now);
        let key = owned(bucket);
        let tat = state.tats.entry((key, limit)).or_default();
        match limit.gcra().check(tat, now) {
            Ok(()) => Decision::Allow,
            Err(ns) => Decision::Deny {
                retry_after: wait(ns),
            },
        }
    }

    /// Raises the state of `bucket` under `limit` to at least `tat_ns`
    /// (a state learnt elsewhere, e.g. from a shared limiter), as of
    /// `now_us`. A new bucket is not taken in once 65,536 are held.
    #[cfg(feature = "redis")]
    pub(crate) fn seed(&self, bucket: Bucket<'_>, limit: RateLimit, tat_ns: u64, now_us: i64) {
        const MAX_SEEDED: usize = 65_536;
        let now = gcra_now(now_us);
        if Gcra::idle(tat_ns, now) {
            return;
        }
        let mut state = self.lock();
        state.tick(now);
        let key = (owned(bucket), limit);
        if let Some(slot) = state.tats.get_mut(&key) {
            let slot = slot.get_mut();
            *slot = (*slot).max(tat_ns);
        } else if state.tats.len() < MAX_SEEDED {
            state.tats.insert(key, AtomicU64::new(tat_ns));
        }
    }

    /// Drops state that has fully refilled.
    pub fn evict_idle(&self) {
        let now = gcra_now(self.clock.now_micros());
        let mut state = self.lock();
        state.tats.retain(|_, t| !Gcra::idle(*t.get_mut(), now));
        state.tats.shrink_to_fit();
    }

    /// Number of keys and tenants with state held.
    pub fn tracked(&self) -> usize {
        self.lock().tats.len()
    }
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    async fn check(&self, bucket: Bucket<'_>, limit: RateLimit, _now: DateTime<Utc>) -> Decision {
        self.check_now(bucket, limit)
    }

    fn try_check(
        &self,
        bucket: Bucket<'_>,
        limit: RateLimit,
        _now: DateTime<Utc>,
    ) -> Option<Decision> {
        Some(self.check_now(bucket, limit))
    }

    async fn check_named(
        &self,
        key: KeyId,
        charges: &[Charge<'_>],
        _: DateTime<Utc>,
    ) -> NamedDecision {
        self.check_named_now(key, charges)
    }

    fn try_check_named(
        &self,
        key: KeyId,
        charges: &[Charge<'_>],
        _: DateTime<Utc>,
    ) -> Option<NamedDecision> {
        Some(self.check_named_now(key, charges))
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

    proptest::proptest! {
        /// The same decisions as governor's GCRA, request by request.
        #[test]
        fn decides_like_governor(
            max in 1u32..50,
            per_ms in 1u64..5_000,
            gaps in proptest::collection::vec(0u64..200_000_000, 1..300),
        ) {
            use governor::clock::FakeRelativeClock;
            let limit = RateLimit::new(max, Duration::milliseconds(per_ms as i64)).expect("valid");
            let gcra = limit.gcra();
            let period = std::time::Duration::from_nanos(gcra.emission_ns.get());
            let quota = governor::Quota::with_period(period)
                .expect("non-zero")
                .allow_burst(std::num::NonZeroU32::new(max).expect("non-zero"));
            let clock = FakeRelativeClock::default();
            let theirs = governor::RateLimiter::direct_with_clock(quota, clock.clone());
            let ours = AtomicU64::new(0);
            let start = 1_700_000_000_000_000_000u64;
            let mut elapsed = 0u64;
            for gap in gaps {
                elapsed += gap;
                clock.advance(std::time::Duration::from_nanos(gap));
                let mine = gcra.check(&ours, start + elapsed);
                let other = theirs.check();
                proptest::prop_assert_eq!(mine.is_ok(), other.is_ok(), "at {} ns", elapsed);
                if let (Err(ns), Err(not_until)) = (mine, other) {
                    use governor::clock::Clock as _;
                    let w = not_until.wait_time_from(clock.now());
                    proptest::prop_assert_eq!(u128::from(ns), w.as_nanos());
                }
            }
        }
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
