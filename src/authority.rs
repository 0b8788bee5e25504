//! The rule of key management: **a key never holds more than the actor
//! who created or last changed it, in any dimension**.
//!
//! Every management call of [`Keyward`](crate::Keyward) (create, rename,
//! set permissions, set the rate limit, revoke, reactivate, roll, delete)
//! asks one function, `authorize`, before it writes. It compares the
//! actor with the key in each [`Dimension`]:
//!
//! | dimension | the actor dominates a key when |
//! |---|---|
//! | tenant | the key's tenant is the actor's, or (nested tenants) below it |
//! | permissions | the actor holds every permission the key holds |
//! | expiry | the actor has no expiry, or the key expires no later |
//! | rate limit | the actor has no limit, or the key's (its own or the instance default) [is within](crate::RateLimit::is_within) it |
//! | usage | the actor is not usage-limited, or the key has no more uses left and no more generous refill |
//! | IP allowlist | the actor has no allowlist, or the key has one and every network on it is within the actor's |
//! | named limits | every named limit of the actor is on the key, by name, [within](crate::RateLimit::is_within) the actor's |
//!
//! A key's permissions are its own and those of the roles it holds, as
//! the roles are defined when the call is made.
//!
//! and applies two checks:
//!
//! 1. **Target.** To change, revoke, reactivate, roll or delete a key, the
//!    actor must dominate that key as it is now
//!    ([`KeyError::Outranked`] otherwise; a key outside the actor's
//!    tenants is [`KeyError::NotFound`], so its existence does not leak).
//!    A lesser manager cannot touch a stronger key.
//! 2. **Result.** The key as the call leaves it must be dominated by the
//!    actor ([`KeyError::PermissionEscalation`] or
//!    [`KeyError::BoundExceeded`]). No call leaves any key looser than its
//!    manager, and a key acting on itself cannot loosen itself.
//!
//! **Who the actor is.** An [`Actor`] made by
//! [`Verified::actor`](crate::Verified::actor) carries its key's bounds:
//! the keys it creates expire no later than it does, are limited no more
//! loosely, and have no more uses than it has left. A key created without
//! an expiry, a rate limit or a usage limit by such an actor inherits the
//! actor's. A human actor carries the bounds the host gives it
//! ([`Actor::expires_at`], [`Actor::rate_limit`], [`Actor::remaining`]);
//! by default none.
//!
//! **When the creator goes.** A key's bounds are fixed when it is created
//! or changed; they do not follow the creator afterwards. A key created by
//! a key expires no later than its creator did, so it never outlives the
//! creator's expiry. Revoking or deleting the creator does **not** cascade
//! to the keys it created: those are live integrations of the tenant, and
//! silently breaking them is worse than the risk, which the audit trail
//! and `created_by` (`key:<id>`) let an operator review and revoke
//! deliberately.
//!
//! **Uses are split, never copied.** A key created by a usage-limited
//! *key* must be given a usage limit (it cannot be unlimited, nor have a
//! refill), and those uses are taken from the creating key's own at
//! creation (`carved_uses`): the two together never hold more than the
//! creator had. A key that refills cannot create usage-limited keys: its
//! unspent uses of a period would outlive the period in them. A human actor's usage bound ([`Actor::remaining`]) is a
//! cap per key, since a person has no count to split. A roll moves the
//! uses to the new key: see [`Keyward::roll`](crate::Keyward::roll).

use chrono::{DateTime, Utc};

use crate::access::IpAllowlist;
use crate::error::{Dimension, KeyError};
use crate::key::{Actor, KeyRecord};
use crate::limit::{NamedLimit, RateLimit};
use crate::permission::{Catalog, PermissionSet};
use crate::policy::Refill;
use crate::role::{granted, RoleMap};
use crate::tenant;
use crate::token::KeyId;

/// Longest actor id, in characters.
const MAX_ACTOR_CHARS: usize = 256;

/// What the rule needs of the instance.
#[derive(Debug, Clone)]
pub(crate) struct Rules<'a> {
    pub(crate) catalog: &'a Catalog,
    pub(crate) nested: bool,
    /// The rate limit of keys without their own.
    pub(crate) default_limit: Option<RateLimit>,
    /// The roles in force.
    pub(crate) roles: std::sync::Arc<RoleMap>,
}

/// The actor may manage keys at all: the host said so, its id can be
/// recorded as `created_by` and in audit events (not empty, not too long,
/// no control characters), its tenant is canonical, and it is not a key
/// that was rolled away (a leaked key in its grace period must not manage
/// its own successor).
///
/// # Errors
/// [`KeyError::Forbidden`].
pub(crate) fn ensure_manager(actor: &Actor) -> Result<(), KeyError> {
    let id = actor.id();
    let recordable = !id.is_empty()
        && id.chars().count() <= MAX_ACTOR_CHARS
        && !id.chars().any(char::is_control);
    if actor.can_manage() && recordable && tenant::is_valid(actor.tenant()) && !actor.retired {
        Ok(())
    } else {
        Err(KeyError::Forbidden {
            actor: actor.id().chars().take(MAX_ACTOR_CHARS).collect(),
        })
    }
}

/// The actor's permissions, checked to be of this catalog.
///
/// # Errors
/// [`KeyError::CatalogMismatch`].
pub(crate) fn held(catalog: &Catalog, actor: &Actor) -> Result<PermissionSet, KeyError> {
    match actor.permission_set() {
        Some(set) if set.catalog() == catalog => Ok(set.clone()),
        Some(_) => Err(KeyError::CatalogMismatch),
        None => Ok(catalog.none()),
    }
}

/// The one authorization check of key management; see the
/// [module docs](self) for the rule.
///
/// `target` is the key as it is now, for a call on an existing key;
/// `result` is the key as the call would leave it (none for revoke and
/// delete, which only take away). The target is checked first, then the
/// result; the first dimension that fails is reported.
///
/// # Errors
/// [`KeyError::Forbidden`] if the actor may not manage keys;
/// [`KeyError::NotFound`] for a target outside the actor's tenants;
/// [`KeyError::Outranked`] for a target that holds more than the actor;
/// [`KeyError::InvalidTenant`], [`KeyError::PermissionEscalation`] or
/// [`KeyError::BoundExceeded`] for a result that would;
/// [`KeyError::CatalogMismatch`] for an actor of another catalog.
pub(crate) fn authorize(
    rules: &Rules<'_>,
    actor: &Actor,
    target: Option<&KeyRecord>,
    result: Option<&KeyRecord>,
) -> Result<(), KeyError> {
    ensure_manager(actor)?;
    let held = held(rules.catalog, actor)?;
    if let Some(key) = target {
        if !tenant::covers(actor.tenant(), &key.tenant, rules.nested) {
            return Err(KeyError::NotFound(key.id));
        }
        if let Err(dimension) = dominates(rules, actor, &held, key) {
            return Err(KeyError::Outranked {
                id: key.id,
                dimension,
            });
        }
    }
    if let Some(key) = result {
        if !tenant::covers(actor.tenant(), &key.tenant, rules.nested) {
            return Err(KeyError::InvalidTenant(
                key.tenant.chars().take(200).collect(),
            ));
        }
        match dominates(rules, actor, &held, key) {
            Ok(()) => {}
            Err(Dimension::Permissions) => {
                return Err(KeyError::PermissionEscalation {
                    missing: stored(rules, key).missing_from(&held),
                })
            }
            Err(dimension) => return Err(KeyError::BoundExceeded { dimension }),
        }
    }
    Ok(())
}

/// The uses a key created by `actor` takes from the actor's own key, if
/// the actor is a usage-limited key: all of the new key's uses. Such a
/// key may not have a refill, which would make uses out of nothing, and a
/// key that refills may not split its uses at all.
///
/// Answers the actor's key and the uses to take from it.
///
/// # Errors
/// [`KeyError::BoundExceeded`] (usage) for a refill, or for no usage
/// limit at all.
pub(crate) fn carved_uses(
    actor: &Actor,
    key: &KeyRecord,
) -> Result<Option<(KeyId, u64)>, KeyError> {
    let (Some(from), Some(_)) = (actor.key_id(), actor.uses) else {
        return Ok(None);
    };
    match (key.remaining, key.refill) {
        // A key that refills would bank its unspent uses of each period in
        // keys that never reset: it splits nothing.
        _ if actor.refill.is_some() => Err(KeyError::BoundExceeded {
            dimension: Dimension::Usage,
        }),
        (Some(uses), None) => Ok(Some((from, uses))),
        _ => Err(KeyError::BoundExceeded {
            dimension: Dimension::Usage,
        }),
    }
}

/// Whether the actor holds at least as much as `key` in every dimension
/// but the tenant (checked by the caller, with its own error); the first
/// dimension that fails otherwise.
fn dominates(
    rules: &Rules<'_>,
    actor: &Actor,
    held: &PermissionSet,
    key: &KeyRecord,
) -> Result<(), Dimension> {
    if !stored(rules, key).is_subset_of(held) {
        return Err(Dimension::Permissions);
    }
    if !expiry_within(key.expires_at, actor.expires_at) {
        return Err(Dimension::Expiry);
    }
    if !limit_within(key.rate_limit.or(rules.default_limit), actor.rate_limit) {
        return Err(Dimension::RateLimit);
    }
    if !usage_within(key.remaining, key.refill, actor.uses, actor.refill) {
        return Err(Dimension::Usage);
    }
    if !allowlist_within(key.allowed_ips.as_ref(), actor.allowed_ips.as_ref()) {
        return Err(Dimension::Network);
    }
    if !named_within(&key.limits, &actor.limits) {
        return Err(Dimension::NamedLimits);
    }
    Ok(())
}

/// Every limit of `bound` is on `key`, by name, and no looser.
pub(crate) fn named_within(key: &[NamedLimit], bound: &[NamedLimit]) -> bool {
    bound.iter().all(|b| {
        key.iter()
            .any(|k| k.name == b.name && k.limit.is_within(&b.limit))
    })
}

/// The permissions a stored key holds, its roles' included (names the
/// catalog no longer has are held by nobody, so they are no obstacle).
pub(crate) fn stored(rules: &Rules<'_>, key: &KeyRecord) -> PermissionSet {
    let own = rules
        .catalog
        .parse_stored(key.permissions.iter().map(String::as_str))
        .0;
    let (roles, _) = granted(rules.catalog, &rules.roles, key);
    own.union(&roles)
}

/// `None` is "any address".
pub(crate) fn allowlist_within(key: Option<&IpAllowlist>, bound: Option<&IpAllowlist>) -> bool {
    match (key, bound) {
        (_, None) => true,
        (Some(k), Some(b)) => k.is_within(b),
        (None, Some(_)) => false,
    }
}

/// `None` is "never".
pub(crate) fn expiry_within(key: Option<DateTime<Utc>>, bound: Option<DateTime<Utc>>) -> bool {
    match (key, bound) {
        (_, None) => true,
        (Some(k), Some(b)) => k <= b,
        (None, Some(_)) => false,
    }
}

/// `None` is "no limit".
pub(crate) fn limit_within(key: Option<RateLimit>, bound: Option<RateLimit>) -> bool {
    match (key, bound) {
        (_, None) => true,
        (Some(k), Some(b)) => k.is_within(&b),
        (None, Some(_)) => false,
    }
}

/// `None` uses are "unlimited"; a refill is within another when it gives
/// no more uses, no more often.
pub(crate) fn usage_within(
    uses: Option<u64>,
    refill: Option<Refill>,
    bound: Option<u64>,
    bound_refill: Option<Refill>,
) -> bool {
    let Some(bound) = bound else {
        return true;
    };
    // A refill without a count starts at its amount.
    let Some(uses) = uses.or(refill.map(|r| r.amount)) else {
        return false;
    };
    let refill_within = match (refill, bound_refill) {
        (None, _) => true,
        (Some(r), Some(b)) => r.amount <= b.amount && r.every_secs >= b.every_secs,
        (Some(_), None) => false,
    };
    uses <= bound && refill_within
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn each_dimension_orders_none_as_the_top() {
        let t = DateTime::from_timestamp(1_000_000, 0).expect("valid");
        assert!(expiry_within(Some(t), None));
        assert!(expiry_within(None, None));
        assert!(expiry_within(Some(t), Some(t)));
        assert!(!expiry_within(Some(t + Duration::seconds(1)), Some(t)));
        assert!(!expiry_within(None, Some(t)));

        let five = RateLimit::per_minute(5).ok();
        let ten = RateLimit::per_minute(10).ok();
        assert!(limit_within(five, ten) && limit_within(five, five));
        assert!(!limit_within(ten, five) && !limit_within(None, five));
        assert!(limit_within(None, None) && limit_within(ten, None));

        let daily = |n| Refill::new(n, Duration::days(1));
        assert!(usage_within(Some(3), None, Some(3), None));
        assert!(!usage_within(Some(4), None, Some(3), None));
        assert!(!usage_within(None, None, Some(3), None));
        assert!(usage_within(None, None, None, None));
        assert!(!usage_within(Some(1), daily(1), Some(3), None));
        assert!(usage_within(Some(1), daily(5), Some(3), daily(10)));
        assert!(!usage_within(Some(1), daily(11), Some(3), daily(10)));
        let hourly = Refill::new(5, Duration::hours(1));
        assert!(!usage_within(Some(1), hourly, Some(3), daily(10)));
        assert!(!usage_within(None, daily(5), Some(3), daily(10)));
        assert!(usage_within(None, daily(3), Some(3), daily(10)));
    }
}
