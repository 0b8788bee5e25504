//! Roles: the catalog's declarations, overlaid by definitions kept in the
//! store ([`Keyward::set_role`]), resolved whenever a key is loaded. A
//! role change resets every cache that hears of it (this instance's at
//! once, other instances' through the store's change feed), and the next
//! load reads the roles again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Keyward;
use crate::audit::AuditAction;
use crate::authority::{ensure_manager, held};
use crate::cache::Cache;
use crate::clock::Clock;
use crate::error::{KeyError, StoreError};
use crate::key::Actor;
use crate::permission::{Catalog, PermissionSet};
use crate::role::RoleMap;
use crate::store::{ChangeListener, KeyStore, RoleDefinition};
use crate::token::KeyId;

/// The roles in force, and the cache they feed: the store's change
/// listener, so that a reset also marks the roles to be read again.
///
/// Every reset bumps a generation; roles read from the store are tagged
/// with the generation they were read in, and a load uses them only if
/// no reset came since. A load that finds them older reads them itself
/// (role changes are rare: a few loads after one may each read them), so
/// no key is cached with a role as it was before the last change heard.
///
/// Roles read are also trusted no longer than the cache time limit, as
/// keys are: a change made by a process whose changes this one does not
/// hear (a store without a change feed, SQLite shared by processes, a
/// feed that is down) is seen within it.
pub(crate) struct RoleBook {
    catalog: Catalog,
    roles: ArcSwap<Snapshot>,
    /// Resets heard so far.
    generation: AtomicU64,
    cache: Arc<Cache>,
    clock: Arc<dyn Clock>,
    /// The cache time limit, in clock microseconds.
    ttl_us: i64,
}

/// The roles as read in one generation.
struct Snapshot {
    /// `None`: the catalog's alone, before the store was first read.
    read_in: Option<u64>,
    /// When they were read, in clock microseconds.
    read_at_us: i64,
    map: Arc<RoleMap>,
}

/// Reads of the roles one load makes at most, when resets keep coming.
const ATTEMPTS: usize = 4;

impl RoleBook {
    pub(crate) fn new(
        catalog: Catalog,
        cache: Arc<Cache>,
        clock: Arc<dyn Clock>,
        ttl_us: i64,
    ) -> Self {
        let declared = declared(&catalog);
        Self {
            catalog,
            roles: ArcSwap::from_pointee(Snapshot {
                read_in: None,
                read_at_us: i64::MIN,
                map: Arc::new(declared),
            }),
            generation: AtomicU64::new(0),
            cache,
            clock,
            ttl_us,
        }
    }

    /// The roles as last read.
    pub(crate) fn current(&self) -> Arc<RoleMap> {
        self.roles.load().map.clone()
    }

    /// The roles, read from the store first unless they were read since
    /// the last reset.
    pub(crate) async fn fresh(&self, store: &dyn KeyStore) -> Result<Arc<RoleMap>, StoreError> {
        for _ in 0..ATTEMPTS {
            let generation = self.generation.load(Ordering::Acquire);
            let snapshot = self.roles.load_full();
            let now_us = self.clock.now_micros();
            let recent = now_us.saturating_sub(snapshot.read_at_us) < self.ttl_us;
            if snapshot.read_in == Some(generation) && recent {
                return Ok(snapshot.map.clone());
            }
            let map = Arc::new(self.read(store).await?);
            // Kept only if no reset came during the read; and a read of
            // an older generation never replaces a newer one.
            if self.generation.load(Ordering::Acquire) == generation {
                self.roles.rcu(|old| {
                    if old.read_in.is_some_and(|g| g > generation) {
                        old.clone()
                    } else {
                        Arc::new(Snapshot {
                            read_in: Some(generation),
                            read_at_us: now_us,
                            map: map.clone(),
                        })
                    }
                });
                return Ok(map);
            }
        }
        Err(StoreError::Unavailable {
            message: "the roles kept changing while they were read; retry".into(),
            source: None,
        })
    }

    /// The catalog's roles overlaid by the store's definitions.
    async fn read(&self, store: &dyn KeyStore) -> Result<RoleMap, StoreError> {
        let mut roles = declared(&self.catalog);
        for d in store.roles().await? {
            let (set, unknown) = self
                .catalog
                .parse_stored(d.permissions.iter().map(String::as_str));
            if !unknown.is_empty() {
                tracing::warn!(target: "keyward", role = %d.name, ?unknown, "a stored role names permissions no longer in the catalog; nobody holds them");
            }
            roles.insert(d.name.into(), set);
        }
        Ok(roles)
    }
}

impl ChangeListener for RoleBook {
    fn changed(&self, id: &KeyId) {
        self.cache.changed(id);
    }

    fn reset(&self) {
        // First the generation, then the cache: a load that takes its
        // ticket after the reset sees the roles as stale.
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.reset();
    }

    fn feed(&self, live: bool) {
        self.cache.feed(live);
    }
}

fn declared(catalog: &Catalog) -> RoleMap {
    catalog.roles().map(|(n, set)| (n.into(), set)).collect()
}

impl Keyward {
    /// Defines the role `name`, or redefines it (a catalog role
    /// included), for every key of every tenant that holds it: cached
    /// keys on this instance at once, and on other instances as soon as
    /// the store's change feed tells them (PostgreSQL: within
    /// milliseconds), or within the cache time limit where no feed tells
    /// them.
    ///
    /// Roles are global, shared by every tenant: the actor must be an
    /// operator ([`Actor::may_manage_roles`]), manage keys, and hold every
    /// permission of the role as it was and as it will be, since every
    /// key holding it gains or loses them. A tenant's permission ceiling
    /// still bounds its keys whatever their roles grant (it is applied
    /// when a key is loaded).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use keyward::{Actor, Catalog, Keyward, MemoryStore, NewKey};
    ///
    /// let catalog = Catalog::builder()
    ///     .resource("contacts", ["read", "write"])
    ///     .resource("tickets", ["read", "write"])
    ///     .role("support", ["contacts:read", "tickets:*"])
    ///     .build()?;
    /// let keys = Keyward::builder(MemoryStore::new(), catalog.clone()).build()?;
    /// let ops = Actor::new("ops", "acme")
    ///     .permissions(catalog.all())
    ///     .may_manage_keys(true)
    ///     .may_manage_roles(true);
    /// let issued = keys.create(&ops, NewKey::new("Helpdesk").roles(["support"])).await?;
    /// let token = issued.token.expose_secret();
    /// assert!(keys.verify(token).await?.require("tickets:write").is_ok());
    ///
    /// keys.set_role(&ops, "support", ["contacts:read", "tickets:read"]).await?;
    /// assert!(keys.verify(token).await?.require("tickets:write").is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`KeyError::Forbidden`] (not an operator, or may not manage keys),
    /// [`KeyError::InvalidRole`],
    /// [`KeyError::Permission`], [`KeyError::PermissionEscalation`] (the
    /// actor lacks a permission of the role, old or new),
    /// [`KeyError::Store`].
    pub async fn set_role<I, S>(
        &self,
        actor: &Actor,
        name: &str,
        permissions: I,
    ) -> Result<(), KeyError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = permissions.into_iter().map(Into::into).collect();
        let result = self.set_role_inner(actor, name, &names).await;
        self.audit_role(actor, name, &result);
        result
    }

    async fn set_role_inner(
        &self,
        actor: &Actor,
        name: &str,
        names: &[String],
    ) -> Result<(), KeyError> {
        ensure_manager(actor)?;
        if !actor.can_manage_roles() {
            return Err(KeyError::Forbidden {
                actor: actor.id().chars().take(256).collect(),
            });
        }
        crate::permission::check_role_name(name)
            .map_err(|_| KeyError::InvalidRole(name.chars().take(80).collect()))?;
        let catalog = &self.inner.catalog;
        let set = catalog.parse_set(names)?;
        let held = held(catalog, actor)?;
        let roles = self.inner.roles.fresh(&*self.inner.store).await?;
        let old = roles.get(name).cloned().unwrap_or_else(|| catalog.none());
        let missing: Vec<String> = set.union(&old).missing_from(&held);
        if !missing.is_empty() {
            return Err(KeyError::PermissionEscalation { missing });
        }
        let role = RoleDefinition {
            name: name.to_string(),
            permissions: set.names().map(str::to_string).collect(),
        };
        self.inner.store.put_role(&role).await?;
        // The audit event names the action; the role and its permissions
        // (no secret) go to the log beside it.
        tracing::info!(target: "keyward::audit", actor = %actor.id(), role = %name, before = %old, after = %set, "role set");
        // The store resets its subscribers (this instance among them);
        // a store without a feed does not, so reset here as well.
        self.inner.roles.reset();
        Ok(())
    }

    /// The roles in force, by name, with their permissions: the
    /// catalog's, overlaid by those set with [`Keyward::set_role`].
    ///
    /// # Errors
    /// [`StoreError`] when the store's definitions cannot be read.
    pub async fn roles(&self) -> Result<Vec<(String, PermissionSet)>, StoreError> {
        let roles = self.inner.roles.fresh(&*self.inner.store).await?;
        Ok(roles
            .iter()
            .map(|(n, set)| (n.to_string(), set.clone()))
            .collect())
    }

    fn audit_role(&self, actor: &Actor, name: &str, result: &Result<(), KeyError>) {
        let _ = name;
        self.audit_manage(AuditAction::SetRole, actor, None, result);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::key::KeyRecord;
    use crate::limit::Stash;
    use crate::store::memory::MemoryStore;
    use crate::store::{Credit, RefillDue, SweepDue};

    /// A real store whose first read of the roles waits until released:
    /// a load caught in the middle of reading them.
    #[derive(Debug, Default)]
    struct SlowFirstRead {
        inner: MemoryStore,
        gate: tokio::sync::Notify,
        reads: Mutex<usize>,
    }

    #[async_trait]
    impl KeyStore for SlowFirstRead {
        async fn insert(&self, r: &KeyRecord) -> Result<(), StoreError> {
            self.inner.insert(r).await
        }
        async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
            self.inner.get(id).await
        }
        async fn update(&self, r: &KeyRecord) -> Result<u64, StoreError> {
            self.inner.update(r).await
        }
        async fn delete(&self, id: &KeyId) -> Result<bool, StoreError> {
            self.inner.delete(id).await
        }
        async fn list_by_tenant(
            &self,
            t: &str,
            a: Option<&KeyId>,
            n: usize,
        ) -> Result<Vec<KeyRecord>, StoreError> {
            self.inner.list_by_tenant(t, a, n).await
        }
        async fn scan(&self, a: Option<&KeyId>, n: usize) -> Result<Vec<KeyRecord>, StoreError> {
            self.inner.scan(a, n).await
        }
        async fn scan_due(
            &self,
            d: &SweepDue,
            a: Option<&KeyId>,
            n: usize,
        ) -> Result<Vec<KeyRecord>, StoreError> {
            self.inner.scan_due(d, a, n).await
        }
        async fn record_last_used(&self, b: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError> {
            self.inner.record_last_used(b).await
        }
        async fn consume_credit(
            &self,
            id: &KeyId,
            cost: u64,
            r: Option<RefillDue>,
        ) -> Result<Credit, StoreError> {
            self.inner.consume_credit(id, cost, r).await
        }
        async fn adjust_credits(&self, id: &KeyId, d: i64) -> Result<Credit, StoreError> {
            self.inner.adjust_credits(id, d).await
        }
        async fn roles(&self) -> Result<Vec<RoleDefinition>, StoreError> {
            // Read now, answer later: what a slow database round trip does.
            let read = self.inner.roles().await;
            let first = {
                let mut n = self.reads.lock().expect("lock");
                *n += 1;
                *n == 1
            };
            if first {
                self.gate.notified().await;
            }
            read
        }
        async fn put_role(&self, role: &RoleDefinition) -> Result<(), StoreError> {
            self.inner.put_role(role).await
        }
    }

    /// A role book over a catalog of tickets, trusting roles read for
    /// `ttl_us`, and its clock.
    fn book(ttl_us: i64) -> (RoleBook, Arc<crate::clock::ManualClock>) {
        let catalog = Catalog::builder()
            .resource("tickets", ["read", "write"])
            .build()
            .expect("catalog");
        let stash = Arc::new(std::sync::Mutex::new(Stash::for_capacity(16)));
        let cache = Arc::new(Cache::new(16, 16, 1_000_000, stash));
        let clock = Arc::new(crate::clock::ManualClock::default());
        (RoleBook::new(catalog, cache, clock.clone(), ttl_us), clock)
    }

    #[tokio::test]
    async fn a_load_after_a_role_change_never_takes_the_roles_read_before_it() {
        let (book, _) = book(1_000_000);
        let book = Arc::new(book);
        let store = Arc::new(SlowFirstRead::default());
        let wide = RoleDefinition {
            name: "support".into(),
            permissions: vec!["tickets:write".into()],
        };
        store.inner.put_role(&wide).await.expect("put");
        // Load 1 starts reading the roles (the wide definition) and stalls.
        let (b1, s1) = (book.clone(), store.clone());
        let first = tokio::spawn(async move { b1.fresh(&*s1).await });
        tokio::task::yield_now().await;
        // The role narrows, and the change is heard.
        let narrow = RoleDefinition {
            name: "support".into(),
            permissions: vec!["tickets:read".into()],
        };
        store.inner.put_role(&narrow).await.expect("put");
        book.reset();
        // Load 2 must see the narrow role, not what load 1 is reading.
        let second = book.fresh(&*store).await.expect("roles");
        let names = |m: &RoleMap| m["support"].names().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(names(&second), ["tickets:read"]);
        // Load 1 finishes with its stale read, which replaces nothing.
        store.gate.notify_one();
        let _ = first.await.expect("join");
        assert_eq!(names(&book.current()), ["tickets:read"]);
        assert_eq!(
            names(&book.fresh(&*store).await.expect("roles")),
            ["tickets:read"]
        );
    }

    #[tokio::test]
    async fn roles_changed_unheard_are_seen_within_the_cache_time_limit() {
        let (book, clock) = book(10_000_000);
        let store = MemoryStore::new();
        let role = |p: &str| RoleDefinition {
            name: "support".into(),
            permissions: vec![p.into()],
        };
        store.put_role(&role("tickets:write")).await.expect("put");
        let names = |m: &RoleMap| m["support"].names().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            names(&book.fresh(&store).await.expect("roles")),
            ["tickets:read", "tickets:write"]
        );
        // Another process narrows the role; nobody tells this one.
        store.put_role(&role("tickets:read")).await.expect("put");
        clock.advance(chrono::Duration::seconds(9));
        assert_eq!(
            names(&book.fresh(&store).await.expect("roles")),
            ["tickets:read", "tickets:write"]
        );
        clock.advance(chrono::Duration::seconds(1));
        assert_eq!(
            names(&book.fresh(&store).await.expect("roles")),
            ["tickets:read"]
        );
    }
}
