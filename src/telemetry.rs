//! Metrics (feature `metrics`), through the `metrics` facade: whatever
//! recorder the host installs (e.g. `metrics-exporter-prometheus`)
//! receives them. Names follow Prometheus conventions:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `keyward_verifications_total` | counter | `outcome`: `ok` or the refusal's code (`invalid`, `rate_limited`, …) |
//! | `keyward_cache_lookups_total` | counter | `result`: `hit`, `miss`, `unknown_id`, `over_budget` (a miss refused without a read, past the read budget; also counted as a `miss`) |
//! | `keyward_cache_refreshes_total` | counter | `result`: `queued` (an aged entry queued for a background read) or `over_budget` (a verify of an aged entry past `cache_refresh_reads`, served unread) |
//! | `keyward_store_call_duration_seconds` | histogram | `operation`: `get`, `update`, `consume_credit`, … |
//! | `keyward_store_call_errors_total` | counter | `operation` |
//! | `keyward_limiter_refusals_total` | counter | `limit`: `key`, `named`, `quota`; `unavailable` |
//! | `keyward_limiter_fallbacks_total` | counter | `decision`: `local` or `refused`, decided without Redis |
//! | `keyward_last_used_backlog` | gauge | — (last-used times waiting to be written) |
//! | `keyward_audit_queue` | gauge | — (events waiting for the persisted audit trail's writer) |
//! | `keyward_audit_dropped_total` | counter | — (events the persisted trail did not keep) |
//! | `keyward_webhook_queue` | gauge | `state`: `pending` or `dead` (deliveries in the outbox, after each round of the worker) |
//! | `keyward_webhook_attempts_total` | counter | `outcome`: `delivered`, `retry`, `dead` |
//!
//! A verify records through handles registered once, on the first
//! verify, with the recorder installed then: install the recorder before
//! the first verify (e.g. first thing in `main`). Recording a verify takes
//! no lock and allocates nothing. Without the feature every function here
//! is empty.

#[cfg(feature = "metrics")]
use std::sync::OnceLock;

use crate::error::VerifyError;

/// The outcome label of a verification: `ok`, or the refusal's code.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const OUTCOMES: [&str; 17] = [
    "ok",
    "malformed",
    "invalid",
    "api_key_expired",
    "api_key_revoked",
    "wrong_tenant",
    "invalid_tenant",
    "api_key_inactive",
    "api_key_not_yet_valid",
    "ip_not_allowed",
    "limit_exceeded",
    "rate_limited",
    "quota_exceeded",
    "usage_exceeded",
    "store_unavailable",
    "limiter_unavailable",
    // A code this table does not know yet.
    "other",
];

/// Where `code` is in [`OUTCOMES`] (the last slot for a code it lacks).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn outcome_index(code: &str) -> usize {
    OUTCOMES
        .iter()
        .position(|o| *o == code)
        .unwrap_or(OUTCOMES.len() - 1)
}

/// A cache lookup's result.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CacheResult {
    Hit,
    Miss,
    UnknownId,
    /// A miss past the budget of store reads, refused unread.
    OverBudget,
}

/// What became of an aged cache entry's call for a background read.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) enum Refresh {
    /// Queued for a background read.
    Queued,
    /// Past the budget of background reads: served on unread.
    OverBudget,
}

#[cfg(feature = "metrics")]
struct Handles {
    outcomes: Vec<metrics::Counter>,
    lookups: [metrics::Counter; 4],
    refreshes: [metrics::Counter; 2],
}

#[cfg(feature = "metrics")]
impl Handles {
    fn new() -> Self {
        Self {
            outcomes: OUTCOMES
                .iter()
                .map(|o| metrics::counter!("keyward_verifications_total", "outcome" => *o))
                .collect(),
            lookups: ["hit", "miss", "unknown_id", "over_budget"]
                .map(|r| metrics::counter!("keyward_cache_lookups_total", "result" => r)),
            refreshes: ["queued", "over_budget"]
                .map(|r| metrics::counter!("keyward_cache_refreshes_total", "result" => r)),
        }
    }
}

/// An instance's metric handles, registered on first use.
#[derive(Default)]
pub(crate) struct Telemetry {
    #[cfg(feature = "metrics")]
    handles: OnceLock<Handles>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    #[cfg(feature = "metrics")]
    fn handles(&self) -> &Handles {
        self.handles.get_or_init(Handles::new)
    }

    /// A verification that admitted the key.
    #[inline]
    pub(crate) fn verified(&self) {
        #[cfg(feature = "metrics")]
        self.handles().outcomes[0].increment(1);
    }

    /// A verification refused with `err`.
    #[inline]
    pub(crate) fn refused(&self, err: &VerifyError) {
        #[cfg(feature = "metrics")]
        self.handles().outcomes[outcome_index(err.code())].increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = err;
    }

    /// An aged entry's call for a background read.
    #[inline]
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn refresh(&self, result: Refresh) {
        #[cfg(feature = "metrics")]
        self.handles().refreshes[result as usize].increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = result;
    }

    /// A lookup of the verification cache.
    #[inline]
    pub(crate) fn lookup(&self, result: CacheResult) {
        #[cfg(feature = "metrics")]
        self.handles().lookups[result as usize].increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = result;
    }

    /// The last-used times waiting to be written (when a flush is due or
    /// done: off the hot path, registered per call).
    #[inline]
    pub(crate) fn backlog(&self, pending: usize) {
        #[cfg(feature = "metrics")]
        metrics::gauge!("keyward_last_used_backlog").set(pending as f64);
        #[cfg(not(feature = "metrics"))]
        let _ = pending;
    }
}

/// A store call of `operation` took `elapsed`, and failed if `failed`.
/// (Store calls are off the hot path: these register per call.)
#[cfg(feature = "metrics")]
#[inline]
pub(crate) fn store_call(operation: &'static str, elapsed: std::time::Duration, failed: bool) {
    metrics::histogram!("keyward_store_call_duration_seconds", "operation" => operation)
        .record(elapsed.as_secs_f64());
    if failed {
        metrics::counter!("keyward_store_call_errors_total", "operation" => operation).increment(1);
    }
}

/// A limit refused a request (`limit`: `key`, `named`, `quota`), or the
/// limiter could not decide (`unavailable`).
#[inline]
pub(crate) fn limiter_refusal(err: &VerifyError) {
    #[cfg(feature = "metrics")]
    {
        let limit = match err {
            VerifyError::RateLimited { .. } => "key",
            VerifyError::LimitExceeded { .. } => "named",
            VerifyError::QuotaExceeded { .. } => "quota",
            VerifyError::LimiterUnavailable => "unavailable",
            _ => return,
        };
        metrics::counter!("keyward_limiter_refusals_total", "limit" => limit).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = err;
}

/// A shared limiter decided without its backend (Redis down): `local`
/// when it fell back to this instance's count, `refused` when it failed
/// closed.
#[cfg(feature = "redis")]
#[inline]
pub(crate) fn limiter_fallback(local: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "keyward_limiter_fallbacks_total",
        "decision" => if local { "local" } else { "refused" }
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = local;
}

/// An audit event was not kept (the persisted trail's queue was full,
/// or its writer gone).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[inline]
pub(crate) fn audit_dropped() {
    #[cfg(feature = "metrics")]
    metrics::counter!("keyward_audit_dropped_total").increment(1);
}

/// Audit events waiting for the persisted trail's writer, after a batch.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[inline]
pub(crate) fn audit_queue(waiting: usize) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("keyward_audit_queue").set(waiting as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = waiting;
}

/// The webhook outbox's size, after a round of the delivery worker.
#[cfg(all(feature = "webhooks", feature = "metrics"))]
#[inline]
pub(crate) fn webhook_queue(pending: u64, dead: u64) {
    metrics::gauge!("keyward_webhook_queue", "state" => "pending").set(pending as f64);
    metrics::gauge!("keyward_webhook_queue", "state" => "dead").set(dead as f64);
}

/// A webhook attempt ended: `delivered`, `retry` or `dead`.
#[cfg(feature = "webhooks")]
#[inline]
pub(crate) fn webhook_attempt(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("keyward_webhook_attempts_total", "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verify_code_has_its_outcome() {
        let errors = [
            VerifyError::Malformed,
            VerifyError::Invalid,
            VerifyError::Expired,
            VerifyError::Revoked,
            VerifyError::WrongTenant,
            VerifyError::Inactive,
            VerifyError::NotYetValid,
            VerifyError::IpNotAllowed,
            VerifyError::UsageExceeded,
            VerifyError::LimiterUnavailable,
        ];
        for e in &errors {
            assert_ne!(OUTCOMES[outcome_index(e.code())], "other", "{}", e.code());
        }
        assert_eq!(OUTCOMES[outcome_index("ok")], "ok");
        assert_eq!(OUTCOMES[outcome_index("no_such_code")], "other");
    }
}
