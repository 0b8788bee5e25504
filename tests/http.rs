//! The HTTP adapter and the example service over real HTTP: each test
//! serves a router on a random loopback port and drives it with reqwest.

mod common;

use common::example::{code, example, serve, server};

use axum::routing::get;
use axum::Router;
use chrono::Duration;
use keyward::http::{require, ApiError, Authenticated, KeySource, KeywardLayer};
use keyward::{Actor, Keyward, NewKey};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status_code_and_json_shape() {
    let s = example().await;

    // 401: missing, exactly the documented body.
    let (status, _, body) = s.get("/v1/contacts", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"error":{"code":"unauthorized","message":"Missing or invalid API key."}})
    );
    // 401: malformed (no prefix: it was not a key) and unknown (prefix).
    let (status, _, body) = s.get("/v1/contacts", Some("sk_nope")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert!(body["error"].get("key").is_none());
    let unknown = common::forge::unknown_token(42);
    let (status, _, body) = s.get("/v1/contacts", Some(&unknown)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert_eq!(body["error"]["key"], json!(&unknown[..12]));
    assert!(
        !body.to_string().contains(&unknown[12..]),
        "never the secret"
    );

    // 200, then 403 naming the permission and the key.
    let (token, id) = s
        .create(json!({"name": "reader", "permissions": ["contacts:read"]}))
        .await;
    let (status, _, _) = s.get("/v1/contacts", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = s.post("/v1/contacts", &token, json!({"name": "Ada"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code(&body), "forbidden");
    assert_eq!(body["error"]["permission"], "contacts:write");
    assert_eq!(body["error"]["key"], json!(&token[..12]));
    assert!(!body.to_string().contains(&token[12..]));

    // 401 revoked.
    let (status, _, _) = s
        .post(&format!("/api-keys/{id}/revoke"), &s.admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = s.get("/v1/contacts", Some(&token)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "api_key_revoked")
    );

    // 401 expired, with the seed's message.
    let (token, _) = s
        .create(json!({"name": "temp", "permissions": ["contacts:read"], "expires_in_seconds": 60}))
        .await;
    s.clock.advance(Duration::seconds(61));
    let (status, _, body) = s.get("/v1/contacts", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["error"],
        json!({"code":"api_key_expired","message":"API key has expired","key":&token[..12]})
    );

    // 429 rate_limited with Retry-After.
    let (token, _) = s
        .create(
            json!({"name": "slow", "permissions": ["contacts:read"], "rate_limit_per_minute": 2}),
        )
        .await;
    for _ in 0..2 {
        assert_eq!(s.get("/v1/contacts", Some(&token)).await.0, StatusCode::OK);
    }
    let (status, headers, body) = s.get("/v1/contacts", Some(&token)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(headers["retry-after"], "30");
    assert_eq!(body["error"]["retry_after_seconds"], 30);

    // 429 usage_exceeded, 429 quota_exceeded (keys made with the library).
    let boss = Actor::new("boss", "quota-tenant")
        .permissions(s.keys.catalog().all())
        .may_manage_keys(true);
    let once = s
        .keys
        .create(
            &boss,
            NewKey::new("once")
                .permissions(["contacts:read"])
                .remaining(1),
        )
        .await
        .expect("create");
    let once = once.token.expose_secret().to_string();
    assert_eq!(s.get("/v1/contacts", Some(&once)).await.0, StatusCode::OK);
    let (status, headers, body) = s.get("/v1/contacts", Some(&once)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
        "the tenant's 1/min quota went first"
    );
    assert_eq!(headers["retry-after"], "60");
    s.clock.advance(Duration::minutes(1));
    let (status, headers, body) = s.get("/v1/contacts", Some(&once)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "usage_exceeded")
    );
    assert!(headers.get("retry-after").is_none(), "no time is known");

    // 401 inactive: unused for 90 days.
    let (token, _) = s
        .create(json!({"name": "idle", "permissions": ["contacts:read"]}))
        .await;
    s.clock.advance(Duration::days(91));
    // The admin key is idle too by now: refresh nothing, just check.
    let (status, _, body) = s.get("/v1/contacts", Some(&token)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "api_key_inactive")
    );

    // 503: the database is gone; a key not in the cache cannot be checked.
    s.store.pool().close().await;
    let (status, headers, body) = s.get("/v1/contacts", Some(&unknown)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
    );
    assert_eq!(headers["retry-after"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_header_styles_work_and_other_schemes_do_not() {
    let s = example().await;
    let (token, _) = s
        .create(json!({"name": "ci", "permissions": ["contacts:read"]}))
        .await;
    let url = format!("{}/v1/contacts", s.base);
    for (name, value) in [
        ("x-api-key", token.clone()),
        ("X-API-KEY", format!("  {token} ")),
        ("authorization", format!("Bearer {token}")),
        ("authorization", format!("bearer {token}")),
    ] {
        let res = s
            .http
            .get(&url)
            .header(name, value)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), StatusCode::OK, "{name}");
    }
    for (name, value) in [
        ("authorization", format!("Basic {token}")),
        ("authorization", token.clone()),
        ("x-other-key", token.clone()),
    ] {
        let res = s
            .http
            .get(&url)
            .header(name, value)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{name}");
    }
    // Two keys, in one header or two: refused as ambiguous (RFC 6750
    // §3.1), never guessed.
    for pairs in [
        [("x-api-key", token.clone()), ("x-api-key", s.admin.clone())],
        [
            ("authorization", format!("Bearer {token}")),
            ("authorization", format!("Bearer {}", s.admin)),
        ],
        [
            ("x-api-key", token.clone()),
            ("authorization", format!("Bearer {}", s.admin)),
        ],
    ] {
        let mut req = s.http.get(&url);
        for (name, value) in pairs {
            req = req.header(name, value);
        }
        let res = req.send().await.expect("send");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            res.headers()["www-authenticate"],
            r#"Bearer realm="api", error="invalid_request""#
        );
        let body: Value = res.json().await.expect("json");
        assert_eq!(code(&body), "invalid_request");
    }
}

/// A router with tenant checking on, and the bearer header only.
async fn tenant_router(keys: &Keyward) -> String {
    async fn whoami(key: Authenticated) -> String {
        key.tenant().to_string()
    }
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route_layer(require(keys.catalog(), "contacts:read").expect("permission"))
        .layer(
            KeywardLayer::new(keys.clone())
                .key_sources([KeySource::Bearer])
                .tenant_header(axum::http::HeaderName::from_static("x-tenant-name")),
        );
    serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_header_is_checked_when_turned_on() {
    let s = example().await;
    let acme = Actor::new("boss", "acme")
        .permissions(s.keys.catalog().all())
        .may_manage_keys(true);
    let key = s
        .keys
        .create(
            &acme,
            NewKey::new("acme key").permissions(["contacts:read"]),
        )
        .await
        .expect("create");
    let token = key.token.expose_secret().to_string();
    let base = tenant_router(&s.keys).await;
    let get = |tenant: Option<&'static str>| {
        let mut req = s.http.get(format!("{base}/whoami")).bearer_auth(&token);
        if let Some(t) = tenant {
            req = req.header("x-tenant-name", t);
        }
        req.send()
    };
    let res = get(Some("acme")).await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.expect("body"), "acme");
    let res = get(Some("globex")).await.expect("send");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(code(&body), "wrong_tenant");
    let res = get(None).await.expect("send");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.expect("json");
    assert_eq!(code(&body), "tenant_required");
    // Finding 3 over HTTP: tricks are refused as invalid, never matched.
    for trick in [
        "acme/",
        "acme//x",
        "acme/../globex",
        "acme/%",
        "acme/*",
        "acme/.",
    ] {
        let res = get(Some(trick)).await.expect("send");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{trick}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(code(&body), "invalid_tenant", "{trick}");
    }
    // A second tenant header is refused, not ignored.
    let res = s
        .http
        .get(format!("{base}/whoami"))
        .bearer_auth(&token)
        .header("x-tenant-name", "acme")
        .header("x-tenant-name", "globex")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.expect("json");
    assert_eq!(code(&body), "invalid_request");
}

/// Finding 9 of step 6: RFC 9110 §15.5.2 / RFC 6750 §3 challenges on
/// every 401 and 403, `no-store` on every response carrying a token, and
/// a `PATCH` that changes all or nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_no_store_and_all_or_nothing_patch() {
    let s = example().await;
    let challenge = |h: &HeaderMap| {
        h.get("www-authenticate")
            .map(|v| v.to_str().expect("ascii").to_string())
    };
    let (status, headers, _) = s.get("/v1/contacts", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&headers).as_deref(),
        Some(r#"Bearer realm="api""#)
    );
    let (status, headers, _) = s.get("/v1/contacts", Some("sk_nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&headers).as_deref(),
        Some(r#"Bearer realm="api", error="invalid_token""#)
    );
    let (reader, reader_id) = s
        .create(json!({"name": "reader", "permissions": ["contacts:read"]}))
        .await;
    let (status, headers, body) = s.post("/v1/contacts", &reader, json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        challenge(&headers).as_deref(),
        Some(r#"Bearer realm="api", error="insufficient_scope", scope="contacts:write""#)
    );
    let (status, _, _) = s
        .post(
            &format!("/api-keys/{reader_id}/revoke"),
            &s.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = s.get("/v1/contacts", Some(&reader)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "api_key_revoked")
    );
    assert_eq!(
        challenge(&headers).as_deref(),
        Some(r#"Bearer realm="api", error="invalid_token""#)
    );

    // Every response that carries a token is never cached.
    let (status, headers, created) = s
        .post(
            "/api-keys",
            &s.admin,
            json!({"name": "zapier", "permissions": ["contacts:read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["cache-control"], "no-store");
    let id = created["key"]["id"].as_str().expect("id").to_string();
    let (status, headers, _) = s
        .post(
            &format!("/api-keys/{id}/roll"),
            &s.admin,
            json!({"grace_seconds": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["cache-control"], "no-store");
    let (_, new_id) = s.create(json!({"name": "patched"})).await;

    // PATCH is all or nothing: a bad permission leaves the name alone.
    let patch = |body: Value, key: String| {
        let path = format!("/api-keys/{new_id}");
        let s = &s;
        async move {
            s.call(reqwest::Method::PATCH, &path, Some(&key), Some(body))
                .await
        }
    };
    let (status, _, body) = patch(
        json!({"name": "renamed", "permissions": ["nope:read"]}),
        s.admin.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _, body) = patch(
        json!({"name": "renamed", "rate_limit_per_minute": 0}),
        s.admin.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, _, shown) = s.get(&format!("/api-keys/{new_id}"), Some(&s.admin)).await;
    assert_eq!(shown["name"], "patched");
    // And it sets a rate limit in the same write.
    let (status, _, body) = patch(
        json!({"name": "renamed", "rate_limit_per_minute": 30}),
        s.admin.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "renamed");
    assert!(body["rate_limit"].is_object(), "{body}");
}

/// Finding 2 over HTTP: a manager key holding less than the bootstrap
/// admin cannot rename, limit, downgrade, roll, revoke or delete it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lesser_manager_key_cannot_lock_out_the_admin() {
    let s = example().await;
    let admin_id = s
        .keys
        .verify(&s.admin)
        .await
        .expect("admin")
        .id()
        .to_string();
    let (lesser, _) = s
        .create(json!({
            "name": "lesser",
            "permissions": ["contacts:read", "api_keys:read", "api_keys:write"],
            "expires_in_seconds": 3600
        }))
        .await;
    let path = format!("/api-keys/{admin_id}");
    for (method, path, body) in [
        (
            reqwest::Method::PATCH,
            path.clone(),
            json!({"name": "pwned"}),
        ),
        (
            reqwest::Method::PATCH,
            path.clone(),
            json!({"permissions": ["contacts:read"]}),
        ),
        (
            reqwest::Method::PATCH,
            path.clone(),
            json!({"rate_limit_per_minute": 1}),
        ),
        (reqwest::Method::POST, format!("{path}/revoke"), json!({})),
        (
            reqwest::Method::POST,
            format!("{path}/roll"),
            json!({"grace_seconds": 0}),
        ),
        (reqwest::Method::DELETE, path.clone(), json!({})),
    ] {
        let (status, _, body) = s
            .call(method.clone(), &path, Some(&lesser), Some(body))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_eq!(code(&body), "key_outranks_actor", "{body}");
    }
    let (status, _, _) = s.get("/api-keys", Some(&s.admin)).await;
    assert_eq!(status, StatusCode::OK, "the admin key still works");
    // What the lesser key creates is bounded by it: it expires with it.
    let (status, _, created) = s
        .post(
            "/api-keys",
            &lesser,
            json!({"name": "child", "permissions": ["contacts:read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["key"]["expires_at"].is_string(), "{created}");
    let (status, _, body) = s
        .post(
            "/api-keys",
            &lesser,
            json!({"name": "forever", "expires_in_seconds": 86400}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "bound_exceeded")
    );
}

/// The problem+json renderer (RFC 9457), challenges included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problem_json_is_offered() {
    let s = example().await;
    async fn ok() -> &'static str {
        "ok"
    }
    let app = Router::new()
        .route("/x", get(ok))
        .route_layer(require(s.keys.catalog(), "contacts:write").expect("permission"))
        .layer(
            KeywardLayer::new(s.keys.clone())
                .problem_json()
                .realm("crm"),
        );
    let base = serve(app).await;
    let res = s.http.get(format!("{base}/x")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.headers()["www-authenticate"], r#"Bearer realm="crm""#);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["status"], 401);
    assert_eq!(body["code"], "unauthorized");
    let (reader, _) = s
        .create(json!({"name": "reader", "permissions": ["contacts:read"]}))
        .await;
    let res = s
        .http
        .get(format!("{base}/x"))
        .header("x-api-key", reader)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.headers()["www-authenticate"],
        r#"Bearer realm="crm", error="insufficient_scope", scope="contacts:write""#
    );
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["type"], "about:blank");
    assert_eq!(body["permission"], "contacts:write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_management_flow() {
    let s = example().await;
    let (token, id) = s
        .create(json!({"name": "Zapier", "permissions": ["contacts:write"], "metadata": {"team": "ops"}}))
        .await;
    assert!(token.starts_with(&format!("sk_{id}_")));
    // use: write implies read
    let (status, _, _) = s.post("/v1/contacts", &token, json!({"name": "Ada"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, body) = s.get("/v1/contacts", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["name"], "Ada");

    // list and get show the key without its secret
    let (_, _, list) = s.get("/api-keys", Some(&s.admin)).await;
    let listed = list["data"]
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["id"] == json!(id))
        .expect("listed");
    assert_eq!(listed["name"], "Zapier");
    assert_eq!(listed["status"], "active");
    assert!(listed["last_used_at"].is_string());
    assert!(
        !list.to_string().contains(&token[12..]),
        "no secret in lists"
    );

    // rename and re-permission
    let (status, _, body) = s
        .call(
            reqwest::Method::PATCH,
            &format!("/api-keys/{id}"),
            Some(&s.admin),
            Some(json!({"name": "Zapier (prod)", "permissions": ["contacts:read"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Zapier (prod)");
    assert_eq!(body["permissions"], json!(["contacts:read"]));
    let (status, _, _) = s.post("/v1/contacts", &token, json!({"name": "Bob"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "re-permission took effect");

    // revoke -> 401 -> reactivate -> 200
    s.post(&format!("/api-keys/{id}/revoke"), &s.admin, json!({}))
        .await;
    assert_eq!(
        s.get("/v1/contacts", Some(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _, body) = s
        .post(&format!("/api-keys/{id}/reactivate"), &s.admin, json!({}))
        .await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("active"))
    );
    assert_eq!(s.get("/v1/contacts", Some(&token)).await.0, StatusCode::OK);

    // roll with a grace period: both work, then only the new one
    let (status, _, rolled) = s
        .post(
            &format!("/api-keys/{id}/roll"),
            &s.admin,
            json!({"grace_seconds": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rolled}");
    let new_token = rolled["token"].as_str().expect("token").to_string();
    let new_id = rolled["key"]["id"].as_str().expect("id").to_string();
    assert_eq!(rolled["key"]["rolled_from"], json!(id));
    assert_eq!(
        s.get("/v1/contacts", Some(&token)).await.0,
        StatusCode::OK,
        "old key in grace"
    );
    assert_eq!(
        s.get("/v1/contacts", Some(&new_token)).await.0,
        StatusCode::OK
    );
    s.clock.advance(Duration::seconds(3601));
    let (status, _, body) = s.get("/v1/contacts", Some(&token)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "api_key_expired")
    );
    assert_eq!(
        s.get("/v1/contacts", Some(&new_token)).await.0,
        StatusCode::OK
    );

    // delete -> 401, and the key is gone from the API
    let (status, _, _) = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api-keys/{new_id}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.get("/v1/contacts", Some(&new_token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _, body) = s.get(&format!("/api-keys/{new_id}"), Some(&s.admin)).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // a key without api_keys:* cannot manage keys
    let (reader, _) = s
        .create(json!({"name": "reader", "permissions": ["contacts:read"]}))
        .await;
    let (status, _, body) = s.post("/api-keys", &reader, json!({"name": "x"})).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    assert_eq!(body["error"]["permission"], "api_keys:write");
    // and a key manager cannot grant more than its key holds
    let (manager, _) = s
        .create(json!({"name": "manager", "permissions": ["api_keys:write", "contacts:read"]}))
        .await;
    let (status, _, body) = s
        .post(
            "/api-keys",
            &manager,
            json!({"name": "x", "permissions": ["contacts:write"]}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "permission_escalation"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_never_a_500() {
    let s = example().await;
    let url = format!("{}/api-keys", s.base);
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str, Option<&str>)> = vec![
        (
            s.http.post(&url).json(&json!({"permissions": []})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
            Some("name"),
        ),
        (
            s.http.post(&url).json(&json!({"name": 5})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("name"),
        ),
        (
            s.http
                .post(&url)
                .json(&json!({"name": "x", "permissions": "contacts:read"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("permissions"),
        ),
        (
            s.http
                .post(&url)
                .json(&json!({"name": "x", "color": "red"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_field",
            Some("color"),
        ),
        (
            s.http.post(&url).json(&json!({"name": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            Some("name"),
        ),
        (
            s.http
                .post(&url)
                .json(&json!({"name": "x", "permissions": ["contacts:fly"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_permission",
            Some("permissions"),
        ),
        (
            s.http
                .post(&url)
                .json(&json!({"name": "x", "expires_in_seconds": -5})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_expiry",
            Some("expires_in_seconds"),
        ),
        (
            s.http
                .post(&url)
                .json(&json!({"name": "x", "expires_at": "yesterday"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("expires_at"),
        ),
        (
            s.http
                .post(&url)
                .json(&json!({"name": "x", "rate_limit_per_minute": 0})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_rate_limit",
            Some("rate_limit_per_minute"),
        ),
        (
            s.http.post(&url).body("{\"name\": \"x\"}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        (
            s.http
                .post(&url)
                .header("content-type", "application/json")
                .body("{\"name\":"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
        ),
        (
            s.http
                .post(&url)
                .header("content-type", "application/json")
                .body(vec![0xff, 0xfe, 0x00]),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
        ),
        (
            s.http.get(format!("{url}/not-an-id")),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            s.http
                .post(format!("{url}/00000000/roll"))
                .json(&json!({"grace_seconds": -1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_grace",
            Some("grace_seconds"),
        ),
        (
            s.http.patch(format!("{url}/00000000")).json(&json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_update",
            None,
        ),
        (
            s.http.get(format!("{}/nowhere", s.base)),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
    ];
    for (i, (req, want, want_code, field)) in cases.into_iter().enumerate() {
        let res = req
            .header("x-api-key", &s.admin)
            .send()
            .await
            .expect("send");
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!((status, code(&body)), (want, want_code), "case {i}: {body}");
        assert_eq!(body["error"]["field"].as_str(), field, "case {i}: {body}");
    }

    // Headers: non-UTF-8 bytes, a huge key, a huge header set.
    let contacts = format!("{}/v1/contacts", s.base);
    let mut odd = HeaderMap::new();
    odd.insert(
        "x-api-key",
        HeaderValue::from_bytes(b"sk_\xff\xfe").expect("opaque bytes"),
    );
    let res = s
        .http
        .get(&contacts)
        .headers(odd)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let huge = "A".repeat(60_000);
    let res = s
        .http
        .get(&contacts)
        .header("x-api-key", &huge)
        .send()
        .await
        .expect("send");
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "a 60 kB key is just not a key"
    );
    let mut req = s.http.get(&contacts).header("x-api-key", &s.admin);
    for i in 0..200 {
        req = req.header(format!("x-pad-{i}"), "p".repeat(2_000));
    }
    match req.send().await {
        Ok(res) => assert!(
            res.status().is_client_error(),
            "400 KB of headers: a 4xx, got {}",
            res.status()
        ),
        // hyper may close the connection on a header section it will not read.
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    // The server is still fine.
    assert_eq!(
        s.get("/v1/contacts", Some(&s.admin)).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_can_replace_the_error_body() {
    let store = keyward::MemoryStore::new();
    let keys = Keyward::builder(store.clone(), server::catalog())
        .build()
        .expect("config");
    async fn ok() -> &'static str {
        "ok"
    }
    let app = Router::new()
        .route("/", get(ok))
        .layer(KeywardLayer::new(keys).error_renderer(|e: ApiError| {
            use axum::response::IntoResponse;
            (e.status, format!("denied: {}", e.code)).into_response()
        }));
    let base = serve(app).await;
    let res = Client::new().get(&base).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.text().await.expect("body"), "denied: unauthorized");
    assert_eq!(store.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_bootstraps_an_admin_key_once() {
    let dir = common::TempDir::new("server");
    let db = dir.path().join("keys.db");
    let (keys, first) = server::open(&db).await.expect("open");
    let token = first.expect("a bootstrap key on first start");
    keys.verify(&token).await.expect("the bootstrap key works");
    drop(keys);
    let (_, second) = server::open(&db).await.expect("reopen");
    assert!(second.is_none(), "printed once only");
}

/// Handlers' logs carry the key's display prefix and tenant from the
/// layer's span, and never the secret.
#[tokio::test]
async fn handler_logs_carry_the_prefix_and_tenant_never_the_secret() {
    use tower::{Layer, ServiceExt};
    let keys = Keyward::builder(keyward::MemoryStore::new(), common::catalog())
        .build()
        .expect("config");
    let new = NewKey::new("k").permissions(["contacts:read"]);
    let created = keys
        .create(&common::admin(&keys, "acme"), new)
        .await
        .expect("create");
    let token = created.token.expose_secret().to_string();
    let (out, _guard) = common::capture_logs(tracing::Level::INFO);
    let inner = tower::service_fn(|_req: axum::http::Request<String>| async {
        tracing::info!("handled");
        Ok::<_, std::convert::Infallible>(axum::http::Response::new(String::new()))
    });
    let svc = KeywardLayer::new(keys).layer(inner);
    let req = axum::http::Request::builder()
        .header("authorization", format!("Bearer {token}"))
        .body(String::new())
        .expect("request");
    let res = svc.oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), axum::http::StatusCode::OK);
    let logged = out.text();
    let line = logged
        .lines()
        .find(|l| l.contains("handled"))
        .unwrap_or_else(|| panic!("no handler log in {logged:?}"));
    assert!(line.contains(&format!("key={}", &token[..12])), "{line}");
    assert!(line.contains("tenant=acme"), "{line}");
    assert!(
        !logged.contains(&token[12..]),
        "the secret was logged: {logged}"
    );
}
