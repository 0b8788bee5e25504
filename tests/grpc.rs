//! The tonic example behind `GrpcLayer`, called with a real tonic client
//! over loopback: every refusal's gRPC status, `RetryInfo`, the display
//! prefix in messages and never the secret.

mod common;

#[allow(dead_code)]
#[path = "../examples/grpc.rs"]
mod example;

use chrono::Duration;
use example::contacts::{Contact, ContactsClient, CreateRequest, ListRequest};
use keyward::{Actor, IpAllowlist, Keyward, ManualClock, MemoryStore, NewKey, RateLimit};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use common::DownStore;

/// Serves the example with `keys` on a random loopback port.
async fn serve(keys: Keyward) -> ContactsClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(example::serve(keys, listener));
    ContactsClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", MetadataValue::try_from(key).expect("ascii"));
    request
}

fn bearer<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {key}")).expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

fn code_of(status: &Status) -> &str {
    status
        .metadata()
        .get("keyward-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

struct Setup {
    keys: Keyward,
    clock: ManualClock,
    admin: Actor,
}

fn setup() -> Setup {
    let clock = ManualClock::default();
    let keys = Keyward::builder(MemoryStore::new(), example::catalog())
        .clock(clock.clone())
        .build()
        .expect("keyward");
    let admin = Actor::new("setup", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    Setup { keys, clock, admin }
}

async fn key(s: &Setup, new: NewKey) -> String {
    s.keys
        .create(&s.admin, new)
        .await
        .expect("create")
        .token
        .expose_secret()
        .to_string()
}

fn contact(name: &str) -> CreateRequest {
    CreateRequest {
        contact: Some(Contact {
            name: name.into(),
            email: format!("{name}@example.com"),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_with_a_valid_key_reach_the_service_in_its_tenant() {
    let s = setup();
    let reader = key(&s, NewKey::new("reader").permissions(["contacts:read"])).await;
    let writer = key(&s, NewKey::new("writer").permissions(["contacts:write"])).await;
    let mut client = serve(s.keys.clone()).await;

    let made = client
        .create(with_key(contact("Ada"), &writer))
        .await
        .expect("create");
    assert_eq!(made.get_ref().name, "Ada");
    let listed = client
        .list(bearer(ListRequest {}, &reader))
        .await
        .expect("list with a bearer token");
    assert_eq!(listed.get_ref().contacts.len(), 1);

    // Another tenant's key sees its own tenant only.
    let other = Actor::new("setup", "globex")
        .permissions(s.keys.catalog().all())
        .may_manage_keys(true);
    let theirs = s
        .keys
        .create(
            &other,
            NewKey::new("globex reader").permissions(["contacts:read"]),
        )
        .await
        .expect("create");
    let listed = client
        .list(with_key(ListRequest {}, theirs.token.expose_secret()))
        .await
        .expect("list");
    assert!(listed.get_ref().contacts.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_for_every_key_that_does_not_prove_itself() {
    let s = setup();
    let reader = key(&s, NewKey::new("reader").permissions(["contacts:read"])).await;
    let revoked = key(&s, NewKey::new("revoked").permissions(["contacts:read"])).await;
    let expiring = key(
        &s,
        NewKey::new("expiring")
            .permissions(["contacts:read"])
            .expires_in(Duration::hours(1)),
    )
    .await;
    let id = s.keys.verify(&revoked).await.expect("valid").id();
    s.keys.revoke(&s.admin, &id).await.expect("revoke");
    s.clock.advance(Duration::hours(2));
    let mut client = serve(s.keys.clone()).await;

    let none = client
        .list(Request::new(ListRequest {}))
        .await
        .expect_err("no key");
    assert_eq!(none.code(), Code::Unauthenticated);
    assert_eq!(code_of(&none), "unauthorized");

    let mut wrong = reader.clone();
    wrong.replace_range(20..21, if &reader[20..21] == "a" { "b" } else { "a" });
    for (token, code) in [
        ("sk_nonsense", "unauthorized"),
        (wrong.as_str(), "unauthorized"),
        (revoked.as_str(), "api_key_revoked"),
        (expiring.as_str(), "api_key_expired"),
    ] {
        let status = client
            .list(with_key(ListRequest {}, token))
            .await
            .expect_err(token);
        assert_eq!(status.code(), Code::Unauthenticated, "{token}: {status:?}");
        assert_eq!(code_of(&status), code);
        let secret = token.get(12..).unwrap_or(token);
        assert!(
            !status.message().contains(secret),
            "no secret: {}",
            status.message()
        );
    }
    let status = client
        .list(with_key(ListRequest {}, &revoked))
        .await
        .expect_err("revoked");
    assert!(
        status.message().contains(&revoked[..12]),
        "{}",
        status.message()
    );

    // Two keys at once are ambiguous.
    let mut both = with_key(ListRequest {}, &reader);
    let value = MetadataValue::try_from(format!("Bearer {reader}")).expect("ascii");
    both.metadata_mut().insert("authorization", value);
    let status = client.list(both).await.expect_err("two keys");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_denied_names_the_permission_and_the_key() {
    let s = setup();
    let reader = key(&s, NewKey::new("reader").permissions(["contacts:read"])).await;
    let office: IpAllowlist = "10.0.0.0/8".parse().expect("allowlist");
    let elsewhere = key(
        &s,
        NewKey::new("office only")
            .permissions(["contacts:read"])
            .allowed_ips(office),
    )
    .await;
    let mut client = serve(s.keys.clone()).await;

    let status = client
        .create(with_key(contact("Eve"), &reader))
        .await
        .expect_err("a reader may not write");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(code_of(&status), "forbidden");
    assert!(
        status.message().contains("contacts:write"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains(&reader[..12]),
        "{}",
        status.message()
    );
    assert!(!status.message().contains(&reader[12..]));

    let status = client
        .list(with_key(ListRequest {}, &elsewhere))
        .await
        .expect_err("loopback is not in 10.0.0.0/8");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(code_of(&status), "ip_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_address_reaches_the_allowlist() {
    let s = setup();
    let here: IpAllowlist = "127.0.0.1/32, ::1/128".parse().expect("allowlist");
    let local = key(
        &s,
        NewKey::new("loopback only")
            .permissions(["contacts:read"])
            .allowed_ips(here),
    )
    .await;
    let mut client = serve(s.keys.clone()).await;
    client
        .list(with_key(ListRequest {}, &local))
        .await
        .expect("a loopback caller is inside 127.0.0.1/32");
}

/// A permission is a bit of its catalog: a map built from another
/// catalog (the same names in another order) must not let a reader
/// write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_of_another_catalog_refuses_instead_of_misreading() {
    let s = setup();
    let reader = key(&s, NewKey::new("reader").permissions(["contacts:read"])).await;
    let swapped = keyward::Catalog::builder()
        .resource("contacts", ["write", "read"])
        .build()
        .expect("catalog");
    let methods = keyward::grpc::MethodPermissions::new(&swapped)
        .method("/contacts.v1.Contacts/Create", "contacts:write")
        .expect("map");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tonic::transport::Server::builder()
        .layer(keyward::grpc::GrpcLayer::new(s.keys.clone(), methods))
        .add_service(example::contacts::ContactsServer::new(
            example::ContactBook::default(),
        ))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    let mut client = ContactsClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let status = client
        .create(with_key(contact("Eve"), &reader))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_with_no_permission_mapped_is_closed() {
    let s = setup();
    let reader = key(
        &s,
        NewKey::new("reader")
            .permissions(["contacts:read"])
            .remaining(1),
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(example::serve(s.keys.clone(), listener));
    let channel = tonic::transport::Endpoint::new(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/contacts.v1.Contacts/Delete");
    let codec: tonic_prost::ProstCodec<ListRequest, ListRequest> = Default::default();
    let status = grpc
        .unary(with_key(ListRequest {}, &reader), path, codec)
        .await
        .expect_err("unmapped");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("No permission is mapped"),
        "{}",
        status.message()
    );
    // Refused before the key was verified: its one use is still there.
    let mut client = ContactsClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    client
        .list(with_key(ListRequest {}, &reader))
        .await
        .expect("the use was not spent on the refused call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_exhausted_carries_retry_info() {
    let s = setup();
    let limited = key(
        &s,
        NewKey::new("limited")
            .permissions(["contacts:read"])
            .rate_limit(RateLimit::per_minute(1).expect("valid")),
    )
    .await;
    let once = key(
        &s,
        NewKey::new("once")
            .permissions(["contacts:read"])
            .remaining(1),
    )
    .await;
    let mut client = serve(s.keys.clone()).await;

    client
        .list(with_key(ListRequest {}, &limited))
        .await
        .expect("the first call");
    let status = client
        .list(with_key(ListRequest {}, &limited))
        .await
        .expect_err("the second call in a minute");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(code_of(&status), "rate_limited");
    let retry = status.get_details_retry_info().expect("RetryInfo");
    let delay = retry.retry_delay.expect("a delay");
    assert!(
        delay > std::time::Duration::ZERO && delay <= std::time::Duration::from_secs(60),
        "{delay:?}"
    );
    assert!(status.message().contains(&limited[..12]));

    client
        .list(with_key(ListRequest {}, &once))
        .await
        .expect("the one use");
    let status = client
        .list(with_key(ListRequest {}, &once))
        .await
        .expect_err("no uses left");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(code_of(&status), "usage_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_when_the_store_cannot_be_asked() {
    let keys = Keyward::builder(DownStore, example::catalog())
        .build()
        .expect("keyward");
    let mut client = serve(keys).await;
    let token = common::forge::unknown_token(7);
    let status = client
        .list(with_key(ListRequest {}, &token))
        .await
        .expect_err("the store is down");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(code_of(&status), "store_unavailable");
    assert!(status.get_details_retry_info().is_some());
}
