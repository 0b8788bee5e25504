//! The permission lattice: resources × actions, closed under implication.
//!
//! A [`Catalog`] declares what exists: each resource and the actions it
//! supports, and which actions imply which (`write` implies `read` unless
//! switched off). A [`PermissionSet`] is a set of `resource:action` pairs
//! that is always closed under implication, stored as a fixed-size bit set,
//! so membership, subset, union and intersection are a few word operations.
//!
//! Written forms, parsed by [`Catalog::parse`] and [`Catalog::parse_set`]:
//!
//! | form | meaning |
//! |---|---|
//! | `contacts:write` | canonical `resource:action` |
//! | `write:contacts` | the `action:resource` form, accepted when unambiguous |
//! | `contacts:*` | every action of `contacts` |
//! | `*` | everything in the catalog |
//!
//! The canonical string form of a set ([`PermissionSet`]'s `Display` and
//! serde form) lists every permission explicitly, never `*`: a stored key
//! must not gain actions that a later catalog adds.

use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;

mod builder;
mod expr;

pub(crate) use builder::check_role_name;
pub use builder::CatalogBuilder;
pub use expr::{ExprError, PermissionExpr, MAX_ALTERNATIVES};

/// The most permissions (resource–action pairs) one catalog may declare.
pub const MAX_PERMISSIONS: usize = 256;
const WORDS: usize = MAX_PERMISSIONS / 64;
type Bits = [u64; WORDS];

/// A catalog that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A resource or action name is empty, too long or has characters other
    /// than ASCII letters, digits, `_`, `-` and `.`.
    #[error("invalid name {0:?}: use 1 to 64 ASCII letters, digits, '_', '-' or '.'")]
    InvalidName(String),
    /// The same resource was declared twice.
    #[error("resource `{0}` is declared twice")]
    DuplicateResource(String),
    /// A resource lists the same action twice, or none at all.
    #[error("resource `{resource}` must list each action once and at least one action")]
    BadActions {
        /// The resource.
        resource: String,
    },
    /// Implications form a cycle; the path shows it, first and last equal.
    #[error("action implications form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// An implication names an action no resource declares (a typo would
    /// otherwise drop the implication silently).
    #[error("implication names action `{0}`, which no resource declares")]
    UnknownImpliedAction(String),
    /// A permission would read two ways: resource `a` has action `b` and
    /// resource `b` has action `a`, so `a:b` could also be written for
    /// `b:a`. Rename one of them.
    #[error("permissions `{0}` and `{1}` would read as each other (resource and action names swapped); rename a resource or an action")]
    AmbiguousNames(String, String),
    /// More than [`MAX_PERMISSIONS`] resource–action pairs.
    #[error("the catalog declares {0} permissions; at most 256 are supported")]
    TooManyPermissions(usize),
    /// A role name is empty, too long, or uses other characters than
    /// `a-z 0-9 _ - .`.
    #[error("invalid role name {0:?}: use 1 to 64 of a-z, 0-9, '_', '-' or '.'")]
    InvalidRoleName(String),
    /// The same role was declared twice.
    #[error("role `{0}` is declared twice")]
    DuplicateRole(String),
    /// A role names a permission the catalog does not have.
    #[error("role `{role}`: {error}")]
    Role {
        /// The role.
        role: String,
        /// What is wrong with its permissions.
        error: PermissionError,
    },
}

/// A permission string that does not name anything in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PermissionError {
    /// Not of the form `resource:action`, `action:resource`, `resource:*` or `*`.
    #[error("invalid permission {0:?}: write it as `resource:action`, e.g. `contacts:read`")]
    Syntax(String),
    /// No such resource.
    #[error("unknown resource `{resource}` in permission {input:?}; known resources: {known}")]
    UnknownResource {
        /// The permission as written.
        input: String,
        /// The resource name that is not in the catalog.
        resource: String,
        /// The catalog's resources, comma-separated.
        known: String,
    },
    /// The resource exists but does not support the action (e.g. `write` on
    /// a read-only resource).
    #[error("resource `{resource}` has no action `{action}` (it allows: {allowed})")]
    UnknownAction {
        /// The resource.
        resource: String,
        /// The action it does not support.
        action: String,
        /// The actions it supports, comma-separated.
        allowed: String,
    },
    /// Both `resource:action` and `action:resource` readings are valid and
    /// mean different things.
    #[error("ambiguous permission {0:?}: it reads both as resource:action and action:resource; use the canonical resource:action form")]
    Ambiguous(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Resource {
    name: Box<str>,
    actions: Vec<Box<str>>,
    first_bit: u16,
}

#[derive(Debug, PartialEq, Eq)]
struct CatalogInner {
    resources: Vec<Resource>,
    /// Canonical `resource:action` name of each bit.
    names: Vec<Box<str>>,
    /// What each bit implies, itself included (reflexive, transitive).
    closure: Vec<Bits>,
    all: Bits,
    read_only: Bits,
    /// The roles declared, in declaration order, with their closed bits.
    roles: Vec<(Box<str>, Bits)>,
}

/// The resources and actions an application's keys can be granted. Cheap to
/// clone (shared).
///
/// ```
/// use keyward::Catalog;
///
/// let catalog = Catalog::builder()
///     .resource("contacts", ["read", "write"])
///     .resource("leads", ["read", "create", "update", "delete"])
///     .resource("users", ["read"]) // read-only: `users:write` is an error
///     .implies("create", "read")
///     .implies("update", "read")
///     .implies("delete", "read")
///     .build()?;
///
/// let set = catalog.parse_set(["contacts:write", "create:leads"])?;
/// assert_eq!(set.to_string(), "contacts:read contacts:write leads:read leads:create");
/// assert!(catalog.parse("users:write").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Catalog(Arc<CatalogInner>);

impl PartialEq for Catalog {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for Catalog {}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .resources
                    .iter()
                    .map(|r| (&r.name, r.actions.as_slice())),
            )
            .finish()
    }
}

fn set_bit(bits: &mut Bits, i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn has_bit(bits: &Bits, i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

impl Catalog {
    /// A catalog with no resources (what `builder().build()` gives).
    pub(crate) fn empty() -> Catalog {
        Catalog(Arc::new(CatalogInner {
            resources: Vec::new(),
            names: Vec::new(),
            closure: Vec::new(),
            all: [0; WORDS],
            read_only: [0; WORDS],
            roles: Vec::new(),
        }))
    }

    /// The permissions of the role `name` as declared in the catalog
    /// ([`CatalogBuilder::role`]); `None` if no such role is declared.
    pub fn role(&self, name: &str) -> Option<PermissionSet> {
        self.0
            .roles
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, bits)| PermissionSet {
                bits: *bits,
                catalog: self.clone(),
            })
    }

    /// The roles declared, in declaration order, with their permissions.
    pub fn roles(&self) -> impl Iterator<Item = (&str, PermissionSet)> {
        self.0.roles.iter().map(|(n, bits)| {
            (
                &**n,
                PermissionSet {
                    bits: *bits,
                    catalog: self.clone(),
                },
            )
        })
    }

    /// Starts declaring a catalog. `write` implies `read` unless
    /// [`CatalogBuilder::without_write_implies_read`] is called.
    pub fn builder() -> CatalogBuilder {
        CatalogBuilder::new()
    }

    /// Parses one permission (`resource:action` or `action:resource`) to a
    /// handle for fast checks with [`PermissionSet::allows`].
    ///
    /// # Errors
    /// [`PermissionError`] naming the unknown resource or action; `*` forms
    /// are sets, not single permissions, and give [`PermissionError::Syntax`].
    pub fn parse(&self, input: &str) -> Result<Permission, PermissionError> {
        match self.parse_item(input)? {
            Item::One(bit) => Ok(Permission(bit)),
            Item::Many(_) => Err(PermissionError::Syntax(input.to_string())),
        }
    }

    /// Parses permissions in any written form and closes them under
    /// implication.
    ///
    /// # Errors
    /// The first [`PermissionError`] met.
    pub fn parse_set<I, S>(&self, items: I) -> Result<PermissionSet, PermissionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut bits = [0u64; WORDS];
        for item in items {
            match self.parse_item(item.as_ref())? {
                Item::One(bit) => set_bit(&mut bits, bit as usize),
                Item::Many(b) => or_into(&mut bits, &b),
            }
        }
        Ok(self.closed(bits))
    }

    /// Parses a space- or comma-separated list, such as the canonical form
    /// written by [`PermissionSet`]'s `Display`.
    ///
    /// # Errors
    /// The first [`PermissionError`] met.
    pub fn parse_str(&self, list: &str) -> Result<PermissionSet, PermissionError> {
        self.parse_set(
            list.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty()),
        )
    }

    /// Reads stored canonical names, skipping (and returning) any the
    /// catalog does not know: after a catalog loses a permission, keys
    /// lose it as well.
    pub(crate) fn parse_stored<'a>(
        &self,
        items: impl IntoIterator<Item = &'a str>,
    ) -> (PermissionSet, Vec<&'a str>) {
        // Only exact canonical names: a stored `*` or `contacts:*` must
        // not grow with the catalog, and no other reading may apply.
        let mut bits = [0u64; WORDS];
        let mut unknown = Vec::new();
        for item in items {
            match self.0.names.iter().position(|n| &**n == item) {
                Some(bit) => set_bit(&mut bits, bit),
                None => unknown.push(item),
            }
        }
        (self.closed(bits), unknown)
    }

    /// The empty set.
    pub fn none(&self) -> PermissionSet {
        PermissionSet {
            bits: [0; WORDS],
            catalog: self.clone(),
        }
    }

    /// Every permission in the catalog: a "read-write" key.
    pub fn all(&self) -> PermissionSet {
        PermissionSet {
            bits: self.0.all,
            catalog: self.clone(),
        }
    }

    /// The `read` action of every resource that has one: a "read-only"
    /// key.
    pub fn read_only(&self) -> PermissionSet {
        self.closed(self.0.read_only)
    }

    /// The resources and their actions, in declaration order.
    pub fn resources(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = &str>)> {
        self.0
            .resources
            .iter()
            .map(|r| (&*r.name, r.actions.iter().map(|a| &**a)))
    }

    /// The canonical name of a permission, e.g. `contacts:read`.
    pub fn name(&self, permission: Permission) -> Option<&str> {
        self.0.names.get(permission.0 as usize).map(|s| &**s)
    }

    /// Reads a [`PermissionSet`] from any serde format, as written by its
    /// `Serialize` (a sequence of permission strings).
    ///
    /// # Errors
    /// The deserializer's error, carrying the [`PermissionError`] message
    /// for unknown permissions.
    pub fn deserialize_set<'de, D: Deserializer<'de>>(
        &self,
        deserializer: D,
    ) -> Result<PermissionSet, D::Error> {
        self.seed().deserialize(deserializer)
    }

    fn seed(&self) -> SetSeed<'_> {
        SetSeed(self)
    }

    fn closed(&self, bits: Bits) -> PermissionSet {
        let mut out = [0u64; WORDS];
        for (bit, implied) in self.0.closure.iter().enumerate() {
            if has_bit(&bits, bit) {
                or_into(&mut out, implied);
            }
        }
        PermissionSet {
            bits: out,
            catalog: self.clone(),
        }
    }

    fn parse_item(&self, input: &str) -> Result<Item, PermissionError> {
        let s = input.trim();
        if s == "*" {
            return Ok(Item::Many(self.0.all));
        }
        let syntax = || PermissionError::Syntax(input.chars().take(200).collect());
        let (left, right) = s.split_once(':').ok_or_else(syntax)?;
        if left.is_empty() || right.is_empty() || right.contains(':') {
            return Err(syntax());
        }
        let find = |name: &str| self.0.resources.iter().find(|r| &*r.name == name);
        if right == "*" {
            let r = find(left).ok_or_else(|| self.unknown_resource(s, left))?;
            let mut bits = [0u64; WORDS];
            for i in 0..r.actions.len() {
                set_bit(&mut bits, r.first_bit as usize + i);
            }
            return Ok(Item::Many(bits));
        }
        let bit_of = |r: &Resource, action: &str| {
            r.actions
                .iter()
                .position(|a| &**a == action)
                .map(|i| r.first_bit + i as u16)
        };
        let canonical = find(left).map(|r| (r, bit_of(r, right)));
        let reversed = find(right).and_then(|r| bit_of(r, left));
        match (canonical, reversed) {
            (Some((_, Some(a))), Some(b)) if a != b => Err(PermissionError::Ambiguous(s.into())),
            (Some((_, Some(a))), _) => Ok(Item::One(a)),
            (_, Some(b)) => Ok(Item::One(b)),
            (Some((r, None)), None) => Err(PermissionError::UnknownAction {
                resource: r.name.to_string(),
                action: right.chars().take(64).collect(),
                allowed: r.actions.join(", "),
            }),
            (None, None) => Err(self.unknown_resource(s, left)),
        }
    }

    fn unknown_resource(&self, input: &str, resource: &str) -> PermissionError {
        PermissionError::UnknownResource {
            input: input.chars().take(200).collect(),
            resource: resource.chars().take(64).collect(),
            known: self
                .0
                .resources
                .iter()
                .map(|r| &*r.name)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

enum Item {
    One(u16),
    Many(Bits),
}

fn or_into(into: &mut Bits, from: &Bits) {
    for (a, b) in into.iter_mut().zip(from) {
        *a |= b;
    }
}

/// One permission of a catalog, as a bit index: for checks on a hot path
/// with [`PermissionSet::allows`]. Made by [`Catalog::parse`]; only
/// meaningful with sets of the same catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission(u16);

/// A set of permissions of one [`Catalog`], always closed under implication.
///
/// Set operations are bit operations. Operations between sets of different
/// catalogs compare bits only and are meaningless; keyward's own checks
/// refuse such sets.
#[derive(Clone, PartialEq, Eq)]
pub struct PermissionSet {
    bits: Bits,
    catalog: Catalog,
}

impl PermissionSet {
    /// Whether the set holds `permission`. A single bit test.
    #[inline]
    pub fn allows(&self, permission: Permission) -> bool {
        let i = permission.0 as usize;
        i < MAX_PERMISSIONS && has_bit(&self.bits, i)
    }

    /// Whether every permission of `self` is in `other`.
    pub fn is_subset_of(&self, other: &PermissionSet) -> bool {
        self.bits.iter().zip(&other.bits).all(|(a, b)| a & !b == 0)
    }

    /// Permissions in either set (the lattice join).
    #[must_use]
    pub fn union(&self, other: &PermissionSet) -> PermissionSet {
        let mut bits = self.bits;
        or_into(&mut bits, &other.bits);
        self.with_bits(bits)
    }

    /// Permissions in both sets (the lattice meet).
    #[must_use]
    pub fn intersection(&self, other: &PermissionSet) -> PermissionSet {
        let mut bits = self.bits;
        for (a, b) in bits.iter_mut().zip(&other.bits) {
            *a &= b;
        }
        self.with_bits(bits)
    }

    /// The canonical names of permissions in `self` but not in `other`, in
    /// catalog order: what a holder of `other` lacks to grant `self`.
    pub fn missing_from(&self, other: &PermissionSet) -> Vec<String> {
        self.iter_bits()
            .filter(|&bit| !has_bit(&other.bits, bit))
            .map(|bit| self.catalog.0.names[bit].to_string())
            .collect()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// Number of permissions in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The canonical names, in catalog order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.iter_bits().map(|bit| &*self.catalog.0.names[bit])
    }

    /// The catalog this set belongs to.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Checks one permission given as a string.
    ///
    /// # Errors
    /// [`PermissionError`] when the string names nothing in the catalog.
    pub fn allows_str(&self, permission: &str) -> Result<bool, PermissionError> {
        Ok(self.allows(self.catalog.parse(permission)?))
    }

    fn with_bits(&self, bits: Bits) -> PermissionSet {
        PermissionSet {
            bits,
            catalog: self.catalog.clone(),
        }
    }

    fn iter_bits(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.catalog.0.names.len()).filter(|&bit| has_bit(&self.bits, bit))
    }
}

impl fmt::Display for PermissionSet {
    /// The canonical form: names in catalog order, space-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

impl Serialize for PermissionSet {
    /// A sequence of canonical names, in catalog order.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for name in self.names() {
            seq.serialize_element(name)?;
        }
        seq.end()
    }
}

struct SetSeed<'a>(&'a Catalog);

impl<'de> DeserializeSeed<'de> for SetSeed<'_> {
    type Value = PermissionSet;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PermissionSet, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SetSeed<'_> {
    type Value = PermissionSet;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of permission strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PermissionSet, A::Error> {
        let mut names: Vec<String> = Vec::new();
        while let Some(name) = seq.next_element::<String>()? {
            names.push(name);
        }
        self.0.parse_set(&names).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
