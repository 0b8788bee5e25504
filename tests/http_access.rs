//! Step 10's access rules over real HTTP: the client address (peer,
//! spoofed and trusted forwarding headers, IPv6), 403 `ip_not_allowed`,
//! `not_before`, named limits and costs, and the management API's fields
//! and policy refusals. Every server is on a random loopback port.

mod common;

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use chrono::Duration;
use keyward::http::manage::Management;
use keyward::http::{Authenticated, ClientAddress, KeywardLayer, ProxyHeader};
use keyward::{
    Actor, Catalog, Clock, IpAllowlist, Keyward, ManualClock, MemoryStore, NewKey, TenantPolicy,
};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

fn catalog() -> Catalog {
    Catalog::builder()
        .resource("contacts", ["read", "write"])
        .resource("tickets", ["read", "write"])
        .resource("api_keys", ["read", "write"])
        .role("support", ["contacts:read", "tickets:*"])
        .build()
        .expect("catalog")
}

fn keyward(clock: &ManualClock) -> Keyward {
    Keyward::builder(MemoryStore::new(), catalog())
        .clock(clock.clone())
        .nested_tenants(true)
        .tenant_policy(
            "strict/team",
            TenantPolicy::new().max_lifetime(Duration::days(366)),
        )
        .build()
        .expect("config")
}

fn admin(keys: &Keyward, tenant: &str) -> Actor {
    Actor::new("admin_1", tenant)
        .permissions(keys.catalog().all())
        .may_manage_keys(true)
}

async fn issue(keys: &Keyward, nets: Option<&str>) -> String {
    let mut new = NewKey::new("k").permissions(["contacts:read"]);
    if let Some(n) = nets {
        new = new.allowed_ips(n.parse::<IpAllowlist>().expect("allowlist"));
    }
    let issued = keys
        .create(&admin(keys, "acme"), new)
        .await
        .expect("created");
    issued.token.expose_secret().to_string()
}

async fn whoami(Authenticated(key): Authenticated) -> String {
    key.name().to_string()
}

/// A protected route behind `layer`, served on `bind` with peer
/// addresses recorded; the base URL, or `None` when that loopback address
/// cannot be bound here.
async fn serve_at(bind: &str, layer: KeywardLayer) -> Option<String> {
    let app = Router::new().route("/v1/me", get(whoami)).layer(layer);
    let listener = tokio::net::TcpListener::bind(bind).await.ok()?;
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await.expect("serve");
    });
    Some(match addr {
        SocketAddr::V6(a) => format!("http://[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => format!("http://{a}"),
    })
}

async fn serve(layer: KeywardLayer) -> String {
    serve_at("127.0.0.1:0", layer).await.expect("IPv4 loopback")
}

/// GET /v1/me with `token` and extra headers: (status, error code).
async fn me(base: &str, token: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut req = Client::new()
        .get(format!("{base}/v1/me"))
        .header("x-api-key", token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let text = res.text().await.expect("body");
    let code = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|b| b["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_is_ignored_without_trusted_proxies() {
    let clock = ManualClock::default();
    let keys = keyward(&clock);
    let office = issue(&keys, Some("203.0.113.0/24")).await;
    let local = issue(&keys, Some("127.0.0.0/8")).await;
    let base = serve(KeywardLayer::new(keys.clone())).await;
    let spoof = [
        ("x-forwarded-for", "203.0.113.5"),
        ("forwarded", "for=203.0.113.5"),
    ];
    // The peer is 127.0.0.1, whatever the headers claim.
    assert_eq!(
        me(&base, &office, &spoof).await,
        (StatusCode::FORBIDDEN, "ip_not_allowed".into())
    );
    assert_eq!(me(&base, &local, &spoof).await.0, StatusCode::OK);
    // A wrong secret is 401, never a hint about the address.
    let wrong = common::forge::same_id_other_secret(&office);
    assert_eq!(
        me(&base, &wrong, &[]).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
    let clock = ManualClock::default();
    let keys = keyward(&clock);
    let office = issue(&keys, Some("203.0.113.0/24, 2001:db8::/32")).await;
    let local = issue(&keys, Some("127.0.0.0/8")).await;
    let loopback = ["127.0.0.0/8".parse().expect("net")];
    let xff = KeywardLayer::new(keys.clone()).client_address(ClientAddress::behind_proxies(
        loopback,
        ProxyHeader::XForwardedFor,
    ));
    let base = serve(xff).await;
    let ok = (StatusCode::OK, String::new());
    let denied = (StatusCode::FORBIDDEN, "ip_not_allowed".to_string());
    let hdr = |v| [("x-forwarded-for", v)];
    assert_eq!(me(&base, &office, &hdr("203.0.113.5")).await, ok);
    // The proxy appended the real client after a hop the client wrote.
    assert_eq!(
        me(&base, &office, &hdr("203.0.113.5, 198.51.100.9")).await,
        denied
    );
    // Trusted hops on the right are skipped.
    assert_eq!(me(&base, &office, &hdr("203.0.113.5, 127.0.0.2")).await, ok);
    // IPv6 and IPv4-mapped clients, with ports.
    assert_eq!(me(&base, &office, &hdr("[2001:db8::7]:5000")).await, ok);
    assert_eq!(me(&base, &office, &hdr("::ffff:203.0.113.9")).await, ok);
    // The client is no longer the loopback proxy.
    assert_eq!(me(&base, &local, &hdr("203.0.113.5")).await, denied);
    // No header: the peer itself is the client.
    assert_eq!(me(&base, &local, &[]).await, ok);
    // Garbage where the client should be: no address, refused.
    assert_eq!(
        me(&base, &office, &hdr("203.0.113.5, garbage")).await,
        denied
    );

    let fwd = KeywardLayer::new(keys.clone()).client_address(ClientAddress::behind_proxies(
        loopback,
        ProxyHeader::Forwarded,
    ));
    let base = serve(fwd).await;
    let f = |v| [("forwarded", v)];
    assert_eq!(
        me(&base, &office, &f(r#"for="[2001:db8::1]:443";proto=https"#)).await,
        ok
    );
    assert_eq!(
        me(&base, &office, &f("for=203.0.113.1, for=198.51.100.1")).await,
        denied
    );
    // This proxy writes Forwarded: an X-Forwarded-For is the client's own.
    assert_eq!(me(&base, &office, &hdr("203.0.113.5")).await, denied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_peer_is_checked_as_itself() {
    let clock = ManualClock::default();
    let keys = keyward(&clock);
    let Some(base) = serve_at("[::1]:0", KeywardLayer::new(keys.clone())).await else {
        // Some containers have no IPv6 loopback; the address logic is
        // covered by the forwarded-header tests above either way.
        common::skip("an_ipv6_peer_is_checked_as_itself", "no IPv6 loopback here");
        return;
    };
    let six = issue(&keys, Some("::1/128")).await;
    let four = issue(&keys, Some("127.0.0.0/8")).await;
    assert_eq!(me(&base, &six, &[]).await.0, StatusCode::OK);
    assert_eq!(
        me(&base, &four, &[]).await,
        (StatusCode::FORBIDDEN, "ip_not_allowed".into())
    );
}

/// The management API and a protected route on one server; the admin's
/// token.
async fn managed(keys: &Keyward) -> (String, String) {
    let manage = Management::new(keys.clone())
        .base_path("/api-keys")
        .router()
        .expect("router");
    let app = Router::new()
        .route("/v1/me", get(whoami).layer(KeywardLayer::new(keys.clone())))
        .nest("/api-keys", manage);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await.expect("serve");
    });
    let root = NewKey::new("admin").permission_set(keys.catalog().all());
    let admin = keys
        .create(&admin(keys, "acme"), root)
        .await
        .expect("admin");
    (
        format!("http://{addr}"),
        admin.token.expose_secret().to_string(),
    )
}

async fn post(base: &str, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let res = Client::new()
        .post(format!("{base}{path}"))
        .header("x-api-key", token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_sets_and_shows_every_access_rule() {
    let clock = ManualClock::default();
    let keys = keyward(&clock);
    let (base, root) = managed(&keys).await;
    let start = clock.now() + Duration::hours(1);
    let (status, created) = post(
        &base,
        "/api-keys",
        &root,
        json!({
            "name": "llm",
            "roles": ["support"],
            "allowed_ips": ["127.0.0.1", "2001:db8::/32"],
            "not_before": start,
            "limits": [{"name": "tokens", "max": 100, "per_seconds": 60}],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = &created["key"];
    assert_eq!(key["roles"], json!(["support"]));
    assert_eq!(key["allowed_ips"], json!(["127.0.0.1/32", "2001:db8::/32"]));
    assert_eq!(
        key["limits"],
        json!([{"name": "tokens", "max": 100, "per_seconds": 60.0}])
    );
    assert_eq!(key["credits_spent"], json!(0));
    assert!(key["permissions"]
        .as_array()
        .expect("list")
        .contains(&json!("tickets:write")));
    let token = created["token"].as_str().expect("token").to_string();
    assert_eq!(
        me(&base, &token, &[]).await,
        (StatusCode::UNAUTHORIZED, "api_key_not_yet_valid".into())
    );
    clock.advance(Duration::hours(1));
    assert_eq!(me(&base, &token, &[]).await.0, StatusCode::OK);

    // Invalid fields are 422s naming the field.
    for (body, field, code) in [
        (
            json!({"name": "x", "allowed_ips": ["10.0.0.0/33"]}),
            "allowed_ips",
            "invalid_allowed_ips",
        ),
        (
            json!({"name": "x", "roles": ["nobody"]}),
            "roles",
            "unknown_role",
        ),
        (
            json!({"name": "x", "limits": [{"name": "Bad", "max": 1, "per_seconds": 1}]}),
            "limits",
            "invalid_limit",
        ),
        (
            json!({"name": "x", "expires_in_seconds": 60, "not_before": clock.now() + Duration::hours(2)}),
            "not_before",
            "invalid_not_before",
        ),
    ] {
        let (status, err) = post(&base, "/api-keys", &root, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        assert_eq!(
            (
                err["error"]["field"].as_str(),
                err["error"]["code"].as_str()
            ),
            (Some(field), Some(code))
        );
    }

    // PATCH clears the allowlist with null and replaces the limits.
    let id = key["id"].as_str().expect("id");
    let res = Client::new()
        .patch(format!("{base}/api-keys/{id}"))
        .header("x-api-key", &root)
        .json(&json!({"allowed_ips": null, "limits": []}))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), StatusCode::OK);
    let changed: Value = res.json().await.expect("json");
    assert_eq!(
        (changed["allowed_ips"].clone(), changed["limits"].clone()),
        (Value::Null, json!([]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_refusal_over_http_names_the_policy() {
    let clock = ManualClock::default();
    let keys = keyward(&clock);
    let boss = NewKey::new("strict admin")
        .tenant("strict")
        .permission_set(keys.catalog().all());
    let strict = keys
        .create(&admin(&keys, "strict"), boss)
        .await
        .expect("strict admin");
    let (base, _) = managed(&keys).await;
    let token = strict.token.expose_secret();
    // The policy of strict/team: a 400-day key and a key with no expiry
    // are refused, naming the policy; 300 days is fine.
    for body in [
        json!({"name": "long", "tenant": "strict/team", "expires_in_seconds": 400 * 86_400}),
        json!({"name": "forever", "tenant": "strict/team"}),
    ] {
        let (status, err) = post(&base, "/api-keys", token, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
        assert_eq!(err["error"]["code"], "policy_violation");
        assert_eq!(err["error"]["field"], "max_lifetime");
        assert!(err["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("max_lifetime"));
    }
    let ok = json!({"name": "ok", "tenant": "strict/team", "expires_in_seconds": 300 * 86_400});
    assert_eq!(
        post(&base, "/api-keys", token, ok).await.0,
        StatusCode::CREATED
    );
}
