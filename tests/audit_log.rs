//! The default audit sink writes refusals to `tracing` when a subscriber
//! listens: by display prefix and reason, never the secret.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::forge::same_id_other_secret;
use common::{admin, catalog};
use keyward::{Keyward, MemoryStore, NewKey, VerifyError};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn refusals_reach_a_listening_subscriber_by_prefix() {
    let keys = Keyward::builder(MemoryStore::new(), catalog())
        .build()
        .expect("config");
    let issued = keys
        .create(&admin(&keys, "acme"), NewKey::new("zapier"))
        .await
        .expect("created");
    let token = issued.token.expose_secret().to_string();
    keys.verify(&token).await.expect("valid");
    let wrong = same_id_other_secret(&token);

    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    // Served from the cache: the fast path must still audit.
    assert!(matches!(
        keys.verify(&wrong).await,
        Err(VerifyError::Invalid)
    ));
    assert!(matches!(
        keys.verify("not a key").await,
        Err(VerifyError::Malformed)
    ));
    drop(guard);

    let logged = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
    let invalid = logged
        .lines()
        .find(|l| l.contains("reason=\"invalid\"") || l.contains("reason=invalid"))
        .unwrap_or_else(|| panic!("no refusal of the wrong secret in {logged:?}"));
    assert!(invalid.contains(&token[..12]), "{invalid}");
    assert!(
        logged.lines().any(|l| l.contains("malformed")),
        "no refusal of the malformed token in {logged:?}"
    );
    for secret in [&token[12..], &wrong[12..]] {
        assert!(!logged.contains(secret), "a secret was logged: {logged}");
    }
}
