//! What a shared limiter does while Redis cannot be reached: notice the
//! outage once (a log line and an audit event), decide locally or refuse
//! in the meantime, and let one request at a time find out whether Redis
//! is back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
    /// memory) until the backend returns: a fleet of N instances then
    /// admits up to N times each limit. The default.
    #[default]
    FallBackToLocal,
    /// Refuse every request that has a limit with
    /// [`VerifyError::LimiterUnavailable`](crate::VerifyError::LimiterUnavailable)
    /// (HTTP 503) until the backend returns.
    Refuse,
}

/// The outage state of one limiter.
#[derive(Debug)]
pub(super) struct Outage {
    policy: OnOutage,
    /// The fallback's state.
    local: LocalLimiter,
    down: AtomicBool,
    /// While down: when (ms after `epoch`) the next request may try Redis.
    next_try_ms: AtomicU64,
    epoch: Instant,
    retry_every: Duration,
    audit: OnceLock<Arc<dyn AuditSink>>,
}

impl Outage {
    pub(super) fn new(policy: OnOutage, retry_every: Duration) -> Self {
        Self {
            policy,
            local: LocalLimiter::new(Arc::new(SystemClock)),
            down: AtomicBool::new(false),
            next_try_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            retry_every,
            audit: OnceLock::new(),
        }
    }

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

    /// Whether a request must decide without Redis now (it is down and
    /// it is not yet time to try it again). Does not claim the retry.
    pub(super) fn waiting(&self) -> bool {
        self.is_down() && self.elapsed_ms() < self.next_try_ms.load(Ordering::Relaxed)
    }

    /// Whether this request may ask Redis: always while it is up; while
    /// it is down, one request per retry interval (the one that claims
    /// the retry).
    pub(super) fn may_try(&self) -> bool {
        if !self.is_down() {
            return true;
        }
        let now = self.elapsed_ms();
        let next = self.next_try_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_try_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.ms(self.retry_every)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn ms(&self, d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// Redis failed (`why`, which names no secret): the outage begins, or
    /// goes on, with the next retry one interval away.
    pub(super) fn failed(&self, at: DateTime<Utc>, why: &dyn std::fmt::Display) {
        let next = self.elapsed_ms().saturating_add(self.ms(self.retry_every));
        self.next_try_ms.store(next, Ordering::Relaxed);
        if self.down.swap(true, Ordering::Relaxed) {
            return;
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
    }

    /// Redis answered: if it was down, the outage is over.
    pub(super) fn answered(&self, at: DateTime<Utc>) {
        if self.is_down() && self.down.swap(false, Ordering::Relaxed) {
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
