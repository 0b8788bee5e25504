//! The audit trail: what happened to which key, who did it, and how it went.
//!
//! Every management action and every failed verification produces an
//! [`AuditEvent`], handed to the [`AuditSink`] the host configured. Events
//! name keys by their [`DisplayPrefix`], never by secret or hash.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::token::{DisplayPrefix, KeyId};

mod trail;

pub use trail::{AuditPage, AuditQuery, AuditRecord, AuditTrail, MAX_PAGE_EVENTS};

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAction {
    /// A key was created.
    Create,
    /// A key was revoked.
    Revoke,
    /// A revoked key was reactivated.
    Reactivate,
    /// A key was deleted for good.
    Delete,
    /// A key was renamed.
    Rename,
    /// A key's permissions were replaced.
    SetPermissions,
    /// A token was presented and refused.
    Verify,
    /// A key was rolled: a new key replaces it after a grace period.
    Roll,
    /// A key's own rate limit was changed.
    SetRateLimit,
    /// The sweep warned that a key will be deleted or will expire.
    Warn,
    /// Several of a key's settings were changed at once
    /// ([`Keyward::update`](crate::Keyward::update)).
    Update,
    /// A shared rate limiter lost its backend: until it returns, limits
    /// are counted per instance or requests are refused, as configured
    /// (outcome `Failed("limiter_unavailable")`). One event per outage.
    LimiterOutage,
    /// A shared rate limiter reached its backend again: limits are shared
    /// once more (outcome `Success`).
    LimiterRecovered,
    /// A role was defined or redefined
    /// ([`Keyward::set_role`](crate::Keyward::set_role)).
    SetRole,
    /// A key was imported from another system
    /// ([`Keyward::import`](crate::Keyward::import)).
    Import,
    /// A secret scanner's report of leaked tokens was answered (its keys
    /// are revoked, each with its own `revoke` event).
    LeakReport,
    /// A key was reported leaked: revoked or marked exposed, as its
    /// tenant's policy says; `detail` holds the report's `url` and
    /// `source`.
    Leak,
    /// A webhook endpoint was made.
    CreateEndpoint,
    /// A webhook endpoint was deleted, with its waiting deliveries.
    DeleteEndpoint,
    /// Dead webhook deliveries were made pending again.
    ReplayWebhooks,
}

impl AuditAction {
    /// The action's stable snake_case name, as serialized: `create`,
    /// `revoke`, `set_permissions`, `limiter_outage`, …
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Revoke => "revoke",
            Self::Reactivate => "reactivate",
            Self::Delete => "delete",
            Self::Rename => "rename",
            Self::SetPermissions => "set_permissions",
            Self::Verify => "verify",
            Self::Roll => "roll",
            Self::SetRateLimit => "set_rate_limit",
            Self::Warn => "warn",
            Self::Update => "update",
            Self::LimiterOutage => "limiter_outage",
            Self::LimiterRecovered => "limiter_recovered",
            Self::SetRole => "set_role",
            Self::Import => "import",
            Self::LeakReport => "leak_report",
            Self::Leak => "leak",
            Self::CreateEndpoint => "create_endpoint",
            Self::DeleteEndpoint => "delete_endpoint",
            Self::ReplayWebhooks => "replay_webhooks",
        }
    }
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditOutcome {
    /// Done.
    Success,
    /// Refused; the reason is a stable snake_case code, e.g. `forbidden`,
    /// `permission_escalation`, `invalid`, `expired`, `revoked`.
    Denied(&'static str),
    /// Failed for a reason other than a refusal, e.g. the store was down.
    Failed(&'static str),
}

impl AuditOutcome {
    /// `success`, `denied` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied(_) => "denied",
            Self::Failed(_) => "failed",
        }
    }

    /// The reason code of a refusal or failure.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Self::Success => None,
            Self::Denied(r) | Self::Failed(r) => Some(r),
        }
    }
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// When it happened, by the [`Keyward`](crate::Keyward)'s clock.
    pub at: DateTime<Utc>,
    /// What was done.
    pub action: AuditAction,
    /// How it went.
    pub outcome: AuditOutcome,
    /// The acting person or key, as the host named them. `None` for
    /// verifications.
    pub actor: Option<String>,
    /// The tenant acted in, where known.
    pub tenant: Option<String>,
    /// The key acted on, where known. A malformed token has none: its first
    /// characters may be a secret of another kind.
    pub key_id: Option<KeyId>,
    /// The key's display prefix, where known.
    pub key_prefix: Option<DisplayPrefix>,
    /// A second key involved: the new key of a roll.
    pub related_key_id: Option<KeyId>,
    /// More about it, as compact JSON: where a leaked key was found
    /// (`{"url": …, "source": …}`), which webhook endpoint was acted on.
    /// Never a secret.
    pub detail: Option<String>,
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} {:?}",
            self.at.to_rfc3339(),
            self.action,
            self.outcome
        )?;
        if let Some(p) = &self.key_prefix {
            write!(f, " key={p}")?;
        }
        if let Some(r) = &self.related_key_id {
            write!(f, " related={r}")?;
        }
        if let Some(a) = &self.actor {
            write!(f, " actor={a}")?;
        }
        if let Some(t) = &self.tenant {
            write!(f, " tenant={t}")?;
        }
        if let Some(d) = &self.detail {
            write!(f, " detail={d}")?;
        }
        Ok(())
    }
}

/// Receives audit events.
///
/// Called inline, on the request path for failed verifications, so an
/// implementation must be quick and must not block: queue and write
/// elsewhere if the destination is slow.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use keyward::{AuditEvent, AuditOutcome, AuditSink};
///
/// /// Counts refusals, e.g. for a metrics gauge.
/// #[derive(Debug, Default)]
/// struct DenialCounter(AtomicUsize);
///
/// impl AuditSink for DenialCounter {
///     fn record(&self, event: &AuditEvent) {
///         if matches!(event.outcome, AuditOutcome::Denied(_)) {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// ```
pub trait AuditSink: fmt::Debug + Send + Sync + 'static {
    /// Records one event.
    fn record(&self, event: &AuditEvent);

    /// Whether refusals of verification are wanted now. When `false`,
    /// keyward does not build those events at all, so that a flood of bad
    /// tokens costs no more than the checks. Defaults to `true`;
    /// [`TracingAuditSink`] answers whether a `tracing` subscriber listens.
    fn wants_refusals(&self) -> bool {
        true
    }
}

/// Keeps the most recent events in memory, for tests and small admin views;
/// also an [`AuditTrail`] that answers queries from them. Clones share the
/// same buffer.
#[derive(Debug, Clone)]
pub struct MemoryAuditSink {
    inner: Arc<Mutex<Kept>>,
    capacity: usize,
}

/// The kept events, each with its sequence number, and the next number.
#[derive(Debug, Default)]
struct Kept {
    events: VecDeque<(u64, AuditEvent)>,
    next: u64,
}

impl MemoryAuditSink {
    /// A sink keeping at most `capacity` events, dropping the oldest.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Kept {
                events: VecDeque::with_capacity(capacity.min(1024)),
                next: 1,
            })),
            capacity: capacity.max(1),
        }
    }

    /// A copy of the kept events, oldest first.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.lock().events.iter().map(|(_, e)| e.clone()).collect()
    }

    /// Removes and returns the kept events, oldest first.
    pub fn take(&self) -> Vec<AuditEvent> {
        self.lock().events.drain(..).map(|(_, e)| e).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic elsewhere while holding the lock leaves a valid queue.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryAuditSink {
    /// Keeps the last 10,000 events.
    fn default() -> Self {
        Self::with_capacity(10_000)
    }
}

impl AuditSink for MemoryAuditSink {
    fn record(&self, event: &AuditEvent) {
        let mut kept = self.lock();
        if kept.events.len() >= self.capacity {
            kept.events.pop_front();
        }
        let seq = kept.next;
        kept.next += 1;
        kept.events.push_back((seq, event.clone()));
    }
}

#[async_trait::async_trait]
impl AuditTrail for MemoryAuditSink {
    async fn query(
        &self,
        query: &AuditQuery,
    ) -> Result<AuditPage, crate::error::store::StoreError> {
        let kept = self.lock();
        let found = kept
            .events
            .iter()
            .rev()
            .filter(|(seq, e)| query.matches(*seq, e))
            .map(|(seq, e)| AuditRecord::of(*seq, e));
        Ok(AuditPage::from_newest(found, query))
    }
}

/// Emits each event as a `tracing` event with target `keyward::audit`:
/// refusals and failures at `WARN`, successes at `INFO`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAuditSink;

impl AuditSink for TracingAuditSink {
    fn wants_refusals(&self) -> bool {
        // The same fields as the event, so that a subscriber filtering on
        // field names answers as it would for the event itself.
        tracing::enabled!(
            target: "keyward::audit",
            tracing::Level::WARN,
            action,
            key,
            related,
            actor,
            tenant,
            reason
        )
    }

    fn record(&self, e: &AuditEvent) {
        let prefix = e.key_prefix.as_ref().map(DisplayPrefix::as_str);
        let actor = e.actor.as_deref();
        let tenant = e.tenant.as_deref();
        let related = e.related_key_id.as_ref().map(KeyId::as_str);
        let about = match e.action {
            AuditAction::LimiterOutage | AuditAction::LimiterRecovered => "shared rate limiter",
            _ => "api key",
        };
        match e.outcome {
            AuditOutcome::Success => tracing::info!(
                target: "keyward::audit",
                action = e.action.as_str(), key = prefix, related, actor, tenant, "{about} {:?} succeeded", e.action
            ),
            AuditOutcome::Denied(reason) => tracing::warn!(
                target: "keyward::audit",
                action = e.action.as_str(), key = prefix, related, actor, tenant, reason, "{about} {:?} refused: {reason}", e.action
            ),
            AuditOutcome::Failed(reason) => tracing::warn!(
                target: "keyward::audit",
                action = e.action.as_str(), key = prefix, related, actor, tenant, reason, "{about} {:?} failed: {reason}", e.action
            ),
        }
    }
}

/// Both sinks receive every event: e.g. the persisted trail and the log.
impl<A: AuditSink, B: AuditSink> AuditSink for (A, B) {
    fn record(&self, event: &AuditEvent) {
        self.0.record(event);
        self.1.record(event);
    }

    fn wants_refusals(&self) -> bool {
        self.0.wants_refusals() || self.1.wants_refusals()
    }
}

/// Sends events nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _: &AuditEvent) {}

    fn wants_refusals(&self) -> bool {
        false
    }
}
