//! Roles as keys hold them: a map from role name to the permissions it
//! bundles, and what a key's roles grant. The roles in force are kept by
//! [`Keyward`](crate::Keyward) (`keyward/roles.rs`); the rule of what a
//! role grants is here, for verification and for
//! [`authority`](crate::authority) alike.

use std::collections::BTreeMap;

use crate::key::KeyRecord;
use crate::permission::{Catalog, PermissionSet};

/// Roles by name, with their permissions.
pub(crate) type RoleMap = BTreeMap<Box<str>, PermissionSet>;

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
