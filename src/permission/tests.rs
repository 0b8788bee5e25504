//! The lattice's laws and the catalog's checks.

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
