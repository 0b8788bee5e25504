//! Counting one verified request against its limits, in order: the key's
//! own rate limit, its tenant's quota, then the quota of the tenant it
//! acts for (a key of `agency` acting for `agency/loc1`). A request
//! refused by a later limit is given back to the earlier ones.
//!
//! The built-in limiter keeps each state in one word beside what it
//! limits (the key's in its cache entry, a tenant's beside the tenant),
//! so counting takes no lock and no map. A host's [`RateLimiter`] is
//! asked first through [`RateLimiter::try_check`], without awaiting, and
//! awaited only for the buckets it cannot answer at once.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Duration;

use super::{
    gcra_now, wait, Bucket, Charge, Costs, Decision, Gcra, NamedDecision, NamedSlot, NamedStates,
    RateLimit, RateLimiter, Stash, Tenant, Tenants,
};
use crate::clock::micros_to_time;
use crate::token::KeyId;

/// Most tenants whose quota state is kept for keys acting for a tenant
/// below their own.
pub(crate) const MAX_TENANTS: usize = 65_536;

/// A key's rate limit as the built-in limiter holds it: GCRA parameters
/// and the state. Opaque to the cache that holds it. (A host's limiter
/// is given the limit as written, [`Subject::limit`].)
#[derive(Debug)]
pub(crate) struct KeySlot {
    tat: AtomicU64,
    gcra: Option<Gcra>,
}

impl KeySlot {
    /// A slot for `limit`, with a full burst.
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        Self {
            tat: AtomicU64::new(0),
            gcra: limit.map(|l| l.gcra()),
        }
    }

    /// The state, to keep aside when the slot's entry leaves the cache.
    pub(crate) fn state(&self) -> u64 {
        self.tat.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Restores a state kept aside.
    pub(crate) fn restore(&mut self, state: u64) {
        *self.tat.get_mut() = state;
    }

    /// Takes on what another slot of the same key counted, if it counted
    /// further (its state is later): a count is never lost to a swap.
    pub(crate) fn catch_up(&self, state: u64) {
        self.tat
            .fetch_max(state, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts one request in the slot itself (its entry is in the cache).
    #[cfg(test)]
    pub(crate) fn check(&self, now_ns: u64) -> Result<(), u64> {
        self.gcra.map_or(Ok(()), |g| g.check(&self.tat, now_ns))
    }
}

/// What one request is counted against.
pub(crate) struct Subject<'a> {
    /// The key.
    pub(crate) id: KeyId,
    /// Its limit, for the built-in limiter.
    pub(crate) slot: &'a KeySlot,
    /// Its limit as written, for a host's limiter: borrowed, so that
    /// the built-in limiter's path never reads it.
    pub(crate) limit: &'a Option<RateLimit>,
    /// Whether `slot` holds the key's state; otherwise the stash does.
    pub(crate) in_cache: bool,
    /// The key's tenant.
    pub(crate) tenant: &'a Tenant,
    /// The tenant the request names, when it names one.
    pub(crate) acting_for: Option<&'a str>,
    /// The clock, in microseconds.
    pub(crate) now_us: i64,
    /// The key's named limits.
    pub(crate) named: &'a [NamedSlot],
    /// What the request costs them.
    pub(crate) costs: Costs<'a>,
}

/// Why a limit refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The key's own rate limit, with the wait until a retry can pass.
    Key(Duration),
    /// One of the key's named limits, and the wait.
    Named(Arc<str>, Duration),
    /// A tenant's quota.
    Quota(Duration),
    /// A host's limiter could not decide and fails closed.
    Unavailable,
}

/// The limits of one step, in the order they are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    /// The key's own rate limit.
    Key,
    /// The key's named limits, together.
    Named,
    /// The quota of the key's tenant.
    OwnQuota,
    /// The quota of the tenant the key acts for, if another.
    ActingQuota,
}

/// Where counting stands when it cannot go on without awaiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Every limit let the request through.
    Passed,
    /// A limit refused it (and what earlier limits took was given back).
    Refused(Refusal),
    /// A host's limiter must be awaited, from this step on; earlier steps
    /// counted the request.
    Await(Step),
}

/// Every rate limit and quota of an instance, and their states.
#[derive(Debug)]
pub(crate) struct Limits {
    host: Option<Arc<dyn RateLimiter>>,
    tenants: Tenants,
    quota: Option<RateLimit>,
    quotas: HashMap<String, RateLimit>,
    stash: Arc<Mutex<Stash>>,
    named: NamedStates,
}

impl Limits {
    /// `quota` for every tenant but those in `quotas`; `host` in place of
    /// the built-in limiter; `stash` shared with the cache.
    pub(crate) fn new(
        host: Option<Arc<dyn RateLimiter>>,
        quota: Option<RateLimit>,
        quotas: HashMap<String, RateLimit>,
        stash: Arc<Mutex<Stash>>,
    ) -> Self {
        Self {
            host,
            tenants: Tenants::default(),
            quota,
            quotas,
            stash,
            named: NamedStates::default(),
        }
    }

    /// The quota of `tenant`, if any.
    pub(crate) fn quota_for(&self, tenant: &str) -> Option<RateLimit> {
        self.quotas.get(tenant).copied().or(self.quota)
    }

    /// The tenant named `name` (a key's, as it is loaded).
    pub(crate) fn tenant(&self, name: &str) -> Arc<Tenant> {
        self.tenants.get(name, || self.quota_for(name))
    }

    /// Gives key `to` the named-limit states of key `from` (see
    /// [`Cache::inherit_limit`](crate::cache::Cache::inherit_limit) for the
    /// key's own limit). The built-in limiter's only: a host's limiter
    /// keeps its own state.
    pub(crate) fn inherit(&self, from: &KeyId, to: KeyId) {
        self.named.inherit(from, to);
    }

    /// Forgets tenants no cached key names and whose quota has refilled.
    pub(crate) fn evict_idle(&self, now_us: i64) {
        self.tenants.evict_idle(gcra_now(now_us));
    }

    /// Counts the request from `from` on without awaiting: the built-in
    /// limiter always answers; a host's limiter answers when its
    /// [`RateLimiter::try_check`] does.
    #[inline]
    pub(crate) fn try_count(&self, who: &Subject<'_>, from: Step) -> Counted {
        match &self.host {
            None => match self.count_builtin(who, from) {
                Ok(()) => Counted::Passed,
                Err(r) => Counted::Refused(r),
            },
            Some(host) => self.try_count_host(&**host, who, from),
        }
    }

    /// Counts the request from `from` on, awaiting a host's limiter where
    /// it cannot answer at once.
    pub(crate) async fn count(&self, who: &Subject<'_>, from: Step) -> Result<(), Refusal> {
        let mut from = from;
        loop {
            let step = match self.try_count(who, from) {
                Counted::Passed => return Ok(()),
                Counted::Refused(r) => return Err(r),
                Counted::Await(step) => step,
            };
            // Only a host's limiter defers, and only for a bucket it has.
            let now = micros_to_time(who.now_us);
            if step == Step::Named {
                if let Some(host) = &self.host {
                    let charges = charges(who);
                    named_decided(who, host.check_named(who.id, &charges, now).await)?;
                }
            } else {
                let bucket = self.bucket(who, step)?;
                if let (Some(host), Some((bucket, limit))) = (&self.host, bucket) {
                    decided(step, host.check(bucket, limit, now).await)?;
                }
            }
            match next(step) {
                Some(n) => from = n,
                None => return Ok(()),
            }
        }
    }

    /// The host's buckets from `from` on, each answered by `try_check`
    /// until one cannot be.
    fn try_count_host(&self, host: &dyn RateLimiter, who: &Subject<'_>, from: Step) -> Counted {
        let now = micros_to_time(who.now_us);
        let mut step = Some(from);
        while let Some(s) = step {
            if s == Step::Named {
                if !who.named.is_empty() {
                    match host.try_check_named(who.id, &charges(who), now) {
                        None => return Counted::Await(s),
                        Some(d) => {
                            if let Err(r) = named_decided(who, d) {
                                return Counted::Refused(r);
                            }
                        }
                    }
                }
                step = next(s);
                continue;
            }
            match self.bucket(who, s) {
                Err(r) => return Counted::Refused(r),
                Ok(None) => {}
                Ok(Some((bucket, limit))) => match host.try_check(bucket, limit, now) {
                    None => return Counted::Await(s),
                    Some(d) => {
                        if let Err(r) = decided(s, d) {
                            return Counted::Refused(r);
                        }
                    }
                },
            }
            step = next(s);
        }
        Counted::Passed
    }

    /// What a host's limiter counts at `step`: `None` when nothing
    /// limits it.
    fn bucket<'a>(
        &self,
        who: &Subject<'a>,
        step: Step,
    ) -> Result<Option<(Bucket<'a>, RateLimit)>, Refusal> {
        Ok(match step {
            Step::Key => who.limit.map(|l| (Bucket::Key(who.id), l)),
            // Counted through `check_named`, never as one bucket.
            Step::Named => None,
            Step::OwnQuota => {
                // A tenant acted for that cannot be tracked is refused
                // before any quota counts the request.
                self.acting_for(who)?;
                who.tenant
                    .quota
                    .as_ref()
                    .map(|(q, _)| (Bucket::Tenant(&who.tenant.name), *q))
            }
            Step::ActingQuota => {
                let acting = self.acting_for(who)?;
                match (acting, who.acting_for) {
                    (Some(t), Some(name)) => {
                        t.quota.as_ref().map(|(q, _)| (Bucket::Tenant(name), *q))
                    }
                    _ => None,
                }
            }
        })
    }

    /// The built-in limiter: one compare-and-swap on the key's state, one
    /// on its tenant's, and one on the tenant it acts for, if another
    /// (looked up only once the key's own limit let the request through).
    #[inline]
    fn count_builtin(&self, who: &Subject<'_>, from: Step) -> Result<(), Refusal> {
        let now_ns = gcra_now(who.now_us);
        // What was counted before `from` is not counted again, nor given
        // back by a refusal here.
        let key_counted = from == Step::Key;
        if let (Some(gcra), true) = (&who.slot.gcra, key_counted) {
            let checked = if who.in_cache {
                gcra.check(&who.slot.tat, now_ns)
            } else {
                self.stash().check(&who.id, gcra, now_ns)
            };
            checked.map_err(|ns| Refusal::Key(wait(ns)))?;
        }
        let named_counted = from <= Step::Named && !who.named.is_empty();
        if named_counted {
            if let Err((i, ns)) = self.named.charge(&who.id, who.named, &who.costs, now_ns) {
                if key_counted {
                    refund_key(who);
                }
                return Err(Refusal::Named(who.named[i].name.clone(), wait(ns)));
            }
        }
        let refund = |who: &Subject<'_>| {
            if key_counted {
                refund_key(who);
            }
            if named_counted {
                self.named.refund(&who.id, who.named, &who.costs);
            }
        };
        if who.acting_for.is_some_and(|t| t != &*who.tenant.name) {
            return self
                .count_quotas_acting(who, from)
                .inspect_err(|_| refund(who));
        }
        if let (Some((_, gcra)), true) = (&who.tenant.quota, from <= Step::OwnQuota) {
            if let Err(ns) = gcra.check(&who.tenant.tat, now_ns) {
                // A refused request counts against no limit.
                refund(who);
                return Err(Refusal::Quota(wait(ns)));
            }
        }
        Ok(())
    }

    /// The quotas of a key acting for a tenant below its own, from `from`
    /// on: its own tenant's, then the one it acts for. Off the common
    /// path.
    #[cold]
    #[inline(never)]
    fn count_quotas_acting(&self, who: &Subject<'_>, from: Step) -> Result<(), Refusal> {
        let now_ns = gcra_now(who.now_us);
        let acting = self.acting_for(who)?;
        let own = Some(who.tenant).filter(|_| from <= Step::OwnQuota);
        let quotas = [own, acting.as_deref()];
        for (i, tenant) in quotas.iter().enumerate() {
            let Some((tenant, (_, gcra))) = tenant.and_then(|t| Some((t, t.quota.as_ref()?)))
            else {
                continue;
            };
            if let Err(ns) = gcra.check(&tenant.tat, now_ns) {
                // A refused request counts against no limit: give back
                // what the checks before this one took.
                for t in quotas[..i].iter().flatten() {
                    if let Some((_, g)) = &t.quota {
                        g.refund(&t.tat);
                    }
                }
                return Err(Refusal::Quota(wait(ns)));
            }
        }
        Ok(())
    }

    /// The tenant a key acts for when it is not the key's own (an
    /// ancestor's key acting for a descendant), if that tenant has a
    /// quota: its state, shared with the descendant's own keys.
    ///
    /// At most [`MAX_TENANTS`] tenants are kept: beyond, while none is
    /// idle, a request for yet another tenant is refused as over quota.
    fn acting_for(&self, who: &Subject<'_>) -> Result<Option<Arc<Tenant>>, Refusal> {
        let Some(t) = who.acting_for.filter(|t| *t != &*who.tenant.name) else {
            return Ok(None);
        };
        let Some(quota) = self.quota_for(t) else {
            return Ok(None);
        };
        match self
            .tenants
            .get_bounded(t, quota, MAX_TENANTS, gcra_now(who.now_us))
        {
            Some(state) => Ok(Some(state)),
            None => Err(Refusal::Quota(Duration::seconds(1))),
        }
    }

    fn stash(&self) -> std::sync::MutexGuard<'_, Stash> {
        self.stash.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The step after `step`, if any.
fn next(step: Step) -> Option<Step> {
    match step {
        Step::Key => Some(Step::Named),
        Step::Named => Some(Step::OwnQuota),
        Step::OwnQuota => Some(Step::ActingQuota),
        Step::ActingQuota => None,
    }
}

/// A host limiter's decision at `step`, as counting goes on or stops.
fn decided(step: Step, decision: Decision) -> Result<(), Refusal> {
    match decision {
        Decision::Allow => Ok(()),
        Decision::Deny { retry_after } => Err(match step {
            Step::Key | Step::Named => Refusal::Key(retry_after),
            Step::OwnQuota | Step::ActingQuota => Refusal::Quota(retry_after),
        }),
        Decision::Unavailable => Err(Refusal::Unavailable),
    }
}

/// A host limiter's decision on a key's named limits.
fn named_decided(who: &Subject<'_>, decision: NamedDecision) -> Result<(), Refusal> {
    match decision {
        NamedDecision::Allow => Ok(()),
        NamedDecision::Deny { limit, retry_after } => {
            // A host naming no limit of the key's: its first is named.
            let slot = who.named.get(limit).or(who.named.first());
            let name = slot.map_or_else(|| "".into(), |s| s.name.clone());
            Err(Refusal::Named(name, retry_after))
        }
        _ => Err(Refusal::Unavailable),
    }
}

/// A key's named limits as a host limiter is asked them.
fn charges<'a>(who: &'a Subject<'_>) -> Vec<Charge<'a>> {
    who.named
        .iter()
        .map(|s| Charge {
            name: &s.name,
            limit: s.limit,
            cost: who.costs.of(&s.name),
        })
        .collect()
}

/// Gives back the request a key's own limit counted, when a quota
/// refused it.
fn refund_key(who: &Subject<'_>) {
    if let (Some(gcra), true) = (&who.slot.gcra, who.in_cache) {
        gcra.refund(&who.slot.tat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use chrono::{DateTime, Utc};

    /// Answers every bucket at once, allowing, and remembers it.
    #[derive(Debug, Default)]
    struct Counting(Mutex<Vec<String>>);

    #[async_trait]
    impl RateLimiter for Counting {
        async fn check(&self, bucket: Bucket<'_>, _: RateLimit, _: DateTime<Utc>) -> Decision {
            self.0.lock().expect("lock").push(format!("{bucket:?}"));
            Decision::Allow
        }

        fn try_check(&self, b: Bucket<'_>, _: RateLimit, _: DateTime<Utc>) -> Option<Decision> {
            self.0.lock().expect("lock").push(format!("{b:?}"));
            Some(Decision::Allow)
        }
    }

    #[test]
    fn an_untrackable_tenant_is_refused_before_a_host_counts_any_quota() {
        let host = Arc::new(Counting::default());
        let quota = RateLimit::per_minute(5).expect("valid");
        let stash = Arc::new(Mutex::new(Stash::for_capacity(16)));
        let limits = Limits::new(Some(host.clone()), Some(quota), HashMap::new(), stash);
        let now_us = 1_700_000_000_000_000;
        // Every slot taken by a tenant that is being limited.
        for i in 0..MAX_TENANTS {
            let t = limits
                .tenants
                .get_bounded(
                    &format!("agency/t{i}"),
                    quota,
                    MAX_TENANTS,
                    gcra_now(now_us),
                )
                .expect("room");
            quota.gcra().check(&t.tat, gcra_now(now_us)).expect("first");
        }
        let tenant = limits.tenant("agency");
        let slot = KeySlot::new(Some(quota));
        let who = Subject {
            id: KeyId::random().expect("OS randomness"),
            slot: &slot,
            limit: &Some(quota),
            in_cache: true,
            tenant: &tenant,
            acting_for: Some("agency/new"),
            now_us,
            named: &[],
            costs: Costs::ONE,
        };
        let counted = limits.try_count(&who, Step::Key);
        assert_eq!(
            counted,
            Counted::Refused(Refusal::Quota(Duration::seconds(1)))
        );
        let seen = host.0.lock().expect("lock").clone();
        assert_eq!(
            seen.len(),
            1,
            "only the key's own limit was asked: {seen:?}"
        );
        assert!(seen[0].starts_with("Key("));
    }
}
