//! What a shared limiter does while Redis cannot be reached: notice the
//! outage once (a log line and an audit event), decide locally or refuse
//! in the meantime, and let one request at a time find out whether Redis
//! is back.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::super::{Bucket, Decision, LocalLimiter, RateLimit};
use crate::audit::{AuditAction, AuditEvent, AuditOutcome, AuditSink};
use crate::clock::SystemClock;

/// What a shared limiter does while its backend is down or slower than
/// its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnOutage {
    /// Count each limit in this instance alone (the same algorithm, in
    /// memory) until the backend returns, starting from the state Redis
    /// last gave this instance for the bucket: a fleet of N instances
    /// then admits up to N times what each limit refills during the
    /// outage, on top of what was left. The default.
    #[default]
    FallBackToLocal,
    /// Refuse every request that has a limit with
    /// [`VerifyError::LimiterUnavailable`](crate::VerifyError::LimiterUnavailable)
    /// (HTTP 503) until the backend returns.
    Refuse,
}

/// Consecutive failed calls that start an outage: one slow call is
/// decided by the policy on its own, but does not stop the others from
/// asking Redis.
const FAILURES_TO_TRIP: u32 = 3;

/// How a call to Redis stands with the outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// Redis is up: ask it.
    Normal,
    /// Redis is down and this call is the one that tries it again.
    Probe,
    /// Redis is down: decide without it.
    Skip,
}

/// What the caller does after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterFailure {
    /// Nothing more.
    Carry,
    /// Replace the connection: an outage began or a retry failed, and the
    /// old connection may be stuck on a dead peer that never answers.
    Reconnect,
}

/// The outage state of one limiter.
#[derive(Debug)]
pub(super) struct Outage {
    policy: OnOutage,
    /// The fallback's state, seeded with what Redis last said of each
    /// bucket, so an outage does not start every instance afresh.
    local: LocalLimiter,
    down: AtomicBool,
    /// Failed calls in a row.
    failures: AtomicU32,
    /// While down: when (ms after `epoch`) the next request may try Redis.
    next_try_ms: AtomicU64,
    epoch: Instant,
    retry_every: Duration,
    audit: OnceLock<Arc<dyn AuditSink>>,
    /// Serialises the start and the end of an outage, so that their log
    /// lines and audit events come in order.
    turning: Mutex<()>,
}

impl Outage {
    pub(super) fn new(policy: OnOutage, retry_every: Duration) -> Self {
        Self {
            policy,
            local: LocalLimiter::new(Arc::new(SystemClock)),
            down: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            next_try_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            retry_every,
            audit: OnceLock::new(),
            turning: Mutex::new(()),
        }
    }

    /// The audit sink of the first instance built with this limiter.
    pub(super) fn attach(&self, audit: Arc<dyn AuditSink>) {
        let _ = self.audit.set(audit);
    }

    /// Whether Redis is taken to be down.
    pub(super) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn retry_ms(&self) -> u64 {
        u64::try_from(self.retry_every.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a request must decide without Redis now (it is down and
    /// it is not yet time to try it again). Does not claim the retry.
    pub(super) fn waiting(&self) -> bool {
        self.is_down() && self.elapsed_ms() < self.next_try_ms.load(Ordering::Relaxed)
    }

    /// Whether this request may ask Redis: always while it is up; while
    /// it is down, one request per retry interval (the one that claims
    /// the retry).
    pub(super) fn enter(&self) -> Attempt {
        if !self.is_down() {
            return Attempt::Normal;
        }
        let now = self.elapsed_ms();
        let next = self.next_try_ms.load(Ordering::Relaxed);
        let claimed = now >= next
            && self
                .next_try_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.retry_ms()),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if claimed {
            Attempt::Probe
        } else {
            Attempt::Skip
        }
    }

    /// A call failed (`why` names no secret). The third failure in a row
    /// starts an outage: logged and audited once.
    pub(super) fn failed(
        &self,
        at: DateTime<Utc>,
        why: &dyn std::fmt::Display,
        attempt: Attempt,
    ) -> AfterFailure {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if attempt == Attempt::Probe {
            return AfterFailure::Reconnect;
        }
        if failures < FAILURES_TO_TRIP || self.is_down() {
            return AfterFailure::Carry;
        }
        let _turning = self.turning.lock().unwrap_or_else(PoisonError::into_inner);
        let next = self.elapsed_ms().saturating_add(self.retry_ms());
        self.next_try_ms.store(next, Ordering::Relaxed);
        if self.down.swap(true, Ordering::Relaxed) {
            return AfterFailure::Carry;
        }
        let fallback = match self.policy {
            OnOutage::FallBackToLocal => "limits are counted per instance until it returns",
            OnOutage::Refuse => "requests with a limit are refused until it returns",
        };
        tracing::warn!(error = %why, "shared rate limiter: Redis unavailable; {fallback}");
        self.record(
            at,
            AuditAction::LimiterOutage,
            AuditOutcome::Failed("limiter_unavailable"),
        );
        AfterFailure::Reconnect
    }

    /// Redis answered. An answer to a retry ends the outage (an answer to
    /// a call made before it began does not).
    pub(super) fn answered(&self, at: DateTime<Utc>, attempt: Attempt) {
        self.failures.store(0, Ordering::Relaxed);
        if attempt != Attempt::Probe {
            return;
        }
        let _turning = self.turning.lock().unwrap_or_else(PoisonError::into_inner);
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("shared rate limiter: Redis reachable again; limits are shared again");
            self.record(at, AuditAction::LimiterRecovered, AuditOutcome::Success);
        }
    }

    fn record(&self, at: DateTime<Utc>, action: AuditAction, outcome: AuditOutcome) {
        if let Some(audit) = self.audit.get() {
            audit.record(&AuditEvent {
                at,
                action,
                outcome,
                actor: None,
                tenant: None,
                key_id: None,
                key_prefix: None,
                related_key_id: None,
            });
        }
    }

    /// Remembers what Redis said of a bucket: its state (µs), for the
    /// fallback to start from.
    pub(super) fn learnt(
        &self,
        bucket: Bucket<'_>,
        limit: RateLimit,
        tat_us: i64,
        now: DateTime<Utc>,
    ) {
        if self.policy == OnOutage::FallBackToLocal {
            let tat_ns = u64::try_from(tat_us).unwrap_or(0).saturating_mul(1_000);
            self.local
                .seed(bucket, limit, tat_ns, now.timestamp_micros());
        }
    }

    /// The decision without Redis, as the policy says.
    pub(super) fn decide(
        &self,
        bucket: Bucket<'_>,
        limit: RateLimit,
        now: DateTime<Utc>,
    ) -> Decision {
        match self.policy {
            OnOutage::FallBackToLocal => self.local.check_at(bucket, limit, now.timestamp_micros()),
            OnOutage::Refuse => Decision::Unavailable,
        }
    }
}
