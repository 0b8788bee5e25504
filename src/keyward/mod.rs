//! [`Keyward`]: issues, verifies and manages keys over a [`KeyStore`].
//!
//! This file holds the builder, verification and the sweep; key
//! management is in `manage.rs`.

mod manage;

pub use manage::KeyUpdate;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

use chrono::{DateTime, Duration, SubsecRound, Utc};

use crate::audit::{AuditAction, AuditEvent, AuditOutcome, AuditSink, TracingAuditSink};
use crate::cache::{Cache, CachedKey, Held, Load, Lookup, Tenant, Tenants, Ticket};
use crate::clock::{Clock, SystemClock};
use crate::deadline::Within;
use crate::error::{ConfigError, KeyError, StoreError, VerifyError};
use crate::key::{Actor, KeyInfo, KeyRecord, KeyStatus, Verified};
use crate::limit::{gcra_now, wait, Bucket, Decision, RateLimit, RateLimiter};
use crate::permission::{Catalog, PermissionSet};
use crate::policy::{
    due_warning, ExpiryWarnings, InactivityPolicy, RemovalReason, Retention, SweepReport,
    SweepWarning, SweptKey, WarningKind,
};
use crate::store::{ChangeListener, Credit, KeyStore, RefillDue, SweepDue};
use crate::tenant;
use crate::token::{DisplayPrefix, KeyHash, KeyId, TokenFormat};

/// Longest key name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest metadata, in bytes of compact JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// How many times a management call re-reads and retries after losing a
/// race with a concurrent change.
const UPDATE_ATTEMPTS: usize = 8;
/// Records per page when a call walks the store.
const PAGE: usize = 500;
/// Most uses a usage-limited key can hold: larger values are capped, so
/// that every store can keep them in a signed 64-bit column.
pub const MAX_USES: u64 = i64::MAX as u64;
/// Pending last-used entries that force a flush regardless of time.
const MAX_PENDING: usize = 4096;
/// Most pending last-used entries kept while the store fails.
const MAX_PENDING_HARD: usize = 65_536;

/// Builds a [`Keyward`]. Made by [`Keyward::builder`]; every setting
/// documents its default.
#[must_use]
pub struct KeywardBuilder {
    store: Arc<dyn KeyStore>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    prefix: String,
    audit: Arc<dyn AuditSink>,
    last_used_interval: Duration,
    key_limit: Option<RateLimit>,
    tenant_quota: Option<RateLimit>,
    tenant_quotas: HashMap<String, RateLimit>,
    limiter: Option<Arc<dyn RateLimiter>>,
    inactivity: InactivityPolicy,
    expiry_warnings: ExpiryWarnings,
    retention: Retention,
    nested_tenants: bool,
    cache_ttl: Duration,
    cache_capacity: usize,
    unknown_cache_capacity: usize,
    store_timeout: Duration,
}

impl fmt::Debug for KeywardBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeywardBuilder")
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl KeywardBuilder {
    /// The clock every time rule reads. Defaults to [`SystemClock`]; tests
    /// use a [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The type prefix of issued tokens: 1–10 ASCII letters and digits.
    /// Defaults to `sk`. Only tokens with this prefix verify.
    pub fn token_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where audit events go. Defaults to [`TracingAuditSink`].
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Arc::new(sink);
        self
    }

    /// The least time between two writes of one key's "last used" instant:
    /// successful verifications in between only update memory. Defaults to
    /// one minute; must be positive.
    pub fn last_used_interval(mut self, interval: Duration) -> Self {
        self.last_used_interval = interval;
        self
    }

    /// The rate limit of every key without its own
    /// ([`NewKey::rate_limit`], [`Keyward::set_rate_limit`]). Over it,
    /// verification answers [`VerifyError::RateLimited`]. Defaults to no
    /// limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.key_limit = Some(limit);
        self
    }

    /// The quota every tenant's keys share, checked after each key's own
    /// limit. Over it, verification answers
    /// [`VerifyError::QuotaExceeded`]. Defaults to no quota.
    pub fn tenant_quota(mut self, quota: RateLimit) -> Self {
        self.tenant_quota = Some(quota);
        self
    }

    /// A quota for one tenant, replacing [`KeywardBuilder::tenant_quota`]
    /// for it.
    pub fn tenant_quota_for(mut self, tenant: impl Into<String>, quota: RateLimit) -> Self {
        self.tenant_quotas.insert(tenant.into(), quota);
        self
    }

    /// Replaces the in-process limiter with another, e.g. one shared by a
    /// fleet. By default each key's limiter state (GCRA, as in
    /// [`LocalLimiter`](crate::LocalLimiter)) lives in its cache entry and
    /// each tenant's beside the tenant, on this builder's clock: no lock
    /// and no map on the verify path. The state of a key that leaves the
    /// cache is kept aside (for up to `cache_capacity` or 65,536 keys at
    /// once, whichever is more; when full, the states closest to refilled
    /// are forgotten first), so eviction or a change to the key does not
    /// reset its limit.
    pub fn rate_limiter(mut self, limiter: impl RateLimiter) -> Self {
        self.limiter = Some(Arc::new(limiter));
        self
    }

    /// Inactivity expiry. Defaults to [`InactivityPolicy::default`]: 90
    /// days, warnings 15, 7 and 1 days before.
    pub fn inactivity(mut self, policy: InactivityPolicy) -> Self {
        self.inactivity = policy;
        self
    }

    /// Warnings before fixed expiries. Defaults to 15, 7 and 1 days.
    pub fn expiry_warnings(mut self, warnings: ExpiryWarnings) -> Self {
        self.expiry_warnings = warnings;
        self
    }

    /// How long revoked and expired keys stay before the sweep purges
    /// them. Defaults to keeping them.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Tenants as paths: a key or actor of `agency` also acts for
    /// `agency/location` (never the reverse, never siblings). Defaults to
    /// `false`: tenants are flat and must match exactly.
    pub fn nested_tenants(mut self, nested: bool) -> Self {
        self.nested_tenants = nested;
        self
    }

    /// How long a verify may trust what it read of a key without asking
    /// the store again. Default: 10 seconds.
    ///
    /// This is the upper bound on how stale a verify can be: with a store
    /// that reports changes ([`KeyStore::subscribe`]: the memory and SQLite
    /// stores for changes made through them, PostgreSQL for every
    /// instance's, through `LISTEN/NOTIFY`), revocations, deletions and
    /// permission changes take effect at once and the limit is only the
    /// fallback. Zero turns the cache off: every verify reads the store.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How many keys the verification cache holds at most. Default:
    /// 100,000 (about 240 bytes each, plus name). Its slot table (16–32 bytes
    /// per key of capacity) is allocated when the `Keyward` is built, so
    /// the limit is 16,777,216 keys; [`build`](Self::build) refuses more.
    pub fn cache_capacity(mut self, keys: usize) -> Self {
        self.cache_capacity = keys;
        self
    }

    /// How many unknown ids the verification cache remembers at most, so
    /// that a flood of made-up tokens costs one store read per id per
    /// [`cache_ttl`](Self::cache_ttl). Kept apart from known keys: a flood
    /// never evicts them. Default: 100,000 (about 40 bytes each); at most
    /// 16,777,216.
    pub fn unknown_cache_capacity(mut self, ids: usize) -> Self {
        self.unknown_cache_capacity = ids;
        self
    }

    /// How long a verify waits for the store (a key read, a usage credit)
    /// or a host's rate limiter before it gives up with
    /// [`VerifyError::Store`] (HTTP 503), so that a sick database slows no
    /// request past it. Default: 2 seconds; must be positive. Measured on
    /// the monotonic clock by one timer thread, on any executor.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Checks the settings and builds.
    ///
    /// # Errors
    /// [`ConfigError`] for an invalid token prefix, a non-positive
    /// interval, period, warning threshold or store timeout, a negative
    /// retention or cache time limit, or a tenant quota for a tenant that
    /// is not a canonical path.
    pub fn build(self) -> Result<Keyward, ConfigError> {
        let format = TokenFormat::new(&self.prefix)?;
        let invalid = |setting, reason| Err(ConfigError::Invalid { setting, reason });
        if self.tenant_quotas.keys().any(|t| !tenant::is_valid(t)) {
            return invalid(
                "tenant_quota_for",
                "the tenant is not a canonical tenant path (see keyward::tenant)",
            );
        }
        let Some(store_timeout) = self.store_timeout.to_std().ok().filter(|t| !t.is_zero()) else {
            return invalid("store_timeout", "must be positive");
        };
        if self.last_used_interval <= Duration::zero() {
            return invalid("last_used_interval", "must be positive");
        }
        if self.inactivity.after.is_some_and(|a| a <= Duration::zero()) {
            return invalid("inactivity.after", "must be positive");
        }
        let thresholds = self
            .inactivity
            .warn_before
            .iter()
            .chain(&self.expiry_warnings.warn_before);
        if thresholds.into_iter().any(|t| *t <= Duration::zero()) {
            return invalid("warn_before", "thresholds must be positive");
        }
        if self
            .retention
            .purge_after
            .is_some_and(|r| r < Duration::zero())
        {
            return invalid("retention.purge_after", "must not be negative");
        }
        if self.cache_capacity > MAX_CACHE_CAPACITY {
            return invalid(
                "cache_capacity",
                "must be at most 16,777,216 keys (its table is allocated up front)",
            );
        }
        if self.unknown_cache_capacity > MAX_CACHE_CAPACITY {
            return invalid("unknown_cache_capacity", "must be at most 16,777,216 ids");
        }
        let Some(ttl_us) = self
            .cache_ttl
            .num_microseconds()
            .filter(|t| *t >= 0 && self.cache_ttl <= Duration::days(1))
        else {
            return invalid("cache_ttl", "must be between zero and one day");
        };
        let cache = Arc::new(Cache::new(
            self.cache_capacity,
            self.unknown_cache_capacity,
            ttl_us,
        ));
        let listener: Weak<Cache> = Arc::downgrade(&cache);
        let feed = self.store.subscribe(listener as Weak<dyn ChangeListener>);
        Ok(Keyward {
            inner: Arc::new(Inner {
                store: self.store,
                catalog: self.catalog,
                clock: self.clock,
                format,
                audit: self.audit,
                limiter: self.limiter,
                tenants: Tenants::default(),
                inactive_after_us: self
                    .inactivity
                    .after
                    .map(|a| a.num_microseconds().unwrap_or(i64::MAX)),
                key_limit: self.key_limit,
                tenant_quota: self.tenant_quota,
                tenant_quotas: self.tenant_quotas,
                inactivity: self.inactivity,
                expiry_warnings: self.expiry_warnings,
                retention: self.retention,
                nested: self.nested_tenants,
                cache,
                feed,
                store_timeout,
                last_used: LastUsed {
                    interval: self.last_used_interval,
                    interval_us: self
                        .last_used_interval
                        .num_microseconds()
                        .unwrap_or(i64::MAX),
                    state: Mutex::new(Pending {
                        entries: HashMap::new(),
                        last_flush: None,
                        failed_at: None,
                    }),
                    flushing: std::sync::atomic::AtomicBool::new(false),
                },
            }),
        })
    }
}

/// What the verification cache holds: see [`Keyward::cache_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Known keys held.
    pub keys: usize,
    /// Unknown ids remembered.
    pub unknown_ids: usize,
}

/// Issues, verifies and manages API keys. Cheap to clone (shared); build
/// one per process with [`Keyward::builder`].
#[derive(Clone)]
pub struct Keyward {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    format: TokenFormat,
    audit: Arc<dyn AuditSink>,
    last_used: LastUsed,
    /// A host's limiter; `None`: limiter state in the cache entries.
    limiter: Option<Arc<dyn RateLimiter>>,
    tenants: Tenants,
    /// The inactivity period in microseconds, for the verify path.
    inactive_after_us: Option<i64>,
    key_limit: Option<RateLimit>,
    tenant_quota: Option<RateLimit>,
    tenant_quotas: HashMap<String, RateLimit>,
    inactivity: InactivityPolicy,
    expiry_warnings: ExpiryWarnings,
    retention: Retention,
    nested: bool,
    cache: Arc<Cache>,
    /// Whether the store reports changes to the cache.
    feed: bool,
    /// How long a verify waits for the store or a host's limiter.
    store_timeout: std::time::Duration,
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

/// Most tenants whose quota state is kept for keys acting for a tenant
/// below their own.
const MAX_TENANTS: usize = 65_536;

/// The largest `cache_capacity` and `unknown_cache_capacity` accepted.
const MAX_CACHE_CAPACITY: usize = 1 << 24;

impl Keyward {
    /// Starts building over `store` with the permissions of `catalog`.
    pub fn builder(store: impl KeyStore, catalog: Catalog) -> KeywardBuilder {
        KeywardBuilder {
            store: Arc::new(store),
            catalog,
            clock: Arc::new(SystemClock),
            prefix: "sk".into(),
            audit: Arc::new(TracingAuditSink),
            last_used_interval: Duration::minutes(1),
            key_limit: None,
            tenant_quota: None,
            tenant_quotas: HashMap::new(),
            limiter: None,
            inactivity: InactivityPolicy::default(),
            expiry_warnings: ExpiryWarnings::default(),
            retention: Retention::default(),
            nested_tenants: false,
            cache_ttl: Duration::seconds(10),
            cache_capacity: 100_000,
            unknown_cache_capacity: 100_000,
            store_timeout: Duration::seconds(2),
        }
    }

    /// The permission catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// How full the verification cache is.
    pub fn cache_stats(&self) -> CacheStats {
        let (keys, unknown_ids) = self.inner.cache.len();
        CacheStats { keys, unknown_ids }
    }

    /// The token format (type prefix) of this instance.
    pub fn token_format(&self) -> &TokenFormat {
        &self.inner.format
    }

    /// Checks a presented token: shape and checksum (no store access if
    /// wrong), then the stored hash in constant time, then status,
    /// inactivity, the key's rate limit, the tenant's quota and the key's
    /// remaining uses, in that order.
    ///
    /// # Errors
    /// [`VerifyError::Malformed`], [`VerifyError::Invalid`] (unknown key
    /// or wrong secret, indistinguishable), then, only for the right
    /// secret, [`VerifyError::Revoked`], [`VerifyError::Expired`],
    /// [`VerifyError::Inactive`], [`VerifyError::RateLimited`],
    /// [`VerifyError::QuotaExceeded`], [`VerifyError::UsageExceeded`];
    /// [`VerifyError::Store`] when the store cannot be asked.
    pub fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        VerifyFuture::new(self, token, None)
    }

    /// [`Keyward::verify`], and the key must belong to `tenant` (e.g. from
    /// an `X-Tenant-Name` header) or, with nested tenants, to an ancestor
    /// of it. Checked before limits and uses are counted. When a key of
    /// an ancestor acts for a descendant, the descendant's quota applies
    /// as well as the key's own tenant's.
    ///
    /// # Errors
    /// As [`Keyward::verify`]; [`VerifyError::InvalidTenant`] (before the
    /// key is looked at) when `tenant` is not a canonical tenant path, and
    /// [`VerifyError::WrongTenant`].
    pub fn verify_for_tenant<'a>(&'a self, token: &'a str, tenant: &'a str) -> VerifyFuture<'a> {
        VerifyFuture::new(self, token, Some(tenant))
    }

    /// Verification from the cache alone, without awaiting anything: a
    /// known key with the built-in limiter, not usage-limited, not near
    /// inactivity. Anything else goes the slow way, before any state
    /// (a limiter's count) changes.
    fn verify_cached(&self, token: &str, tenant: Option<&str>) -> Fast {
        let inner = &*self.inner;
        if let Some(Err(e)) = tenant.map(tenant::validate) {
            self.audit_verify(None, "invalid_tenant", None);
            return Fast::Done(Err(VerifyError::InvalidTenant(e)));
        }
        if inner.limiter.is_some() {
            return Fast::Slow;
        }
        // Shape and checksum first: typos and made-up strings (the usual
        // flood) stop here, before the clock, the cache or SHA-256.
        let Ok(parsed) = inner.format.parse(token) else {
            self.audit_verify(None, "malformed", None);
            return Fast::Done(Err(VerifyError::Malformed));
        };
        let id = parsed.id();
        let Some(mut block) = parsed.padded() else {
            return Fast::Slow;
        };
        let now_us = self.now_us();
        let Some(entry) = inner.cache.hit(&id, now_us) else {
            // The id is public (lists, logs, errors name it) and its secret
            // is never compared here, so an unknown id costs no hash: a
            // flood of made-up tokens is the cheapest kind to refuse.
            KeyHash::scrub(&mut block);
            if inner.cache.known_unknown(&id, now_us) {
                self.audit_verify(Some((id, parsed.display_prefix())), "invalid", None);
                return Fast::Done(Err(VerifyError::Invalid));
            }
            return Fast::Slow;
        };
        let hash = KeyHash::of_block(&mut block);
        if !entry.hash.ct_eq(&hash) {
            // Same id, same prefix: the entry's copy is a fixed-size move.
            self.audit_verify(Some((id, entry.prefix)), "invalid", None);
            return Fast::Done(Err(VerifyError::Invalid));
        }
        let key = Some((id, entry.prefix));
        if entry.metered || self.inactive_at(&entry, now_us) {
            return Fast::Slow;
        }
        let checked = self
            .check_key(&entry, now_us, tenant)
            .and_then(|()| self.check_own_limits(&entry, tenant, now_us));
        if let Err(err) = checked {
            self.audit_verify(key, err.code(), Some(&entry.tenant.name));
            return Fast::Done(Err(err));
        }
        if inner.last_used.note(&entry, now_us) {
            self.schedule_flush(now_us);
        }
        Fast::Done(Ok(Verified {
            key: entry,
            remaining: None,
        }))
    }

    /// The tenant a key acts for when it is not the key's own (an
    /// ancestor's key acting for a descendant), if that tenant has a
    /// quota: its state, shared with the descendant's own keys.
    ///
    /// At most [`MAX_TENANTS`] tenants are kept: beyond, while none is
    /// idle, a request for yet another tenant is refused as over quota.
    fn acting_for(
        &self,
        entry: &CachedKey,
        tenant: Option<&str>,
        now_us: i64,
    ) -> Result<Option<Arc<Tenant>>, VerifyError> {
        let Some(t) = tenant.filter(|t| *t != &*entry.tenant.name) else {
            return Ok(None);
        };
        let Some(quota) = self.quota_for(t) else {
            return Ok(None);
        };
        match self
            .inner
            .tenants
            .get_bounded(t, quota, MAX_TENANTS, gcra_now(now_us))
        {
            Some(state) => Ok(Some(state)),
            None => Err(VerifyError::QuotaExceeded {
                retry_after: Duration::seconds(1),
            }),
        }
    }

    /// Status and tenant: what the key itself allows.
    fn check_key(
        &self,
        entry: &CachedKey,
        now_us: i64,
        tenant: Option<&str>,
    ) -> Result<(), VerifyError> {
        match entry.status(now_us) {
            KeyStatus::Active => {}
            KeyStatus::Revoked => return Err(VerifyError::Revoked),
            KeyStatus::Expired => return Err(VerifyError::Expired),
        }
        // Both are canonical already: the request's tenant was validated
        // when the verify began, the key's when it was read from the store.
        if let Some(t) = tenant {
            if !tenant::covers_canonical(&entry.tenant.name, t, self.inner.nested) {
                return Err(VerifyError::WrongTenant);
            }
        }
        Ok(())
    }

    /// Everything [`Keyward::verify`] does, awaiting the store and a
    /// host's limiter where needed. Runs only after
    /// [`Keyward::verify_cached`] answered [`Fast::Slow`], which checked
    /// the tenant's form first; [`VerifyFuture`] bounds it by the store
    /// timeout.
    async fn verify_slow(
        &self,
        token: &str,
        tenant: Option<&str>,
    ) -> Result<Verified, VerifyError> {
        let inner = &*self.inner;
        let Ok(parsed) = inner.format.parse(token) else {
            self.audit_verify(None, "malformed", None);
            return Err(VerifyError::Malformed);
        };
        let id = parsed.id();
        let prefix = parsed.display_prefix();
        let key = Some((id, prefix));
        let hash = parsed.hash();
        let now_us = self.now_us();
        let mut fresh = false;
        let entry = match inner.cache.get(&id, now_us) {
            Lookup::Hit(entry) => Some(entry),
            Lookup::Unknown => None,
            Lookup::Miss(ticket) => {
                fresh = true;
                match self.load(ticket, &id, now_us).await {
                    Ok(entry) => entry,
                    Err(e) => {
                        self.audit_verify(key, "store_unavailable", None);
                        return Err(VerifyError::Store(e));
                    }
                }
            }
        };
        let matches = entry.as_ref().is_some_and(|e| e.hash.ct_eq(&hash));
        let mut entry = match entry {
            Some(e) if matches => e,
            _ => {
                self.audit_verify(key, "invalid", None);
                return Err(VerifyError::Invalid);
            }
        };
        // From here on the caller proved the secret and may learn status.
        let refuse = |err: VerifyError, entry: &CachedKey| {
            self.audit_verify(key, err.code(), Some(&entry.tenant.name));
            Err(err)
        };
        if !fresh && self.inactive_at(&entry, now_us) && self.may_be_newer(&entry) {
            // A use on another instance may not be in the cached copy yet:
            // read the store before refusing. (Not an invalidation: the
            // store did not change, so other loads may still cache.)
            inner.cache.forget(&id);
            let reloaded = match inner.cache.get(&id, now_us) {
                Lookup::Hit(e) => Ok(Some(e)),
                Lookup::Unknown => Ok(None),
                Lookup::Miss(ticket) => self.load(ticket, &id, now_us).await,
            };
            match reloaded {
                Ok(Some(e)) if e.hash.ct_eq(&hash) => entry = e,
                Ok(_) => {
                    self.audit_verify(key, "invalid", None);
                    return Err(VerifyError::Invalid);
                }
                Err(e) => return refuse(VerifyError::Store(e), &entry),
            }
        }
        if let Err(err) = self.check_key(&entry, now_us, tenant) {
            return refuse(err, &entry);
        }
        if self.inactive_at(&entry, now_us) {
            return refuse(VerifyError::Inactive, &entry);
        }
        if let Err(retry_after) = self.check_limits(&entry, tenant, now_us).await {
            return refuse(retry_after, &entry);
        }
        let mut remaining = None;
        if entry.metered {
            match self.consume_credit(&entry, now_us).await {
                Ok(Credit::Consumed { remaining: left }) => remaining = Some(left),
                Ok(Credit::Unlimited) => {}
                Ok(Credit::Exhausted) => return refuse(VerifyError::UsageExceeded, &entry),
                Ok(_) if entry.rolled_to().is_some() => {
                    // The successor whose uses a rolled-away key draws on
                    // is gone: so are the uses.
                    return refuse(VerifyError::UsageExceeded, &entry);
                }
                Ok(_) => {
                    // Deleted since it was cached.
                    inner.cache.invalidate(&id);
                    return refuse(VerifyError::Invalid, &entry);
                }
                Err(e) => return refuse(VerifyError::Store(e), &entry),
            }
        }
        if inner.last_used.note(&entry, now_us) {
            self.schedule_flush(now_us);
        }
        Ok(Verified {
            key: entry,
            remaining,
        })
    }

    /// Takes one use of a usage-limited key: its own, or, for a key rolled
    /// away and still in its grace period, its successor's, so that a
    /// roll never multiplies uses.
    async fn consume_credit(&self, entry: &CachedKey, now_us: i64) -> Result<Credit, StoreError> {
        let now = micros_to_time(now_us);
        let refill = entry.refill().map(|r| RefillDue {
            amount: r.amount,
            if_refilled_before: now
                .checked_sub_signed(r.every())
                .unwrap_or_else(earliest)
                .max(earliest()),
            now,
        });
        // A rolled-away key draws on its successor, never refilling it:
        // refills come with the successor's own uses.
        let refill = refill.filter(|_| entry.rolled_to().is_none());
        let from = entry.rolled_to().unwrap_or(entry.id);
        self.inner.store.consume_credit(&from, refill).await
    }

    /// `work` (store calls), given up after the store timeout with
    /// [`Keyward::timed_out`].
    async fn deadline<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        let limit = self.inner.store_timeout;
        match crate::deadline::within(limit, Box::pin(work)).await {
            Some(result) => result,
            None => Err(self.timed_out()),
        }
    }

    /// What a store call that outlived the store timeout answers.
    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable {
            message: format!(
                "the key store did not answer within {} ms",
                self.inner.store_timeout.as_millis()
            ),
            source: None,
        }
    }

    /// The key's rate limit, then its tenant's quota. The built-in limiter
    /// is one compare-and-swap on state inside the entry (or beside the
    /// tenant); a host's limiter is awaited.
    async fn check_limits(
        &self,
        entry: &CachedKey,
        tenant: Option<&str>,
        now_us: i64,
    ) -> Result<(), VerifyError> {
        let inner = &*self.inner;
        let Some(custom) = &inner.limiter else {
            return self.check_own_limits(entry, tenant, now_us);
        };
        let now = micros_to_time(now_us);
        if let Some(limit) = entry.limit {
            if let Decision::Deny { retry_after } =
                custom.check(Bucket::Key(entry.id), limit, now).await
            {
                return Err(VerifyError::RateLimited { retry_after });
            }
        }
        let acting = self.acting_for(entry, tenant, now_us)?;
        for tenant in [Some(&*entry.tenant), acting.as_deref()]
            .into_iter()
            .flatten()
        {
            if let Some((quota, _)) = tenant.quota {
                if let Decision::Deny { retry_after } =
                    custom.check(Bucket::Tenant(&tenant.name), quota, now).await
                {
                    return Err(VerifyError::QuotaExceeded { retry_after });
                }
            }
        }
        Ok(())
    }

    /// The built-in limiter: one compare-and-swap on the entry's state,
    /// one on its tenant's, and one on the tenant it acts for, if another
    /// (looked up only once the key's own limit let the request through).
    fn check_own_limits(
        &self,
        entry: &CachedKey,
        tenant: Option<&str>,
        now_us: i64,
    ) -> Result<(), VerifyError> {
        let inner = &*self.inner;
        let now_ns = gcra_now(now_us);
        if let Some(gcra) = &entry.gcra {
            let checked = if entry.cached() {
                gcra.check(&entry.tat, now_ns)
            } else {
                inner.cache.check_uncached(&entry.id, gcra, now_ns)
            };
            if let Err(ns) = checked {
                return Err(VerifyError::RateLimited {
                    retry_after: wait(ns),
                });
            }
        }
        if tenant.is_some_and(|t| t != &*entry.tenant.name) {
            return self.check_quotas_acting(entry, tenant, now_ns, now_us);
        }
        if let Some((_, gcra)) = &entry.tenant.quota {
            if let Err(ns) = gcra.check(&entry.tenant.tat, now_ns) {
                // A refused request counts against no limit.
                refund_key(entry);
                return Err(VerifyError::QuotaExceeded {
                    retry_after: wait(ns),
                });
            }
        }
        Ok(())
    }

    /// The quotas of a key acting for a tenant below its own: its own
    /// tenant's, then the one it acts for. Off the common path.
    #[cold]
    #[inline(never)]
    fn check_quotas_acting(
        &self,
        entry: &CachedKey,
        tenant: Option<&str>,
        now_ns: u64,
        now_us: i64,
    ) -> Result<(), VerifyError> {
        let acting = self
            .acting_for(entry, tenant, now_us)
            .inspect_err(|_| refund_key(entry))?;
        let quotas = [Some(&*entry.tenant), acting.as_deref()];
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
                refund_key(entry);
                return Err(VerifyError::QuotaExceeded {
                    retry_after: wait(ns),
                });
            }
        }
        Ok(())
    }

    /// Reads a key from the store for the cache. Concurrent misses on one
    /// id wait for the first one's read and use what it cached.
    async fn load(
        &self,
        ticket: Ticket,
        id: &KeyId,
        now_us: i64,
    ) -> Result<Option<Held>, StoreError> {
        let cache = &self.inner.cache;
        match cache.begin_load(id) {
            Load::Leader(_guard) => {
                // The guard lives until the read is cached (or fails, or
                // this future is dropped), then releases the followers.
                self.read_through(ticket, id, now_us).await
            }
            Load::Follower(wait) => {
                wait.await;
                match cache.get(id, now_us) {
                    Lookup::Hit(entry) => Ok(Some(entry)),
                    Lookup::Unknown => Ok(None),
                    // The leader failed, was cancelled, or raced an
                    // invalidation: read it ourselves, without waiting again.
                    Lookup::Miss(ticket) => self.read_through(ticket, id, now_us).await,
                }
            }
        }
    }

    async fn read_through(
        &self,
        ticket: Ticket,
        id: &KeyId,
        now_us: i64,
    ) -> Result<Option<Held>, StoreError> {
        let record = self.inner.store.get(id).await?.filter(|r| {
            // Written before tenants were canonical: no request can name
            // its tenant, and no manager could revoke it. Refused as
            // unknown until an operator moves it to a canonical tenant.
            let canonical = tenant::is_valid(&r.tenant);
            if !canonical {
                tracing::warn!(target: "keyward", key = %r.prefix, "key refused: its stored tenant is not a canonical tenant path");
            }
            canonical
        });
        let key = record.map(|r| {
            let tenant = self
                .inner
                .tenants
                .get(&r.tenant, || self.quota_for(&r.tenant));
            CachedKey::new(
                &r,
                self.stored_permissions(&r),
                tenant,
                self.inner.key_limit,
            )
        });
        Ok(self.inner.cache.put(ticket, id, key, now_us))
    }

    /// The clock's time, to the microsecond: what every store keeps.
    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now().trunc_subsecs(6)
    }

    /// The clock in microseconds: what verification reads.
    fn now_us(&self) -> i64 {
        self.inner.clock.now_micros()
    }

    /// Whether an active key went unused for the inactivity period. The
    /// in-memory pending use is consulted only when the known one is old.
    fn inactive_at(&self, entry: &CachedKey, now_us: i64) -> bool {
        let Some(after) = self.inner.inactive_after_us else {
            return false;
        };
        if now_us.saturating_sub(entry.last_active_us()) < after {
            return false;
        }
        let pending = self.inner.last_used.pending(&entry.id);
        pending.is_none_or(|p| now_us.saturating_sub(p.timestamp_micros()) >= after)
    }

    /// Whether the store may know of a use newer than this cached copy:
    /// true unless the copy was read when the key had already been idle for
    /// the inactivity period plus a last-used flush interval (by then every
    /// instance has written its uses). Keeps a hammered inactive key from
    /// reading the store on every request.
    fn may_be_newer(&self, entry: &CachedKey) -> bool {
        let Some(after) = self.inner.inactivity.after else {
            return false;
        };
        let settled = DateTime::from_timestamp_micros(entry.last_active_us())
            .and_then(|t| t.checked_add_signed(after))
            .and_then(|t| t.checked_add_signed(self.inner.last_used.interval));
        settled.is_none_or(|t| entry.loaded_at_us() < t.timestamp_micros())
    }

    /// When an active key will be deleted for disuse, if the policy is on.
    fn inactivity_deadline(&self, record: &KeyRecord) -> Option<DateTime<Utc>> {
        let after = self.inner.inactivity.after?;
        let last = record
            .last_used_at
            .max(self.inner.last_used.pending(&record.id))
            .map_or(record.created_at, |u| u.max(record.created_at));
        // To the microsecond, as stored in the warning mark.
        last.checked_add_signed(after).map(|d| d.trunc_subsecs(6))
    }

    fn quota_for(&self, tenant: &str) -> Option<RateLimit> {
        self.inner
            .tenant_quotas
            .get(tenant)
            .copied()
            .or(self.inner.tenant_quota)
    }

    /// The maintenance pass; run it periodically (hourly is plenty), on one
    /// instance or many. It walks the store in pages of 500 and:
    ///
    /// - deletes active keys unused for the inactivity period;
    /// - warns, once per key and threshold, of keys that will be deleted
    ///   for disuse or whose fixed expiry is near (using a key starts a new
    ///   cycle); the mark is written with a conditional update, so
    ///   concurrent sweeps on several instances warn once;
    /// - purges revoked and expired keys after the retention period, if
    ///   one is set.
    ///
    /// It first writes this instance's pending "last used" instants. Every
    /// deletion and warning is also an audit event by [`SWEEP_ACTOR`].
    ///
    /// # Errors
    /// [`StoreError`] when the store fails; what was done before stays done.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let inner = &*self.inner;
        self.flush_last_used().await?;
        let now = self.now();
        let due = self.sweep_due(now);
        let mut report = SweepReport::default();
        let mut after = None;
        loop {
            let page = inner.store.scan_due(&due, after.as_ref(), PAGE).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|r| r.id);
            for record in page {
                report.scanned += 1;
                self.sweep_one(record, now, &mut report).await?;
            }
            if !full {
                break;
            }
        }
        inner.tenants.evict_idle(gcra_now(self.now_us()));
        Ok(report)
    }

    /// The keys a sweep at `now` must look at: expiring within the longest
    /// expiry warning, idle past the inactivity period less its longest
    /// warning, or ended before the retention period.
    fn sweep_due(&self, now: DateTime<Utc>) -> SweepDue {
        let inner = &*self.inner;
        let longest = |w: &[Duration]| w.iter().copied().max();
        let expiring_before = longest(&inner.expiry_warnings.warn_before).map(|w| {
            now.checked_add_signed(w)
                .unwrap_or_else(latest)
                .min(latest())
        });
        let idle_since = inner.inactivity.after.map(|after| {
            let warn = longest(&inner.inactivity.warn_before).unwrap_or_else(Duration::zero);
            now.checked_add_signed(warn)
                .and_then(|t| t.checked_sub_signed(after))
                .unwrap_or_else(earliest)
                .max(earliest())
        });
        let ended_before = inner.retention.purge_after.map(|keep| {
            now.checked_sub_signed(keep)
                .unwrap_or_else(earliest)
                .max(earliest())
        });
        SweepDue {
            now,
            expiring_before,
            idle_since,
            ended_before,
        }
    }

    async fn sweep_one(
        &self,
        mut record: KeyRecord,
        now: DateTime<Utc>,
        report: &mut SweepReport,
    ) -> Result<(), StoreError> {
        let inner = &*self.inner;
        for attempt in 1..=UPDATE_ATTEMPTS {
            let status = KeyStatus::of(&record, now);
            if status != KeyStatus::Active {
                let since = record.revoked_at.or(record.expires_at);
                let purge = inner
                    .retention
                    .purge_after
                    .zip(since)
                    .is_some_and(|(keep, since)| now - since >= keep);
                if purge {
                    self.sweep_delete(&record, RemovalReason::Retention, &mut report.purged)
                        .await?;
                }
                return Ok(());
            }
            let mut changed = record.clone();
            let mut warnings = Vec::new();
            if let Some(deadline) = self.inactivity_deadline(&record) {
                if now >= deadline {
                    // Re-read: a use elsewhere may have landed since the page was read.
                    let fresh = inner.store.get(&record.id).await?;
                    let still = fresh.as_ref().and_then(|f| self.inactivity_deadline(f));
                    if still.is_some_and(|d| now >= d) {
                        self.sweep_delete(&record, RemovalReason::Inactive, &mut report.deleted)
                            .await?;
                    }
                    return Ok(());
                }
                let due = due_warning(
                    &inner.inactivity.warn_before,
                    deadline,
                    now,
                    record.inactivity_warning,
                );
                if let Some(mark) = due {
                    changed.inactivity_warning = Some(mark);
                    warnings.push((WarningKind::Inactivity, mark));
                }
            }
            if let Some(deadline) = record.expires_at {
                let due = due_warning(
                    &inner.expiry_warnings.warn_before,
                    deadline,
                    now,
                    record.expiry_warning,
                );
                if let Some(mark) = due {
                    changed.expiry_warning = Some(mark);
                    warnings.push((WarningKind::Expiry, mark));
                }
            }
            if warnings.is_empty() {
                return Ok(());
            }
            let updated = inner.store.update(&changed).await;
            if !matches!(updated, Err(StoreError::Conflict(_))) {
                inner.cache.invalidate(&record.id);
            }
            match updated {
                Ok(_) => {
                    for (kind, mark) in warnings {
                        self.audit_sweep(AuditAction::Warn, &record, None);
                        report.warnings.push(SweepWarning {
                            kind,
                            key_id: record.id,
                            prefix: record.prefix,
                            tenant: record.tenant.clone(),
                            name: record.name.clone(),
                            created_by: record.created_by.clone(),
                            deadline: mark.deadline,
                            before: mark.before(),
                        });
                    }
                    return Ok(());
                }
                // Another sweep or a management call won: re-read and decide again.
                Err(StoreError::Conflict(_)) if attempt < UPDATE_ATTEMPTS => {
                    match inner.store.get(&record.id).await? {
                        Some(fresh) => record = fresh,
                        None => return Ok(()),
                    }
                }
                Err(StoreError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn sweep_delete(
        &self,
        record: &KeyRecord,
        reason: RemovalReason,
        into: &mut Vec<SweptKey>,
    ) -> Result<(), StoreError> {
        let deleted = self.inner.store.delete(&record.id).await;
        self.inner.cache.invalidate(&record.id);
        let deleted = deleted?;
        if deleted {
            self.inner.last_used.forget(&record.id);
            self.audit_sweep(AuditAction::Delete, record, None);
            into.push(SweptKey {
                key_id: record.id,
                prefix: record.prefix,
                tenant: record.tenant.clone(),
                name: record.name.clone(),
                reason,
            });
        }
        Ok(())
    }

    /// Runs [`Keyward::sweep`] every `every` (at least one second) on the
    /// tokio runtime, handing each result to `on_report`, e.g. to send the
    /// warnings as notifications. Abort the returned handle to stop it.
    #[cfg(feature = "tokio")]
    pub fn spawn_sweeper<F>(
        &self,
        every: std::time::Duration,
        mut on_report: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut(Result<SweepReport, StoreError>) + Send + 'static,
    {
        let keys = self.clone();
        let every = every.max(std::time::Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                on_report(keys.sweep().await);
            }
        })
    }

    /// Writes every pending "last used" instant to the store now. Call it
    /// at shutdown so that the last minute of use is not lost.
    ///
    /// # Errors
    /// [`StoreError`]; the entries stay pending and are retried.
    pub async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let now = self.now();
        self.inner.last_used.flush(&*self.inner.store, now).await
    }

    /// Starts writing the pending "last used" instants on a background
    /// task, unless one is running: a request never waits for the store's
    /// write lock. Without a tokio runtime (or the `tokio` feature) the
    /// entries stay pending, bounded, for the next
    /// [`Keyward::flush_last_used`] or [`Keyward::sweep`].
    fn schedule_flush(&self, now_us: i64) {
        #[cfg(feature = "tokio")]
        {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let last_used = &self.inner.last_used;
            if last_used.flushing.swap(true, Ordering::AcqRel) {
                return;
            }
            let keys = self.clone();
            runtime.spawn(async move {
                let inner = &*keys.inner;
                // Cleared however the task ends, even if it is dropped
                // with its runtime.
                let _running = Running(&inner.last_used.flushing);
                let now = micros_to_time(now_us);
                let flushed = keys.deadline(inner.last_used.flush(&*inner.store, now));
                if let Err(e) = flushed.await {
                    // The entries stay pending and go with the next flush.
                    tracing::warn!(target: "keyward", error = %e, "could not record last-used times; will retry");
                }
            });
        }
        #[cfg(not(feature = "tokio"))]
        let _ = now_us;
    }

    fn stored_permissions(&self, record: &KeyRecord) -> PermissionSet {
        let (set, unknown) = self
            .inner
            .catalog
            .parse_stored(record.permissions.iter().map(String::as_str));
        if !unknown.is_empty() {
            tracing::warn!(
                target: "keyward",
                key = %record.prefix,
                ?unknown,
                "stored permissions are no longer in the catalog; the key does not hold them"
            );
        }
        set
    }

    fn info(&self, record: KeyRecord, now: DateTime<Utc>) -> KeyInfo {
        let permissions = self.stored_permissions(&record);
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
        }
    }

    fn audit_verify(
        &self,
        key: Option<(KeyId, DisplayPrefix)>,
        reason: &'static str,
        tenant: Option<&str>,
    ) {
        let audit = &*self.inner.audit;
        if !audit.wants_refusals() {
            return;
        }
        let outcome = if reason == "store_unavailable" {
            AuditOutcome::Failed(reason)
        } else {
            AuditOutcome::Denied(reason)
        };
        audit.record(&AuditEvent {
            at: micros_to_time(self.now_us()),
            action: AuditAction::Verify,
            outcome,
            actor: None,
            tenant: tenant.map(str::to_string),
            key_id: key.map(|k| k.0),
            key_prefix: key.map(|k| k.1),
            related_key_id: None,
        });
    }

    fn audit_manage<T>(
        &self,
        action: AuditAction,
        actor: &Actor,
        key: Option<(KeyId, DisplayPrefix)>,
        result: &Result<T, KeyError>,
    ) {
        self.audit_manage_related(action, actor, key, None, result);
    }

    fn audit_manage_related<T>(
        &self,
        action: AuditAction,
        actor: &Actor,
        key: Option<(KeyId, DisplayPrefix)>,
        related_key_id: Option<KeyId>,
        result: &Result<T, KeyError>,
    ) {
        let outcome = match result {
            Ok(_) => AuditOutcome::Success,
            Err(e @ (KeyError::Store(_) | KeyError::Entropy(_))) => AuditOutcome::Failed(e.code()),
            Err(e) => AuditOutcome::Denied(e.code()),
        };
        let key_id = key.map(|k| k.0).or(match result {
            Err(KeyError::NotFound(id)) => Some(*id),
            _ => None,
        });
        self.inner.audit.record(&AuditEvent {
            at: self.now(),
            action,
            outcome,
            actor: Some(actor.id().to_string()),
            tenant: Some(actor.tenant().to_string()),
            key_id,
            key_prefix: key.map(|k| k.1),
            related_key_id,
        });
    }

    fn audit_sweep(&self, action: AuditAction, record: &KeyRecord, reason: Option<&'static str>) {
        self.inner.audit.record(&AuditEvent {
            at: self.now(),
            action,
            outcome: reason.map_or(AuditOutcome::Success, AuditOutcome::Denied),
            actor: Some(SWEEP_ACTOR.to_string()),
            tenant: Some(record.tenant.clone()),
            key_id: Some(record.id),
            key_prefix: Some(record.prefix),
            related_key_id: None,
        });
    }
}

/// The actor named in audit events of the maintenance sweep.
pub const SWEEP_ACTOR: &str = "keyward:sweep";

/// The latest instant keyward stores or asks a store about:
/// 9999-12-31T23:59:59Z. Every SQL database can hold it; expiries beyond
/// are refused.
pub(crate) fn latest() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The future of [`Keyward::verify`] and [`Keyward::verify_for_tenant`].
///
/// Small and allocation-free when the key is cached: its first poll runs
/// the whole check without awaiting. Only a check that needs the store (or
/// a host's rate limiter) allocates, for the boxed future that does.
#[must_use = "a verification does nothing unless awaited"]
pub struct VerifyFuture<'a> {
    keys: &'a Keyward,
    token: &'a str,
    tenant: Option<&'a str>,
    /// The rest of a check that had to await the store, within the store
    /// timeout.
    slow: Option<Within<Boxed<'a, Result<Verified, VerifyError>>>>,
    done: bool,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl<'a> VerifyFuture<'a> {
    fn new(keys: &'a Keyward, token: &'a str, tenant: Option<&'a str>) -> Self {
        Self {
            keys,
            token,
            tenant,
            slow: None,
            done: false,
        }
    }
}

impl fmt::Debug for VerifyFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyFuture")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Future for VerifyFuture<'_> {
    type Output = Result<Verified, VerifyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            // Polled after completion: never resolves again.
            return Poll::Pending;
        }
        let slow = match &mut this.slow {
            Some(slow) => slow,
            None => match this.keys.verify_cached(this.token, this.tenant) {
                Fast::Done(result) => {
                    this.done = true;
                    return Poll::Ready(result);
                }
                Fast::Slow => this
                    .slow
                    .insert(slow_boxed(this.keys, this.token, this.tenant)),
            },
        };
        let result = match std::task::ready!(Pin::new(slow).poll(cx)) {
            Some(result) => result,
            // A verify that needs the store never waits longer than the
            // store timeout, however many calls it makes.
            None => {
                this.keys.audit_verify(None, "store_unavailable", None);
                Err(VerifyError::Store(this.keys.timed_out()))
            }
        };
        this.slow = None;
        this.done = true;
        Poll::Ready(result)
    }
}

// Out of line: building this future takes a large stack frame, which the
// common path should not pay for.
#[cold]
#[inline(never)]
fn slow_boxed<'a>(
    keys: &'a Keyward,
    token: &'a str,
    tenant: Option<&'a str>,
) -> Within<Boxed<'a, Result<Verified, VerifyError>>> {
    let work: Boxed<'a, _> = Box::pin(keys.verify_slow(token, tenant));
    crate::deadline::within(keys.inner.store_timeout, work)
}

/// The outcome of [`Keyward::verify_cached`].
enum Fast {
    Done(Result<Verified, VerifyError>),
    /// Needs the store or a host's limiter.
    Slow,
}

/// Gives back the request a key's own limit counted, when a quota
/// refused it.
fn refund_key(entry: &CachedKey) {
    if let (Some(gcra), true) = (&entry.gcra, entry.cached()) {
        gcra.refund(&entry.tat);
    }
}

/// Clock microseconds as a time (out of range: the nearest end).
fn micros_to_time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(if us < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// The earliest instant keyward asks a store about: 0001-01-01T00:00:00Z.
pub(crate) fn earliest() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Clears a "running" flag when dropped.
#[cfg(feature = "tokio")]
struct Running<'a>(&'a std::sync::atomic::AtomicBool);

#[cfg(feature = "tokio")]
impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Coalesces "last used" writes: at most one per key per interval.
///
/// A successful verify whose stored `last_used_at` is older than the
/// interval leaves an entry here; entries go to the store in one batch
/// when the previous flush is an interval old (or many are pending), on a
/// background task, never inside the request, or when the host calls
/// [`Keyward::flush_last_used`] or [`Keyward::sweep`].
struct LastUsed {
    interval: Duration,
    interval_us: i64,
    state: Mutex<Pending>,
    /// A background flush is running: at most one at a time.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    flushing: std::sync::atomic::AtomicBool,
}

struct Pending {
    entries: HashMap<KeyId, DateTime<Utc>>,
    last_flush: Option<DateTime<Utc>>,
    /// When the last flush failed, if the last flush failed.
    failed_at: Option<DateTime<Utc>>,
}

impl LastUsed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a use; returns whether a flush is due. A key seen within the
    /// interval costs one atomic read here, no lock.
    fn note(&self, key: &CachedKey, now_us: i64) -> bool {
        let last = key.last_used_us.load(Ordering::Relaxed);
        if last != i64::MIN && now_us.saturating_sub(last) < self.interval_us {
            return false;
        }
        let now = micros_to_time(now_us);
        let mut p = self.lock();
        if p.entries.len() >= MAX_PENDING_HARD && !p.entries.contains_key(&key.id) {
            // The store has been failing for a while: bound memory. This
            // use is not recorded (and not marked as seen, so the key's
            // next use after the store is back will be).
            return false;
        }
        key.last_used_us.fetch_max(now_us, Ordering::Relaxed);
        let at = p.entries.entry(key.id).or_insert(now);
        *at = (*at).max(now);
        // While the store is failing, retry once per interval, not on
        // every verify.
        let failing = p.failed_at.is_some_and(|f| now - f < self.interval);
        (!failing && p.entries.len() >= MAX_PENDING)
            || p.last_flush.is_none_or(|f| now - f >= self.interval)
    }

    fn pending(&self, id: &KeyId) -> Option<DateTime<Utc>> {
        self.lock().entries.get(id).copied()
    }

    fn forget(&self, id: &KeyId) {
        self.lock().entries.remove(id);
    }

    async fn flush(&self, store: &dyn KeyStore, now: DateTime<Utc>) -> Result<usize, StoreError> {
        // Copied, not drained: entries leave only once written, so a
        // flush whose future is dropped (a cancelled request) loses nothing.
        let batch: Vec<(KeyId, DateTime<Utc>)> = {
            let mut p = self.lock();
            p.last_flush = Some(now);
            p.entries.iter().map(|(id, at)| (*id, *at)).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let result = store.record_last_used(&batch).await;
        let mut p = self.lock();
        match result {
            Ok(()) => {
                p.failed_at = None;
                for (id, at) in &batch {
                    // A newer use noted meanwhile stays pending.
                    if p.entries.get(id) == Some(at) {
                        p.entries.remove(id);
                    }
                }
                // A backlog (from a store outage, or no runtime to flush
                // in the background) does not keep its memory once written.
                if p.entries.capacity() > MAX_PENDING && p.entries.len() < MAX_PENDING / 4 {
                    p.entries.shrink_to(MAX_PENDING / 4);
                }
                Ok(batch.len())
            }
            Err(e) => {
                p.failed_at = Some(now);
                Err(e)
            }
        }
    }
}

impl KeyError {
    /// A stable snake_case code for the error, for audit events and API
    /// responses: `forbidden`, `not_found`, `invalid_name`,
    /// `permission_escalation`, `unknown_permission`, `catalog_mismatch`,
    /// `invalid_expiry`, `not_active`, `bound_exceeded`,
    /// `key_outranks_actor`, `rolled_away`, `invalid_grace`, `invalid_tenant`,
    /// `invalid_metadata`, `entropy`, `store`.
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
            Self::InvalidGrace => "invalid_grace",
            Self::InvalidTenant(_) => "invalid_tenant",
            Self::InvalidMetadata(_) => "invalid_metadata",
            Self::Entropy(_) => "entropy",
            Self::Store(_) => "store",
        }
    }
}

impl VerifyError {
    /// A stable snake_case code for the error, for API responses:
    /// `malformed`, `invalid`, `api_key_expired`, `api_key_revoked`,
    /// `wrong_tenant`, `invalid_tenant`, `api_key_inactive`, `rate_limited`, `quota_exceeded`,
    /// `usage_exceeded`, `store_unavailable`. The HTTP layer answers
    /// `unauthorized` for the first two (seed 001's body) and these codes
    /// for the rest.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
            Self::Expired => "api_key_expired",
            Self::Revoked => "api_key_revoked",
            Self::WrongTenant => "wrong_tenant",
            Self::InvalidTenant(_) => "invalid_tenant",
            Self::Inactive => "api_key_inactive",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::UsageExceeded => "usage_exceeded",
            Self::Store(_) => "store_unavailable",
        }
    }
}
