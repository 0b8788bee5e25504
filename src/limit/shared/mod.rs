//! [`RedisLimiter`]: rate limits and tenant quotas shared by a fleet of
//! instances, kept in Redis.

mod lease;
mod outage;
mod script;

pub use outage::OnOutage;

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Bucket, Charge, Decision, NamedDecision, RateLimit, RateLimiter};
use crate::audit::AuditSink;
use crate::token::KeyId;
use lease::Leases;
use outage::{AfterFailure, Attempt, Kind, Outage};
use script::Grant;

/// How exactly a [`RedisLimiter`] shares a limit, against how often it
/// asks Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Accuracy {
    /// Every decision is made in Redis, by one atomic script call: while
    /// Redis answers within the timeout, a fleet never admits more than
    /// a limit allows (a request it does not answer in time is decided as
    /// [`OnOutage`] says). Costs one Redis round
    /// trip per admitted request and limit (the key's limit, then the
    /// tenant's quota); a refusal is repeated locally, without Redis,
    /// until its retry time (no request could pass before it) or for a
    /// second, whichever is sooner. The default.
    #[default]
    Exact,
    /// An instance leases up to `lease` requests of a bucket at a time
    /// with one script call and hands them out locally, without awaiting.
    /// While Redis answers within the timeout, the fleet admits at most
    /// `instances × (lease − 1)` requests more than a limit allows (the
    /// leases not yet spent). It makes one Redis call per lease, and one
    /// for a refusal, which is then repeated locally until its retry time
    /// or for a second, whichever is sooner. A lease unspent after
    /// [`RedisLimiterBuilder::lease_ttl`] goes back to Redis with the next
    /// call for its bucket.
    Batched {
        /// Requests per lease; 1 behaves as [`Accuracy::Exact`], but with
        /// the requests of one bucket at one instance asking Redis one at
        /// a time.
        lease: NonZeroU32,
    },
}

/// Whose clock a [`RedisLimiter`] decides by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LimiterClock {
    /// Redis's (`TIME`), one clock for the whole fleet: an instance whose
    /// clock is off neither refills buckets early nor makes the others
    /// wait. The default.
    #[default]
    Redis,
    /// Each instance's (the [`Keyward`](crate::Keyward)'s clock): for
    /// tests on a [`ManualClock`](crate::ManualClock). Instances whose
    /// clocks differ by *d* can see a bucket refill up to *d* early, and
    /// one whose clock runs ahead makes the others wait up to *d* longer.
    Instance,
}

/// A [`RedisLimiter`] could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisLimiterError {
    /// The URL is not a Redis URL (`redis://[user:password@]host[:port][/db]`,
    /// or `rediss://` for TLS where the client supports it).
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// Redis did not answer within the connect timeout, or refused the
    /// credentials or the script.
    #[error("could not connect to Redis: {0}")]
    Connect(String),
    /// A setting is out of range.
    #[error("invalid shared limiter setting: {0}")]
    Config(&'static str),
}

/// Rate limits and tenant quotas shared by every instance that connects
/// to the same Redis with the same namespace: plug it in with
/// [`KeywardBuilder::rate_limiter`](crate::KeywardBuilder::rate_limiter).
///
/// Each limit is GCRA, as in the built-in limiter, kept in one Redis key
/// per bucket and limit (`{namespace}:k:{max}/{per_ms}:{key id}` or
/// `…:q:…:{tenant}`) that expires once it has refilled, so Redis holds
/// only the buckets in use. Every decision is one call of one script,
/// loaded once and called by its hash, so it is atomic however many
/// instances ask at once. It decides by Redis's clock, one for the whole
/// fleet ([`LimiterClock`]).
///
/// How exactly limits are shared is the [`Accuracy`]. A request Redis
/// does not answer within the [timeout](RedisLimiterBuilder::timeout)
/// (50 ms by default) is decided as [`OnOutage`] says (by default, counted
/// locally). Three failed calls within a second, at least half of that
/// second's calls, start an outage: the limiter logs it once, records an
/// [`AuditAction::LimiterOutage`](crate::AuditAction::LimiterOutage)
/// event and stops asking Redis, but for one request per
/// [retry interval](RedisLimiterBuilder::retry_every) (250 ms), while it
/// makes a fresh connection in the background (a connection to a peer
/// that went silent can hang for minutes). The first answer to a retry
/// ends the outage, with no restart.
///
/// It runs on tokio (as redis-rs does): connect and verify inside a
/// tokio runtime. TLS (`rediss://`) needs the `redis` crate's TLS feature (e.g.
/// `tokio-rustls-comp`), which a host enables in its own `Cargo.toml`.
/// Give Redis `maxmemory-policy noeviction` (or enough memory): an evicted
/// bucket starts afresh.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use keyward::{Catalog, Keyward, MemoryStore, RedisLimiter};
///
/// let limiter = RedisLimiter::connect("redis://127.0.0.1:6379").await?;
/// let catalog = Catalog::builder().resource("contacts", ["read"]).build()?;
/// let keys = Keyward::builder(MemoryStore::new(), catalog)
///     .rate_limiter(limiter)
///     .build()?;
/// # let _ = keys; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connection, replaced when an outage begins or a retry fails.
    conn: ArcSwap<ConnectionManager>,
    client: redis::Client,
    config: ConnectionManagerConfig,
    connect_timeout: Duration,
    /// Whether a replacement connection is being made.
    reconnecting: AtomicBool,
    script: redis::Script,
    named_script: redis::Script,
    namespace: Box<str>,
    accuracy: Accuracy,
    timeout: Duration,
    clock: LimiterClock,
    /// How far Redis's clock was ahead of the caller's at the last answer
    /// (µs; 0 on the instance's clock).
    offset_us: AtomicI64,
    lease_ttl_us: i64,
    outage: Outage,
    leases: Leases,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No URL: it may hold a password.
        f.debug_struct("RedisLimiter")
            .field("namespace", &self.inner.namespace)
            .field("accuracy", &self.inner.accuracy)
            .field("timeout", &self.inner.timeout)
            .field("redis_down", &self.inner.outage.is_down())
            .finish_non_exhaustive()
    }
}

/// Settings of a [`RedisLimiter`]; [`RedisLimiterBuilder::connect`] makes
/// it.
#[derive(Debug, Clone)]
pub struct RedisLimiterBuilder {
    namespace: String,
    accuracy: Accuracy,
    clock: LimiterClock,
    on_outage: OnOutage,
    timeout: Duration,
    connect_timeout: Duration,
    retry_every: Duration,
    lease_ttl: Duration,
}

impl Default for RedisLimiterBuilder {
    fn default() -> Self {
        Self {
            namespace: "keyward".into(),
            accuracy: Accuracy::Exact,
            clock: LimiterClock::Redis,
            on_outage: OnOutage::FallBackToLocal,
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(5),
            retry_every: Duration::from_millis(250),
            lease_ttl: Duration::from_secs(1),
        }
    }
}

impl RedisLimiterBuilder {
    /// The prefix of every Redis key (default `keyward`): services that
    /// share a Redis but not their limits use different ones.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// [`Accuracy::Exact`] (the default) or [`Accuracy::Batched`].
    pub fn accuracy(mut self, accuracy: Accuracy) -> Self {
        self.accuracy = accuracy;
        self
    }

    /// Whose clock decides (default [`LimiterClock::Redis`]).
    pub fn clock(mut self, clock: LimiterClock) -> Self {
        self.clock = clock;
        self
    }

    /// What happens while Redis is down (default
    /// [`OnOutage::FallBackToLocal`]).
    pub fn on_outage(mut self, policy: OnOutage) -> Self {
        self.on_outage = policy;
        self
    }

    /// How long one decision waits for Redis before the outage policy
    /// decides instead (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long [`connect`](Self::connect) waits for the first connection
    /// (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// During an outage, how often one request tries Redis again (default
    /// 250 ms, at least the [timeout](Self::timeout)); the others decide
    /// by the outage policy without waiting.
    pub fn retry_every(mut self, interval: Duration) -> Self {
        self.retry_every = interval;
        self
    }

    /// In [`Accuracy::Batched`], how long a lease may be handed out
    /// before what is left of it goes back to Redis (default 1 s).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`)
    /// through one multiplexed connection that reconnects by itself, and
    /// loads the script.
    ///
    /// # Errors
    /// [`RedisLimiterError::InvalidUrl`] for a URL that is not Redis's;
    /// [`RedisLimiterError::Connect`] when Redis does not answer within
    /// the connect timeout, refuses the credentials or the script;
    /// [`RedisLimiterError::Config`] for an empty namespace, a zero
    /// timeout, connect timeout, retry interval or lease time, or a retry
    /// interval shorter than the timeout.
    pub async fn connect(self, url: &str) -> Result<RedisLimiter, RedisLimiterError> {
        let (client, config) = self.client(url)?;
        let connect_err = |e: &dyn std::fmt::Display| RedisLimiterError::Connect(e.to_string());
        let wait = self.connect_timeout;
        let late = || format!("no answer within {wait:?}");
        let conn = tokio::time::timeout(
            self.connect_timeout,
            ConnectionManager::new_with_config(client.clone(), config.clone()),
        )
        .await
        .map_err(|_| connect_err(&late()))?
        .map_err(|e| connect_err(&e))?;
        let limiter = self.assemble(client, config, conn);
        // Loaded now, so that a first burst of requests does not each
        // find it missing; a restarted Redis gets it again on first use.
        let mut loading = ConnectionManager::clone(&limiter.inner.conn.load());
        let invocation = limiter.inner.script.prepare_invoke();
        let load = invocation.load_async(&mut loading);
        tokio::time::timeout(wait, load)
            .await
            .map_err(|_| connect_err(&late()))?
            .map_err(|e| connect_err(&e))?;
        Ok(limiter)
    }

    /// As [`connect`](Self::connect), but without waiting for Redis: the
    /// first requests connect. For an instance that must start while Redis
    /// is down: it starts in what will be an outage (its requests decided
    /// as [`OnOutage`] says), and shares limits once Redis answers. Call
    /// it inside a tokio runtime.
    ///
    /// # Errors
    /// [`RedisLimiterError::InvalidUrl`] and [`RedisLimiterError::Config`]
    /// as [`connect`](Self::connect).
    pub fn connect_lazy(self, url: &str) -> Result<RedisLimiter, RedisLimiterError> {
        let (client, config) = self.client(url)?;
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| RedisLimiterError::Connect(e.to_string()))?;
        Ok(self.assemble(client, config, conn))
    }

    /// Checks the settings; the client and connection settings for `url`.
    fn client(
        &self,
        url: &str,
    ) -> Result<(redis::Client, ConnectionManagerConfig), RedisLimiterError> {
        if self.namespace.is_empty() {
            return Err(RedisLimiterError::Config("the namespace must not be empty"));
        }
        let positive = [
            self.timeout,
            self.connect_timeout,
            self.retry_every,
            self.lease_ttl,
        ];
        if positive.iter().any(Duration::is_zero) {
            return Err(RedisLimiterError::Config(
                "timeouts, the retry interval and the lease time must be positive",
            ));
        }
        if self.retry_every < self.timeout {
            return Err(RedisLimiterError::Config(
                "the retry interval must be at least the timeout",
            ));
        }
        // The client's error names the URL's shape, never its password.
        let client =
            redis::Client::open(url).map_err(|e| RedisLimiterError::InvalidUrl(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(self.timeout))
            // A few quick reconnects; beyond, an outage makes a fresh
            // connection in the background (a socket to a peer that went
            // silent would otherwise wait on TCP for many minutes).
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200))
            .set_number_of_retries(3);
        Ok((client, config))
    }

    fn assemble(
        self,
        client: redis::Client,
        config: ConnectionManagerConfig,
        conn: ConnectionManager,
    ) -> RedisLimiter {
        RedisLimiter {
            inner: Arc::new(Inner {
                conn: ArcSwap::from_pointee(conn),
                client,
                config,
                connect_timeout: self.connect_timeout,
                reconnecting: AtomicBool::new(false),
                script: script::gcra(),
                named_script: script::named(),
                namespace: self.namespace.into(),
                accuracy: self.accuracy,
                timeout: self.timeout,
                clock: self.clock,
                offset_us: AtomicI64::new(0),
                lease_ttl_us: i64::try_from(self.lease_ttl.as_micros()).unwrap_or(i64::MAX),
                outage: Outage::new(self.on_outage, self.retry_every),
                leases: Leases::default(),
            }),
        }
    }
}

impl RedisLimiter {
    /// Settings other than the defaults.
    pub fn builder() -> RedisLimiterBuilder {
        RedisLimiterBuilder::default()
    }

    /// Connects with the default settings: exact, falling back to local
    /// limits while Redis is down, 50 ms timeout.
    ///
    /// # Errors
    /// As [`RedisLimiterBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, RedisLimiterError> {
        Self::builder().connect(url).await
    }

    /// Whether limits are shared right now: `false` during an outage
    /// (from its start until a retry is answered), e.g. for a health
    /// check.
    pub fn is_shared(&self) -> bool {
        !self.inner.outage.is_down()
    }

    /// Asks Redis to count up to `want` requests (giving back `back.0` µs
    /// of an unspent lease that left the state at `back.1`), or `None`
    /// when it cannot be asked now: it is down, failed or did not answer
    /// in time.
    async fn ask(
        &self,
        bucket: Bucket<'_>,
        limit: RateLimit,
        now: DateTime<Utc>,
        want: u32,
        back: (u64, i64),
    ) -> Option<Grant> {
        let inner = &*self.inner;
        let attempt = inner.outage.enter();
        if attempt.kind == Kind::Skip {
            return None;
        }
        let (emission, tolerance) = script::params(limit);
        let now_us = now.timestamp_micros().max(0);
        let (script_now, leased) = match inner.clock {
            LimiterClock::Instance => (now_us, back.1),
            // The lease's state, onto Redis's clock as last seen.
            _ => (
                -1,
                back.1
                    .saturating_add(inner.offset_us.load(Ordering::Relaxed)),
            ),
        };
        let mut invocation = inner.script.prepare_invoke();
        invocation
            .key(script::key(&inner.namespace, bucket, limit))
            .arg(emission)
            .arg(tolerance)
            .arg(script_now)
            .arg(want)
            .arg(back.0)
            .arg(leased);
        let reply = self.run(&invocation, attempt, now).await?;
        let (grant, offset) = Grant::from_reply(reply, now_us);
        inner.offset_us.store(offset, Ordering::Relaxed);
        inner.outage.learnt(bucket, limit, grant.tat_us, now);
        Some(grant)
    }

    /// Runs a script call within the timeout, as `attempt` of the outage
    /// protocol: its answer, or `None` when it failed or did not answer
    /// (the outage is told either way, and a failure may reconnect).
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        attempt: Attempt,
        now: DateTime<Utc>,
    ) -> Option<T> {
        let inner = &*self.inner;
        let mut conn = ConnectionManager::clone(&inner.conn.load());
        let call = invocation.invoke_async::<T>(&mut conn);
        let failure = match tokio::time::timeout(inner.timeout, call).await {
            Ok(Ok(reply)) => {
                inner.outage.answered(now, attempt);
                return Some(reply);
            }
            Ok(Err(e)) => inner.outage.failed(now, &e, attempt),
            Err(_) => {
                let why = format!("no answer within {:?}", inner.timeout);
                inner.outage.failed(now, &why, attempt)
            }
        };
        if failure == AfterFailure::Reconnect {
            self.reconnect();
        }
        None
    }

    /// A key's named limits in Redis, all or none (never leased: each
    /// call is one script run); `None` when Redis did not answer.
    async fn ask_named(
        &self,
        key: KeyId,
        charges: &[Charge<'_>],
        now: DateTime<Utc>,
    ) -> Option<NamedDecision> {
        let inner = &*self.inner;
        let attempt = inner.outage.enter();
        if attempt.kind == Kind::Skip {
            return None;
        }
        let script_now = match inner.clock {
            LimiterClock::Instance => now.timestamp_micros().max(0),
            _ => -1,
        };
        let mut invocation = inner.named_script.prepare_invoke();
        invocation.arg(script_now);
        for c in charges {
            let (emission, tolerance) = script::params(c.limit);
            invocation
                .key(script::named_key(
                    &inner.namespace,
                    key.as_str(),
                    c.name,
                    c.limit,
                ))
                .arg(emission)
                .arg(tolerance)
                .arg(c.cost);
        }
        let (allowed, wait_us, which) = self
            .run::<(i64, i64, i64)>(&invocation, attempt, now)
            .await?;
        Some(if allowed == 1 {
            NamedDecision::Allow
        } else {
            NamedDecision::Deny {
                limit: usize::try_from(which.saturating_sub(1)).unwrap_or(0),
                retry_after: chrono::Duration::microseconds(wait_us.max(1)),
            }
        })
    }

    /// Makes a fresh connection in the background and puts it in place of
    /// the current one once it is up (within the connect timeout): calls
    /// go on over the current one meanwhile. One at a time.
    fn reconnect(&self) {
        let inner = self.inner.clone();
        if inner.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(async move {
            let connect =
                ConnectionManager::new_with_config(inner.client.clone(), inner.config.clone());
            match tokio::time::timeout(inner.connect_timeout, connect).await {
                Ok(Ok(fresh)) => inner.conn.store(Arc::new(fresh)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "shared rate limiter: no new Redis connection")
                }
                Err(_) => tracing::debug!(
                    "shared rate limiter: no new Redis connection within the connect timeout"
                ),
            }
            inner.reconnecting.store(false, Ordering::Release);
        });
    }

    /// One request, decided in Redis. A refusal is remembered, and
    /// repeated without Redis until its retry time (no request can pass
    /// before it: states only grow) or for a second, whichever is
    /// sooner.
    async fn exact(&self, bucket: Bucket<'_>, limit: RateLimit, now: DateTime<Utc>) -> Decision {
        match self.ask(bucket, limit, now, 1, (0, 0)).await {
            Some(g) if g.granted > 0 => Decision::Allow,
            Some(g) => {
                let now_us = now.timestamp_micros();
                remember(
                    &self.inner.leases.slot(bucket, now_us),
                    limit,
                    now_us,
                    g.wait_us,
                );
                decision(g)
            }
            None => self.inner.outage.decide(bucket, limit, now),
        }
    }

    /// One request, from this instance's lease of the bucket, leasing
    /// anew when it is spent.
    async fn batched(
        &self,
        bucket: Bucket<'_>,
        limit: RateLimit,
        now: DateTime<Utc>,
        lease: NonZeroU32,
    ) -> Decision {
        let inner = &*self.inner;
        let now_us = now.timestamp_micros();
        let slot = inner.leases.slot(bucket, now_us);
        // One lease at a time per bucket: the requests that wait here
        // share the lease the first one brings. One that waits too long
        // is decided in Redis on its own.
        let Ok(_turn) = tokio::time::timeout(inner.timeout, slot.turn.lock()).await else {
            if let Some(d) = slot.take(limit, now_us) {
                return d;
            }
            return self.exact(bucket, limit, now).await;
        };
        if let Some(d) = slot.take(limit, now_us) {
            return d;
        }
        let want = lease.get().min(limit.max());
        let back = slot.unused(limit, script::params(limit).0, now_us);
        match self.ask(bucket, limit, now, want, back).await {
            Some(g) if g.granted > 0 => {
                let until = now_us.saturating_add(inner.lease_ttl_us);
                slot.granted(limit, g.granted, until, g.tat_us);
                Decision::Allow
            }
            Some(g) => {
                remember(&slot, limit, now_us, g.wait_us);
                decision(g)
            }
            None => inner.outage.decide(bucket, limit, now),
        }
    }
}

/// How long a refusal from Redis is repeated locally at most: a client
/// hammering a spent key costs Redis one call a second per instance,
/// and a reset in Redis (or a clock that ran ahead) reaches every
/// instance within a second.
const REFUSAL_MEMORY_US: u64 = 1_000_000;

/// Remembers a refusal from Redis (`wait_us` until a retry) in `slot`:
/// repeated locally until the retry time, or for a second, whichever is
/// sooner.
fn remember(slot: &lease::Slot, limit: RateLimit, now_us: i64, wait_us: u64) {
    let micros = |us: u64| i64::try_from(us).unwrap_or(i64::MAX);
    let until = now_us.saturating_add(micros(wait_us.min(REFUSAL_MEMORY_US)));
    slot.denied(limit, until, now_us.saturating_add(micros(wait_us)));
}

fn decision(g: Grant) -> Decision {
    if g.granted > 0 {
        Decision::Allow
    } else {
        Decision::Deny {
            retry_after: super::wait(g.wait_us.saturating_mul(1_000)),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, bucket: Bucket<'_>, limit: RateLimit, now: DateTime<Utc>) -> Decision {
        match self.inner.accuracy {
            Accuracy::Exact => self.exact(bucket, limit, now).await,
            Accuracy::Batched { lease } => self.batched(bucket, limit, now, lease).await,
        }
    }

    /// Answers without Redis from this instance's lease (batched), from a
    /// refusal Redis gave (for up to a second), or by the outage policy
    /// while Redis is down and not yet due for a retry.
    fn try_check(
        &self,
        bucket: Bucket<'_>,
        limit: RateLimit,
        now: DateTime<Utc>,
    ) -> Option<Decision> {
        let inner = &*self.inner;
        if inner.outage.waiting() {
            return Some(inner.outage.decide(bucket, limit, now));
        }
        // A lease (batched) or a refusal Redis gave (either mode).
        inner
            .leases
            .get(bucket)?
            .take(limit, now.timestamp_micros())
    }

    fn attach_audit(&self, audit: Arc<dyn AuditSink>) {
        self.inner.outage.attach(audit);
    }

    /// One script run checks and charges every named limit of the key
    /// together, in Redis; while Redis is down, the outage policy decides
    /// (the local fallback counts them together too).
    async fn check_named(
        &self,
        key: KeyId,
        charges: &[Charge<'_>],
        now: DateTime<Utc>,
    ) -> NamedDecision {
        match self.ask_named(key, charges, now).await {
            Some(d) => d,
            None => self.inner.outage.decide_named(key, charges, now),
        }
    }

    fn try_check_named(
        &self,
        key: KeyId,
        charges: &[Charge<'_>],
        now: DateTime<Utc>,
    ) -> Option<NamedDecision> {
        let inner = &*self.inner;
        inner
            .outage
            .waiting()
            .then(|| inner.outage.decide_named(key, charges, now))
    }
}
