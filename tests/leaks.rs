//! The leaked-key endpoint with a real ECDSA P-256 key pair made here
//! (nothing reaches the internet): signed reports revoke keys, every
//! kind of unsigned or mis-signed report is refused, a report of 1,000
//! tokens is answered right, and an unknown id answers the same whether
//! it ever existed or not.

mod common;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::Router;
use base64::Engine as _;
use http::{Request, StatusCode};
use keyward::http::secret_scanning;
use keyward::leak::{KeyFetcher, ScannerKey, ScannerKeys};
use keyward::{
    Actor, AuditAction, AuditOutcome, Keyward, MemoryAuditSink, MemoryStore, NewKey, VerifyError,
};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use tower::ServiceExt;

use common::catalog;

const KEY_ID: &str = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a";

/// A scanner key pair, as GitHub holds one.
fn scanner_pair() -> (SigningKey, String) {
    use rand::TryRng;
    let mut secret = [0u8; 32];
    loop {
        rand::rngs::SysRng
            .try_fill_bytes(&mut secret)
            .expect("OS randomness");
        if let Ok(key) = SigningKey::from_slice(&secret) {
            let pem = key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("pem");
            return (key, pem);
        }
    }
}

fn sign(key: &SigningKey, body: &[u8]) -> String {
    let signature: Signature = key.sign(body);
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}

struct Setup {
    keys: Keyward,
    app: Router,
    signer: SigningKey,
    admin: Actor,
    audit: MemoryAuditSink,
}

fn setup() -> Setup {
    let (signer, pem) = scanner_pair();
    let audit = MemoryAuditSink::default();
    let keys = Keyward::builder(MemoryStore::new(), catalog())
        .audit(audit.clone())
        .build()
        .expect("keyward");
    let scanner = Arc::new(ScannerKeys::new().with_key(KEY_ID, &pem).expect("key"));
    let app = secret_scanning(keys.clone(), scanner);
    let admin = Actor::new("admin", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    Setup {
        keys,
        app,
        signer,
        admin,
        audit,
    }
}

async fn post(
    app: &Router,
    body: &[u8],
    id: Option<&str>,
    signature: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::post("/").header("content-type", "application/json");
    if let Some(id) = id {
        req = req.header("github-public-key-identifier", id);
    }
    if let Some(sig) = signature {
        req = req.header("github-public-key-signature", sig);
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::from(body.to_vec())).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn report(tokens: &[&str]) -> Vec<u8> {
    let items: Vec<Value> = tokens
        .iter()
        .map(|t| json!({"token": t, "type": "keyward_api_key", "url": "https://github.com/acme/app/blob/main/.env", "source": "content"}))
        .collect();
    serde_json::to_vec(&items).expect("json")
}

fn sha_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_signed_report_revokes_the_key() {
    let s = setup();
    let issued = s
        .keys
        .create(&s.admin, NewKey::new("leaky"))
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    assert!(
        s.keys.verify(&token).await.is_ok(),
        "cached before the report"
    );

    let body = report(&[&token]);
    let (status, answer) = post(&s.app, &body, Some(KEY_ID), Some(&sign(&s.signer, &body))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!([{"token_hash": sha_hex(&token), "token_type": "keyward_api_key", "label": "true_positive"}])
    );
    assert!(!answer.to_string().contains(&token));
    assert!(matches!(
        s.keys.verify(&token).await,
        Err(VerifyError::Revoked)
    ));
}

/// A body, a key identifier, a signature, and what is wrong with them.
type Attempt<'a> = (&'a [u8], Option<&'a str>, Option<&'a str>, &'a str);

#[tokio::test]
async fn unsigned_tampered_and_unknown_key_reports_are_refused() {
    let s = setup();
    let issued = s
        .keys
        .create(&s.admin, NewKey::new("safe"))
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    let body = report(&[&token]);
    let good = sign(&s.signer, &body);

    let mut tampered_body = body.clone();
    let at = tampered_body.len() - 3;
    tampered_body[at] ^= 1;
    let mut raw = base64::engine::general_purpose::STANDARD
        .decode(&good)
        .expect("b64");
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let tampered_sig = base64::engine::general_purpose::STANDARD.encode(&raw);
    let (other, _) = scanner_pair();
    let foreign = sign(&other, &body);

    let cases: [Attempt<'_>; 6] = [
        (&body, None, None, "unsigned"),
        (&body, Some(KEY_ID), None, "no signature"),
        (&tampered_body, Some(KEY_ID), Some(&good), "tampered body"),
        (
            &body,
            Some(KEY_ID),
            Some(&tampered_sig),
            "tampered signature",
        ),
        (
            &body,
            Some("unknown-key-id"),
            Some(&good),
            "unknown key identifier",
        ),
        (
            &body,
            Some(KEY_ID),
            Some(&foreign),
            "another key's signature",
        ),
    ];
    for (body, id, sig, what) in cases {
        let (status, answer) = post(&s.app, body, id, sig).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {answer}");
        assert!(!answer.to_string().contains(&token));
    }
    assert!(s.keys.verify(&token).await.is_ok(), "nothing was revoked");
}

#[tokio::test]
async fn a_report_of_a_thousand_tokens_is_answered_right() {
    let s = setup();
    let mut real = Vec::new();
    for n in 0..100 {
        let issued = s
            .keys
            .create(&s.admin, NewKey::new(format!("k{n}")))
            .await
            .expect("create");
        real.push(issued.token.expose_secret().to_string());
    }
    let mut tokens: Vec<(String, bool)> = real.iter().map(|t| (t.clone(), true)).collect();
    for n in 0..300 {
        tokens.push((common::forge::unknown_token(n), false)); // well-formed, unknown id
    }
    for t in real.iter().take(100) {
        tokens.push((common::forge::same_id_other_secret(t), false)); // right id, wrong secret
    }
    for n in 0..500 {
        tokens.push((format!("sk_{n:08}_notachecksum"), false)); // malformed
    }
    assert_eq!(tokens.len(), 1000);
    let refs: Vec<&str> = tokens.iter().map(|(t, _)| t.as_str()).collect();
    let body = report(&refs);
    let started = Instant::now();
    let (status, answer) = post(&s.app, &body, Some(KEY_ID), Some(&sign(&s.signer, &body))).await;
    println!("1,000 tokens answered in {:?}", started.elapsed());
    assert_eq!(status, StatusCode::OK);
    let answer = answer.as_array().expect("an array").clone();
    assert_eq!(answer.len(), 1000);
    for ((token, is_real), entry) in tokens.iter().zip(&answer) {
        let label = if *is_real {
            "true_positive"
        } else {
            "false_positive"
        };
        assert_eq!(entry["label"], label, "{token}");
        assert_eq!(entry["token_hash"], sha_hex(token));
    }
    for t in &real {
        assert!(matches!(s.keys.verify(t).await, Err(VerifyError::Revoked)));
    }
}

#[tokio::test]
async fn an_unknown_id_answers_alike_whether_it_existed_or_not() {
    let s = setup();
    let issued = s
        .keys
        .create(&s.admin, NewKey::new("gone"))
        .await
        .expect("create");
    let deleted = issued.token.expose_secret().to_string();
    s.keys
        .delete(&s.admin, &issued.key.id)
        .await
        .expect("delete");
    let never = common::forge::unknown_token(77);
    for token in [&deleted, &never] {
        let body = report(&[token]);
        let (status, answer) =
            post(&s.app, &body, Some(KEY_ID), Some(&sign(&s.signer, &body))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            answer,
            json!([{"token_hash": sha_hex(token), "token_type": "keyward_api_key", "label": "false_positive"}])
        );
    }
}

/// The scanner's keys, fetched when an unknown identifier appears.
#[derive(Debug)]
struct Fetcher(String);

#[async_trait::async_trait]
impl KeyFetcher for Fetcher {
    async fn fetch(&self) -> Result<Vec<ScannerKey>, String> {
        Ok(vec![ScannerKey {
            key_identifier: KEY_ID.to_string(),
            key: self.0.clone(),
        }])
    }
}

#[tokio::test]
async fn keys_are_fetched_when_an_unknown_identifier_appears() {
    let (signer, pem) = scanner_pair();
    let keys = Keyward::builder(MemoryStore::new(), catalog())
        .build()
        .expect("keyward");
    let scanner = Arc::new(ScannerKeys::new().fetcher(Fetcher(pem)));
    let app = secret_scanning(keys, scanner);
    let body = report(&["sk_nothing"]);
    let (status, answer) = post(&app, &body, Some(KEY_ID), Some(&sign(&signer, &body))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer[0]["label"], "false_positive");
}

#[tokio::test]
async fn every_report_is_audited_and_a_repeated_token_is_revoked_once() {
    let s = setup();
    let issued = s
        .keys
        .create(&s.admin, NewKey::new("leaky"))
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    let repeated: Vec<&str> = std::iter::repeat_n(token.as_str(), 50).collect();
    let body = report(&repeated);
    let (status, answer) = post(&s.app, &body, Some(KEY_ID), Some(&sign(&s.signer, &body))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer
        .as_array()
        .is_some_and(|a| a.len() == 50 && a.iter().all(|e| e["label"] == "true_positive")));
    // Reported again later: still a true positive, not written again.
    let body = report(&[&token]);
    post(&s.app, &body, Some(KEY_ID), Some(&sign(&s.signer, &body))).await;
    let unsigned = post(&s.app, &body, None, None).await;
    assert_eq!(unsigned.0, StatusCode::UNAUTHORIZED);

    let events = s.audit.events();
    let revokes = events
        .iter()
        .filter(|e| {
            e.action == AuditAction::Revoke
                && e.actor.as_deref() == Some(keyward::SECRET_SCANNING_ACTOR)
        })
        .count();
    assert_eq!(revokes, 1, "one revocation for 51 reports of one token");
    let reports: Vec<_> = events
        .iter()
        .filter(|e| e.action == AuditAction::LeakReport)
        .map(|e| e.outcome)
        .collect();
    assert_eq!(
        reports,
        vec![
            AuditOutcome::Success,
            AuditOutcome::Success,
            AuditOutcome::Denied("unsigned_report")
        ]
    );
}
