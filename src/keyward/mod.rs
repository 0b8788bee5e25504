//! [`Keyward`]: issues, verifies and manages keys over a [`KeyStore`].
//!
//! One type, one file per job:
//!
//! - `builder.rs`: [`KeywardBuilder`], every setting and its check;
//! - `verify.rs`: verification, cached and from the store, through the
//!   one admission decision ([`crate::admission`]); `future.rs` its
//!   future, `verified.rs` the [`Verified`] key;
//! - `manage.rs`: create, change, revoke, reactivate, delete, list;
//!   `roll.rs`: rotation with a grace period;
//! - `write.rs`: the one write path every change goes through;
//! - `sweep.rs`: the maintenance sweep;
//! - `last_used.rs`: coalesced last-used writes;
//! - `audit.rs`: what each of them records.

mod audit;
mod builder;
#[cfg(feature = "webhooks")]
mod deliver;
mod flood;
mod future;
mod import;
mod last_used;
#[cfg(feature = "leaks")]
mod leaks;
mod list;
mod manage;
mod policies;
mod refresh;
mod request;
mod roles;
mod roll;
mod sweep;
mod verified;
mod verify;
mod webhooks;
mod write;

use crate::role::{granted, RoleMap};
pub use builder::KeywardBuilder;
#[cfg(feature = "webhooks")]
pub use deliver::{DeliveryRound, DeliverySettings};
#[cfg(any(feature = "axum", feature = "actix", feature = "tonic"))]
pub(crate) use future::Pending;
pub use future::VerifyFuture;
pub use import::{ImportOptions, ImportReport};
#[cfg(feature = "leaks")]
pub use leaks::SECRET_SCANNING_ACTOR;
pub use list::{InvalidCursor, KeyCursor, KeyPage, KeyQuery, MAX_PAGE_KEYS};
pub use manage::KeyUpdate;
pub use request::VerifyRequest;
use roles::RoleBook;
pub use sweep::SWEEP_ACTOR;
pub use verified::Verified;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};

use crate::audit::AuditSink;
use crate::cache::Cache;
use crate::clock::Clock;
pub(crate) use crate::key::MAX_USES;
use crate::key::{KeyInfo, KeyRecord, KeyStatus};
use crate::limit::{Limits, RateLimit};
use crate::permission::{Catalog, PermissionSet};
use crate::policy::{ExpiryWarnings, InactivityPolicy, Retention};
use crate::store::KeyStore;
use crate::token::TokenFormat;
use last_used::LastUsed;

/// Longest key name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest metadata, in bytes of compact JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// How many times a management call re-reads and retries after losing a
/// race with a concurrent change.
const UPDATE_ATTEMPTS: usize = 8;
/// Records per page when a call walks the store.
const PAGE: usize = 500;

/// What the verification cache holds: see [`Keyward::cache_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Known keys held.
    pub keys: usize,
    /// Unknown ids remembered.
    pub unknown_ids: usize,
    /// Ids known to exist, read past the budget of store reads (0 until
    /// a flood first needs them: see
    /// [`KeywardBuilder::unknown_id_reads`]).
    pub known_ids: usize,
}

/// Issues, verifies and manages API keys. Cheap to clone (shared); build
/// one per process with [`Keyward::builder`].
#[derive(Clone)]
pub struct Keyward {
    inner: Arc<Inner>,
}

/// What every job shares (the store, the catalog, the clock, the token
/// format, the audit sink, the tenant model) and the part each job owns.
struct Inner {
    store: Arc<dyn KeyStore>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    format: TokenFormat,
    /// Formats of imported keys' tokens (`legacy.rs`).
    legacy: Box<[crate::legacy::LegacyFormat]>,
    audit: Arc<dyn AuditSink>,
    /// Tenants are paths (see [`KeywardBuilder::nested_tenants`]).
    nested: bool,
    /// The rate limit of keys without their own.
    key_limit: Option<RateLimit>,
    /// Verification: the cache, the limits, the inactivity period in
    /// microseconds and how long to wait for the store.
    cache: Arc<Cache>,
    /// Whether the store reports changes to the cache.
    feed: bool,
    limits: Limits,
    inactive_after_us: Option<i64>,
    store_timeout: std::time::Duration,
    /// The sweep's policies.
    lifecycle: Lifecycle,
    last_used: LastUsed,
    /// The roles in force; the store's change listener.
    roles: Arc<RoleBook>,
    /// Every tenant's key policy.
    policies: crate::tenant_policy::Policies,
    /// Metric handles (feature `metrics`).
    telemetry: crate::telemetry::Telemetry,
    /// When each key last had a `key.limit_exceeded` event.
    limit_events: webhooks::LimitSampler,
    /// Ids refused unread past the read budget, for the sampled audit.
    unread: flood::Unread,
    /// Aged entries waiting to be read again (feature `tokio`).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    refresh: refresh::RefreshQueue,
    /// This instance's name in the outbox's leases.
    #[cfg_attr(not(feature = "webhooks"), allow(dead_code))]
    instance: String,
}

/// What the sweep enforces.
struct Lifecycle {
    inactivity: InactivityPolicy,
    expiry_warnings: ExpiryWarnings,
    retention: Retention,
}

impl fmt::Debug for Keyward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyward")
            .field("store", &self.inner.store)
            .field("catalog", &self.inner.catalog)
            .field("format", &self.inner.format)
            .field("cache", &self.inner.cache)
            .field("change_feed", &self.inner.feed)
            .finish_non_exhaustive()
    }
}

impl Keyward {
    /// The permission catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }
    /// The permissions a stored key holds in this catalog; names the
    /// catalog no longer has are dropped (and logged).
    pub(crate) fn stored_permissions(&self, record: &KeyRecord) -> PermissionSet {
        self.permissions_with(record, &self.inner.roles.current())
    }

    /// The permissions `record` holds with `roles` in force: its own and
    /// its roles'.
    pub(crate) fn permissions_with(&self, record: &KeyRecord, roles: &RoleMap) -> PermissionSet {
        let catalog = &self.inner.catalog;
        let (set, unknown) = catalog.parse_stored(record.permissions.iter().map(String::as_str));
        if !unknown.is_empty() {
            tracing::warn!(
                target: "keyward",
                key = %record.prefix,
                ?unknown,
                "stored permissions are no longer in the catalog; the key does not hold them"
            );
        }
        if record.roles.is_empty() {
            return set;
        }
        let (granted, unknown) = granted(catalog, roles, record);
        if !unknown.is_empty() {
            tracing::warn!(target: "keyward", key = %record.prefix, ?unknown, "the key holds roles that are not defined; they grant nothing");
        }
        set.union(&granted)
    }
    /// A stored key as the management API shows it, with its pending
    /// last use.
    pub(super) fn info(&self, record: KeyRecord, now: DateTime<Utc>) -> KeyInfo {
        // What it may do: as a verify loads it, within its tenant's ceiling.
        let mut permissions = self.stored_permissions(&record);
        if let Some(ceiling) = self.inner.policies.ceiling(&record.tenant) {
            permissions = permissions.intersection(&ceiling);
        }
        let status = KeyStatus::of(&record, now);
        let last_used_at = record
            .last_used_at
            .max(self.inner.last_used.pending(&record.id));
        KeyInfo {
            id: record.id,
            prefix: record.prefix,
            tenant: record.tenant,
            name: record.name,
            permissions,
            status,
            created_by: record.created_by,
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            last_used_at,
            metadata: record.metadata,
            rate_limit: record.rate_limit,
            remaining: record.remaining,
            refill: record.refill,
            rolled_from: record.rolled_from,
            rolled_to: record.rolled_to,
            allowed_ips: record.allowed_ips,
            not_before: record.not_before,
            roles: record.roles,
            limits: record.limits,
            credits_spent: record.credits_spent,
            exposed_at: record.exposed_at,
        }
    }

    /// How full the verification cache is.
    pub fn cache_stats(&self) -> CacheStats {
        let (keys, unknown_ids, known_ids) = self.inner.cache.len();
        CacheStats {
            keys,
            unknown_ids,
            known_ids,
        }
    }

    /// The token format (type prefix) of this instance.
    pub fn token_format(&self) -> &TokenFormat {
        &self.inner.format
    }

    /// The clock's time, to the microsecond: what every store keeps.
    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now().trunc_subsecs(6)
    }

    /// The clock in microseconds: what verification reads.
    fn now_us(&self) -> i64 {
        self.inner.clock.now_micros()
    }
}

/// The latest instant keyward stores or asks a store about:
/// 9999-12-31T23:59:59Z. Every SQL database can hold it; expiries beyond
/// are refused.
pub(crate) fn latest() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The earliest instant keyward asks a store about: 0001-01-01T00:00:00Z.
pub(crate) fn earliest() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}
