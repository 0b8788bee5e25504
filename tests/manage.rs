//! The management router (`keyward::http::manage`) over real HTTP, as the
//! example service nests it at `/api-keys`: every route, every defect a
//! first user found, paging, the audit routes, and who may act.

mod common;

use chrono::Duration;
use common::example::{code, example, server, Service};
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
    // 413 past axum's 2 MB body limit. On a client of its own: the server
    // answers before reading the body and closes that connection, which a
    // shared pool could hand to the next request.
    let res = reqwest::Client::new()
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
