//! The example service's management API (examples/server, keyward's
//! management router) as clients see it, with arbitrary JSON bodies (and,
//! for the list route, arbitrary query strings) sent by a key that holds every
//! permission: no answer is a 500 (nor a 401 or 403, which that key never
//! earns), every error body is JSON with a string `error.code` (or an
//! RFC 9457 problem with `type`, `title`, `status`), every 2xx body but
//! 204's is JSON, issued tokens verify, revoke/delete/reactivate take
//! effect, and the admin key keeps working.
//!
//! The admin key is never a target. Each input starts from the same state:
//! the admin key plus one freshly created managed key that the request
//! acts on (keys left by the previous input are deleted first).
//!
//! Input: byte 0 picks the route (bits 0-2), the target id (bits 3-4:
//! the managed key, an unknown id, a malformed id), whether the managed
//! key is revoked first (bit 5) and the content type (bits 6-7); the rest
//! is the raw body.

#![no_main]

#[allow(dead_code)] // the example's `main` and `open` are not used here
#[path = "../../examples/server/main.rs"]
mod server;

use std::sync::OnceLock;

use axum::body::Body;
use axum::Router;
use http::{header, Method, Request, StatusCode};
use keyward::{Actor, KeyId, Keyward, ManualClock, MemoryStore, NewKey, VerifyError};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::runtime::Runtime;
use tower::ServiceExt;

struct Fixture {
    rt: Runtime,
    keys: Keyward,
    app: Router,
    /// The bootstrap actor, as `server::open` makes it.
    bootstrap: Actor,
    admin_id: KeyId,
    admin_token: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        // A stopped clock: the same instant for every input, so expiries
        // in a body are judged the same way each time.
        // No read budget: the clock stands still and the fuzzer sends
        // made-up ids by the million, so a budget would never refill (and
        // the memory store never yields for the known ids to load); this
        // target checks the answers, tests/flood.rs the budget.
        let keys = Keyward::builder(MemoryStore::new(), server::catalog())
            .clock(ManualClock::default())
            .unknown_id_reads(None)
            .build()
            .expect("a valid configuration");
        let bootstrap = Actor::new("bootstrap", server::ADMIN_TENANT)
            .permissions(keys.catalog().all())
            .may_manage_keys(true);
        let issued = rt
            .block_on(keys.create(
                &bootstrap,
                NewKey::new("bootstrap admin").permission_set(keys.catalog().all()),
            ))
            .expect("the admin key");
        Fixture {
            app: server::app(keys.clone(), None),
            admin_id: issued.key.id,
            admin_token: issued.token.expose_secret().to_string(),
            rt,
            keys,
            bootstrap,
        }
    })
}

/// Deletes every key but the admin's and creates the managed key.
async fn reset(fx: &Fixture) -> (KeyId, String) {
    let all = fx
        .keys
        .list(&fx.bootstrap, server::ADMIN_TENANT)
        .await
        .expect("list");
    for k in all.iter().filter(|k| k.id != fx.admin_id) {
        fx.keys.delete(&fx.bootstrap, &k.id).await.expect("delete");
    }
    let issued = fx
        .keys
        .create(
            &fx.bootstrap,
            NewKey::new("managed").permissions(["contacts:read"]),
        )
        .await
        .expect("the managed key");
    (issued.key.id, issued.token.expose_secret().to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Create,
    Update,
    Roll,
    Revoke,
    Reactivate,
    Delete,
    Get,
    List,
}

impl Route {
    fn of(bits: u8) -> Self {
        [
            Self::Create,
            Self::Update,
            Self::Roll,
            Self::Revoke,
            Self::Reactivate,
            Self::Delete,
            Self::Get,
            Self::List,
        ][usize::from(bits & 7)]
    }

    fn request(self, id: &str) -> (Method, String) {
        match self {
            Self::Create => (Method::POST, "/api-keys".into()),
            Self::List => (Method::GET, "/api-keys".into()),
            Self::Update => (Method::PATCH, format!("/api-keys/{id}")),
            Self::Get => (Method::GET, format!("/api-keys/{id}")),
            Self::Delete => (Method::DELETE, format!("/api-keys/{id}")),
            Self::Roll => (Method::POST, format!("/api-keys/{id}/roll")),
            Self::Revoke => (Method::POST, format!("/api-keys/{id}/revoke")),
            Self::Reactivate => (Method::POST, format!("/api-keys/{id}/reactivate")),
        }
    }

    /// Whether the handler reads no body, so the id alone decides a 404.
    fn bodiless(self) -> bool {
        matches!(
            self,
            Self::Revoke | Self::Reactivate | Self::Delete | Self::Get
        )
    }
}

/// Checks the shape of an error body.
fn assert_error_body(status: StatusCode, content_type: &str, body: &[u8]) {
    let json: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{status} body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    if content_type.starts_with("application/problem+json") {
        assert!(
            json["type"].is_string(),
            "{status} problem without type: {json}"
        );
        assert!(
            json["title"].is_string(),
            "{status} problem without title: {json}"
        );
        assert_eq!(json["status"], status.as_u16(), "{status} problem: {json}");
    } else {
        assert!(
            json["error"]["code"].is_string(),
            "{status} body without error.code: {json}"
        );
        assert!(
            json["error"]["message"].is_string(),
            "{status} body without error.message: {json}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    let route = Route::of(sel);
    let target = sel >> 3 & 3;
    let revoke_first = sel & 0x20 != 0;
    let content_type = match sel >> 6 {
        0 | 1 => "application/json",
        2 => "application/json; charset=utf-8",
        _ => "text/plain",
    };

    fx.rt.block_on(async {
        let (managed_id, managed_token) = reset(fx).await;
        if revoke_first {
            fx.keys
                .revoke(&fx.bootstrap, &managed_id)
                .await
                .expect("revoke");
        }
        let id = match target {
            0 | 1 => managed_id.to_string(),
            // Base62 and unused: ids are random, so this one is free.
            2 => "00000000".to_string(),
            _ => "not-an-id".to_string(),
        };
        let on_managed = target < 2;
        let (method, mut path) = route.request(&id);
        // The list route reads its query string: the body, when it can be one.
        if route == Route::List && body.iter().all(|b| b.is_ascii_graphic() && *b != b'#') {
            let with_query = format!("{path}?{}", String::from_utf8_lossy(body));
            if with_query.parse::<http::Uri>().is_ok() {
                path = with_query;
            }
        }
        let request = Request::builder()
            .method(method)
            .uri(&path)
            .header(header::CONTENT_TYPE, content_type)
            .header("x-api-key", &fx.admin_token)
            .body(Body::from(body.to_vec()))
            .expect("a valid request");
        let response = fx.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let response_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a readable body");
        let shown = || String::from_utf8_lossy(&bytes).into_owned();

        assert!(
            !matches!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR
                    | StatusCode::UNAUTHORIZED
                    | StatusCode::FORBIDDEN
            ),
            "{route:?} {path} gave {status}: {}",
            shown()
        );
        if !status.is_success() {
            assert_error_body(status, &response_type, &bytes);
        }
        if !on_managed && route.bodiless() {
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{route:?} {path}: {}",
                shown()
            );
        }
        if status.is_success() && status != StatusCode::NO_CONTENT {
            let json: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {}", shown()));
            if status == StatusCode::CREATED {
                let token = json["token"].as_str().expect("a created key has a token");
                let verified = fx.keys.verify(token).await;
                assert!(verified.is_ok(), "new token refused: {verified:?}");
                assert_ne!(json["key"]["id"], fx.admin_id.to_string());
            }
        }
        if on_managed && status.is_success() {
            let now = fx.keys.verify(&managed_token).await;
            match route {
                Route::Revoke => assert!(matches!(now, Err(VerifyError::Revoked)), "{now:?}"),
                Route::Delete => assert!(matches!(now, Err(VerifyError::Invalid)), "{now:?}"),
                Route::Reactivate => assert!(now.is_ok(), "{now:?}"),
                _ => {}
            }
        }
        let admin = fx.keys.verify(&fx.admin_token).await;
        assert!(admin.is_ok(), "the admin key stopped working: {admin:?}");
    });
});
