//! [`Verified`]: what a request may do once its key is verified.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::cache::Held;
use crate::error::Forbidden;
use crate::key::Actor;
use crate::key::MAX_USES;
use crate::limit::{NamedLimit, RateLimit};
use crate::permission::{Permission, PermissionSet};
use crate::token::{DisplayPrefix, KeyId};

/// A key that proved its secret and is active: what a request may do.
///
/// It shares the verification cache's copy of the key: no allocation and
/// no shared reference-count write per verify. Cloning it is one
/// reference-count increment.
///
/// It is meant to live for one request. A thread that holds more than a
/// few at once pays a reference-count write for each further one, and a
/// held `Verified` keeps its copy of the key in memory after the key
/// leaves the cache. It is a snapshot: a revocation made while it is held
/// applies to the next verify, not to this value.
pub struct Verified {
    pub(crate) key: Held,
    /// Uses left after this one, plus one, for a usage-limited key: one
    /// word, so that a verify's answer is read back in fewer moves. At
    /// most [`MAX_USES`] + 1: a key holds no more (a host's store that
    /// reports more is read as `MAX_USES`).
    remaining: Option<NonZeroU64>,
}

impl Clone for Verified {
    fn clone(&self) -> Self {
        Self {
            key: Held::from_inner(Arc::clone(&self.key)),
            remaining: self.remaining,
        }
    }
}

impl Verified {
    /// `key`, with `remaining` uses left after this one if usage-limited.
    #[inline(always)]
    pub(crate) fn new(key: Held, remaining: Option<u64>) -> Self {
        Self {
            key,
            remaining: remaining.map(|n| NonZeroU64::MIN.saturating_add(n.min(MAX_USES))),
        }
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.key.id
    }

    /// The key's display prefix, for logs and error bodies.
    pub fn display_prefix(&self) -> DisplayPrefix {
        self.key.prefix
    }

    /// The tenant the key belongs to.
    pub fn tenant(&self) -> &str {
        &self.key.tenant.name
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.key.name
    }

    /// The key's permissions.
    pub fn permissions(&self) -> &PermissionSet {
        &self.key.permissions
    }

    /// When the key expires, if ever.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.key.expires_at()
    }

    /// The rate limit in force for the key: its own, or the instance's
    /// default; `None` for none.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.key.limit
    }

    /// Uses left after this one, for a usage-limited key (at most
    /// [`MAX_USES`]); `None` for a key without a usage limit.
    pub fn remaining(&self) -> Option<u64> {
        self.remaining.map(|n| n.get() - 1)
    }

    /// Whether the key holds `permission`: a bit test, for hot paths. Parse
    /// the permission once with [`Catalog::parse`](crate::Catalog::parse).
    #[inline]
    pub fn allows(&self, permission: Permission) -> bool {
        self.key.permissions.allows(permission)
    }

    /// Whether the key satisfies a compiled permission expression
    /// ([`Catalog::expression`](crate::Catalog::expression),
    /// `require_any`, `require_all`). No allocation.
    pub fn satisfies(&self, expr: &crate::permission::PermissionExpr) -> bool {
        self.key.permissions.satisfies(expr)
    }

    /// Requires a permission given as a string, e.g. `contacts:write`.
    ///
    /// # Errors
    /// [`Forbidden::Missing`] when the key lacks it, [`Forbidden::Unknown`]
    /// when the catalog has no such permission (no key holds it).
    pub fn require(&self, permission: &str) -> Result<(), Forbidden> {
        let permissions = self.permissions();
        match permissions.catalog().parse(permission) {
            Ok(p) if self.allows(p) => Ok(()),
            Ok(p) => Err(Forbidden::Missing(
                permissions
                    .catalog()
                    .name(p)
                    .unwrap_or(permission)
                    .to_string(),
            )),
            Err(_) => Err(Forbidden::Unknown(permission.chars().take(200).collect())),
        }
    }

    /// This key as an [`Actor`] (for a key that acts on the host's behalf):
    /// id `key:<id>`, no right to manage keys (grant it with
    /// [`Actor::may_manage_keys`]), and the key's bounds in every
    /// dimension: its tenant, permissions, expiry, rate limit (its own or
    /// the instance's default), uses left and refill. Whatever it creates
    /// or changes stays within them.
    pub fn actor(&self) -> Actor {
        let mut actor = Actor::new(format!("key:{}", self.id()), self.tenant())
            .permissions(self.permissions().clone());
        actor.expires_at = self.expires_at();
        actor.rate_limit = self.key.limit;
        actor.allowed_ips = self.key.allowed_ips().cloned();
        actor.limits = self
            .key
            .named()
            .iter()
            .map(|s| NamedLimit {
                name: s.name.to_string(),
                limit: s.limit,
            })
            .collect();
        actor.key = Some(self.id());
        actor.retired = self.key.rolled_to().is_some();
        if self.key.metered {
            actor.uses = Some(self.remaining().unwrap_or(0));
            actor.refill = self.key.refill().copied();
        }
        actor
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("prefix", &self.key.prefix.as_str())
            .field("tenant", &self.tenant())
            .field("name", &self.name())
            .field("permissions", self.permissions())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three words: the entry's guard and the uses left. One more (an
    /// `Option<u64>`) measured about 5 ns on every verify, a stall where
    /// the caller reads the answer back.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_verified_key_is_three_words() {
        assert_eq!(std::mem::size_of::<Verified>(), 24);
    }
}
