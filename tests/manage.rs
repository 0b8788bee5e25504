//! The management router (`keyward::http::manage`) over real HTTP, as the
//! example service nests it at `/api-keys`: every route, every defect a
//! first user found, paging, the audit routes, and who may act.

mod common;

use async_trait::async_trait;
use axum::Router;
use chrono::Duration;
use common::example::{code, example, serve, server, Service};
use http::request::Parts;
use keyward::http::manage::{Access, Management, ResolveActor};
use keyward::http::ApiError;
use keyward::{Actor, Keyward, MemoryAuditSink, MemoryStore, NewKey};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

impl Service {
    async fn patch(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, b) = self.call(Method::PATCH, path, Some(key), Some(body)).await;
        (s, b)
    }

    async fn delete(&self, path: &str, key: &str) -> StatusCode {
        self.call(Method::DELETE, path, Some(key), None).await.0
    }

    async fn post_empty(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let (s, _, b) = self.call(Method::POST, path, Some(key), None).await;
        (s, b)
    }

    /// Status of a protected call with `token`.
    async fn contacts(&self, token: &str) -> StatusCode {
        self.get("/v1/contacts", Some(token)).await.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactivating_an_expired_key_is_a_409_with_a_readable_message() {
    let s = example().await;
    let (token, id) = s
        .create(json!({"name": "temp", "permissions": ["contacts:read"], "expires_in_seconds": 60}))
        .await;
    assert_eq!(s.contacts(&token).await, StatusCode::OK);
    s.clock.advance(Duration::seconds(61));
    assert_eq!(s.contacts(&token).await, StatusCode::UNAUTHORIZED);
    let (status, body) = s
        .post_empty(&format!("/api-keys/{id}/reactivate"), &s.admin)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "not_active"),
        "{body}"
    );
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("expired"), "{message}");
    for rust in ["Expired", "NotActive", "{", "KeyStatus"] {
        assert!(!message.contains(rust), "Rust formatting in {message:?}");
    }
    // Nothing changed: the key is still expired and still refused.
    let (_, _, key) = s.get(&format!("/api-keys/{id}"), Some(&s.admin)).await;
    assert_eq!(key["status"], "expired");
    assert_eq!(s.contacts(&token).await, StatusCode::UNAUTHORIZED);

    // A revoked, expired key cannot come back either.
    let (token, id) = s
        .create(
            json!({"name": "temp2", "permissions": ["contacts:read"], "expires_in_seconds": 60}),
        )
        .await;
    let (status, _) = s
        .post_empty(&format!("/api-keys/{id}/revoke"), &s.admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    s.clock.advance(Duration::seconds(61));
    let (status, body) = s
        .post_empty(&format!("/api-keys/{id}/reactivate"), &s.admin)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "not_active"),
        "{body}"
    );
    assert_eq!(s.contacts(&token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_away_key_cannot_be_reactivated() {
    let s = example().await;
    let (old, id) = s
        .create(json!({"name": "ci", "permissions": ["contacts:read"]}))
        .await;
    let (status, _, rolled) = s
        .post(
            &format!("/api-keys/{id}/roll"),
            &s.admin,
            json!({"grace_seconds": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rolled}");
    let (status, body) = s
        .post_empty(&format!("/api-keys/{id}/reactivate"), &s.admin)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "rolled_away"),
        "{body}"
    );
    let new_id = rolled["key"]["id"].as_str().expect("id");
    assert!(body["error"]["message"]
        .as_str()
        .expect("message")
        .contains(new_id));
    assert_eq!(s.contacts(&old).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roll_needs_a_stated_grace_and_keeps_the_old_key_for_it() {
    let s = example().await;
    let (old, id) = s
        .create(json!({"name": "ci", "permissions": ["contacts:read"]}))
        .await;
    for (body, want_code, field) in [
        (json!({}), "missing_field", "grace_seconds"),
        (
            json!({"grace_seconds": -1}),
            "invalid_grace",
            "grace_seconds",
        ),
        (
            json!({"grace_seconds": "1h"}),
            "invalid_field",
            "grace_seconds",
        ),
        (
            json!({"grace_seconds": 5, "grace": 5}),
            "unknown_field",
            "grace",
        ),
    ] {
        let (status, _, err) = s
            .post(&format!("/api-keys/{id}/roll"), &s.admin, body.clone())
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::UNPROCESSABLE_ENTITY, want_code),
            "{body}: {err}"
        );
        assert_eq!(err["error"]["field"], field, "{err}");
        // Refused: the old key was not touched.
        assert_eq!(s.contacts(&old).await, StatusCode::OK, "{body}");
    }
    let (status, headers, rolled) = s
        .post(
            &format!("/api-keys/{id}/roll"),
            &s.admin,
            json!({"grace_seconds": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rolled}");
    assert_eq!(headers["cache-control"], "no-store");
    let new = rolled["token"].as_str().expect("token");
    assert_eq!(rolled["key"]["rolled_from"], id);
    assert_eq!(s.contacts(new).await, StatusCode::OK);
    assert_eq!(s.contacts(&old).await, StatusCode::OK, "within the grace");
    s.clock.advance(Duration::seconds(3601));
    assert_eq!(
        s.contacts(&old).await,
        StatusCode::UNAUTHORIZED,
        "after the grace"
    );
    assert_eq!(s.contacts(new).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_the_json_error_shape() {
    let s = example().await;
    // 405: a JSON body, and the Allow header.
    let (status, headers, body) = s.call(Method::PUT, "/api-keys", Some(&s.admin), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    assert!(headers.contains_key("allow"));
    let (status, _, body) = s
        .call(Method::POST, "/api-keys/abcdefgh", Some(&s.admin), None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    // 404 inside the router and out.
    for path in [
        "/api-keys/abcdefgh/nothing",
        "/api-keys/a/b/c",
        "/elsewhere",
    ] {
        let (status, _, body) = s.get(path, Some(&s.admin)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{path}"
        );
    }
    // A path id that cannot even be decoded is a key that does not exist.
    let (status, headers, body) = s.get("/api-keys/%FF%FE", Some(&s.admin)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{body}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    // 415.
    let res = s
        .http
        .post(format!("{}/api-keys", s.base))
        .header("x-api-key", &s.admin)
        .header("content-type", "text/plain")
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = res.json().await.expect("json");
    assert_eq!(code(&body), "unsupported_media_type");
    // 413 past axum's 2 MB body limit.
    let res = s
        .http
        .post(format!("{}/api-keys", s.base))
        .header("x-api-key", &s.admin)
        .header("content-type", "application/json")
        .body(format!(r#"{{"name":"{}"}}"#, "x".repeat(3 << 20)))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = res.json().await.expect("json");
    assert_eq!(code(&body), "body_too_large");
    // 401 without a key, before anything else is looked at.
    let (status, headers, body) = s
        .call(Method::POST, "/api-keys", None, Some(json!({"bogus": 1})))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert!(headers.contains_key("www-authenticate"));
    // Every answer, refusals included, is no-store.
    assert_eq!(headers["cache-control"], "no-store");
    // Unknown query parameters are named.
    let (status, _, body) = s.get("/api-keys?colour=red", Some(&s.admin)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_query"),
        "{body}"
    );
    assert_eq!(body["error"]["field"], "colour");
    let (status, _, body) = s.get("/api-keys?limit=many", Some(&s.admin)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_query"),
        "{body}"
    );
    assert_eq!(body["error"]["field"], "limit");
    let (status, _, body) = s.get("/api-keys?cursor=nonsense", Some(&s.admin)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_cursor"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_expiry_names_the_field_that_was_sent() {
    let s = example().await;
    for seconds in [
        json!(0),
        json!(-5),
        json!(i64::MAX),
        json!(400_000_000_000_i64),
    ] {
        let (status, _, body) = s
            .post(
                "/api-keys",
                &s.admin,
                json!({"name": "x", "expires_in_seconds": seconds}),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_expiry"),
            "{seconds}: {body}"
        );
        assert_eq!(
            body["error"]["field"], "expires_in_seconds",
            "{seconds}: {body}"
        );
    }
    let (status, _, body) = s
        .post(
            "/api-keys",
            &s.admin,
            json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_expiry"),
        "{body}"
    );
    assert_eq!(body["error"]["field"], "expires_at");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_newest_first_paged_and_filtered() {
    let s = example().await;
    let mut made = Vec::new();
    for name in ["alpha", "Beta deploy", "gamma", "delta deploy", "epsilon"] {
        s.clock.advance(Duration::seconds(1));
        made.push(
            s.create(json!({"name": name, "permissions": ["contacts:read"]}))
                .await
                .1,
        );
    }
    let (_, _, revoked) = s
        .post(
            &format!("/api-keys/{}/revoke", made[1]),
            &s.admin,
            json!(null),
        )
        .await;
    assert_eq!(revoked["status"], "revoked");
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|k| k["id"].as_str().expect("id").to_string())
            .collect()
    };
    // Newest first: the five, then the admin key made before them.
    let (status, _, all) = s.get("/api-keys", Some(&s.admin)).await;
    assert_eq!(status, StatusCode::OK);
    let newest: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(ids(&all)[..5], newest[..]);
    assert_eq!(all["data"].as_array().expect("data").len(), 6);
    assert!(all["next_cursor"].is_null());
    // Pages of two, following the cursor, see every key once.
    let mut seen = Vec::new();
    let mut path = "/api-keys?limit=2".to_string();
    loop {
        let (status, _, page) = s.get(&path, Some(&s.admin)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page["data"].as_array().expect("data").len() <= 2);
        // A key created while paging does not shift the pages.
        if seen.is_empty() {
            s.clock.advance(Duration::seconds(1));
            s.create(json!({"name": "late"})).await;
        }
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api-keys?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids(&all));
    // Filters: status and a case-blind name search.
    let (_, _, active) = s.get("/api-keys?status=revoked", Some(&s.admin)).await;
    assert_eq!(ids(&active), vec![made[1].clone()]);
    let (_, _, found) = s.get("/api-keys?name=DEPLOY", Some(&s.admin)).await;
    assert_eq!(ids(&found), vec![made[3].clone(), made[1].clone()]);
    let (_, _, both) = s
        .get("/api-keys?name=deploy&status=active", Some(&s.admin))
        .await;
    assert_eq!(ids(&both), vec![made[3].clone()]);
    // A tenant outside the caller's subtree is refused; a malformed one is a 400.
    let (status, _, body) = s.get("/api-keys?tenant=other", Some(&s.admin)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    let (status, _, body) = s.get("/api-keys?tenant=a/../b", Some(&s.admin)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_tenant"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_patch_changes_nothing() {
    let s = example().await;
    let (token, id) = s
        .create(json!({"name": "before", "permissions": ["contacts:read"], "rate_limit_per_minute": 100}))
        .await;
    let (_, _, before) = s.get(&format!("/api-keys/{id}"), Some(&s.admin)).await;
    // A lesser manager: may change keys, but lacks contacts:write.
    let (lesser, _) = s
        .create(json!({"name": "lesser", "permissions": ["api_keys:write", "contacts:read"]}))
        .await;
    let refusals = [
        (
            &s.admin,
            json!({"name": "after", "permissions": ["contacts:fly"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_permission",
        ),
        (
            &s.admin,
            json!({"name": "after", "rate_limit_per_minute": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_rate_limit",
        ),
        (
            &s.admin,
            json!({"name": "", "permissions": ["contacts:write"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            &s.admin,
            json!({"name": "after", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_field",
        ),
        (
            &lesser,
            json!({"name": "after", "permissions": ["contacts:write"]}),
            StatusCode::FORBIDDEN,
            "permission_escalation",
        ),
    ];
    for (key, body, want, want_code) in refusals {
        let (status, err) = s.patch(&format!("/api-keys/{id}"), key, body.clone()).await;
        assert_eq!((status, code(&err)), (want, want_code), "{body}: {err}");
        let (_, _, now) = s.get(&format!("/api-keys/{id}"), Some(&s.admin)).await;
        assert_eq!(now, before, "{body} changed the key");
    }
    assert_eq!(s.contacts(&token).await, StatusCode::OK);
    // And an accepted one changes all three.
    let (status, after) = s
        .patch(&format!("/api-keys/{id}"), &s.admin, json!({"name": "after", "permissions": ["contacts:write"], "rate_limit_per_minute": null}))
        .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(
        (after["name"].as_str(), after["rate_limit"].is_null()),
        (Some("after"), true)
    );
    assert_eq!(
        after["permissions"],
        json!(["contacts:read", "contacts:write"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_and_the_audit_routes_follow_a_key() {
    let s = example().await;
    let (_, _, me) = s.get("/api-keys/me", Some(&s.admin)).await;
    assert_eq!(me["tenant"], server::ADMIN_TENANT);
    let (_, _, catalog) = s.get("/api-keys/catalog", Some(&s.admin)).await;
    let contacts = &catalog["resources"][0];
    assert_eq!(contacts["name"], "contacts");
    assert_eq!(contacts["permissions"][1]["name"], "contacts:write");
    assert_eq!(
        contacts["permissions"][1]["implies"],
        json!(["contacts:read"])
    );

    let (token, id) = s
        .create(json!({"name": "zap", "permissions": ["contacts:read"]}))
        .await;
    let (status, _) = s
        .post_empty(&format!("/api-keys/{id}/revoke"), &s.admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.contacts(&token).await, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .post_empty(&format!("/api-keys/{id}/reactivate"), &s.admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.contacts(&token).await, StatusCode::OK);
    let (_, _, rolled) = s
        .post(
            &format!("/api-keys/{id}/roll"),
            &s.admin,
            json!({"grace_seconds": 60}),
        )
        .await;
    let new_id = rolled["key"]["id"].as_str().expect("id").to_string();

    let (status, _, events) = s
        .get(&format!("/api-keys/{id}/events"), Some(&s.admin))
        .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let actions: Vec<&str> = events["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    // The refused verification while it was revoked is in its trail too.
    assert_eq!(
        actions,
        ["roll", "reactivate", "verify", "revoke", "create"],
        "newest first"
    );
    assert_eq!(events["data"][2]["outcome"], "denied");
    assert_eq!(events["data"][0]["related_key_id"], new_id.as_str());
    // The new key's trail shows the roll that made it.
    let (_, _, new_events) = s
        .get(&format!("/api-keys/{new_id}/events"), Some(&s.admin))
        .await;
    assert_eq!(new_events["data"][0]["action"], "roll");
    // Paged.
    let (_, _, first) = s
        .get(&format!("/api-keys/{id}/events?limit=3"), Some(&s.admin))
        .await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, _, second) = s
        .get(
            &format!("/api-keys/{id}/events?limit=3&cursor={cursor}"),
            Some(&s.admin),
        )
        .await;
    let rest: Vec<&str> = second["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(rest, ["revoke", "create"]);
    assert!(second["next_cursor"].is_null());
    // The tenant's trail keeps a deleted key's events.
    assert_eq!(
        s.delete(&format!("/api-keys/{id}"), &s.admin).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.get(&format!("/api-keys/{id}"), Some(&s.admin)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get(&format!("/api-keys/{id}/events"), Some(&s.admin))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, _, tenant) = s.get("/api-keys/events?limit=200", Some(&s.admin)).await;
    let deleted: Vec<&Value> = tenant["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|e| e["key_id"] == id.as_str())
        .collect();
    let actions: Vec<&str> = deleted
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        ["delete", "roll", "reactivate", "verify", "revoke", "create"]
    );
    let (status, _, body) = s.get("/api-keys/events?tenant=other", Some(&s.admin)).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_reads_but_cannot_write() {
    let s = example().await;
    let (reader, _) = s
        .create(json!({"name": "auditor", "permissions": ["api_keys:read"]}))
        .await;
    let (status, _, _) = s.get("/api-keys", Some(&reader)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = s.post("/api-keys", &reader, json!({"name": "x"})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    assert_eq!(body["error"]["permission"], "api_keys:write");
    // A key with neither may not even read.
    let (plain, _) = s
        .create(json!({"name": "plain", "permissions": ["contacts:read"]}))
        .await;
    let (status, _, body) = s.get("/api-keys", Some(&plain)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    assert_eq!(body["error"]["permission"], "api_keys:read");
}

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
