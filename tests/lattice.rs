//! Property tests of the permission lattice laws.

use keyward::{Catalog, PermissionSet};
use proptest::prelude::*;

fn catalog() -> Catalog {
    Catalog::builder()
        .resource("accounts", ["read", "write"])
        .resource("contacts", ["read", "write"])
        .resource("users", ["read"])
        .resource("mailbox", ["read"])
        .resource("leads", ["read", "create", "update", "delete", "admin"])
        .resource("webhooks", ["read", "write", "manage"])
        .implies("create", "read")
        .implies("update", "read")
        .implies("delete", "update")
        .implies("admin", "delete")
        .implies("manage", "write")
        .build()
        .expect("valid catalog")
}

fn all_names(c: &Catalog) -> Vec<String> {
    c.resources()
        .flat_map(|(r, actions)| actions.map(move |a| format!("{r}:{a}")).collect::<Vec<_>>())
        .collect()
}

/// Any subset of the catalog's permissions, as names (not yet closed).
fn names() -> impl Strategy<Value = Vec<String>> {
    let all = all_names(&catalog());
    proptest::sample::subsequence(all.clone(), 0..=all.len())
}

fn set(names: &[String]) -> PermissionSet {
    catalog().parse_set(names).expect("known names")
}

proptest! {
    #[test]
    fn closure_is_idempotent(n in names()) {
        let s = set(&n);
        let again = catalog().parse_set(s.names()).expect("known");
        prop_assert_eq!(&again, &s);
        // Closure is extensive: everything named is in the closure.
        prop_assert!(set(&n).names().count() >= n.len());
        for name in &n {
            prop_assert!(s.allows_str(name).expect("known"));
        }
    }

    #[test]
    fn subset_is_a_partial_order(a in names(), b in names(), c in names()) {
        let (a, b, c) = (set(&a), set(&b), set(&c));
        prop_assert!(a.is_subset_of(&a));
        if a.is_subset_of(&b) && b.is_subset_of(&a) {
            prop_assert_eq!(&a, &b);
        }
        if a.is_subset_of(&b) && b.is_subset_of(&c) {
            prop_assert!(a.is_subset_of(&c));
        }
    }

    #[test]
    fn union_is_the_join(a in names(), b in names(), c in names()) {
        let (a, b, c) = (set(&a), set(&b), set(&c));
        let j = a.union(&b);
        prop_assert!(a.is_subset_of(&j) && b.is_subset_of(&j));
        if a.is_subset_of(&c) && b.is_subset_of(&c) {
            prop_assert!(j.is_subset_of(&c), "the join is the least upper bound");
        }
        prop_assert_eq!(&j, &b.union(&a));
        // The union of closed sets is closed.
        prop_assert_eq!(&catalog().parse_set(j.names()).expect("known"), &j);
    }

    #[test]
    fn intersection_is_the_meet(a in names(), b in names(), c in names()) {
        let (a, b, c) = (set(&a), set(&b), set(&c));
        let m = a.intersection(&b);
        prop_assert!(m.is_subset_of(&a) && m.is_subset_of(&b));
        if c.is_subset_of(&a) && c.is_subset_of(&b) {
            prop_assert!(c.is_subset_of(&m), "the meet is the greatest lower bound");
        }
        prop_assert_eq!(&m, &b.intersection(&a));
        prop_assert_eq!(&catalog().parse_set(m.names()).expect("known"), &m);
        // Absorption.
        prop_assert_eq!(&a.union(&a.intersection(&b)), &a);
        prop_assert_eq!(&a.intersection(&a.union(&b)), &a);
    }

    #[test]
    fn write_includes_read(n in names()) {
        let c = catalog();
        let s = set(&n);
        for (resource, actions) in c.resources() {
            let actions: Vec<&str> = actions.collect();
            if actions.contains(&"write") && s.allows_str(&format!("{resource}:write")).expect("known") {
                let read = format!("{resource}:read");
                prop_assert!(s.allows_str(&read).expect("known"));
            }
        }
    }

    #[test]
    fn canonical_form_round_trips(n in names()) {
        let c = catalog();
        let s = set(&n);
        prop_assert_eq!(&c.parse_str(&s.to_string()).expect("parses"), &s);
        let json = serde_json::to_string(&s).expect("serializes");
        let mut de = serde_json::Deserializer::from_str(&json);
        prop_assert_eq!(&c.deserialize_set(&mut de).expect("parses"), &s);
        prop_assert_eq!(s.len(), s.names().count());
    }

    #[test]
    fn missing_from_names_exactly_the_difference(a in names(), b in names()) {
        let (a, b) = (set(&a), set(&b));
        let missing = a.missing_from(&b);
        prop_assert_eq!(missing.is_empty(), a.is_subset_of(&b));
        for m in &missing {
            prop_assert!(a.allows_str(m).expect("known") && !b.allows_str(m).expect("known"));
        }
    }

    #[test]
    fn parsing_arbitrary_strings_never_panics(s in any::<String>()) {
        let _ = catalog().parse(&s);
        let _ = catalog().parse_str(&s);
    }
}

#[test]
fn presets() {
    let c = catalog();
    assert!(c.read_only().is_subset_of(&c.all()));
    assert_eq!(c.all().len(), all_names(&c).len());
    assert_eq!(c.parse_set(["*"]).expect("known"), c.all());
    assert!(c.none().is_empty());
    let admin = c.parse_set(["leads:admin"]).expect("known");
    assert_eq!(
        admin.to_string(),
        "leads:read leads:update leads:delete leads:admin"
    );
}
