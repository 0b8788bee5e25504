//! [`KeywardBuilder`]: every setting of a [`Keyward`], checked once by
//! [`KeywardBuilder::build`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use chrono::Duration;

use super::last_used::LastUsed;
use super::{Inner, Keyward, Lifecycle, RoleBook};
use crate::audit::{AuditSink, TracingAuditSink};
use crate::cache::Cache;
use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::legacy::{self, LegacyFormat};
use crate::limit::{Limits, RateLimit, RateLimiter, Stash};
use crate::permission::Catalog;
use crate::policy::{ExpiryWarnings, InactivityPolicy, Retention};
use crate::store::{ChangeListener, KeyStore};
use crate::tenant;
use crate::tenant_policy::{Policies, TenantPolicy};
use crate::token::TokenFormat;

/// The largest `cache_capacity` and `unknown_cache_capacity` accepted.
const MAX_CACHE_CAPACITY: usize = 1 << 24;

/// Builds a [`Keyward`]. Made by [`Keyward::builder`]; every setting
/// documents its default.
#[must_use]
pub struct KeywardBuilder {
    store: Arc<dyn KeyStore>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    prefix: String,
    legacy: Vec<LegacyFormat>,
    audit: Arc<dyn AuditSink>,
    last_used_interval: Duration,
    key_limit: Option<RateLimit>,
    tenant_quota: Option<RateLimit>,
    tenant_quotas: HashMap<String, RateLimit>,
    tenant_policies: HashMap<String, TenantPolicy>,
    limiter: Option<Arc<dyn RateLimiter>>,
    inactivity: InactivityPolicy,
    expiry_warnings: ExpiryWarnings,
    retention: Retention,
    nested_tenants: bool,
    cache_ttl: Duration,
    cache_stale_for: Duration,
    cache_capacity: usize,
    unknown_cache_capacity: usize,
    unknown_id_reads: Option<RateLimit>,
    cache_refresh_reads: Option<RateLimit>,
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

    /// Accepts tokens of `format` too: keys imported with
    /// [`Keyward::import`](crate::Keyward::import) from another system keep
    /// working under their old tokens (see [`LegacyFormat`]). New keys
    /// always get keyward tokens. May be given more than once; a token is
    /// read as the first format it matches.
    ///
    /// ```
    /// use keyward::{Catalog, Charset, Keyward, LegacyFormat, MemoryStore};
    ///
    /// let catalog = Catalog::builder().resource("contacts", ["read"]).build()?;
    /// let acme = LegacyFormat::new("acme_live_", Charset::Alphanumeric, 32..=32)?;
    /// let keys = Keyward::builder(MemoryStore::new(), catalog).legacy_format(acme).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn legacy_format(mut self, format: LegacyFormat) -> Self {
        self.legacy.push(format);
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
    /// ([`NewKey::rate_limit`](crate::NewKey::rate_limit), [`Keyward::set_rate_limit`]). Over it,
    /// verification answers [`VerifyError::RateLimited`](crate::VerifyError::RateLimited). Defaults to no
    /// limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.key_limit = Some(limit);
        self
    }

    /// The quota every tenant's keys share, checked after each key's own
    /// limit. Over it, verification answers
    /// [`VerifyError::QuotaExceeded`](crate::VerifyError::QuotaExceeded). Defaults to no quota.
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
    ///
    /// A host's limiter is asked through
    /// [`RateLimiter::try_check`](crate::RateLimiter::try_check) first: when
    /// it answers every limit of a request at once, a cached key verifies
    /// without awaiting; otherwise its `check` is awaited, within the store
    /// timeout.
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

    /// The key policy of `tenant` (see [`TenantPolicy`]): every key
    /// created, changed or reactivated in it, or (with nested tenants) in
    /// a tenant below it, must obey it. Replaces an earlier policy of the
    /// same tenant.
    pub fn tenant_policy(mut self, tenant: impl Into<String>, policy: TenantPolicy) -> Self {
        self.tenant_policies.insert(tenant.into(), policy);
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

    /// How long past [`cache_ttl`](Self::cache_ttl) a cached key may still
    /// answer a verify while it is read again in the background
    /// (stale-while-revalidate), so that a busy key does not wait for the
    /// store when its time limit ends. Default: 10 minutes. Zero turns it
    /// off. The background reads have a budget
    /// ([`cache_refresh_reads`](Self::cache_refresh_reads)); a key still
    /// unread when its window ends is read before its verify answers.
    ///
    /// It applies only with a store whose change feed sees every writer
    /// ([`KeyStore::feed_sees_every_writer`]: PostgreSQL, the memory
    /// store), and only while that feed is live: a changed key is dropped
    /// from the cache the moment the change is reported, so a stale entry
    /// is one that did not change, and the bounds on staleness stay those
    /// of the feed. With `SqliteStore` (another process may write the
    /// file) and during a feed outage, `cache_ttl` alone bounds staleness.
    pub fn cache_stale_for(mut self, stale: Duration) -> Self {
        self.cache_stale_for = stale;
        self
    }

    /// How many background reads of aged cache entries
    /// ([`cache_stale_for`](Self::cache_stale_for)) an instance makes, at
    /// most. Default: 1,000 a second, in bursts of up to 1,000. `None`: no
    /// bound.
    ///
    /// These reads are a safety net behind the change feed, which drops a
    /// changed key from the cache at once; unbounded, they would cost the
    /// store one read per busy key per [`cache_ttl`](Self::cache_ttl) (a
    /// million busy keys: 100,000 reads a second, per instance). Past the
    /// budget, an aged entry goes on answering and is queued by a later
    /// verify; one whose stale window has ended is read before its verify
    /// answers, as any miss. The reads go to whichever aged keys are
    /// verified first once the budget refills, so the keys used most are
    /// read again most often, and a key used less often may reach the end
    /// of its window and wait for one read. At the default, at most
    /// 600,000 keys are read again in the background per 10-minute
    /// window; a service with more busy keys than that, or with a few
    /// very busy ones among many, raises it. For a key over the budget, a
    /// change the feed missed can be served until its window ends
    /// (`cache_ttl` + `cache_stale_for`), the bound documented there.
    pub fn cache_refresh_reads(mut self, budget: Option<RateLimit>) -> Self {
        self.cache_refresh_reads = budget;
        self
    }

    /// How many store reads per instance may go to ids that are not
    /// known to exist: the bound on what a flood of made-up tokens costs
    /// the store (anyone can make well-formed tokens; the checksum is
    /// public). Default: 1,000 a second, in bursts of up to 1,000. `None`:
    /// no bound.
    ///
    /// Every cache miss reads the store while the budget lasts. Past it,
    /// an id is read only if it is known to exist: in the cache, or in a
    /// set of every stored id (about 16 bytes each, up to 16,777,216 ids),
    /// loaded in the background (with a tokio runtime) when the budget
    /// first runs out, kept in step by this instance's writes and the
    /// store's change feed, and loaded again after a feed reset and every
    /// 5 minutes while floods go on. Until its first load ends, misses
    /// past the budget are still read within ten times the budget's rate
    /// (the same burst), so a cold start busier than the budget refuses
    /// no real key, and past that get a store error (503: try again),
    /// never `Invalid`. Any other id is refused as
    /// [`VerifyError::Invalid`](crate::VerifyError::Invalid) without a
    /// read, exactly as an unknown one, counted in
    /// `keyward_cache_lookups_total{result="over_budget"}` and audited once
    /// a second with the number refused (`detail.refused_unread`).
    ///
    /// So while a flood lasts, a key created a moment ago on another
    /// instance whose change the feed has not yet brought (with
    /// `SqliteStore` written by another process: until the next load) may
    /// be refused; never outside a flood. Without a tokio runtime the set
    /// cannot load (nor after a load failed, for 10 s): past the budget,
    /// only cached keys are read, and other ids get
    /// [`VerifyError::Store`](crate::VerifyError::Store) (503: try again),
    /// never `Invalid`, since they may be real.
    pub fn unknown_id_reads(mut self, budget: Option<RateLimit>) -> Self {
        self.unknown_id_reads = budget;
        self
    }

    /// How many keys the verification cache holds at most. Default:
    /// 100,000 (about 240 bytes each, plus name). Its slot table (32–64 bytes
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
    /// [`VerifyError::Store`](crate::VerifyError::Store) (HTTP 503), so that a sick database slows no
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
        legacy::check(&self.legacy, format.prefix())?;
        let (store_timeout, ttl_us, stale_us) = self.check()?;
        let stash = Arc::new(Mutex::new(Stash::for_capacity(self.cache_capacity)));
        let mut cache = Cache::new(
            self.cache_capacity,
            self.unknown_cache_capacity,
            ttl_us,
            stash.clone(),
        );
        cache.bound_reads(self.unknown_id_reads);
        let cache = Arc::new(cache);
        let roles = Arc::new(RoleBook::new(
            self.catalog.clone(),
            cache.clone(),
            self.clock.clone(),
            ttl_us,
        ));
        let listener: Weak<RoleBook> = Arc::downgrade(&roles);
        let feed = self.store.subscribe(listener as Weak<dyn ChangeListener>);
        if feed && self.store.feed_sees_every_writer() {
            cache.allow_stale(stale_us);
        }
        if let Some(limiter) = &self.limiter {
            limiter.attach_audit(self.audit.clone());
        }
        let inactive_after_us = self
            .inactivity
            .after
            .map(|a| a.num_microseconds().unwrap_or(i64::MAX));
        Ok(Keyward {
            inner: Arc::new(Inner {
                store: measured(self.store),
                catalog: self.catalog,
                clock: self.clock,
                format,
                legacy: self.legacy.into(),
                audit: self.audit,
                nested: self.nested_tenants,
                key_limit: self.key_limit,
                cache,
                feed,
                limits: Limits::new(self.limiter, self.tenant_quota, self.tenant_quotas, stash),
                inactive_after_us,
                store_timeout,
                lifecycle: Lifecycle {
                    inactivity: self.inactivity,
                    expiry_warnings: self.expiry_warnings,
                    retention: self.retention,
                },
                last_used: LastUsed::new(self.last_used_interval),
                roles,
                policies: Policies::new(self.tenant_policies, self.nested_tenants),
                telemetry: crate::telemetry::Telemetry::default(),
                limit_events: Default::default(),
                unread: Default::default(),
                refresh: super::refresh::RefreshQueue::new(self.cache_refresh_reads),
                // Without OS randomness no key can be issued anyway; the
                // process id still tells instances apart.
                instance: super::webhooks::random_id("kw_")
                    .unwrap_or_else(|_| format!("kw_pid{}", std::process::id())),
            }),
        })
    }

    /// Checks every setting; the store timeout as a monotonic duration
    /// and the cache time limit in microseconds.
    fn check(&self) -> Result<(std::time::Duration, i64, i64), ConfigError> {
        let invalid = |setting, reason| Err(ConfigError::Invalid { setting, reason });
        if self.tenant_policies.keys().any(|t| !tenant::is_valid(t)) {
            return invalid(
                "tenant_policy",
                "the tenant is not a canonical tenant path (see keyward::tenant)",
            );
        }
        if self
            .tenant_policies
            .values()
            .any(|p| p.ceiling_catalog().is_some_and(|c| *c != self.catalog))
        {
            return invalid(
                "tenant_policy",
                "a permission ceiling was parsed in another catalog",
            );
        }
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
        let Some(stale_us) = self
            .cache_stale_for
            .num_microseconds()
            .filter(|t| *t >= 0 && self.cache_stale_for <= Duration::days(1))
        else {
            return invalid("cache_stale_for", "must be between zero and one day");
        };
        Ok((store_timeout, ttl_us, stale_us))
    }
}

impl Keyward {
    /// Starts building over `store` with the permissions of `catalog`.
    pub fn builder(store: impl KeyStore, catalog: Catalog) -> KeywardBuilder {
        KeywardBuilder {
            store: Arc::new(store),
            catalog,
            clock: Arc::new(SystemClock),
            prefix: "sk".into(),
            legacy: Vec::new(),
            audit: Arc::new(TracingAuditSink),
            last_used_interval: Duration::minutes(1),
            key_limit: None,
            tenant_quota: None,
            tenant_quotas: HashMap::new(),
            tenant_policies: HashMap::new(),
            limiter: None,
            inactivity: InactivityPolicy::default(),
            expiry_warnings: ExpiryWarnings::default(),
            retention: Retention::default(),
            nested_tenants: false,
            cache_ttl: Duration::seconds(10),
            cache_stale_for: Duration::minutes(10),
            cache_capacity: 100_000,
            unknown_cache_capacity: 100_000,
            unknown_id_reads: RateLimit::per_second(1_000).ok(),
            cache_refresh_reads: RateLimit::per_second(1_000).ok(),
            store_timeout: Duration::seconds(2),
        }
    }
}

/// The store, measured when metrics are on (feature `metrics`).
fn measured(store: Arc<dyn KeyStore>) -> Arc<dyn KeyStore> {
    #[cfg(feature = "metrics")]
    return Arc::new(crate::store::timed::Timed(store));
    #[cfg(not(feature = "metrics"))]
    store
}
