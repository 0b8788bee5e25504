//! What a shared limiter does while Redis cannot be reached: notice the
//! outage once (a log line and an audit event), decide locally or refuse
//! in the meantime, and let one request at a time find out whether Redis
//! is back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
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
    /// last gave this instance for the bucket (a bucket it has not seen,
    /// or one beyond the 65,536 it remembers, starts full): a fleet of N
    /// instances then admits up to N times what each limit refills during
    /// the outage, on top of what was left. The default.
    #[default]
    FallBackToLocal,
    /// Refuse every request that has a limit with
    /// [`VerifyError::LimiterUnavailable`](crate::VerifyError::LimiterUnavailable)
    /// (HTTP 503) until the backend returns.
    Refuse,
}

/// Failed calls in one window that start an outage, when they are at
/// least half the calls of the window: one slow call is decided by the
/// policy on its own, and a Redis that fails now and then is not taken
/// to be down.
const FAILURES_TO_TRIP: u32 = 3;

/// The window over which calls and failures are counted.
const WINDOW_MS: u64 = 1_000;

/// How often failures outside an outage are logged, at most.
const QUIET_LOG_MS: u64 = 60_000;

/// A call to Redis, as it stands with the outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Attempt {
    pub(super) kind: Kind,
    /// The outage generation the call started in: the answer of a call
    /// that started before an outage began or ended says nothing of now.
    generation: u64,
}

/// What a call may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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
    /// Start a fresh connection beside the current one: an outage began
    /// or a retry failed, and the connection may be stuck on a peer that
    /// went silent.
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
    generation: AtomicU64,
    /// While down: when (ms after `epoch`) the next request may try Redis.
    next_try_ms: AtomicU64,
    epoch: Instant,
    retry_every: Duration,
    audit: OnceLock<Arc<dyn AuditSink>>,
    /// Calls and failures of the current window; also serialises the
    /// start and the end of an outage, so that their log lines and audit
    /// events come in order.
    health: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    window_start_ms: u64,
    calls: u32,
    failures: u32,
    /// Failures outside an outage since they were last logged.
    quiet_failures: u32,
    quiet_logged_ms: Option<u64>,
}

impl Health {
    fn roll(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.window_start_ms) >= WINDOW_MS {
            self.window_start_ms = now_ms;
            self.calls = 0;
            self.failures = 0;
        }
    }
}

impl Outage {
    pub(super) fn new(policy: OnOutage, retry_every: Duration) -> Self {
        Self {
            policy,
            local: LocalLimiter::new(Arc::new(SystemClock)),
            down: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            next_try_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            retry_every,
            audit: OnceLock::new(),
            health: Mutex::default(),
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

    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
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
        let generation = self.generation.load(Ordering::Acquire);
        let kind = if !self.is_down() {
            Kind::Normal
        } else {
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
                Kind::Probe
            } else {
                Kind::Skip
            }
        };
        Attempt { kind, generation }
    }

    /// A call failed (`why` names no secret). Three failures in a window
    /// of a second, half its calls or more, start an outage: logged and
    /// audited once. Failures short of that are logged once a minute.
    pub(super) fn failed(
        &self,
        at: DateTime<Utc>,
        why: &dyn std::fmt::Display,
        attempt: Attempt,
    ) -> AfterFailure {
        let mut health = self.health();
        if attempt.generation != self.generation.load(Ordering::Acquire) {
            return AfterFailure::Carry;
        }
        if attempt.kind == Kind::Probe {
            return AfterFailure::Reconnect;
        }
        let now = self.elapsed_ms();
        health.roll(now);
        health.calls = health.calls.saturating_add(1);
        health.failures = health.failures.saturating_add(1);
        if health.failures < FAILURES_TO_TRIP || health.failures.saturating_mul(2) < health.calls {
            health.quiet_failures = health.quiet_failures.saturating_add(1);
            let due = health
                .quiet_logged_ms
                .is_none_or(|t| now.saturating_sub(t) >= QUIET_LOG_MS);
            if due {
                tracing::warn!(error = %why, failed = health.quiet_failures, "shared rate limiter: calls to Redis failed; each was decided without it");
                health.quiet_failures = 0;
                health.quiet_logged_ms = Some(now);
            }
            return AfterFailure::Carry;
        }
        *health = Health {
            window_start_ms: now,
            ..Health::default()
        };
        self.next_try_ms
            .store(now.saturating_add(self.retry_ms()), Ordering::Relaxed);
        self.down.store(true, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
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
        let mut health = self.health();
        if attempt.generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        let now = self.elapsed_ms();
        if attempt.kind != Kind::Probe {
            health.roll(now);
            health.calls = health.calls.saturating_add(1);
            return;
        }
        *health = Health {
            window_start_ms: now,
            ..Health::default()
        };
        self.down.store(false, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
        tracing::info!("shared rate limiter: Redis reachable again; limits are shared again");
        self.record(at, AuditAction::LimiterRecovered, AuditOutcome::Success);
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
                detail: None,
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

    /// The decision on a key's named limits without Redis, as the policy
    /// says.
    pub(super) fn decide_named(
        &self,
        key: crate::token::KeyId,
        charges: &[super::super::Charge<'_>],
        now: DateTime<Utc>,
    ) -> super::super::NamedDecision {
        crate::telemetry::limiter_fallback(self.policy == OnOutage::FallBackToLocal);
        match self.policy {
            OnOutage::FallBackToLocal => {
                self.local
                    .check_named_at(key, charges, now.timestamp_micros())
            }
            OnOutage::Refuse => super::super::NamedDecision::Unavailable,
        }
    }

    /// The decision without Redis, as the policy says.
    pub(super) fn decide(
        &self,
        bucket: Bucket<'_>,
        limit: RateLimit,
        now: DateTime<Utc>,
    ) -> Decision {
        crate::telemetry::limiter_fallback(self.policy == OnOutage::FallBackToLocal);
        match self.policy {
            OnOutage::FallBackToLocal => self.local.check_at(bucket, limit, now.timestamp_micros()),
            OnOutage::Refuse => Decision::Unavailable,
        }
    }
}
