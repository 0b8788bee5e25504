//! Tenant key policies: rules a tenant sets for every key in it and in
//! the tenants below it, checked whenever a key is created, changed or
//! reactivated. Each refusal names the rule it broke
//! ([`KeyError::PolicyViolation`](crate::KeyError::PolicyViolation)).
//!
//! | rule | GitHub / GitLab / OpenAI / Cloudflare |
//! |---|---|
//! | [`TenantPolicy::max_lifetime`] | organisation token lifetime cap (366 days by default), GitLab's maximum lifetime, OpenAI's one year |
//! | [`TenantPolicy::require_expiry`] | "require expiration" |
//! | [`TenantPolicy::max_active_keys`] | per-organisation key caps |
//! | [`TenantPolicy::permission_ceiling`] | fine-grained token permission limits |
//! | [`TenantPolicy::require_ip_allowlist`] | IP restrictions required on live keys (Stripe's recommendation) |
//!
//! Policies are inherited: a key of `agency/loc1` obeys the policy of
//! `agency` and its own, the tightest of each rule (the shortest lifetime,
//! the smallest ceiling, …). With flat tenants, a tenant's policy is its
//! own alone.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Duration, Utc};

use crate::key::KeyRecord;
use crate::permission::PermissionSet;
use crate::tenant;

/// The rules a tenant sets for its keys; set with
/// [`KeywardBuilder::tenant_policy`](crate::KeywardBuilder::tenant_policy).
/// Every rule is off by default.
///
/// ```
/// use chrono::Duration;
/// use keyward::TenantPolicy;
///
/// // GitHub's default for organisations: tokens live at most 366 days.
/// let policy = TenantPolicy::new().max_lifetime(Duration::days(366)).require_expiry();
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct TenantPolicy {
    max_lifetime: Option<Duration>,
    require_expiry: bool,
    max_active_keys: Option<u64>,
    permission_ceiling: Option<PermissionSet>,
    require_ip_allowlist: bool,
    on_leak: Option<LeakResponse>,
}

/// What keyward does with a key a secret scanner found in public.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeakResponse {
    /// Revoke it at once (the default, as GitLab and Cloudflare do), mark
    /// it exposed, and send `key.leaked`.
    #[default]
    Revoke,
    /// Leave it working, mark it exposed
    /// ([`KeyInfo::exposed_at`](crate::KeyInfo::exposed_at)) and send
    /// `key.leaked`: for tenants that rotate on their own schedule.
    Notify,
}

impl TenantPolicy {
    /// A policy with no rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys live at most `lifetime` from creation: a key with a later
    /// expiry, or with none, is refused.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = Some(lifetime);
        self
    }

    /// Every key needs an expiry.
    pub fn require_expiry(mut self) -> Self {
        self.require_expiry = true;
        self
    }

    /// At most `max` active keys (neither revoked nor expired) in the
    /// tenant, counted per tenant: each tenant below one with this rule
    /// may hold as many of its own.
    pub fn max_active_keys(mut self, max: u64) -> Self {
        self.max_active_keys = Some(max);
        self
    }

    /// Keys hold at most these permissions (roles included), whoever
    /// creates them.
    pub fn permission_ceiling(mut self, ceiling: PermissionSet) -> Self {
        self.permission_ceiling = Some(ceiling);
        self
    }

    /// Every key needs an IP allowlist.
    pub fn require_ip_allowlist(mut self) -> Self {
        self.require_ip_allowlist = true;
        self
    }

    /// What to do with a key reported leaked ([`LeakResponse::Revoke`]
    /// unless set). With nested tenants, a `Revoke` above wins.
    pub fn on_leak(mut self, response: LeakResponse) -> Self {
        self.on_leak = Some(response);
        self
    }

    /// The catalog of the permission ceiling, if there is one.
    pub(crate) fn ceiling_catalog(&self) -> Option<&crate::permission::Catalog> {
        self.permission_ceiling.as_ref().map(PermissionSet::catalog)
    }

    /// The tightest of `self` and `other`, rule by rule.
    fn tightest(mut self, other: &TenantPolicy) -> Self {
        self.max_lifetime = min_some(self.max_lifetime, other.max_lifetime);
        self.require_expiry |= other.require_expiry;
        self.max_active_keys = min_some(self.max_active_keys, other.max_active_keys);
        self.permission_ceiling = match (self.permission_ceiling, &other.permission_ceiling) {
            (Some(a), Some(b)) => Some(a.intersection(b)),
            (a, b) => a.or_else(|| b.clone()),
        };
        self.require_ip_allowlist |= other.require_ip_allowlist;
        self.on_leak = match (self.on_leak, other.on_leak) {
            (Some(LeakResponse::Revoke), _) | (_, Some(LeakResponse::Revoke)) => {
                Some(LeakResponse::Revoke)
            }
            (a, b) => a.or(b),
        };
        self
    }
}

fn min_some<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The rule a key broke: what
/// [`KeyError::PolicyViolation`](crate::KeyError::PolicyViolation) names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyRule {
    /// The key would live longer than this (or forever).
    MaxLifetime(Duration),
    /// The key has no expiry.
    ExpiryRequired,
    /// The tenant holds this many active keys already.
    MaxActiveKeys(u64),
    /// The key would hold these permissions, above the ceiling.
    PermissionCeiling(Vec<String>),
    /// The key has no IP allowlist.
    IpAllowlistRequired,
}

impl PolicyRule {
    /// A stable snake_case name: `max_lifetime`, `expiry_required`,
    /// `max_active_keys`, `permission_ceiling`, `ip_allowlist_required`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MaxLifetime(_) => "max_lifetime",
            Self::ExpiryRequired => "expiry_required",
            Self::MaxActiveKeys(_) => "max_active_keys",
            Self::PermissionCeiling(_) => "permission_ceiling",
            Self::IpAllowlistRequired => "ip_allowlist_required",
        }
    }
}

impl fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxLifetime(d) => write!(
                f,
                "max_lifetime: keys must expire within {} days of creation",
                d.num_days()
            ),
            Self::ExpiryRequired => f.write_str("expiry_required: keys must have an expiry"),
            Self::MaxActiveKeys(n) => write!(
                f,
                "max_active_keys: the tenant may hold at most {n} active keys; revoke or delete one first"
            ),
            Self::PermissionCeiling(p) => write!(
                f,
                "permission_ceiling: keys may not hold {}",
                p.join(", ")
            ),
            Self::IpAllowlistRequired => {
                f.write_str("ip_allowlist_required: keys must have an IP allowlist")
            }
        }
    }
}

/// What call a policy check is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A new key: every rule.
    Create,
    /// A key rolled, reactivated, or given new permissions, roles or
    /// allowlist: the rules on what it holds (ceiling, allowlist), not
    /// those on expiry, which was fixed when it was made.
    Change,
}

/// Every tenant's policy, as configured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policies {
    by_tenant: HashMap<String, TenantPolicy>,
    nested: bool,
}

impl Policies {
    pub(crate) fn new(by_tenant: HashMap<String, TenantPolicy>, nested: bool) -> Self {
        Self { by_tenant, nested }
    }

    /// The policy a key of `tenant` obeys: its own and, with nested
    /// tenants, every ancestor's, tightest first. `None`: no rules.
    pub(crate) fn for_tenant(&self, t: &str) -> Option<TenantPolicy> {
        if self.by_tenant.is_empty() {
            return None;
        }
        let mut found: Option<TenantPolicy> = None;
        for (name, policy) in &self.by_tenant {
            if tenant::covers(name, t, self.nested) {
                found = Some(match found {
                    Some(f) => f.tightest(policy),
                    None => policy.clone(),
                });
            }
        }
        found
    }

    /// Checks `key`, as a call would leave it, against its tenant's
    /// policy, except the active-key count. On a change, the rules on
    /// expiry (fixed at creation) are not checked again.
    ///
    /// A ceiling is of the instance's catalog (the builder checks), so
    /// `effective` is compared with it bit for bit.
    pub(crate) fn check(
        &self,
        key: &KeyRecord,
        effective: &PermissionSet,
        scope: Scope,
    ) -> Result<(), PolicyRule> {
        let created_at: DateTime<Utc> = key.created_at;
        let Some(p) = self.for_tenant(&key.tenant) else {
            return Ok(());
        };
        let refuse = Err;
        if let (Some(max), Scope::Create) = (p.max_lifetime, scope) {
            let latest = created_at.checked_add_signed(max);
            if key.expires_at.is_none_or(|e| latest.is_some_and(|l| e > l)) {
                return refuse(PolicyRule::MaxLifetime(max));
            }
        }
        if p.require_expiry && scope == Scope::Create && key.expires_at.is_none() {
            return refuse(PolicyRule::ExpiryRequired);
        }
        if let Some(ceiling) = &p.permission_ceiling {
            if !effective.is_subset_of(ceiling) {
                return refuse(PolicyRule::PermissionCeiling(
                    effective.missing_from(ceiling),
                ));
            }
        }
        if p.require_ip_allowlist && key.allowed_ips.is_none() {
            return refuse(PolicyRule::IpAllowlistRequired);
        }
        Ok(())
    }

    /// The permission ceiling of `tenant`, if any: applied again when a
    /// key is loaded, so that a role redefined later cannot lift a key
    /// above it.
    pub(crate) fn ceiling(&self, tenant: &str) -> Option<PermissionSet> {
        self.for_tenant(tenant)?.permission_ceiling
    }

    /// What to do with a leaked key of `tenant`.
    #[cfg(feature = "leaks")]
    pub(crate) fn on_leak(&self, tenant: &str) -> LeakResponse {
        self.for_tenant(tenant)
            .and_then(|p| p.on_leak)
            .unwrap_or_default()
    }

    /// The active-key cap of `tenant`, if any.
    pub(crate) fn max_active(&self, tenant: &str) -> Option<u64> {
        self.for_tenant(tenant)?.max_active_keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::sample_record;
    use crate::permission::Catalog;

    fn catalog() -> Catalog {
        Catalog::builder()
            .resource("contacts", ["read", "write"])
            .resource("leads", ["read"])
            .build()
            .expect("catalog")
    }

    fn policies(nested: bool) -> Policies {
        let c = catalog();
        let mut by = HashMap::new();
        by.insert(
            "agency".to_string(),
            TenantPolicy::new()
                .max_lifetime(Duration::days(366))
                .max_active_keys(10)
                .permission_ceiling(c.parse_set(["contacts:*"]).expect("set")),
        );
        by.insert(
            "agency/loc1".to_string(),
            TenantPolicy::new()
                .max_lifetime(Duration::days(30))
                .max_active_keys(50)
                .require_ip_allowlist()
                .permission_ceiling(c.parse_set(["contacts:read", "leads:read"]).expect("set")),
        );
        Policies::new(by, nested)
    }

    #[test]
    fn the_tightest_of_each_rule_applies_below() {
        let p = policies(true).for_tenant("agency/loc1").expect("a policy");
        assert_eq!(p.max_lifetime, Some(Duration::days(30)));
        assert_eq!(p.max_active_keys, Some(10));
        assert!(p.require_ip_allowlist && !p.require_expiry);
        let ceiling = p.permission_ceiling.expect("ceiling");
        assert_eq!(ceiling.names().collect::<Vec<_>>(), ["contacts:read"]);
        // The parent is not bound by its child's rules.
        let parent = policies(true).for_tenant("agency").expect("a policy");
        assert_eq!(parent.max_lifetime, Some(Duration::days(366)));
        assert!(!parent.require_ip_allowlist);
        // Flat tenants: each its own; unrelated tenants: none.
        let flat = policies(false).for_tenant("agency/loc1").expect("a policy");
        assert_eq!(flat.max_active_keys, Some(50));
        assert!(policies(true).for_tenant("agencyx").is_none());
        assert!(policies(true).for_tenant("globex/agency").is_none());
    }

    #[test]
    fn lifetime_counts_from_creation_and_only_on_create() {
        let c = catalog();
        let p = policies(true);
        let mut key = sample_record("agency");
        key.created_at = DateTime::UNIX_EPOCH;
        key.expires_at = Some(key.created_at + Duration::days(366));
        assert!(p.check(&key, &c.none(), Scope::Create).is_ok());
        key.expires_at = Some(key.created_at + Duration::days(366) + Duration::seconds(1));
        let err = p
            .check(&key, &c.none(), Scope::Create)
            .expect_err("too long");
        assert!(err.to_string().contains("max_lifetime"), "{err}");
        assert!(p.check(&key, &c.none(), Scope::Change).is_ok());
        key.expires_at = None;
        assert!(p.check(&key, &c.none(), Scope::Create).is_err());
        // The ceiling applies on update too.
        let all = c.all();
        assert_eq!(
            p.check(&key, &all, Scope::Change),
            Err(PolicyRule::PermissionCeiling(vec!["leads:read".into()]))
        );
    }
}
