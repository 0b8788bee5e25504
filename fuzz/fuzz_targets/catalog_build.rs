//! `Catalog::builder()...build()` on arbitrary declarations: it returns Ok
//! or the error a model of the documented checks predicts (in the builder's
//! order: implication names, cycles, unknown implied actions, the 256
//! permission limit, then each resource), never panics, and stays fast for
//! long implication chains (up to 4,096 implications; scripts/fuzz runs it
//! with a per-input timeout). A built catalog declares exactly the given
//! permissions, each closed under the implications.
//!
//! Input: a flags byte (bit 0: `without_write_implies_read`), then ops,
//! one byte each plus operands: declare a resource, declare a resource
//! whose actions are the chain names `c0`, `c1`, …, add one implication, add
//! a chain `c(i+1) -> c(i)` (either order, optionally closed into a cycle),
//! or repeat the last implications.

#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use keyward::{Catalog, CatalogError};
use libfuzzer_sys::fuzz_target;

const MAX_RESOURCES: usize = 64;
const MAX_IMPLICATIONS: usize = 4096;
/// Longest chain of distinct actions. The builder's cycle search costs
/// (distinct actions) x (implications); 1,024 x 4,096 keeps one input
/// under about 0.2 s with coverage instrumentation, while repeated
/// implications still fill the 4,096.
const MAX_CHAIN: usize = 1024;
/// More than the 256 permissions a catalog allows, so the limit is hit.
const MAX_CHAIN_ACTIONS: usize = 300;

const POOL: &[&str] = &[
    "read", "write", "admin", "create", "update", "delete", "publish", "audit", "contacts",
    "leads", "users", "docs.v2", "files", "x", "A-1_z", "c0", "c1", "c2",
];

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    /// A name from the pool, a chain name, or raw bytes (often invalid).
    fn name(&mut self) -> Option<String> {
        let tag = self.byte()?;
        Some(match tag {
            0..=127 => POOL[usize::from(tag) % POOL.len()].to_string(),
            128..=223 => format!("c{}", self.u16()? % 512),
            _ => {
                let len = usize::from(self.byte()? % 72).min(self.data.len());
                let (raw, rest) = self.data.split_at(len);
                self.data = rest;
                String::from_utf8_lossy(raw).into_owned()
            }
        })
    }
}

#[derive(Debug, Default)]
struct Declarations {
    resources: Vec<(String, Vec<String>)>,
    implications: Vec<(String, String)>,
    write_implies_read: bool,
}

fn chain_name(i: usize) -> String {
    format!("c{i}")
}

fn decode(data: &[u8]) -> Declarations {
    let mut r = Reader { data };
    let mut d = Declarations {
        write_implies_read: r.byte().unwrap_or(0) & 1 == 0,
        ..Declarations::default()
    };
    let room = |d: &Declarations| MAX_IMPLICATIONS - d.implications.len();
    while let Some(op) = r.byte() {
        match op % 8 {
            0..=2 if d.resources.len() < MAX_RESOURCES => {
                let Some(name) = r.name() else { break };
                let count = r.byte().unwrap_or(0) % 9;
                let actions = (0..count).map_while(|_| r.name()).collect();
                d.resources.push((name, actions));
            }
            3 if d.resources.len() < MAX_RESOURCES => {
                let Some(name) = r.name() else { break };
                let count = usize::from(r.u16().unwrap_or(0)) % (MAX_CHAIN_ACTIONS + 1);
                let mut actions: Vec<String> = (0..count).map(chain_name).collect();
                if op & 8 != 0 {
                    actions.reverse();
                }
                d.resources.push((name, actions));
            }
            4 | 5 if room(&d) > 0 => {
                let (Some(a), Some(b)) = (r.name(), r.name()) else {
                    break;
                };
                d.implications.push((a, b));
            }
            6 if room(&d) > 0 => {
                // Bits 5 and 6: a long chain (two length bytes); otherwise
                // one of at most 255 steps.
                let len = if op & 96 == 96 {
                    usize::from(r.u16().unwrap_or(0)) % (MAX_CHAIN + 1)
                } else {
                    usize::from(r.byte().unwrap_or(0))
                };
                let len = len % room(&d);
                let mut chain: Vec<(String, String)> = (0..len)
                    .map(|i| (chain_name(i + 1), chain_name(i)))
                    .collect();
                // Listed bottom-up (`c1 -> c0` first), a pass over the list
                // follows a chain one step: the slow order for a fixpoint.
                // Bit 3 lists it top-down.
                if op & 8 != 0 {
                    chain.reverse();
                }
                if op & 16 != 0 && len > 0 && chain.len() < room(&d) {
                    chain.push((chain_name(0), chain_name(len)));
                }
                d.implications.extend(chain);
            }
            7 if room(&d) > 0 => {
                let count = usize::from(r.u16().unwrap_or(0))
                    .min(d.implications.len())
                    .min(room(&d));
                let start = d.implications.len() - count;
                d.implications.extend_from_within(start..);
            }
            _ => {}
        }
    }
    d
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn has_cycle(edges: &[(&str, &str)]) -> bool {
    // Kahn: a graph is acyclic if and only if repeatedly removing nodes
    // without incoming edges removes every node.
    let mut indegree: HashMap<&str, usize> = HashMap::new();
    let mut out: HashMap<&str, Vec<&str>> = HashMap::new();
    for &(a, b) in edges {
        indegree.entry(a).or_default();
        *indegree.entry(b).or_default() += 1;
        out.entry(a).or_default().push(b);
    }
    let mut ready: Vec<&str> = indegree
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut removed = 0;
    while let Some(node) = ready.pop() {
        removed += 1;
        for next in out.get(node).into_iter().flatten() {
            let n = indegree.get_mut(next).expect("every target has a degree");
            *n -= 1;
            if *n == 0 {
                ready.push(next);
            }
        }
    }
    removed != indegree.len()
}

/// What the builder must answer, by the documented rules, in its order.
/// A cycle's path depends on the search order: only its kind is compared.
fn expected(d: &Declarations) -> Result<(), CatalogError> {
    for (a, b) in &d.implications {
        for n in [a, b] {
            if !valid_name(n) {
                return Err(CatalogError::InvalidName(n.chars().take(80).collect()));
            }
        }
    }
    let mut edges: Vec<(&str, &str)> = Vec::new();
    if d.write_implies_read {
        edges.push(("write", "read"));
    }
    edges.extend(d.implications.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    if has_cycle(&edges) {
        // The path depends on the search order; only the kind is checked.
        return Err(CatalogError::Cycle(Vec::new()));
    }
    let declared: BTreeSet<&str> = d
        .resources
        .iter()
        .flat_map(|(_, a)| a.iter().map(String::as_str))
        .collect();
    for (a, b) in &d.implications {
        if !declared.contains(a.as_str()) {
            return Err(CatalogError::UnknownImpliedAction(a.clone()));
        }
        if !declared.contains(b.as_str()) {
            return Err(CatalogError::UnknownImpliedAction(b.clone()));
        }
    }
    let total: usize = d.resources.iter().map(|(_, a)| a.len()).sum();
    if total > 256 {
        return Err(CatalogError::TooManyPermissions(total));
    }
    let mut seen = BTreeSet::new();
    for (name, actions) in &d.resources {
        if !valid_name(name) {
            return Err(CatalogError::InvalidName(name.chars().take(80).collect()));
        }
        if !seen.insert(name) {
            return Err(CatalogError::DuplicateResource(name.clone()));
        }
        let distinct: BTreeSet<&String> = actions.iter().collect();
        if actions.is_empty() || distinct.len() != actions.len() {
            return Err(CatalogError::BadActions {
                resource: name.clone(),
            });
        }
        if let Some(bad) = actions.iter().find(|a| !valid_name(a)) {
            return Err(CatalogError::InvalidName(bad.chars().take(80).collect()));
        }
    }
    // Swapped names would make a canonical name read two ways.
    for (name, actions) in &d.resources {
        for a in actions.iter().filter(|a| *a != name) {
            let swapped = d
                .resources
                .iter()
                .any(|(other, acts)| other == a && acts.contains(name));
            if swapped {
                return Err(CatalogError::AmbiguousNames(
                    format!("{name}:{a}"),
                    format!("{a}:{name}"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a built catalog: its permissions are the declared ones, and the
/// set of each is what the implications reach from it on its resource.
fn check_catalog(c: &Catalog, d: &Declarations) {
    let listed: Vec<(String, Vec<String>)> = c
        .resources()
        .map(|(r, a)| (r.to_string(), a.map(str::to_string).collect()))
        .collect();
    assert_eq!(
        listed, d.resources,
        "resources differ from the declarations"
    );
    let total: usize = d.resources.iter().map(|(_, a)| a.len()).sum();
    assert_eq!(c.all().len(), total);

    let mut next: HashMap<&str, Vec<&str>> = HashMap::new();
    if d.write_implies_read {
        next.entry("write").or_default().push("read");
    }
    for (a, b) in &d.implications {
        next.entry(a).or_default().push(b);
    }
    let mut reach_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (resource, actions) in &d.resources {
        for action in actions {
            let reach = reach_of.entry(action).or_insert_with(|| {
                let mut seen = BTreeSet::from([action.as_str()]);
                let mut todo = vec![action.as_str()];
                while let Some(a) = todo.pop() {
                    for b in next.get(a).into_iter().flatten() {
                        if seen.insert(b) {
                            todo.push(b);
                        }
                    }
                }
                seen
            });
            let name = format!("{resource}:{action}");
            // Every canonical name of a catalog that builds parses back.
            let set = c
                .parse_set([name.as_str()])
                .unwrap_or_else(|e| panic!("canonical {name} does not parse: {e}"));
            let got: BTreeSet<&str> = set.names().collect();
            let want: BTreeSet<String> = actions
                .iter()
                .filter(|a| reach.contains(a.as_str()))
                .map(|a| format!("{resource}:{a}"))
                .collect();
            let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
            assert_eq!(got, want, "closure of {name}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let d = decode(data);
    let mut b = Catalog::builder();
    for (name, actions) in &d.resources {
        b = b.resource(name.as_str(), actions.iter().map(String::as_str));
    }
    for (a, implied) in &d.implications {
        b = b.implies(a.as_str(), implied.as_str());
    }
    if !d.write_implies_read {
        b = b.without_write_implies_read();
    }
    let built = b.build();
    let want = expected(&d);
    match (&built, &want) {
        (Ok(c), Ok(())) => check_catalog(c, &d),
        (Err(CatalogError::Cycle(path)), Err(CatalogError::Cycle(_))) => {
            assert!(path.len() >= 2 && path.first() == path.last(), "{path:?}");
        }
        (Err(got), Err(want)) => assert_eq!(got, want, "{d:?}"),
        _ => panic!("build gave {built:?}, expected {want:?} for {d:?}"),
    }
});
