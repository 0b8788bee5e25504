//! Keys as the host sees them: who acts ([`Actor`]), what to create
//! ([`NewKey`]), what is stored ([`KeyRecord`]), what is shown
//! ([`KeyInfo`]), and what a request proved ([`Verified`]).

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::access::IpAllowlist;
use crate::limit::{NamedLimit, RateLimit};
use crate::permission::PermissionSet;
use crate::policy::{Refill, WarningMark};
use crate::token::{DisplayPrefix, KeyHash, KeyId, SecretToken};

/// Most uses a usage-limited key can hold: larger values are capped, so
/// that every store can keep them in a signed 64-bit column.
pub const MAX_USES: u64 = i64::MAX as u64;

/// The person or key performing a management call, as the host knows them.
///
/// The host decides who may manage keys (an admin role, a Developer
/// permission plus a feature flag, …) and says so with
/// [`Actor::may_manage_keys`]; keyward enforces the rest: a key never
/// holds more than the actor who created or last changed it, in any
/// dimension (see [`authority`](crate::authority)).
///
/// An actor's bounds are what it holds in each dimension: its tenant, its
/// permissions, and optionally an expiry, a rate limit and a number of uses
/// left. An actor made by [`Verified::actor`](crate::Verified::actor) carries its key's bounds
/// automatically; a human actor carries what the host gives it (by default
/// no expiry, no rate limit and unlimited uses: set them to bound what a
/// person can hand out). On an actor made from a key, the setters only
/// ever tighten the key's bounds, never loosen them.
#[derive(Debug, Clone)]
pub struct Actor {
    id: String,
    tenant: String,
    permissions: Option<PermissionSet>,
    may_manage_keys: bool,
    may_manage_roles: bool,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) uses: Option<u64>,
    pub(crate) refill: Option<Refill>,
    pub(crate) allowed_ips: Option<IpAllowlist>,
    /// A key actor's named limits: the keys it manages carry each, no
    /// looser.
    pub(crate) limits: Vec<NamedLimit>,
    pub(crate) key: Option<KeyId>,
    /// Made from a key that was rolled away: it manages nothing.
    pub(crate) retired: bool,
}

impl Actor {
    /// An actor with no permissions who may not manage keys, and no bound
    /// on expiry, rate limit or uses.
    pub fn new(id: impl Into<String>, tenant: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            tenant: tenant.into(),
            permissions: None,
            may_manage_keys: false,
            may_manage_roles: false,
            expires_at: None,
            rate_limit: None,
            uses: None,
            refill: None,
            allowed_ips: None,
            limits: Vec::new(),
            key: None,
            retired: false,
        }
    }

    /// The permissions the actor holds; keys they create or edit can hold
    /// at most these. Defaults to none. On an actor made from a key: the
    /// key's permissions that are also in `permissions`.
    #[must_use]
    pub fn permissions(mut self, permissions: PermissionSet) -> Self {
        self.permissions = Some(match (&self.key, &self.permissions) {
            (Some(_), Some(held)) if held.catalog() == permissions.catalog() => {
                held.intersection(&permissions)
            }
            _ => permissions,
        });
        self
    }

    /// Whether the actor may create and manage keys. Defaults to `false`.
    #[must_use]
    pub fn may_manage_keys(mut self, allowed: bool) -> Self {
        self.may_manage_keys = allowed;
        self
    }

    /// Whether the actor may define and redefine roles
    /// ([`Keyward::set_role`](crate::Keyward::set_role)). Roles are global,
    /// shared by every tenant's keys, so this is an operator's right,
    /// never given to a tenant's manager; an actor made from a key never
    /// has it. Defaults to `false`.
    #[must_use]
    pub fn may_manage_roles(mut self, allowed: bool) -> Self {
        self.may_manage_roles = allowed && self.key.is_none();
        self
    }

    pub(crate) fn can_manage_roles(&self) -> bool {
        self.may_manage_roles && self.key.is_none()
    }

    /// The latest expiry the actor may give a key, and the expiry a key it
    /// creates without one gets. Defaults to none (any expiry, or none).
    #[must_use]
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(self.expires_at.map_or(at, |e| e.min(at)));
        self
    }

    /// The loosest rate limit the actor may give a key, and the limit a
    /// key it creates without one gets when the instance's default is
    /// looser. Defaults to none (any limit, or none).
    #[must_use]
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        // On a key's actor, a limit that is not within the key's own is
        // ignored: the key's stays.
        if self.key.is_none() || self.rate_limit.is_none_or(|own| limit.is_within(&own)) {
            self.rate_limit = Some(limit);
        }
        self
    }

    /// The most uses the actor may give a key (and the uses a key it
    /// creates without a usage limit gets); such an actor can give no key
    /// unlimited uses, nor a refill. Defaults to unlimited.
    #[must_use]
    pub fn remaining(mut self, uses: u64) -> Self {
        self.uses = Some(self.uses.map_or(uses, |u| u.min(uses)));
        self
    }

    /// With [`Actor::remaining`]: the actor's own refill, the most
    /// generous one it may give a key (no more uses, no more often). On an
    /// actor made from a key it is ignored: a key's uses are split, never
    /// refilled for another key (see [`authority`](crate::authority)).
    #[must_use]
    pub fn refill(mut self, refill: Refill) -> Self {
        if self.key.is_none() {
            self.refill = Some(refill);
        }
        self
    }

    /// The networks the actor may let keys be used from: the keys it
    /// creates or changes need an allowlist within this one (and get this
    /// one when created without). Defaults to none (any allowlist, or
    /// none). On an actor made from a key, a list not within the key's
    /// own is ignored.
    #[must_use]
    pub fn allowed_ips(mut self, allowlist: IpAllowlist) -> Self {
        if self.key.is_none()
            || self
                .allowed_ips
                .as_ref()
                .is_none_or(|own| allowlist.is_within(own))
        {
            self.allowed_ips = Some(allowlist);
        }
        self
    }

    /// The actor's id, as recorded in audit events and `created_by`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tenant the actor acts in.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The key this actor is, when made by [`Verified::actor`](crate::Verified::actor).
    pub fn key_id(&self) -> Option<KeyId> {
        self.key
    }

    pub(crate) fn permission_set(&self) -> Option<&PermissionSet> {
        self.permissions.as_ref()
    }

    pub(crate) fn can_manage(&self) -> bool {
        self.may_manage_keys
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Grant {
    Names(Vec<String>),
    Set(PermissionSet),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Expiry {
    At(DateTime<Utc>),
    In(Duration),
}

/// What to create: a name, permissions, and optionally an expiry and
/// metadata.
///
/// ```
/// use chrono::Duration;
/// use keyward::NewKey;
///
/// let temp = NewKey::new("Docs playground (temp)")
///     .permissions(["leads:read"])
///     .expires_in(Duration::hours(1));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct NewKey {
    pub(crate) name: String,
    pub(crate) grant: Grant,
    pub(crate) expiry: Option<Expiry>,
    pub(crate) metadata: Option<serde_json::Value>,
    pub(crate) tenant: Option<String>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) remaining: Option<u64>,
    pub(crate) refill: Option<Refill>,
    pub(crate) allowed_ips: Option<IpAllowlist>,
    pub(crate) not_before: Option<DateTime<Utc>>,
    pub(crate) roles: Vec<String>,
    pub(crate) limits: Vec<NamedLimit>,
}

impl NewKey {
    /// A key named `name` (1–100 characters after trimming) with no
    /// permissions, no expiry and no metadata.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            grant: Grant::Names(Vec::new()),
            expiry: None,
            metadata: None,
            tenant: None,
            rate_limit: None,
            remaining: None,
            refill: None,
            allowed_ips: None,
            not_before: None,
            roles: Vec::new(),
            limits: Vec::new(),
        }
    }

    /// The networks the key accepts requests from (see [`IpAllowlist`]);
    /// by default any address, or the creator's allowlist if it has one.
    pub fn allowed_ips(mut self, allowlist: IpAllowlist) -> Self {
        self.allowed_ips = Some(allowlist);
        self
    }

    /// The key is refused with
    /// [`VerifyError::NotYetValid`](crate::VerifyError::NotYetValid) before
    /// `at` (Cloudflare's `not_before`).
    pub fn not_before(mut self, at: DateTime<Utc>) -> Self {
        self.not_before = Some(at);
        self
    }

    /// Roles of the catalog (see
    /// [`CatalogBuilder::role`](crate::CatalogBuilder::role)) the key
    /// holds, besides its own permissions. A role's permissions are
    /// resolved on every load, so changing a role
    /// ([`Keyward::set_role`](crate::Keyward::set_role)) reaches every key
    /// holding it.
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// A named rate limit (`requests` at 200/min, `tokens` at 100,000 a
    /// day, …), counted with each verify's cost (see
    /// [`VerifyRequest::cost`](crate::VerifyRequest::cost)). A key's named
    /// limits are checked together: a request passes them all or is
    /// charged to none. Setting a name twice keeps the last.
    pub fn limit(mut self, name: impl Into<String>, limit: RateLimit) -> Self {
        let name = name.into();
        self.limits.retain(|l| l.name != name);
        self.limits.push(NamedLimit { name, limit });
        self
    }

    /// Creates the key in `tenant` instead of the actor's own: allowed for
    /// a descendant tenant (`agency/location`) when nested tenants are on.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// This key's own rate limit, replacing the builder's default.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Limits the key to `uses` successful verifications; then it answers
    /// [`VerifyError::UsageExceeded`](crate::VerifyError::UsageExceeded).
    pub fn remaining(mut self, uses: u64) -> Self {
        self.remaining = Some(uses);
        self
    }

    /// Refills a usage-limited key (see [`NewKey::remaining`]); without
    /// `remaining`, the key starts with `refill.amount` uses.
    pub fn refill(mut self, refill: Refill) -> Self {
        self.refill = Some(refill);
        self
    }

    /// Permissions in any written form (`contacts:write`, `read:users`,
    /// `leads:*`). Must be a subset of the creator's.
    pub fn permissions<I, S>(mut self, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.grant = Grant::Names(permissions.into_iter().map(Into::into).collect());
        self
    }

    /// Permissions as an already parsed set. Must be a subset of the
    /// creator's.
    pub fn permission_set(mut self, permissions: PermissionSet) -> Self {
        self.grant = Grant::Set(permissions);
        self
    }

    /// The key stops working at `at`, which must be in the future. Expiry
    /// is fixed at creation and cannot be changed later.
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expiry = Some(Expiry::At(at));
        self
    }

    /// The key stops working `ttl` after creation: a temporary key. `ttl`
    /// must be positive.
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.expiry = Some(Expiry::In(ttl));
        self
    }

    /// Free-form JSON kept with the key (at most 16 KiB serialized), e.g.
    /// which integration it is for. Never used for authorization.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

/// A key as a [`KeyStore`](crate::store::KeyStore) keeps it. Holds the hash, never
/// the token.
///
/// Stores that keep a document per key can persist it with serde; stores
/// with columns read and write the fields. Marked `#[non_exhaustive]`:
/// later versions add fields, so build records with serde or receive them
/// from keyward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyRecord {
    /// The public id; unique in the store.
    pub id: KeyId,
    /// The public start of the token, e.g. `sk_AbCd1234_`.
    pub prefix: DisplayPrefix,
    /// SHA-256 of the token.
    pub hash: KeyHash,
    /// The tenant (workspace) the key belongs to.
    pub tenant: String,
    /// The label its owner gave it.
    pub name: String,
    /// Canonical permission names, closed under implication.
    pub permissions: Vec<String>,
    /// The actor who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it is revoked now.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it last verified successfully, as last written. Only
    /// [`KeyStore::record_last_used`](crate::store::KeyStore::record_last_used)
    /// changes it, and only forward.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Free-form JSON from the host.
    pub metadata: Option<serde_json::Value>,
    /// Bumped by the store on every update; the condition of
    /// [`KeyStore::update`](crate::store::KeyStore::update).
    pub version: u64,
    /// The key's own rate limit; `None` uses the default.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Uses left, for a usage-limited key. Only
    /// [`KeyStore::consume_credit`](crate::store::KeyStore::consume_credit)
    /// changes it after creation.
    #[serde(default)]
    pub remaining: Option<u64>,
    /// How `remaining` refills.
    #[serde(default)]
    pub refill: Option<Refill>,
    /// When `remaining` was last refilled (or set). Owned by
    /// [`KeyStore::consume_credit`](crate::store::KeyStore::consume_credit).
    #[serde(default)]
    pub last_refill_at: Option<DateTime<Utc>>,
    /// The last inactivity warning given.
    #[serde(default)]
    pub inactivity_warning: Option<WarningMark>,
    /// The last expiry warning given.
    #[serde(default)]
    pub expiry_warning: Option<WarningMark>,
    /// The key this one replaced by [`Keyward::roll`](crate::Keyward::roll).
    #[serde(default)]
    pub rolled_from: Option<KeyId>,
    /// The key that replaced this one by a roll: set once, by the roll. A
    /// key with a successor can be neither reactivated nor rolled again,
    /// and while its grace lasts its uses come from its successor's.
    #[serde(default)]
    pub rolled_to: Option<KeyId>,
    /// The networks the key accepts requests from; `None`: any.
    #[serde(default)]
    pub allowed_ips: Option<IpAllowlist>,
    /// Before this instant the key is refused.
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// Catalog roles the key holds, by name, besides `permissions`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Named rate limits, sorted by name.
    #[serde(default)]
    pub limits: Vec<NamedLimit>,
    /// Credits (uses) this usage-limited key spent in all, the cost of
    /// every verify that took some: bookkeeping owned by
    /// [`KeyStore::consume_credit`](crate::store::KeyStore::consume_credit).
    #[serde(default)]
    pub credits_spent: u64,
    /// When a secret scanner reported the key's token in public, for a
    /// tenant whose policy is to notify rather than revoke
    /// ([`LeakResponse::Notify`](crate::LeakResponse::Notify)); also set
    /// on a key revoked for a leak.
    #[serde(default)]
    pub exposed_at: Option<DateTime<Utc>>,
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyStatus {
    /// It verifies.
    Active,
    /// It passed its fixed expiry.
    Expired,
    /// It was revoked and can be reactivated.
    Revoked,
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        })
    }
}

impl KeyStatus {
    pub(crate) fn of(record: &KeyRecord, now: DateTime<Utc>) -> Self {
        if record.revoked_at.is_some() {
            Self::Revoked
        } else if record.expires_at.is_some_and(|e| e <= now) {
            Self::Expired
        } else {
            Self::Active
        }
    }
}

/// A key as shown to its managers: everything but the secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The public id, used in management calls.
    pub id: KeyId,
    /// The public start of the token, e.g. `sk_AbCd1234_`.
    pub prefix: DisplayPrefix,
    /// The tenant the key belongs to.
    pub tenant: String,
    /// The label its owner gave it.
    pub name: String,
    /// What the key may do: its own permissions and its roles'.
    pub permissions: PermissionSet,
    /// Active, expired or revoked, as of the call.
    pub status: KeyStatus,
    /// The actor who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it is revoked now.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it last verified successfully, as known to this instance.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Free-form JSON from the host.
    pub metadata: Option<serde_json::Value>,
    /// The key's own rate limit; `None` uses the default.
    pub rate_limit: Option<RateLimit>,
    /// Uses left, for a usage-limited key, as of the last read.
    pub remaining: Option<u64>,
    /// How `remaining` refills.
    pub refill: Option<Refill>,
    /// The key this one replaced, if it was made by a roll.
    pub rolled_from: Option<KeyId>,
    /// The key that replaced this one, if it was rolled.
    pub rolled_to: Option<KeyId>,
    /// The networks it accepts requests from; `None`: any.
    pub allowed_ips: Option<IpAllowlist>,
    /// Before this instant it is refused.
    pub not_before: Option<DateTime<Utc>>,
    /// The catalog roles it holds.
    pub roles: Vec<String>,
    /// Its named rate limits.
    pub limits: Vec<NamedLimit>,
    /// Credits a usage-limited key spent in all, as of the last read.
    pub credits_spent: u64,
    /// When a secret scanner reported its token in public, if one did.
    pub exposed_at: Option<DateTime<Utc>>,
}

/// A newly created key: the token, shown once, and the key's details.
#[derive(Debug)]
#[non_exhaustive]
pub struct IssuedKey {
    /// The only copy of the plaintext token. Show it to the user once.
    pub token: SecretToken,
    /// The key's details.
    pub key: KeyInfo,
}

/// An active key of `tenant` with a fresh random id and token and nothing
/// else set: for tests and the store conformance suite.
///
/// # Panics
/// When the OS has no randomness.
#[cfg(any(test, feature = "conformance"))]
pub(crate) fn sample_record(tenant: &str) -> KeyRecord {
    let id = KeyId::random().expect("OS randomness");
    let token = crate::token::TokenFormat::default()
        .generate(id)
        .expect("OS randomness");
    KeyRecord {
        id,
        prefix: token.display_prefix(),
        hash: KeyHash::of(token.expose_secret().as_bytes()),
        tenant: tenant.into(),
        name: "k".into(),
        permissions: vec![],
        created_by: "u".into(),
        created_at: DateTime::UNIX_EPOCH,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        metadata: None,
        version: 0,
        rate_limit: None,
        remaining: None,
        refill: None,
        last_refill_at: None,
        inactivity_warning: None,
        expiry_warning: None,
        rolled_from: None,
        rolled_to: None,
        allowed_ips: None,
        not_before: None,
        roles: vec![],
        limits: vec![],
        credits_spent: 0,
        exposed_at: None,
    }
}
