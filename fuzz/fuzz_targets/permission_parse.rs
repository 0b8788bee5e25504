//! Permission parsing against a fixed catalog with custom implications:
//! `Catalog::parse` agrees with a small model of the documented grammar
//! (`resource:action`, `action:resource` when unambiguous, no wildcards),
//! its result round-trips through `Catalog::name`, and every set from
//! `parse_set`/`parse_str` is the union of its items' closures, closed under
//! the declared implications (checked against an independent closure), and
//! survives its `Display` and serde forms.
//!
//! The same string is also compiled as a permission expression
//! (`Catalog::expression`): it never panics, and what compiles holds for
//! the whole catalog and stays within the alternatives' bound.
//!
//! Input: a string; one permission, then the same string split at commas
//! and whitespace as a list, then an expression.

#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use keyward::{Catalog, PermissionSet};
use libfuzzer_sys::fuzz_target;

/// Resources and their actions. `read`/`write` are also resource names, so
/// that `write:read` reads both ways round (as resource `write`, action
/// `read`, and as action `write` of resource `read`, which `read` does not
/// have). A catalog where both readings exist is refused when built.
const RESOURCES: &[(&str, &[&str])] = &[
    ("contacts", &["read", "write"]),
    ("leads", &["read", "create", "update", "delete"]),
    ("users", &["read"]),
    ("docs.v2", &["read", "write", "admin", "publish"]),
    ("files", &["read", "admin"]),
    ("read", &["archive"]),
    ("write", &["read", "audit-log"]),
];

/// Declared implications, on top of the default `write` -> `read`.
/// `admin` reaches `read` on `files` through `delete`, which `files` lacks.
const IMPLIES: &[(&str, &str)] = &[
    ("create", "read"),
    ("update", "read"),
    ("delete", "read"),
    ("admin", "write"),
    ("admin", "delete"),
    ("publish", "write"),
    ("audit-log", "read"),
];

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut b = Catalog::builder();
        for (name, actions) in RESOURCES {
            b = b.resource(*name, actions.iter().copied());
        }
        for (a, implied) in IMPLIES {
            b = b.implies(*a, *implied);
        }
        b.build().expect("a valid catalog")
    })
}

fn actions_of(resource: &str) -> Option<&'static [&'static str]> {
    RESOURCES
        .iter()
        .find(|(r, _)| *r == resource)
        .map(|(_, a)| *a)
}

/// The documented reading of one permission: the canonical name it names,
/// or `None` for an error.
fn model_one(input: &str) -> Option<String> {
    let s = input.trim();
    let (left, right) = s.split_once(':')?;
    if left.is_empty() || right.is_empty() || right.contains(':') || right == "*" {
        return None;
    }
    let canonical = actions_of(left).is_some_and(|a| a.contains(&right));
    let reversed = actions_of(right).is_some_and(|a| a.contains(&left));
    match (canonical, reversed) {
        // Both readings are valid and name different permissions.
        (true, true) if left != right => None,
        (true, _) => Some(format!("{left}:{right}")),
        (false, true) => Some(format!("{right}:{left}")),
        (false, false) => None,
    }
}

/// Every action `action` implies (itself included), following implications
/// through any action, then kept to those the resource declares.
fn implied_by(resource: &str, action: &str) -> BTreeSet<String> {
    let mut reach = BTreeSet::from([action.to_string()]);
    let mut todo = vec![action.to_string()];
    while let Some(a) = todo.pop() {
        let edges = IMPLIES.iter().chain(&[("write", "read")]);
        for (from, to) in edges {
            if *from == a && reach.insert(to.to_string()) {
                todo.push(to.to_string());
            }
        }
    }
    let declared = actions_of(resource).unwrap_or_default();
    reach
        .into_iter()
        .filter(|a| declared.contains(&a.as_str()))
        .map(|a| format!("{resource}:{a}"))
        .collect()
}

/// Checks that `set` is closed under the implications, by the model.
fn assert_closed(set: &PermissionSet) {
    let names: BTreeSet<String> = set.names().map(str::to_string).collect();
    for name in &names {
        let (resource, action) = name.split_once(':').expect("canonical names have a colon");
        for implied in implied_by(resource, action) {
            assert!(
                names.contains(&implied),
                "{set} holds {name} but not {implied}"
            );
        }
    }
}

fn check_set(c: &Catalog, items: &[&str]) {
    let result = c.parse_set(items);
    let singles: Vec<_> = items.iter().map(|i| c.parse_set([*i])).collect();
    let Ok(set) = result else {
        assert!(
            singles.iter().any(Result::is_err),
            "{items:?} fails as a list but every item parses alone"
        );
        return;
    };
    assert_closed(&set);
    assert!(set.is_subset_of(&c.all()));
    // The set is exactly the union of its items.
    let mut union = c.none();
    for s in singles {
        let s = s.expect("an item of a valid list parses alone");
        assert!(s.is_subset_of(&set));
        union = union.union(&s);
    }
    assert_eq!(union, set, "{items:?} is not the union of its items");
    // Display and serde forms read back to the same set.
    let shown = set.to_string();
    assert_eq!(c.parse_str(&shown).expect("Display form parses"), set);
    let json = serde_json::to_string(&set).expect("serializes");
    let mut de = serde_json::Deserializer::from_str(&json);
    assert_eq!(c.deserialize_set(&mut de).expect("serde form parses"), set);
    assert_eq!(set.len(), set.names().count());
    assert_eq!(set.missing_from(&c.none()).len(), set.len());
}

fuzz_target!(|data: &[u8]| {
    let c = catalog();
    let input = String::from_utf8_lossy(data);

    if let Ok(expr) = c.expression(&input) {
        assert!(
            c.all().satisfies(&expr),
            "{input:?}: everything satisfies it"
        );
        assert!(expr.alternatives() >= 1 && expr.alternatives() <= keyward::MAX_ALTERNATIVES);
    }

    let parsed = c.parse(&input);
    let expected = model_one(&input);
    match (&parsed, &expected) {
        (Ok(p), Some(want)) => {
            let name = c.name(*p).expect("a parsed permission has a name");
            assert_eq!(name, want, "{input:?} parsed as {name}");
            assert_eq!(c.parse(name).as_ref(), Ok(p), "{name} does not re-parse");
            // A permission's own set holds it and what it implies, no more.
            let (resource, action) = name.split_once(':').expect("canonical");
            let own = c.parse_set([name]).expect("a name parses as a set");
            assert!(own.allows(*p));
            let names: BTreeSet<String> = own.names().map(str::to_string).collect();
            assert_eq!(names, implied_by(resource, action), "closure of {name}");
        }
        (Err(_), None) => {}
        _ => panic!("{input:?}: parse gave {parsed:?}, the model {expected:?}"),
    }

    let items: Vec<&str> = input
        .split(|ch: char| ch == ',' || ch.is_whitespace())
        .filter(|s| !s.is_empty())
        .take(64)
        .collect();
    check_set(c, &items);
    if items.len() < 64 {
        let as_str = c.parse_str(&input);
        let as_set = c.parse_set(&items);
        assert_eq!(as_str.is_ok(), as_set.is_ok());
        if let (Ok(a), Ok(b)) = (as_str, as_set) {
            assert_eq!(a, b, "parse_str and parse_set disagree on {input:?}");
        }
    }
});
