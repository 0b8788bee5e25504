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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;

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

/// Declares a [`Catalog`]. Made by [`Catalog::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CatalogBuilder {
    resources: Vec<(String, Vec<String>)>,
    implications: Vec<(String, String)>,
    write_implies_read: bool,
}

impl CatalogBuilder {
    /// Declares a resource and the actions it supports, in display order.
    pub fn resource<I, S>(mut self, name: impl Into<String>, actions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.resources
            .push((name.into(), actions.into_iter().map(Into::into).collect()));
        self
    }

    /// Declares that `action` implies `implied` on every resource that has
    /// both. Implication is transitive.
    pub fn implies(mut self, action: impl Into<String>, implied: impl Into<String>) -> Self {
        self.implications.push((action.into(), implied.into()));
        self
    }

    /// Switches off the default rule that `write` implies `read`.
    pub fn without_write_implies_read(mut self) -> Self {
        self.write_implies_read = false;
        self
    }

    /// Checks the declarations and builds the catalog.
    ///
    /// # Errors
    /// [`CatalogError`] for invalid or duplicate names, a resource without
    /// actions, an implication cycle, or more than 256 permissions.
    pub fn build(self) -> Result<Catalog, CatalogError> {
        let mut edges: Vec<(String, String)> = Vec::new();
        if self.write_implies_read {
            edges.push(("write".into(), "read".into()));
        }
        for (a, b) in self.implications {
            check_name(&a)?;
            check_name(&b)?;
            edges.push((a, b));
        }
        let graph = graph(&edges);
        find_cycle(&graph, &edges)?;
        let declared: BTreeSet<&str> = self
            .resources
            .iter()
            .flat_map(|(_, actions)| actions.iter().map(String::as_str))
            .collect();
        if let Some((a, b)) = edges
            .iter()
            .skip(usize::from(self.write_implies_read))
            .find(|(a, b)| !declared.contains(a.as_str()) || !declared.contains(b.as_str()))
        {
            let unknown = if declared.contains(a.as_str()) { b } else { a };
            return Err(CatalogError::UnknownImpliedAction(unknown.clone()));
        }

        let total: usize = self.resources.iter().map(|(_, a)| a.len()).sum();
        if total > MAX_PERMISSIONS {
            return Err(CatalogError::TooManyPermissions(total));
        }
        let mut resources = Vec::with_capacity(self.resources.len());
        let mut names = Vec::with_capacity(total);
        let mut seen = BTreeSet::new();
        for (name, actions) in self.resources {
            check_name(&name)?;
            if !seen.insert(name.clone()) {
                return Err(CatalogError::DuplicateResource(name));
            }
            let distinct: BTreeSet<&String> = actions.iter().collect();
            if actions.is_empty() || distinct.len() != actions.len() {
                return Err(CatalogError::BadActions { resource: name });
            }
            for a in &actions {
                check_name(a)?;
            }
            let first_bit = names.len() as u16;
            names.extend(
                actions
                    .iter()
                    .map(|a| format!("{name}:{a}").into_boxed_str()),
            );
            resources.push(Resource {
                name: name.into(),
                actions: actions.into_iter().map(Into::into).collect(),
                first_bit,
            });
        }

        // Every permission must parse back from its canonical name, which
        // `action:resource` would make ambiguous for swapped names.
        for r in &resources {
            for a in r.actions.iter().filter(|a| **a != r.name) {
                let swapped = resources
                    .iter()
                    .find(|o| o.name == *a)
                    .is_some_and(|o| o.actions.contains(&r.name));
                if swapped {
                    return Err(CatalogError::AmbiguousNames(
                        format!("{}:{a}", r.name),
                        format!("{a}:{}", r.name),
                    ));
                }
            }
        }

        // Closure per bit: every action reachable in the graph, kept when
        // the bit's resource declares it.
        let mut closure = vec![[0u64; WORDS]; names.len()];
        let mut all = [0u64; WORDS];
        let mut read_only = [0u64; WORDS];
        for r in &resources {
            for (i, action) in r.actions.iter().enumerate() {
                let bit = r.first_bit as usize + i;
                set_bit(&mut all, bit);
                if &**action == "read" {
                    set_bit(&mut read_only, bit);
                }
                // Through every action, declared here or not, so admin ->
                // delete -> read holds on a resource without `delete`;
                // restricted to this resource below.
                let reach = reachable(&graph, action);
                for (j, a) in r.actions.iter().enumerate() {
                    if reach.contains(&**a) {
                        set_bit(&mut closure[bit], r.first_bit as usize + j);
                    }
                }
            }
        }
        Ok(Catalog(Arc::new(CatalogInner {
            resources,
            names,
            closure,
            all,
            read_only,
        })))
    }
}

fn check_name(name: &str) -> Result<(), CatalogError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CatalogError::InvalidName(name.chars().take(80).collect()))
    }
}

/// The action graph: each action and the actions it implies directly,
/// without duplicate edges.
type Graph<'a> = BTreeMap<&'a str, BTreeSet<&'a str>>;

fn graph(edges: &[(String, String)]) -> Graph<'_> {
    let mut graph: Graph<'_> = BTreeMap::new();
    for (from, to) in edges {
        graph.entry(from).or_default().insert(to);
    }
    graph
}

/// Depth-first search for a cycle in the action graph, with an explicit
/// stack: a chain of any length costs heap, never the thread's stack.
/// Linear in nodes plus edges.
fn find_cycle(graph: &Graph<'_>, edges: &[(String, String)]) -> Result<(), CatalogError> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    // From each action in the order declared, so a cycle is named from
    // where the host wrote it.
    for (start, _) in edges {
        let start = start.as_str();
        if done.contains(start) {
            continue;
        }
        // The current path, each node with its not yet followed edges.
        let mut path: Vec<&str> = vec![start];
        let mut on_path: BTreeSet<&str> = BTreeSet::from([start]);
        let mut pending: Vec<std::collections::btree_set::Iter<'_, &str>> =
            vec![graph.get(start).map(BTreeSet::iter).unwrap_or_default()];
        while let Some(next) = pending.last_mut() {
            match next.next().copied() {
                Some(to) if on_path.contains(to) => {
                    let pos = path.iter().position(|n| *n == to).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[pos..].iter().map(|s| s.to_string()).collect();
                    cycle.push(to.to_string());
                    return Err(CatalogError::Cycle(cycle));
                }
                Some(to) if done.contains(to) => {}
                Some(to) => {
                    path.push(to);
                    on_path.insert(to);
                    pending.push(graph.get(to).map(BTreeSet::iter).unwrap_or_default());
                }
                None => {
                    pending.pop();
                    if let Some(node) = path.pop() {
                        on_path.remove(node);
                        done.insert(node);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Every action `action` implies, itself included, through any number of
/// edges (breadth-first, each action once).
fn reachable<'a>(graph: &Graph<'a>, action: &'a str) -> BTreeSet<&'a str> {
    let mut reach = BTreeSet::from([action]);
    let mut queue = vec![action];
    while let Some(node) = queue.pop() {
        for &to in graph.get(node).into_iter().flatten() {
            if reach.insert(to) {
                queue.push(to);
            }
        }
    }
    reach
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
        }))
    }

    /// Starts declaring a catalog. `write` implies `read` unless
    /// [`CatalogBuilder::without_write_implies_read`] is called.
    pub fn builder() -> CatalogBuilder {
        CatalogBuilder {
            resources: Vec::new(),
            implications: Vec::new(),
            write_implies_read: true,
        }
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

    /// Every permission in the catalog (seed 001's "read-write" scope).
    pub fn all(&self) -> PermissionSet {
        PermissionSet {
            bits: self.0.all,
            catalog: self.clone(),
        }
    }

    /// The `read` action of every resource that has one (seed 001's
    /// "read-only" scope).
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
mod tests {
    use super::*;

    fn crm() -> Catalog {
        Catalog::builder()
            .resource("accounts", ["read", "write"])
            .resource("contacts", ["read", "write"])
            .resource("users", ["read"])
            .resource("leads", ["read", "create", "update", "delete"])
            .implies("create", "read")
            .implies("update", "read")
            .implies("delete", "read")
            .build()
            .expect("valid catalog")
    }

    #[test]
    fn write_implies_read() {
        let c = crm();
        let s = c.parse_set(["contacts:write"]).expect("known");
        assert!(s.allows(c.parse("contacts:read").expect("known")));
        assert!(!s.allows(c.parse("accounts:read").expect("known")));
        assert_eq!(s.to_string(), "contacts:read contacts:write");
    }

    #[test]
    fn read_only_resource_cannot_be_written() {
        let err = crm().parse("users:write").expect_err("read-only");
        assert_eq!(
            err.to_string(),
            "resource `users` has no action `write` (it allows: read)"
        );
    }

    #[test]
    fn both_written_forms_and_wildcards() {
        let c = crm();
        assert_eq!(c.parse("read:contacts"), c.parse("contacts:read"));
        assert_eq!(
            c.parse_set(["leads:*"]).expect("known").to_string(),
            "leads:read leads:create leads:update leads:delete"
        );
        assert_eq!(c.parse_set(["*"]).expect("known"), c.all());
        assert!(c.parse("leads:*").is_err(), "a wildcard is a set");
        assert_eq!(
            c.read_only().to_string(),
            "accounts:read contacts:read users:read leads:read"
        );
    }

    #[test]
    fn unknown_names_are_named() {
        let c = crm();
        let e = c.parse("invoices:read").expect_err("unknown").to_string();
        assert!(e.contains("`invoices`") && e.contains("contacts"), "{e}");
        for bad in [
            "",
            ":",
            "contacts",
            "contacts:",
            ":read",
            "a:b:c",
            "contacts: read:x",
        ] {
            assert!(c.parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Found by the `permission_parse` fuzz target: with resources `read:
    /// [write]` and `write: [read]`, the catalog refused its own canonical
    /// names as ambiguous, so `Display` and serde did not round-trip. Such
    /// a catalog is now refused when it is built.
    #[test]
    fn swapped_names_are_refused_at_build() {
        let c = Catalog::builder()
            .resource("read", ["write"])
            .resource("write", ["read"])
            .without_write_implies_read()
            .build();
        assert!(matches!(c, Err(CatalogError::AmbiguousNames(_, _))));
        // The same name as resource and action of itself is no ambiguity.
        let c = Catalog::builder()
            .resource("admin", ["admin", "read"])
            .build()
            .expect("valid");
        assert!(c.parse("admin:admin").is_ok());
        // Every canonical name parses back, for any catalog that builds.
        for set in [c.all(), c.read_only()] {
            assert_eq!(c.parse_str(&set.to_string()).expect("round trip"), set);
        }
    }

    #[test]
    fn catalog_errors() {
        let cycle = Catalog::builder()
            .resource("a", ["read", "write"])
            .implies("read", "write")
            .build();
        assert_eq!(
            cycle.expect_err("cycle").to_string(),
            "action implications form a cycle: write -> read -> write"
        );
        assert!(matches!(
            Catalog::builder().resource("a b", ["read"]).build(),
            Err(CatalogError::InvalidName(_))
        ));
        assert!(matches!(
            Catalog::builder()
                .resource("a", ["read"])
                .resource("a", ["read"])
                .build(),
            Err(CatalogError::DuplicateResource(_))
        ));
        assert!(Catalog::builder()
            .resource("a", Vec::<String>::new())
            .build()
            .is_err());
        let too_many: Vec<String> = (0..257).map(|i| format!("a{i}")).collect();
        assert!(matches!(
            Catalog::builder().resource("r", too_many).build(),
            Err(CatalogError::TooManyPermissions(257))
        ));
    }

    #[test]
    fn implication_is_transitive_through_undeclared_actions() {
        let c = Catalog::builder()
            .resource("docs", ["read", "delete", "admin"])
            .resource("files", ["read", "admin"])
            .implies("admin", "delete")
            .implies("delete", "read")
            .build()
            .expect("valid");
        assert_eq!(
            c.parse_set(["files:admin"]).expect("known").to_string(),
            "files:read files:admin",
            "admin -> delete -> read holds where delete is not declared"
        );
        assert!(matches!(
            Catalog::builder()
                .resource("a", ["read"])
                .implies("raed", "read")
                .build(),
            Err(CatalogError::UnknownImpliedAction(x)) if x == "raed"
        ));
    }

    #[test]
    fn stored_names_are_read_exactly() {
        let c = crm();
        let (set, unknown) = c.parse_stored(["*", "contacts:*", "read:users", "leads:read"]);
        assert_eq!(set.to_string(), "leads:read");
        assert_eq!(unknown, ["*", "contacts:*", "read:users"]);
    }

    #[test]
    fn implication_is_transitive() {
        let c = Catalog::builder()
            .resource("docs", ["read", "write", "admin"])
            .implies("admin", "write")
            .build()
            .expect("valid");
        assert_eq!(
            c.parse_set(["docs:admin"]).expect("known").to_string(),
            "docs:read docs:write docs:admin"
        );
    }

    #[test]
    fn serde_round_trip() {
        let c = crm();
        let s = c
            .parse_set(["contacts:write", "users:read"])
            .expect("known");
        let json = serde_json::to_string(&s).expect("serializes");
        assert_eq!(json, r#"["contacts:read","contacts:write","users:read"]"#);
        let mut de = serde_json::Deserializer::from_str(&json);
        assert_eq!(c.deserialize_set(&mut de).expect("parses"), s);
        let mut bad = serde_json::Deserializer::from_str(r#"["users:write"]"#);
        assert!(c.deserialize_set(&mut bad).is_err());
    }

    /// Finding 8 of step 6: the cycle check recursed once per chained
    /// implication, so 10,000 of them overflowed a 2 MiB thread stack and
    /// aborted the process. Run on such a thread, the build must answer.
    #[test]
    fn long_implication_chains_do_not_overflow_the_stack() {
        let run = |f: fn() -> Result<Catalog, CatalogError>| {
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(f)
                .expect("thread")
                .join()
                .expect("no stack overflow")
        };
        // Undeclared actions: refused, whatever the order of checks.
        let undeclared = run(|| {
            (0..10_000)
                .fold(Catalog::builder().resource("docs", ["a0"]), |b, i| {
                    b.implies(format!("a{i}"), format!("a{}", i + 1))
                })
                .build()
        });
        assert!(undeclared.is_err());
        // A cycle closing a 10,000-edge chain is found and named.
        let cycle = run(|| {
            (0..10_000)
                .fold(Catalog::builder().resource("docs", ["a0"]), |b, i| {
                    b.implies(format!("a{i}"), format!("a{}", (i + 1) % 10_000))
                })
                .build()
        });
        match cycle {
            Err(CatalogError::Cycle(path)) => {
                assert_eq!(path.len(), 10_001);
                assert_eq!(path.first(), path.last());
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
        // A declared chain of 256 actions builds, transitively closed.
        let chain = run(|| {
            let actions: Vec<String> = (0..256).map(|i| format!("a{i}")).collect();
            (0..255)
                .fold(Catalog::builder().resource("docs", actions), |b, i| {
                    b.implies(format!("a{i}"), format!("a{}", i + 1))
                })
                .build()
        })
        .expect("valid");
        assert_eq!(chain.parse_set(["docs:a0"]).expect("known").len(), 256);
        assert_eq!(chain.parse_set(["docs:a255"]).expect("known").len(), 1);
    }
}
