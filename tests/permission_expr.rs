//! Permission expressions (`Catalog::expression`, `require_any`,
//! `require_all`, `require_expr`): the grammar, the limits, and, as
//! properties, that parsing never panics and that a compiled expression
//! agrees with a naive evaluation of the same tree.

use keyward::{Catalog, ExprError, PermissionSet};
use proptest::prelude::*;

fn catalog() -> Catalog {
    Catalog::builder()
        .resource("contacts", ["read", "write"])
        .resource("tickets", ["read", "write"])
        .resource("admin", ["read", "write"])
        .build()
        .expect("catalog")
}

fn set(c: &Catalog, names: &[&str]) -> PermissionSet {
    c.parse_set(names).expect("known")
}

#[test]
fn and_binds_tighter_than_or_and_parentheses_group() {
    let c = catalog();
    let e = c
        .expression("contacts:read and tickets:write or admin:*")
        .expect("compiles");
    assert!(set(&c, &["contacts:read", "tickets:write"]).satisfies(&e));
    assert!(
        set(&c, &["admin:write"]).satisfies(&e),
        "admin:write implies admin:read"
    );
    assert!(
        !set(&c, &["admin:read"]).satisfies(&e),
        "admin:* is every action"
    );
    assert!(!set(&c, &["contacts:read"]).satisfies(&e));
    let g = c
        .expression("contacts:read AND (tickets:write Or admin:*)")
        .expect("compiles");
    assert!(!set(&c, &["admin:write"]).satisfies(&g));
    assert!(set(&c, &["contacts:read", "admin:write"]).satisfies(&g));
    assert_eq!(
        g.to_string(),
        "contacts:read AND (tickets:write Or admin:*)"
    );
    // Implication: a key with write satisfies a need for read.
    let r = c.expression("(tickets:read)").expect("compiles");
    assert!(set(&c, &["tickets:write"]).satisfies(&r));
    // `*` needs everything; another catalog's set satisfies nothing.
    let all = c.expression("*").expect("compiles");
    assert!(c.all().satisfies(&all) && !set(&c, &["tickets:write"]).satisfies(&all));
    let other = Catalog::builder()
        .resource("billing", ["read"])
        .build()
        .expect("catalog");
    assert!(!other.all().satisfies(&all), "a set of another catalog");
}

#[test]
fn any_and_all() {
    let c = catalog();
    let any = c
        .require_any(["contacts:write", "tickets:write"])
        .expect("compiles");
    let all = c
        .require_all(["contacts:write", "tickets:write"])
        .expect("compiles");
    let one = set(&c, &["tickets:write"]);
    assert!(one.satisfies(&any) && !one.satisfies(&all));
    assert!(set(&c, &["contacts:write", "tickets:write"]).satisfies(&all));
    assert_eq!(any.to_string(), "contacts:write or tickets:write");
    assert_eq!(
        c.require_any(Vec::<&str>::new()).err(),
        Some(ExprError::Empty)
    );
    assert!(matches!(
        c.require_all(["contacts:fly"]),
        Err(ExprError::Permission(_))
    ));
}

#[test]
fn mistakes_fail_at_compile_time_with_where_and_what() {
    let c = catalog();
    for (text, at) in [
        ("contacts:read and", 17),
        ("and contacts:read", 0),
        ("(contacts:read", 14),
        ("contacts:read)", 13),
        ("contacts:read tickets:read", 14),
        ("()", 1),
        ("contacts:read or or tickets:read", 17),
    ] {
        match c.expression(text) {
            Err(ExprError::Syntax { at: got, .. }) => assert_eq!(got, at, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    assert_eq!(c.expression("  ").err(), Some(ExprError::Empty));
    assert!(matches!(
        c.expression("contacts:fly"),
        Err(ExprError::Permission(_))
    ));
    assert!(matches!(
        c.expression("billing:read"),
        Err(ExprError::Permission(_))
    ));
    let deep = format!("{}contacts:read{}", "(".repeat(40), ")".repeat(40));
    assert_eq!(c.expression(&deep).err(), Some(ExprError::TooDeep));
    assert_eq!(
        c.expression(&"x".repeat(5000)).err(),
        Some(ExprError::TooLong)
    );
    // (a or b) and (c or d) and … seven times: 2^7 alternatives.
    let wide = vec![
        "(contacts:read or tickets:read)",
        "(contacts:write or admin:read)",
    ]
    .into_iter()
    .cycle()
    .take(7)
    .collect::<Vec<_>>()
    .join(" and ");
    // Absorption keeps this one small: it is fine.
    assert!(c.expression(&wide).is_ok());
    // Fourteen unrelated permissions in seven pairs: nothing absorbs
    // anything, so six pairs expand to 2^6 = 64 alternatives, seven to 128.
    let wide = Catalog::builder();
    let wide = (0..14).fold(wide, |b, i| b.resource(format!("r{i}"), ["read"]));
    let wide = wide.build().expect("catalog");
    let pairs = |n: usize| {
        (0..n)
            .map(|i| format!("(r{}:read or r{}:read)", 2 * i, 2 * i + 1))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let six = wide.expression(&pairs(6)).expect("64 alternatives");
    assert_eq!(six.alternatives(), keyward::MAX_ALTERNATIVES);
    assert_eq!(
        wide.expression(&pairs(7)).err(),
        Some(ExprError::TooComplex)
    );
}

/// An expression tree, evaluated naively and rendered as text.
#[derive(Debug, Clone)]
enum Tree {
    Name(&'static str),
    And(Box<Tree>, Box<Tree>),
    Or(Box<Tree>, Box<Tree>),
}

const NAMES: [&str; 9] = [
    "contacts:read",
    "contacts:write",
    "tickets:read",
    "tickets:write",
    "admin:read",
    "admin:write",
    "contacts:*",
    "write:tickets",
    "admin:*",
];

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop::sample::select(&NAMES[..]).prop_map(Tree::Name);
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Tree::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Tree::Or(Box::new(a), Box::new(b))),
        ]
    })
}

impl Tree {
    /// Fully parenthesised, with the keywords' case chosen by `upper`.
    fn text(&self, upper: bool) -> String {
        let (and, or) = if upper { ("AND", "OR") } else { ("and", "or") };
        match self {
            Tree::Name(n) => (*n).to_string(),
            Tree::And(a, b) => format!("({} {and} {})", a.text(!upper), b.text(upper)),
            Tree::Or(a, b) => format!("({} {or} {})", a.text(upper), b.text(!upper)),
        }
    }

    /// With no more parentheses than precedence needs, tabs and newlines
    /// for spaces, and `and(` with no space.
    fn minimal(&self) -> String {
        match self {
            Tree::Name(n) => (*n).to_string(),
            Tree::And(a, b) => {
                let side = |t: &Tree| match t {
                    Tree::Or(..) => format!("({})", t.minimal()),
                    _ => t.minimal(),
                };
                format!(
                    "{}\tand{}{}",
                    side(a),
                    if matches!(**b, Tree::Or(..)) { "" } else { " " },
                    side(b)
                )
            }
            Tree::Or(a, b) => format!("{}\nOR {}", a.minimal(), b.minimal()),
        }
    }

    fn holds(&self, c: &Catalog, held: &PermissionSet) -> bool {
        match self {
            // Every permission the name stands for (and what they imply).
            Tree::Name(n) => c.parse_set([*n]).expect("known").is_subset_of(held),
            Tree::And(a, b) => a.holds(c, held) && b.holds(c, held),
            Tree::Or(a, b) => a.holds(c, held) || b.holds(c, held),
        }
    }
}

proptest! {
    #[test]
    fn compiled_expressions_agree_with_a_naive_evaluator(
        t in tree(),
        upper in any::<bool>(),
        held in prop::sample::subsequence(&NAMES[..6], 0..=6),
    ) {
        // Six permissions allow at most 20 alternatives none of which
        // covers another, so every tree compiles.
        let c = catalog();
        let held = c.parse_set(&held).expect("known");
        for text in [t.text(upper), t.minimal()] {
            let e = c.expression(&text);
            prop_assert!(e.is_ok(), "{}: {:?}", text, e);
            let e = e.expect("compiles");
            prop_assert_eq!(held.satisfies(&e), t.holds(&c, &held), "{}", text);
        }
    }

    #[test]
    fn parsing_never_panics(text in ".{0,200}") {
        let _ = catalog().expression(&text);
    }

    #[test]
    fn parsing_token_soup_never_panics(
        words in prop::collection::vec(
            prop::sample::select(vec!["(", ")", "and", "or", "AND", "contacts:read", "admin:*", "*", "x", "", " "]),
            0..60,
        )
    ) {
        let _ = catalog().expression(&words.join(" "));
        let _ = catalog().expression(&words.concat());
    }
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn a_route_layer_compiles_the_expression_once_and_refuses_with_it() {
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use http::{Request, StatusCode};
    use keyward::http::{require_expr, KeywardLayer};
    use keyward::{Actor, Keyward, MemoryStore, NewKey};
    use tower::ServiceExt;

    let keys = Keyward::builder(MemoryStore::new(), catalog())
        .build()
        .expect("config");
    assert!(
        require_expr(keys.catalog(), "contacts:read and").is_err(),
        "a typo fails at start-up"
    );
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route_layer(
            require_expr(
                keys.catalog(),
                "contacts:read and (tickets:write or admin:*)",
            )
            .expect("compiles"),
        )
        .layer(KeywardLayer::new(keys.clone()));
    let setup = Actor::new("setup", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let call = |token: String| {
        let app = app.clone();
        async move {
            let req = Request::get("/")
                .header("x-api-key", token)
                .body(Body::empty())
                .expect("request");
            let res = app.oneshot(req).await.expect("infallible");
            let status = res.status();
            let body = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .expect("body");
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    for (perms, want) in [
        (vec!["contacts:read", "tickets:write"], StatusCode::OK),
        (vec!["contacts:read", "admin:write"], StatusCode::OK),
        (vec!["contacts:read", "admin:read"], StatusCode::FORBIDDEN),
        (vec!["tickets:write"], StatusCode::FORBIDDEN),
    ] {
        let key = keys
            .create(&setup, NewKey::new("k").permissions(perms.clone()))
            .await
            .expect("key");
        let (status, body) = call(key.token.expose_secret().to_string()).await;
        assert_eq!(status, want, "{perms:?}: {body}");
        if status == StatusCode::FORBIDDEN {
            assert!(body.contains("\"code\":\"forbidden\""), "{body}");
            assert!(
                body.contains("contacts:read and (tickets:write or admin:*)"),
                "{body}"
            );
        }
    }
}
