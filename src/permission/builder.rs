//! [`CatalogBuilder`]: declaring a catalog, and checking it once, at
//! start-up: names, duplicates, implication cycles, ambiguity, size.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{set_bit, Bits, Catalog, CatalogError, CatalogInner, Resource, MAX_PERMISSIONS, WORDS};

/// Declares a [`Catalog`]. Made by [`Catalog::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CatalogBuilder {
    resources: Vec<(String, Vec<String>)>,
    implications: Vec<(String, String)>,
    write_implies_read: bool,
    roles: Vec<(String, Vec<String>)>,
}

impl CatalogBuilder {
    pub(super) fn new() -> Self {
        Self {
            resources: Vec::new(),
            implications: Vec::new(),
            write_implies_read: true,
            roles: Vec::new(),
        }
    }

    /// Declares a role: a named bundle of permissions (any written form,
    /// `tickets:*` included) that keys can hold by name, e.g.
    /// `.role("support", ["contacts:read", "tickets:*"])`. A key holding a
    /// role holds its permissions as they are when the key is loaded, so
    /// redefining the role ([`Keyward::set_role`](crate::Keyward::set_role))
    /// reaches every key that holds it.
    pub fn role<I, S>(mut self, name: impl Into<String>, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles.push((
            name.into(),
            permissions.into_iter().map(Into::into).collect(),
        ));
        self
    }

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
        let edges = self.edges()?;
        let graph = graph(&edges);
        find_cycle(&graph, &edges)?;
        self.check_declared(&edges)?;
        let total: usize = self.resources.iter().map(|(_, a)| a.len()).sum();
        if total > MAX_PERMISSIONS {
            return Err(CatalogError::TooManyPermissions(total));
        }
        let (resources, names) = bits(self.resources, total)?;
        check_unambiguous(&resources)?;
        let (closure, all, read_only) = closures(&resources, &graph, names.len());
        let plain = Catalog(Arc::new(CatalogInner {
            resources,
            names,
            closure,
            all,
            read_only,
            roles: Vec::new(),
        }));
        let mut roles: Vec<(Box<str>, Bits)> = Vec::with_capacity(self.roles.len());
        for (name, permissions) in self.roles {
            check_role_name(&name)?;
            if roles.iter().any(|(n, _)| **n == *name) {
                return Err(CatalogError::DuplicateRole(name));
            }
            let set = plain
                .parse_set(&permissions)
                .map_err(|error| CatalogError::Role {
                    role: name.clone(),
                    error,
                })?;
            roles.push((name.into(), set.bits));
        }
        let Ok(mut inner) = Arc::try_unwrap(plain.0) else {
            unreachable!("the catalog was not shared yet")
        };
        inner.roles = roles;
        Ok(Catalog(Arc::new(inner)))
    }

    /// The implication edges, with valid names.
    fn edges(&self) -> Result<Vec<(String, String)>, CatalogError> {
        let mut edges: Vec<(String, String)> = Vec::new();
        if self.write_implies_read {
            edges.push(("write".into(), "read".into()));
        }
        for (a, b) in &self.implications {
            check_name(a)?;
            check_name(b)?;
            edges.push((a.clone(), b.clone()));
        }
        Ok(edges)
    }

    /// Declared implications link declared actions (`write -> read`
    /// holds only where both exist).
    fn check_declared(&self, edges: &[(String, String)]) -> Result<(), CatalogError> {
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
        Ok(())
    }
}

/// Each resource with its first bit, and the canonical name of every bit,
/// in declaration order; names and actions checked.
fn bits(
    declared: Vec<(String, Vec<String>)>,
    total: usize,
) -> Result<(Vec<Resource>, Vec<Box<str>>), CatalogError> {
    let mut resources = Vec::with_capacity(declared.len());
    let mut names = Vec::with_capacity(total);
    let mut seen = BTreeSet::new();
    for (name, actions) in declared {
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
    Ok((resources, names))
}

/// Every permission must parse back from its canonical name, which
/// `action:resource` would make ambiguous for swapped names.
fn check_unambiguous(resources: &[Resource]) -> Result<(), CatalogError> {
    for r in resources {
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
    Ok(())
}

/// The closure of each bit (every action reachable in the graph, kept
/// when the bit's resource declares it), every bit, and the `read` bits.
fn closures(resources: &[Resource], graph: &Graph<'_>, bits: usize) -> (Vec<Bits>, Bits, Bits) {
    let mut closure = vec![[0u64; WORDS]; bits];
    let mut all = [0u64; WORDS];
    let mut read_only = [0u64; WORDS];
    for r in resources {
        for (i, action) in r.actions.iter().enumerate() {
            let bit = r.first_bit as usize + i;
            set_bit(&mut all, bit);
            if &**action == "read" {
                set_bit(&mut read_only, bit);
            }
            // Through every action, declared here or not, so admin ->
            // delete -> read holds on a resource without `delete`;
            // restricted to this resource below.
            let reach = reachable(graph, action);
            for (j, a) in r.actions.iter().enumerate() {
                if reach.contains(&**a) {
                    set_bit(&mut closure[bit], r.first_bit as usize + j);
                }
            }
        }
    }
    (closure, all, read_only)
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

/// A role name: 1–64 of `a-z 0-9 _ - .` (no `:` or `*`, so a role never
/// reads as a permission).
pub(crate) fn check_role_name(name: &str) -> Result<(), CatalogError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CatalogError::InvalidRoleName(
            name.chars().take(80).collect(),
        ))
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
