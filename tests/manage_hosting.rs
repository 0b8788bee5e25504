//! The management router as hosts deploy it: with their own sign-in,
//! with nested tenants, behind a `KeywardLayer`; its OpenAPI document; and
//! the example's operator recovery of admin access.

mod common;

use async_trait::async_trait;
use axum::Router;
use common::example::{code, example, serve, server};
use http::request::Parts;
use keyward::http::manage::{Access, Management, ResolveActor};
use keyward::http::ApiError;
use keyward::{Actor, Keyward, MemoryAuditSink, MemoryStore, NewKey};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A host's own sign-in, resolving a header the host trusts (standing in
/// for a session cookie) to a person.
struct HeaderActors {
    keys: Keyward,
}

#[async_trait]
impl ResolveActor for HeaderActors {
    async fn resolve(&self, parts: &mut Parts, access: Access) -> Result<Actor, ApiError> {
        let user = parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let (name, role) = user.split_once(':').ok_or_else(ApiError::unauthorized)?;
        if access == Access::Write && role != "admin" {
            return Err(ApiError::new(
                http::StatusCode::FORBIDDEN,
                "forbidden",
                "Only admins change API keys.",
            ));
        }
        let held = self
            .keys
            .catalog()
            .parse_set(["contacts:read"])
            .map_err(|_| ApiError::unauthorized())?;
        Ok(Actor::new(format!("user:{name}"), "acme")
            .permissions(held)
            .may_manage_keys(true))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_its_own_sessions_plugs_in_its_users() {
    let audit = MemoryAuditSink::default();
    let keys = Keyward::builder(MemoryStore::new(), server::catalog())
        .audit(audit.clone())
        .build()
        .expect("config");
    let router = Management::new(keys.clone())
        .actors(HeaderActors { keys: keys.clone() })
        .audit_trail(audit)
        .router()
        .expect("router");
    let base = serve(Router::new().nest("/keys", router)).await;
    let http = reqwest::Client::new();
    let post = |user: &'static str, body: Value| {
        http.post(format!("{base}/keys"))
            .header("x-user", user)
            .json(&body)
            .send()
    };
    let res = post(
        "ann:admin",
        json!({"name": "n8n", "permissions": ["contacts:read"]}),
    )
    .await
    .expect("send");
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.expect("json");
    assert_eq!(created["key"]["created_by"], "user:ann");
    assert_eq!(created["key"]["tenant"], "acme");
    let token = created["token"].as_str().expect("token");
    keys.verify(token).await.expect("the key works");
    // The authority rules hold for a person too.
    let res = post(
        "ann:admin",
        json!({"name": "more", "permissions": ["contacts:write"]}),
    )
    .await
    .expect("send");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = post("bob:viewer", json!({"name": "n8n"}))
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = http
        .get(format!("{base}/keys"))
        .header("x-user", "bob:viewer")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let res = http.get(format!("{base}/keys")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // The default actors need api_keys:* in the catalog.
    let bare = Keyward::builder(MemoryStore::new(), common::catalog())
        .build()
        .expect("config");
    assert!(Management::new(bare).router::<()>().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_tenants_list_and_create_within_the_subtree() {
    let keys = Keyward::builder(MemoryStore::new(), server::catalog())
        .nested_tenants(true)
        .build()
        .expect("config");
    let agency = Actor::new("setup", "agency")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let admin = keys
        .create(
            &agency,
            NewKey::new("agency admin").permission_set(keys.catalog().all()),
        )
        .await
        .expect("admin");
    let admin = admin.token.expose_secret().to_string();
    let base =
        serve(Router::new().nest("/k", Management::new(keys).router().expect("router"))).await;
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/k"))
        .header("x-api-key", &admin)
        .json(&json!({"name": "store 1", "tenant": "agency/store-1"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::CREATED);
    let list: Value = http
        .get(format!("{base}/k?tenant=agency/store-1"))
        .header("x-api-key", &admin)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(list["data"][0]["tenant"], "agency/store-1");
    let res = http
        .post(format!("{base}/k"))
        .header("x-api-key", &admin)
        .json(&json!({"name": "elsewhere", "tenant": "rival"}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "not below the caller's tenant"
    );
    // No trail configured: the audit routes say so.
    let res = http
        .get(format!("{base}/k/events"))
        .header("x-api-key", &admin)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = res.json().await.expect("json");
    assert_eq!(code(&body), "no_audit_trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_behind_a_keyward_layer_verifies_once() {
    // The layer already verified the key; the router must not verify (and
    // count) it again.
    let keys = Keyward::builder(MemoryStore::new(), server::catalog())
        .build()
        .expect("config");
    let setup = Actor::new("setup", "t")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let admin = keys
        .create(
            &setup,
            NewKey::new("admin")
                .permission_set(keys.catalog().all())
                .remaining(2),
        )
        .await
        .expect("admin");
    let app = Router::new()
        .nest(
            "/k",
            Management::new(keys.clone()).router().expect("router"),
        )
        .layer(keyward::http::KeywardLayer::new(keys));
    let base = serve(app).await;
    let http = reqwest::Client::new();
    let token = admin.token.expose_secret();
    for _ in 0..2 {
        let res = http
            .get(format!("{base}/k"))
            .header("x-api-key", token)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), StatusCode::OK, "one use per request");
    }
    let res = http
        .get(format!("{base}/k"))
        .header("x-api-key", token)
        .send()
        .await
        .expect("send");
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "two uses, two requests"
    );
}

#[test]
fn the_openapi_document_lists_every_route_and_only_answerable_statuses() {
    let keys = Keyward::builder(MemoryStore::new(), server::catalog())
        .build()
        .expect("config");
    let doc =
        serde_json::to_value(Management::new(keys).base_path("/api-keys").openapi()).expect("json");
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.1")),
        Some(true)
    );
    assert_eq!(doc["servers"][0]["url"], "/api-keys");
    let routes = [
        ("/", "post"),
        ("/", "get"),
        ("/{id}", "get"),
        ("/{id}", "patch"),
        ("/{id}", "delete"),
        ("/{id}/revoke", "post"),
        ("/{id}/reactivate", "post"),
        ("/{id}/roll", "post"),
        ("/{id}/events", "get"),
        ("/events", "get"),
        ("/catalog", "get"),
        ("/me", "get"),
        ("/openapi.json", "get"),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let documented: usize = paths
        .values()
        .map(|p| p.as_object().expect("item").len())
        .sum();
    assert_eq!(
        documented,
        routes.len(),
        "every operation documented is a route"
    );
    for (path, method) in routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        let statuses: Vec<&String> = op["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .collect();
        // Which statuses each route can answer, from the handlers' code.
        let success = match (path, method) {
            ("/", "post") | ("/{id}/roll", _) => "201",
            ("/{id}", "delete") => "204",
            _ => "200",
        };
        let mut may: Vec<&str> = vec![success];
        if path != "/openapi.json" {
            may.extend(["400", "401", "403", "429", "503"]);
        }
        if path.starts_with("/{id}") || path == "/events" {
            may.push("404");
        }
        if matches!(
            (path, method),
            ("/", "post") | ("/{id}", "patch") | ("/{id}/roll", _)
        ) {
            may.extend(["413", "415", "422"]);
        }
        if matches!(
            (path, method),
            ("/", "get") | ("/{id}/events", _) | ("/events", _)
        ) {
            may.push("422");
        }
        if matches!(path, "/{id}/reactivate" | "/{id}/roll") {
            may.push("409");
        }
        for s in &statuses {
            assert!(
                may.contains(&s.as_str()),
                "{method} {path} documents {s}, which it cannot answer"
            );
        }
        for s in &may {
            assert!(
                statuses.iter().any(|d| d.as_str() == *s),
                "{method} {path} can answer {s}, undocumented"
            );
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "x-api-key");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
}

/// The document passes an independent validator, `openapi-spec-validator`
/// from PyPI (`.ci/run` installs it in a venv and puts it on `PATH`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_validates() {
    let s = example().await;
    let res = s
        .http
        .get(format!("{}/api-keys/openapi.json", s.base))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK, "served without a key");
    let text = res.text().await.expect("body");
    let dir = common::TempDir::new("openapi");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).expect("write");
    let validator =
        std::env::var("OPENAPI_SPEC_VALIDATOR").unwrap_or_else(|_| "openapi-spec-validator".into());
    let run = std::process::Command::new(&validator)
        .arg("--schema")
        .arg("3.1")
        .arg(&file)
        .output();
    match run {
        Ok(out) => assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{validator} cannot run under CI=true: {e}")
        }
        Err(e) => common::skip(
            "the_served_openapi_document_validates",
            &format!("{validator} cannot run ({e}); pip install openapi-spec-validator"),
        ),
    }
}

/// Every admin key lost (here: revoked by mistake, and the admin tenant
/// still holds keys, so no bootstrap key comes): the operator runs the
/// example with `--recover-admin` against the same database and gets a
/// new admin key, recorded in the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_recovers_admin_access() {
    use common::server_process::{example_binary, Instance};
    let Some(bin) = example_binary() else { return };
    let dir = common::TempDir::new("recovery");
    let db = dir.path().join("keys.db");
    let db = db.to_str().expect("utf-8 path");
    let http = reqwest::Client::new();
    let mut server = Instance::spawn(&bin, &[("KEYWARD_DB", db)], &[]);
    let admin = server.started().expect("a bootstrap key");
    let list = |base: String, token: String| {
        let http = http.clone();
        async move {
            http.get(format!("{base}/api-keys"))
                .header("x-api-key", token)
                .send()
                .await
                .expect("send")
                .status()
        }
    };
    let me: Value = http
        .get(format!("{}/api-keys/me", server.base))
        .header("x-api-key", &admin)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let admin_id = me["actor"]
        .as_str()
        .expect("actor")
        .trim_start_matches("key:")
        .to_string();
    let res = http
        .post(format!("{}/api-keys/{admin_id}/revoke", server.base))
        .header("x-api-key", &admin)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        list(server.base.clone(), admin.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    drop(server);

    // Twice: each run mints one more key. The environment variable that
    // would mint at every restart does nothing.
    for (env, args) in [
        (vec![("KEYWARD_DB", db)], vec!["--recover-admin"]),
        (
            vec![("KEYWARD_DB", db), ("KEYWARD_RECOVER_ADMIN", "1")],
            vec!["--recover-admin"],
        ),
    ] {
        let out = std::process::Command::new(&bin)
            .envs(env.iter().copied())
            .args(&args)
            .output()
            .expect("run the recovery");
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{printed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !printed.contains("listening"),
            "recovery mints and exits: {printed}"
        );
        let token = printed
            .split_whitespace()
            .find(|w| w.starts_with("sk_"))
            .unwrap_or_else(|| panic!("a new key in {printed:?}"))
            .to_string();
        let mut server = Instance::spawn(&bin, &[("KEYWARD_DB", db)], &[]);
        assert!(
            server.started().is_none(),
            "no bootstrap key: the tenant holds keys"
        );
        assert_eq!(
            list(server.base.clone(), token.clone()).await,
            StatusCode::OK
        );
        let events: Value = http
            .get(format!("{}/api-keys/events", server.base))
            .header("x-api-key", &token)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(events["data"][0]["action"], "create", "{events}");
        assert_eq!(events["data"][0]["actor"], "operator-recovery", "{events}");
        // The recovered admin can bring the lost key back.
        let res = http
            .post(format!("{}/api-keys/{admin_id}/reactivate", server.base))
            .header("x-api-key", &token)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), StatusCode::OK);
    }
    let mut server = Instance::spawn(
        &bin,
        &[("KEYWARD_DB", db), ("KEYWARD_RECOVER_ADMIN", "1")],
        &[],
    );
    assert!(
        server.started().is_none(),
        "no key minted: the service just starts"
    );
}
