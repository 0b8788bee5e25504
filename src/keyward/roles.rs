//! Roles: the catalog's declarations, overlaid by definitions kept in the
//! store ([`Keyward::set_role`]), resolved whenever a key is loaded. A
//! role change resets every cache that hears of it (this instance's at
//! once, other instances' through the store's change feed), and the next
//! load reads the roles again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Keyward;
use crate::audit::AuditAction;
use crate::authority::{ensure_manager, held};
use crate::cache::Cache;
use crate::error::{KeyError, StoreError};
use crate::key::{Actor, KeyRecord};
use crate::permission::{Catalog, PermissionSet};
use crate::store::{ChangeListener, KeyStore, RoleDefinition};
use crate::token::KeyId;

/// Roles by name, with their permissions.
pub(crate) type RoleMap = BTreeMap<Box<str>, PermissionSet>;

/// The roles in force, and the cache they feed: the store's change
/// listener, so that a reset also marks the roles to be read again.
pub(crate) struct RoleBook {
    catalog: Catalog,
    roles: ArcSwap<RoleMap>,
    /// The store's definitions may have changed since they were read.
    stale: AtomicBool,
    cache: Arc<Cache>,
}

impl RoleBook {
    pub(crate) fn new(catalog: Catalog, cache: Arc<Cache>) -> Self {
        let declared = declared(&catalog);
        Self {
            catalog,
            roles: ArcSwap::from_pointee(declared),
            stale: AtomicBool::new(true),
            cache,
        }
    }

    /// The roles as last read.
    pub(crate) fn current(&self) -> Arc<RoleMap> {
        self.roles.load_full()
    }

    /// The roles, read from the store first if they may have changed.
    pub(crate) async fn fresh(&self, store: &dyn KeyStore) -> Result<Arc<RoleMap>, StoreError> {
        if self.stale.swap(false, Ordering::AcqRel) {
            match store.roles().await {
                Ok(defs) => {
                    let mut roles = declared(&self.catalog);
                    for d in defs {
                        let (set, unknown) = self
                            .catalog
                            .parse_stored(d.permissions.iter().map(String::as_str));
                        if !unknown.is_empty() {
                            tracing::warn!(target: "keyward", role = %d.name, ?unknown, "a stored role names permissions no longer in the catalog; nobody holds them");
                        }
                        roles.insert(d.name.into(), set);
                    }
                    self.roles.store(Arc::new(roles));
                }
                Err(e) => {
                    self.stale.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
        Ok(self.current())
    }
}

impl ChangeListener for RoleBook {
    fn changed(&self, id: &KeyId) {
        self.cache.changed(id);
    }

    fn reset(&self) {
        self.stale.store(true, Ordering::Release);
        self.cache.reset();
    }
}

fn declared(catalog: &Catalog) -> RoleMap {
    catalog.roles().map(|(n, set)| (n.into(), set)).collect()
}

/// What `record`'s roles give, from `roles`; names not defined give
/// nothing (and are returned).
pub(crate) fn granted<'r>(
    catalog: &Catalog,
    roles: &RoleMap,
    record: &'r KeyRecord,
) -> (PermissionSet, Vec<&'r str>) {
    let mut set = catalog.none();
    let mut unknown = Vec::new();
    for r in &record.roles {
        match roles.get(r.as_str()) {
            Some(p) => set = set.union(p),
            None => unknown.push(r.as_str()),
        }
    }
    (set, unknown)
}

impl Keyward {
    /// Defines the role `name`, or redefines it (a catalog role
    /// included), for every key of every tenant that holds it: cached
    /// keys on this instance at once, and on other instances as soon as
    /// the store's change feed tells them (PostgreSQL: within
    /// milliseconds; stores without a feed: the cache time limit).
    ///
    /// Roles are global: expose this to operators, not to tenants'
    /// managers. The actor must manage keys and hold every permission of
    /// the role as it was and as it will be, since every key holding it
    /// gains or loses them.
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
    /// let ops = Actor::new("ops", "acme").permissions(catalog.all()).may_manage_keys(true);
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
    /// [`KeyError::Forbidden`], [`KeyError::InvalidRole`],
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
