//! Shared set-up for the integration tests.
#![allow(dead_code)]

#[cfg(all(feature = "axum", feature = "sqlite"))]
pub mod example;
pub mod forge;
#[cfg(feature = "postgres")]
pub mod pg;
#[cfg(feature = "redis")]
pub mod redis_server;
pub mod server_process;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keyward::store::{Credit, KeyRecord, KeyStore, RefillDue, RoleDefinition};
use keyward::{
    Actor, Catalog, KeyId, Keyward, KeywardBuilder, ManualClock, MemoryAuditSink, MemoryStore,
    StoreError,
};

/// Says a test is skipped and why, on the real stderr: the test harness
/// captures `eprintln!` of passing tests, and a skip must show in the run's
/// output. (Under `CI=true` callers fail instead of skipping.)
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let line = format!("SKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// A real [`MemoryStore`] that counts how often it is asked anything.
#[derive(Debug, Clone, Default)]
pub struct CountingStore {
    pub inner: MemoryStore,
    pub calls: Arc<AtomicUsize>,
    pub gets: Arc<AtomicUsize>,
    pub last_used_writes: Arc<AtomicUsize>,
    /// Milliseconds each `get` takes (0: none), to make reads overlap.
    pub get_delay_ms: Arc<AtomicUsize>,
    /// Milliseconds each `record_last_used` takes (0: none).
    pub last_used_delay_ms: Arc<AtomicUsize>,
    /// When set, `record_last_used` fails as if the backend were down.
    pub fail_last_used: Arc<std::sync::atomic::AtomicBool>,
    /// When set (before the `Keyward` is built), changes are reported
    /// as the memory store reports them, and the feed sees every writer.
    pub with_feed: bool,
    /// When set, a credit taken answers `u64::MAX` uses left, as a host's
    /// store might (more than any key may hold).
    pub overstate_credits: Arc<std::sync::atomic::AtomicBool>,
}

impl CountingStore {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    /// Lookups by id (`get`).
    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl KeyStore for CountingStore {
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.tick();
        self.inner.insert(record).await
    }
    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.tick();
        self.gets.fetch_add(1, Ordering::SeqCst);
        let delay = self.get_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay as u64)).await;
        }
        self.inner.get(id).await
    }
    async fn update(&self, record: &KeyRecord) -> Result<u64, StoreError> {
        self.tick();
        self.inner.update(record).await
    }
    async fn delete(&self, id: &KeyId) -> Result<bool, StoreError> {
        self.tick();
        self.inner.delete(id).await
    }
    async fn list_by_tenant(
        &self,
        tenant: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.tick();
        self.inner.list_by_tenant(tenant, after, limit).await
    }
    async fn scan(
        &self,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.tick();
        self.inner.scan(after, limit).await
    }
    async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError> {
        self.tick();
        self.last_used_writes.fetch_add(1, Ordering::SeqCst);
        let delay = self.last_used_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay as u64)).await;
        }
        if self.fail_last_used.load(Ordering::SeqCst) {
            return Err(down());
        }
        self.inner.record_last_used(batch).await
    }
    async fn consume_credit(
        &self,
        id: &KeyId,
        cost: u64,
        refill: Option<RefillDue>,
    ) -> Result<Credit, StoreError> {
        self.tick();
        let credit = self.inner.consume_credit(id, cost, refill).await?;
        Ok(match credit {
            Credit::Consumed { .. } if self.overstate_credits.load(Ordering::SeqCst) => {
                Credit::Consumed {
                    remaining: u64::MAX,
                }
            }
            other => other,
        })
    }
    async fn adjust_credits(&self, id: &KeyId, delta: i64) -> Result<Credit, StoreError> {
        self.tick();
        self.inner.adjust_credits(id, delta).await
    }
    async fn roles(&self) -> Result<Vec<RoleDefinition>, StoreError> {
        self.tick();
        self.inner.roles().await
    }
    async fn put_role(&self, role: &RoleDefinition) -> Result<(), StoreError> {
        self.tick();
        self.inner.put_role(role).await
    }
    fn subscribe(&self, listener: std::sync::Weak<dyn keyward::store::ChangeListener>) -> bool {
        self.with_feed && self.inner.subscribe(listener)
    }
    fn feed_sees_every_writer(&self) -> bool {
        self.with_feed
    }
}

/// A store whose backend is down.
#[derive(Debug, Default)]
pub struct DownStore;

fn down() -> StoreError {
    StoreError::unavailable(
        "connection refused",
        std::io::Error::other("connection refused"),
    )
}

#[async_trait]
impl KeyStore for DownStore {
    async fn insert(&self, _: &KeyRecord) -> Result<(), StoreError> {
        Err(down())
    }
    async fn get(&self, _: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Err(down())
    }
    async fn update(&self, _: &KeyRecord) -> Result<u64, StoreError> {
        Err(down())
    }
    async fn delete(&self, _: &KeyId) -> Result<bool, StoreError> {
        Err(down())
    }
    async fn list_by_tenant(
        &self,
        _: &str,
        _: Option<&KeyId>,
        _: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        Err(down())
    }
    async fn scan(&self, _: Option<&KeyId>, _: usize) -> Result<Vec<KeyRecord>, StoreError> {
        Err(down())
    }
    async fn record_last_used(&self, _: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError> {
        Err(down())
    }
    async fn consume_credit(
        &self,
        _: &KeyId,
        _: u64,
        _: Option<RefillDue>,
    ) -> Result<Credit, StoreError> {
        Err(down())
    }
    async fn adjust_credits(&self, _: &KeyId, _: i64) -> Result<Credit, StoreError> {
        Err(down())
    }
    async fn roles(&self) -> Result<Vec<RoleDefinition>, StoreError> {
        Err(down())
    }
    async fn put_role(&self, _: &RoleDefinition) -> Result<(), StoreError> {
        Err(down())
    }
}

/// Lets background tasks (the last-used flush) run: on a current-thread
/// runtime they run only when the test yields.
#[allow(dead_code)]
pub async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

pub fn catalog() -> Catalog {
    Catalog::builder()
        .resource("contacts", ["read", "write"])
        .resource("users", ["read"])
        .resource("leads", ["read", "create", "update", "delete"])
        .implies("create", "read")
        .implies("update", "read")
        .implies("delete", "read")
        .build()
        .expect("valid catalog")
}

pub struct Harness {
    pub keys: Keyward,
    pub store: CountingStore,
    pub clock: ManualClock,
    pub audit: MemoryAuditSink,
}

pub fn harness() -> Harness {
    harness_with(|b| b)
}

/// A harness whose builder `configure` adjusts (limits, policies).
pub fn harness_with(configure: impl FnOnce(KeywardBuilder) -> KeywardBuilder) -> Harness {
    let store = CountingStore::default();
    let clock = ManualClock::default();
    let audit = MemoryAuditSink::default();
    let keys = configure(
        Keyward::builder(store.clone(), catalog())
            .clock(clock.clone())
            .audit(audit.clone()),
    )
    .build()
    .expect("valid config");
    Harness {
        keys,
        store,
        clock,
        audit,
    }
}

/// An admin of `tenant` holding every permission.
pub fn admin(keys: &Keyward, tenant: &str) -> Actor {
    Actor::new("admin_1", tenant)
        .permissions(keys.catalog().all())
        .may_manage_keys(true)
}

/// `n` new keys of tenant `acme` (named `k0`, `k1`, …): their tokens.
pub async fn create_keys(keys: &Keyward, n: usize) -> Vec<String> {
    let admin = admin(keys, "acme");
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let k = keys
            .create(&admin, keyward::NewKey::new(format!("k{i}")))
            .await
            .expect("created");
        tokens.push(k.token.expose_secret().to_string());
    }
    tokens
}

/// A loopback port free at the time of asking (a server started on it
/// may still find it taken: callers retry).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "keyward-{label}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a `tracing` subscriber wrote, for tests that check logs.
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
    }
}

/// Captures this thread's `tracing` output up to `level` until the guard
/// is dropped.
pub fn capture_logs(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(level)
        .with_writer(move || writer.clone())
        .finish();
    (out, tracing::subscriber::set_default(subscriber))
}
