//! The tenant registry: one [`Tenant`] per tenant name, holding its
//! quota's limiter state, bounded against floods of made-up names.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Gcra, RateLimit};

/// A tenant as verification sees it: its name, shared by the cached
/// entries of all its keys, and its quota's limiter state.
#[derive(Debug)]
pub(crate) struct Tenant {
    pub(crate) name: Box<str>,
    pub(crate) quota: Option<(RateLimit, Gcra)>,
    pub(crate) tat: AtomicU64,
}

/// The tenants of cached keys, one [`Tenant`] each, so that a quota has
/// one state and a name one allocation.
#[derive(Debug, Default)]
pub(crate) struct Tenants {
    map: Mutex<TenantMap>,
    /// When [`Tenants::get_bounded`] last scanned a full map.
    last_scan_ns: AtomicU64,
}

impl Tenant {
    pub(crate) fn new(name: &str, quota: Option<RateLimit>) -> Self {
        Self {
            name: name.into(),
            quota: quota.map(|q| (q, q.gcra())),
            tat: AtomicU64::new(0),
        }
    }
}

impl Tenants {
    /// The tenant named `name`, with `quota` if it is new.
    pub(crate) fn get(&self, name: &str, quota: impl FnOnce() -> Option<RateLimit>) -> Arc<Tenant> {
        let mut map = self.lock();
        if let Some(t) = map.get(name) {
            return t.clone();
        }
        Self::insert(&mut map, name, quota())
    }

    /// The tenant named `name` with `quota` if it is new, unless the map
    /// already holds `cap` tenants and none of them is idle at `now_ns`:
    /// a flood of made-up tenant names cannot grow it without bound.
    pub(crate) fn get_bounded(
        &self,
        name: &str,
        quota: RateLimit,
        cap: usize,
        now_ns: u64,
    ) -> Option<Arc<Tenant>> {
        let mut map = self.lock();
        if let Some(t) = map.get(name) {
            return Some(t.clone());
        }
        if map.len() >= cap {
            // One scan a second at most: a flood of new names while the map
            // is full costs a lookup each, not a scan each.
            let last = self.last_scan_ns.load(Ordering::Relaxed);
            // (abs_diff: a clock stepped back does not stop the scans.)
            if now_ns.abs_diff(last) < 1_000_000_000 {
                return None;
            }
            self.last_scan_ns.store(now_ns, Ordering::Relaxed);
            retain_live(&mut map, now_ns);
            if map.len() >= cap {
                return None;
            }
        }
        Some(Self::insert(&mut map, name, Some(quota)))
    }

    /// Forgets tenants that no cached key names and whose quota has
    /// refilled by `now_ns`.
    pub(crate) fn evict_idle(&self, now_ns: u64) {
        retain_live(&mut self.lock(), now_ns);
    }

    fn lock(&self) -> MutexGuard<'_, TenantMap> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(map: &mut TenantMap, name: &str, quota: Option<RateLimit>) -> Arc<Tenant> {
        let tenant = Arc::new(Tenant::new(name, quota));
        map.insert(name.into(), tenant.clone());
        tenant
    }
}

type TenantMap = HashMap<Box<str>, Arc<Tenant>>;

/// Keeps the tenants that a cached key names or whose quota has not
/// refilled by `now_ns`: forgetting any other loses nothing.
fn retain_live(map: &mut TenantMap, now_ns: u64) {
    map.retain(|_, t| {
        Arc::strong_count(t) > 1 || !Gcra::idle(t.tat.load(Ordering::Relaxed), now_ns)
    });
}
