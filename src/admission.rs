//! The admission decision: what a key that proved its secret may do with
//! this request, written once for the cached path and the store path.
//!
//! The order is part of the security contract, and [`admit`] is the only
//! place it is written:
//!
//! 1. **status**: revoked, then expired, then not valid yet
//!    (`not_before`);
//! 2. **address**: a key with an IP allowlist needs the request's client
//!    address on it;
//! 3. **tenant**: the request's tenant must be the key's own or, with
//!    nested tenants, below it;
//! 4. **inactivity**: a key unused for the inactivity period is refused;
//! 5. **limits**: the key's rate limit, its named limits (the request's
//!    cost, all or none), its tenant's quota, the quota of the tenant it
//!    acts for (see [`Limits`]);
//! 6. **credits**: the request's cost in uses of a usage-limited key,
//!    taken from the store.
//!
//! Nothing is counted for a request an earlier step refuses, and, with the
//! built-in limiter, a request a quota refuses is given back to the key's
//! limit (a host's limiter is never given anything back). Where a step
//! cannot be decided without awaiting (the store, a host's limiter), the
//! decision stops there with [`Verdict::Await`] and resumes from that
//! step, so nothing is counted twice.

use crate::cache::CachedKey;
use crate::error::VerifyError;
use crate::key::KeyStatus;
use crate::limit::{Costs, Counted, Limits, Refusal, Step};
use crate::tenant;

/// A step of the decision, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Gate {
    /// Revoked, expired, or not valid yet.
    Status,
    /// The client address, against the key's allowlist.
    Address,
    /// The request's tenant.
    Tenant,
    /// Unused for too long.
    Inactivity,
    /// Rate limits and quotas, from this step on.
    Limits(Step),
    /// A use of a usage-limited key.
    Credit,
}

impl Gate {
    /// The first step.
    pub(crate) const FIRST: Self = Self::Status;
}

/// Whether a key went unused for the inactivity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Used recently enough (or no inactivity policy).
    No,
    /// Unused for the period, as far as anyone can know.
    Yes,
    /// Unused for the period as far as this copy knows; another instance
    /// may have used it since: ask the store.
    Unsure,
}

/// What the decision needs of the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The tenant the request names, canonical (validated before the key
    /// was looked at).
    pub(crate) tenant: Option<&'a str>,
    /// The clock, in microseconds.
    pub(crate) now_us: i64,
    /// Whether the key went unused for the inactivity period.
    pub(crate) idle: Idle,
    /// Tenants are paths: an ancestor's key acts for its descendants.
    pub(crate) nested: bool,
    /// The client's address, if the caller gave one.
    pub(crate) client_ip: Option<std::net::IpAddr>,
    /// What the request costs.
    pub(crate) costs: Costs<'a>,
}

/// The outcome of [`admit`].
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Every step passed.
    Admit,
    /// A step refused the request.
    Refuse(VerifyError),
    /// This step needs an await; every step before it passed (and
    /// counted). Resume the decision from it.
    Await(Gate),
}

/// Decides, from step `from` on, whether `entry` may serve `req`,
/// counting the request against the limits it passes. Always inlined:
/// passed through memory, the request's parts were read back in wider
/// loads than the stores that wrote them, a stall on every verify.
#[inline(always)]
pub(crate) fn admit(entry: &CachedKey, req: &Request<'_>, limits: &Limits, from: Gate) -> Verdict {
    if from <= Gate::Status {
        match entry.status(req.now_us) {
            KeyStatus::Active => {}
            KeyStatus::Revoked => return Verdict::Refuse(VerifyError::Revoked),
            KeyStatus::Expired => return Verdict::Refuse(VerifyError::Expired),
        }
        if entry.not_before_us() > req.now_us {
            return Verdict::Refuse(VerifyError::NotYetValid);
        }
    }
    if from <= Gate::Address {
        if let Some(list) = entry.allowed_ips() {
            if !req.client_ip.is_some_and(|ip| list.allows(ip)) {
                return Verdict::Refuse(VerifyError::IpNotAllowed);
            }
        }
    }
    if from <= Gate::Tenant {
        // Both are canonical already: the request's tenant was validated
        // when the verify began, the key's when it was read from the store.
        if let Some(t) = req.tenant {
            if !tenant::covers_canonical(&entry.tenant.name, t, req.nested) {
                return Verdict::Refuse(VerifyError::WrongTenant);
            }
        }
    }
    if from <= Gate::Inactivity {
        match req.idle {
            Idle::No => {}
            Idle::Yes => return Verdict::Refuse(VerifyError::Inactive),
            Idle::Unsure => return Verdict::Await(Gate::Inactivity),
        }
    }
    if from < Gate::Credit {
        let step = match from {
            Gate::Limits(step) => step,
            _ => Step::Key,
        };
        let who = entry.subject(req.tenant, req.now_us, req.costs);
        match limits.try_count(&who, step) {
            Counted::Passed => {}
            Counted::Refused(r) => return Verdict::Refuse(refused(r)),
            Counted::Await(step) => return Verdict::Await(Gate::Limits(step)),
        }
    }
    if entry.metered {
        return Verdict::Await(Gate::Credit);
    }
    Verdict::Admit
}

/// A limit's refusal as the verify error it is.
pub(crate) fn refused(refusal: Refusal) -> VerifyError {
    match refusal {
        Refusal::Key(retry_after) => VerifyError::RateLimited { retry_after },
        Refusal::Named(limit, retry_after) => VerifyError::LimitExceeded { limit, retry_after },
        Refusal::Quota(retry_after) => VerifyError::QuotaExceeded { retry_after },
        Refusal::Unavailable => VerifyError::LimiterUnavailable,
    }
}

#[cfg(test)]
mod tests;
