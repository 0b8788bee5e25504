//! Errors, one enum per concern.
//!
//! [`VerifyError`] is what a request with an API key can get; [`KeyError`]
//! is what a management call can get; [`StoreError`] is what a
//! [`KeyStore`](crate::store::KeyStore) reports; [`Forbidden`] is a verified key
//! that lacks a permission; [`ConfigError`] is a [`Keyward`](crate::Keyward)
//! that cannot be built.

pub(crate) mod store;
mod webhook;

pub use store::{BoxError, StoreError};
pub use webhook::WebhookError;

use crate::permission::PermissionError;
use crate::token::{EntropyError, InvalidPrefix, KeyId};

/// The code of a store that cannot be asked: [`VerifyError::Store`], and
/// the HTTP answer to a management call whose store failed.
pub(crate) const STORE_UNAVAILABLE: &str = "store_unavailable";

/// Why a token was not accepted.
///
/// Status (expired, revoked, wrong tenant) is told only to a caller who
/// proved the secret; an unknown key and a wrong secret are both
/// [`VerifyError::Invalid`] and take about the same time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a token of this deployment's format (wrong shape, prefix or
    /// checksum). Decided without a store lookup.
    #[error("malformed API key: check that the whole key was copied, with no characters added or missing")]
    Malformed,
    /// No key has this token: unknown id or wrong secret.
    #[error("invalid API key")]
    Invalid,
    /// The key passed its fixed expiry.
    #[error("API key has expired")]
    Expired,
    /// The key was revoked; an administrator can reactivate it.
    #[error("API key has been revoked")]
    Revoked,
    /// The key belongs to another tenant than the one the request names.
    #[error("API key does not belong to this tenant")]
    WrongTenant,
    /// The tenant the request names is not a canonical tenant path (see
    /// [`tenant`](crate::tenant)). Decided before the key is looked at, so
    /// it says nothing about the key. Answer 400.
    #[error("invalid tenant: {0}")]
    InvalidTenant(crate::tenant::InvalidTenant),
    /// The key went unused for the inactivity period and no longer works;
    /// a sweep will delete it.
    #[error("API key is inactive: it was not used for too long; create a new key")]
    Inactive,
    /// The key's `not_before` is still ahead: it works from then on.
    #[error("API key is not valid yet")]
    NotYetValid,
    /// The key has an IP allowlist and the request's client address is
    /// not on it (or the request gave no address). Answer 403.
    #[error("API key may not be used from this address")]
    IpNotAllowed,
    /// One of the key's named limits is exhausted. Answer 429 with
    /// `Retry-After`.
    #[error("API key limit `{limit}` exceeded; retry in {} ms", .retry_after.num_milliseconds())]
    LimitExceeded {
        /// The limit's name.
        limit: std::sync::Arc<str>,
        /// The earliest a retry can succeed (a request costing more than
        /// the limit's whole burst never can).
        retry_after: chrono::Duration,
    },
    /// The key's own rate limit is exhausted. Answer 429 with `Retry-After`.
    #[error("API key rate limit exceeded; retry in {} ms", .retry_after.num_milliseconds())]
    RateLimited {
        /// The earliest a retry can succeed.
        retry_after: chrono::Duration,
    },
    /// The tenant's quota, shared by all its keys, is exhausted.
    #[error("quota exceeded for this tenant; retry in {} ms", .retry_after.num_milliseconds())]
    QuotaExceeded {
        /// The earliest a retry can succeed.
        retry_after: chrono::Duration,
    },
    /// A usage-limited key has no uses left.
    #[error("API key usage limit reached")]
    UsageExceeded,
    /// The store could not be asked; the key was neither accepted nor
    /// refused on its merits. Answer 503 and retry later.
    #[error("API key could not be checked: the key store is unavailable")]
    Store(#[source] StoreError),
    /// The rate limiter could not decide (a shared limiter whose backend
    /// is down, set to fail closed); the key was neither accepted nor
    /// refused on its merits. Answer 503 and retry later.
    #[error("API key could not be checked: the rate limiter is unavailable")]
    LimiterUnavailable,
}

/// A verified key lacks a permission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Forbidden {
    /// The key does not hold the permission.
    #[error("API key lacks permission `{0}`")]
    Missing(String),
    /// The permission is not in the catalog, so no key holds it: a typo in
    /// the host's code rather than the client's fault.
    #[error("permission `{0}` is not in the catalog, so no API key holds it")]
    Unknown(String),
}

/// One dimension in which a key can hold more or less: what
/// [`KeyError::Outranked`] and [`KeyError::BoundExceeded`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dimension {
    /// What the key may do.
    Permissions,
    /// Which tenants the key acts for.
    Tenant,
    /// How long the key works.
    Expiry,
    /// How fast the key may be used.
    RateLimit,
    /// How many times the key may be used (uses left and refills).
    Usage,
    /// Where the key may be used from (its IP allowlist).
    Network,
    /// Its named limits: each of the manager's, no looser.
    NamedLimits,
}

impl Dimension {
    /// A stable snake_case name: `permissions`, `tenant`, `expiry`,
    /// `rate_limit`, `usage`, `allowed_ips`, `limits`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Permissions => "permissions",
            Self::Tenant => "tenant",
            Self::Expiry => "expiry",
            Self::RateLimit => "rate_limit",
            Self::Usage => "usage",
            Self::Network => "allowed_ips",
            Self::NamedLimits => "limits",
        }
    }
}

impl std::fmt::Display for Dimension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Permissions => "permissions",
            Self::Tenant => "tenant",
            Self::Expiry => "expiry",
            Self::RateLimit => "rate limit",
            Self::Usage => "usage limit",
            Self::Network => "IP allowlist",
            Self::NamedLimits => "named limits",
        })
    }
}

/// Why a management call (create, revoke, rename, …) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The actor may not manage keys, or not in this tenant.
    #[error("actor `{actor}` may not manage API keys here")]
    Forbidden {
        /// The actor's id.
        actor: String,
    },
    /// No such key in the actor's tenant. Keys of other tenants are reported
    /// the same way, so their existence does not leak.
    #[error("no API key with id {0}")]
    NotFound(KeyId),
    /// The name is empty or longer than 100 characters after trimming.
    #[error("invalid key name: {0}")]
    InvalidName(&'static str),
    /// The key would hold permissions its creator lacks.
    #[error("a key cannot hold more than its creator: the actor lacks {}", .missing.join(", "))]
    PermissionEscalation {
        /// Every permission the actor lacks, canonical names.
        missing: Vec<String>,
    },
    /// The call would leave a key looser than the actor in a dimension
    /// other than permissions (those are
    /// [`KeyError::PermissionEscalation`]): a later expiry or none, a
    /// looser rate limit or none, more uses or unlimited ones.
    #[error("a key cannot hold more than its manager: its {dimension} would exceed yours")]
    BoundExceeded {
        /// Where the key would exceed the actor.
        dimension: Dimension,
    },
    /// The key holds more than the actor in some dimension, so the actor
    /// may not change, revoke, roll or delete it: only an actor holding at
    /// least as much in every dimension may.
    #[error("API key {id} holds more than you ({dimension}): only a manager holding at least as much may change it")]
    Outranked {
        /// The key.
        id: KeyId,
        /// The first dimension in which it exceeds the actor.
        dimension: Dimension,
    },
    /// The key was replaced by [`Keyward::roll`](crate::Keyward::roll): it
    /// can be neither reactivated nor rolled again. Use its successor.
    #[error("API key {id} was rolled and replaced by {successor}; use the new key")]
    RolledAway {
        /// The key.
        id: KeyId,
        /// The key that replaced it.
        successor: KeyId,
    },
    /// The key was revoked because its token was found in public: it
    /// never comes back. Roll it or create a new one.
    #[error("API key {0} was revoked because its token leaked; it cannot be reactivated, create a new key")]
    Exposed(KeyId),
    /// A permission string names nothing in the catalog.
    #[error(transparent)]
    Permission(#[from] PermissionError),
    /// The actor's permissions come from another catalog than this
    /// [`Keyward`](crate::Keyward)'s.
    #[error("the actor's permissions belong to a different catalog")]
    CatalogMismatch,
    /// The expiry is not in the future, or is after the year 9999.
    #[error("invalid expiry: it must be in the future and no later than 9999-12-31")]
    InvalidExpiry,
    /// The operation needs an active key (e.g. rolling a revoked or
    /// expired key), or a revoked one that has not expired (reactivating).
    #[error("API key {id} is {status}; this needs an active key")]
    NotActive {
        /// The key.
        id: KeyId,
        /// Its status.
        status: crate::key::KeyStatus,
    },
    /// A negative grace period.
    #[error("invalid grace period: it must be zero or positive")]
    InvalidGrace,
    /// The tenant is not a valid path, or not the actor's own or (with
    /// nested tenants) a descendant of it.
    #[error("invalid tenant {0:?}: use the actor's tenant or, with nested tenants, a path below it like `agency/location`")]
    InvalidTenant(String),
    /// Metadata is too large or not a JSON object.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(&'static str),
    /// The OS random generator failed; no key was issued.
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    /// The key names a role that is neither declared in the catalog nor
    /// set with [`Keyward::set_role`](crate::Keyward::set_role).
    #[error("unknown role `{0}`")]
    UnknownRole(String),
    /// A role name is empty, too long, or uses other characters than
    /// `a-z 0-9 _ - .`.
    #[error("invalid role name {0:?}: use 1 to 64 of a-z, 0-9, '_', '-' or '.'")]
    InvalidRole(String),
    /// A named limit has an invalid name, or there are too many.
    #[error(transparent)]
    InvalidLimit(#[from] crate::limit::InvalidNamedLimit),
    /// `not_before` is at or after the key's expiry, or after the year
    /// 9999.
    #[error("invalid not_before: it must be before the key expires and no later than 9999-12-31")]
    InvalidNotBefore,
    /// The key would break a policy of its tenant (or of a tenant above
    /// it): the policy is named.
    #[error("tenant `{tenant}` policy: {rule}")]
    PolicyViolation {
        /// The tenant whose policy applies (the key's).
        tenant: String,
        /// The rule broken.
        rule: crate::tenant_policy::PolicyRule,
    },
    /// The store failed.
    #[error("the key store failed")]
    Store(#[from] StoreError),
}

impl KeyError {
    /// A stable snake_case code for the error, for audit events and API
    /// responses: `forbidden`, `not_found`, `invalid_name`,
    /// `permission_escalation`, `unknown_permission`, `catalog_mismatch`,
    /// `invalid_expiry`, `not_active`, `bound_exceeded`,
    /// `key_outranks_actor`, `rolled_away`, `exposed`, `invalid_grace`, `invalid_tenant`,
    /// `invalid_metadata`, `entropy`, `unknown_role`, `invalid_role`,
    /// `invalid_limit`, `invalid_not_before`, `policy_violation`, `store`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::InvalidName(_) => "invalid_name",
            Self::PermissionEscalation { .. } => "permission_escalation",
            Self::Permission(_) => "unknown_permission",
            Self::CatalogMismatch => "catalog_mismatch",
            Self::InvalidExpiry => "invalid_expiry",
            Self::NotActive { .. } => "not_active",
            Self::BoundExceeded { .. } => "bound_exceeded",
            Self::Outranked { .. } => "key_outranks_actor",
            Self::RolledAway { .. } => "rolled_away",
            Self::Exposed(_) => "exposed",
            Self::InvalidGrace => "invalid_grace",
            Self::InvalidTenant(_) => "invalid_tenant",
            Self::InvalidMetadata(_) => "invalid_metadata",
            Self::Entropy(_) => "entropy",
            Self::UnknownRole(_) => "unknown_role",
            Self::InvalidRole(_) => "invalid_role",
            Self::InvalidLimit(_) => "invalid_limit",
            Self::InvalidNotBefore => "invalid_not_before",
            Self::PolicyViolation { .. } => "policy_violation",
            Self::Store(_) => "store",
        }
    }
}

impl VerifyError {
    /// A stable snake_case code for the error, for API responses:
    /// `malformed`, `invalid`, `api_key_expired`, `api_key_revoked`,
    /// `wrong_tenant`, `invalid_tenant`, `api_key_inactive`,
    /// `api_key_not_yet_valid`, `ip_not_allowed`, `limit_exceeded`,
    /// `rate_limited`, `quota_exceeded`,
    /// `usage_exceeded`, `store_unavailable`, `limiter_unavailable`. The HTTP layer answers
    /// `unauthorized` for the first two, so that an unknown key and a
    /// malformed one look alike, and these codes for the rest.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
            Self::Expired => "api_key_expired",
            Self::Revoked => "api_key_revoked",
            Self::WrongTenant => "wrong_tenant",
            Self::InvalidTenant(_) => "invalid_tenant",
            Self::Inactive => "api_key_inactive",
            Self::NotYetValid => "api_key_not_yet_valid",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::LimitExceeded { .. } => "limit_exceeded",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::UsageExceeded => "usage_exceeded",
            Self::Store(_) => STORE_UNAVAILABLE,
            Self::LimiterUnavailable => "limiter_unavailable",
        }
    }
}

/// A [`Keyward`](crate::Keyward) that cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The token type prefix is invalid.
    #[error(transparent)]
    Prefix(#[from] InvalidPrefix),
    /// A legacy token format is invalid, or cannot be told from the
    /// instance's own.
    #[error(transparent)]
    LegacyFormat(#[from] crate::legacy::InvalidLegacyFormat),
    /// A duration setting is out of range.
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}
