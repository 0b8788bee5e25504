//! The HTTP layer's own tests: key extraction, challenges, problem
//! JSON, and the layers around a plain tower service.

use super::error::retry_secs;
use super::headers::extract;
use super::*;
use crate::error::{Forbidden, KeyError, VerifyError};
use crate::{Actor, MemoryStore, NewKey};
use crate::{Catalog, Keyward, Verified};
use axum::response::IntoResponse;
use http::header::HeaderName;
use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use http::HeaderValue;
use http::{HeaderMap, Request, StatusCode};
use std::time::Duration;
use tower::{Layer, ServiceExt};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).expect("value"));
    }
    map
}

fn defaults() -> Vec<KeySource> {
    vec![
        KeySource::Header(HeaderName::from_static("x-api-key")),
        KeySource::Bearer,
    ]
}

#[test]
fn extract_reads_the_first_source_present() {
    let s = defaults();
    let got = |pairs: &[(&'static str, &str)]| extract(&headers(pairs), &s).ok().map(str::to_owned);
    assert_eq!(got(&[("x-api-key", " sk_a ")]), Some("sk_a".into()));
    assert_eq!(
        got(&[("authorization", "Bearer sk_b")]),
        Some("sk_b".into())
    );
    assert_eq!(
        got(&[("authorization", "BEARER   sk_b ")]),
        Some("sk_b".into())
    );
    let refused = |pairs: &[(&'static str, &str)]| extract(&headers(pairs), &s).err();
    for two in [
        &[("x-api-key", "sk_a"), ("authorization", "Bearer sk_b")][..],
        &[("x-api-key", "sk_a"), ("x-api-key", "sk_a")],
        &[
            ("authorization", "Bearer sk_a"),
            ("authorization", "Bearer sk_b"),
        ],
    ] {
        let e = refused(two).expect("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{two:?}");
        assert_eq!(e.code, "invalid_request");
    }
    // Basic beside an API key is not a second API key.
    assert_eq!(
        got(&[("x-api-key", "sk_a"), ("authorization", "Basic dXNlcg==")]),
        Some("sk_a".into())
    );
    assert_eq!(got(&[("authorization", "Basic sk_b")]), None);
    assert_eq!(got(&[("authorization", "Bearer")]), Some(String::new()));
    assert_eq!(got(&[("authorization", "sk_b")]), None);
    assert_eq!(got(&[]), None);
    let only_bearer = [KeySource::Bearer];
    assert!(extract(&headers(&[("x-api-key", "sk_a")]), &only_bearer).is_err());
}

/// Finding 9 of step 6: RFC 9110 §15.5.2 and RFC 6750 §3 challenges.
#[test]
fn challenges_follow_rfc_6750() {
    let challenge = |e: ApiError| {
        e.into_response()
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().expect("ascii").to_string())
    };
    assert_eq!(
        challenge(ApiError::unauthorized()).as_deref(),
        Some(r#"Bearer realm="api""#),
        "no credentials: a bare challenge"
    );
    for e in [
        VerifyError::Malformed,
        VerifyError::Invalid,
        VerifyError::Expired,
        VerifyError::Revoked,
        VerifyError::Inactive,
        VerifyError::WrongTenant,
    ] {
        assert_eq!(
            ApiError::from_verify(&e)
                .challenge("crm")
                .map(|v| v.to_str().expect("ascii").to_string())
                .as_deref(),
            Some(r#"Bearer realm="crm", error="invalid_token""#),
            "{e:?}"
        );
    }
    assert_eq!(
        challenge(ApiError::from_forbidden(&Forbidden::Missing(
            "contacts:write".into()
        )))
        .as_deref(),
        Some(r#"Bearer realm="api", error="insufficient_scope", scope="contacts:write""#)
    );
    assert_eq!(
        challenge(ApiError::invalid_request("two keys")).as_deref(),
        Some(r#"Bearer realm="api", error="invalid_request""#)
    );
    let limited = VerifyError::RateLimited {
        retry_after: chrono::Duration::seconds(1),
    };
    assert_eq!(challenge(ApiError::from_verify(&limited)), None);
    let tenant = VerifyError::InvalidTenant(crate::tenant::InvalidTenant::DotSegment);
    let e = ApiError::from_verify(&tenant);
    assert_eq!(
        (e.status, e.code),
        (StatusCode::BAD_REQUEST, "invalid_tenant")
    );
    let e = ApiError::from_key_error(&KeyError::InvalidTenant("a/../b".into()));
    assert_eq!(
        (e.status, e.code, e.field.as_deref()),
        (StatusCode::BAD_REQUEST, "invalid_tenant", Some("tenant"))
    );
}

#[tokio::test]
async fn problem_json_is_rfc_9457() {
    let e = ApiError::from_forbidden(&Forbidden::Missing("contacts:write".into()));
    let response = e.into_problem_response();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert!(response.headers().contains_key(WWW_AUTHENTICATE));
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["type"], "about:blank");
    assert_eq!(body["title"], "Forbidden");
    assert_eq!(body["status"], 403);
    assert_eq!(body["code"], "forbidden");
    assert_eq!(body["permission"], "contacts:write");
    assert!(body["detail"]
        .as_str()
        .is_some_and(|d| d.contains("contacts:write")));
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    assert_eq!(retry_secs(Duration::from_millis(1)), 1);
    assert_eq!(retry_secs(Duration::from_secs(30)), 30);
    assert_eq!(retry_secs(Duration::from_millis(30_001)), 31);
    let e = ApiError::from_verify(&VerifyError::RateLimited {
        retry_after: chrono::Duration::zero(),
    });
    let response = e.into_response();
    assert_eq!(response.headers()[RETRY_AFTER], "1", "never Retry-After: 0");
}

#[test]
fn http_codes_are_the_library_codes() {
    let secs = chrono::Duration::seconds(3);
    for e in [
        VerifyError::Expired,
        VerifyError::Revoked,
        VerifyError::Inactive,
        VerifyError::WrongTenant,
        VerifyError::RateLimited { retry_after: secs },
        VerifyError::QuotaExceeded { retry_after: secs },
        VerifyError::UsageExceeded,
    ] {
        assert_eq!(ApiError::from_verify(&e).code, e.code());
    }
    for e in [VerifyError::Malformed, VerifyError::Invalid] {
        let presented = ApiError {
            bearer_error: Some(BearerError::InvalidToken),
            ..ApiError::unauthorized()
        };
        assert_eq!(ApiError::from_verify(&e), presented, "one answer for both");
    }
    for e in [
        KeyError::NotFound("abcdefgh".parse().expect("id")),
        KeyError::InvalidExpiry,
        KeyError::InvalidGrace,
        KeyError::PermissionEscalation {
            missing: vec!["contacts:write".into()],
        },
    ] {
        assert_eq!(ApiError::from_key_error(&e).code, e.code());
    }
    // A store that fails is one code over HTTP, whoever asked it.
    let down = || crate::StoreError::Unavailable {
        message: "down".into(),
        source: None,
    };
    let verify = ApiError::from_verify(&VerifyError::Store(down()));
    let manage = ApiError::from_key_error(&KeyError::Store(down()));
    assert_eq!(
        (verify.code, manage.code),
        ("store_unavailable", "store_unavailable")
    );
    assert_eq!(manage.status, StatusCode::SERVICE_UNAVAILABLE);
}

async fn keys_and_token() -> (Keyward, String) {
    keys_and_token_on(MemoryStore::new()).await
}

/// A `Keyward` on `store` and the token of a key of tenant `acme` that
/// may read contacts.
async fn keys_and_token_on(store: MemoryStore) -> (Keyward, String) {
    let catalog = Catalog::builder()
        .resource("contacts", ["read", "write"])
        .build()
        .expect("catalog");
    let keys = Keyward::builder(store, catalog).build().expect("config");
    let boss = Actor::new("boss", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let created = keys
        .create(&boss, NewKey::new("k").permissions(["contacts:read"]))
        .await
        .expect("create");
    let token = created.token.expose_secret().to_string();
    (keys, token)
}

/// The layer and the permission layer wrap any tower service, whatever
/// its body types: here plain `String`s, no axum router.
#[tokio::test]
async fn the_layers_wrap_a_plain_tower_service() {
    let (keys, token) = keys_and_token().await;
    let inner = tower::service_fn(|req: Request<String>| async move {
        let tenant = req
            .extensions()
            .get::<Verified>()
            .map(|v| v.tenant().to_string())
            .unwrap_or_default();
        Ok::<_, std::convert::Infallible>(http::Response::new(tenant))
    });
    let read = require(keys.catalog(), "contacts:read").expect("permission");
    let write = require(keys.catalog(), "contacts:write").expect("permission");
    let layer = KeywardLayer::new(keys);
    let request = |token: &str| {
        Request::builder()
            .header("x-api-key", token)
            .body(String::new())
            .expect("request")
    };
    let svc = layer.layer(read.layer(inner));
    let ok = svc
        .clone()
        .oneshot(request(&token))
        .await
        .expect("infallible");
    assert_eq!(ok.status(), StatusCode::OK);
    let body = axum::body::to_bytes(ok.into_body(), 1024)
        .await
        .expect("body");
    assert_eq!(&body[..], b"acme");
    let refused = svc.oneshot(request("sk_nope")).await.expect("infallible");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let svc = layer.layer(write.layer(inner));
    let refused = svc.oneshot(request(&token)).await.expect("infallible");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body = axum::body::to_bytes(refused.into_body(), 1024)
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"]["permission"], "contacts:write");
    assert_eq!(body["error"]["key"], serde_json::json!(&token[..12]));
}

/// A key the cache does not hold yet is read from the store behind the
/// layer (the gate awaits), then served from the cache (the gate decides
/// at once); a mistyped token is refused alike before and after.
#[tokio::test]
async fn a_key_first_read_from_the_store_then_from_the_cache() {
    let store = MemoryStore::new();
    let (keys, token) = keys_and_token_on(store.clone()).await;
    // A second instance on the same store: its cache is empty.
    let cold = Keyward::builder(store, keys.catalog().clone())
        .build()
        .expect("config");
    assert_eq!(cold.cache_stats().keys, 0);
    let inner = tower::service_fn(|req: Request<String>| async move {
        let name = req
            .extensions()
            .get::<Verified>()
            .map(|v| v.name().to_string());
        Ok::<_, std::convert::Infallible>(http::Response::new(name.unwrap_or_default()))
    });
    let read = require(cold.catalog(), "contacts:read").expect("permission");
    let svc = KeywardLayer::new(cold.clone()).layer(read.layer(inner));
    let request = |token: &str| {
        Request::builder()
            .header("x-api-key", token)
            .body(String::new())
            .expect("request")
    };
    let mut typo = token.clone();
    let last = typo.pop().expect("a token");
    typo.push(if last == 'a' { 'b' } else { 'a' });
    let before = svc
        .clone()
        .oneshot(request(&typo))
        .await
        .expect("infallible");
    for round in ["store", "cache"] {
        let ok = svc
            .clone()
            .oneshot(request(&token))
            .await
            .expect("infallible");
        assert_eq!(ok.status(), StatusCode::OK, "from the {round}");
        let body = axum::body::to_bytes(ok.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], b"k", "from the {round}");
        assert_eq!(
            cold.cache_stats().keys,
            1,
            "after the read from the {round}"
        );
    }
    let after = svc.oneshot(request(&typo)).await.expect("infallible");
    assert_eq!(before.status(), after.status());
    assert!(after.status().is_client_error());
}
