//! The default audit sink writes refusals to `tracing` when a subscriber
//! listens: by display prefix and reason, never the secret.

mod common;

use common::forge::same_id_other_secret;
use common::{admin, capture_logs, catalog};
use keyward::{Keyward, MemoryStore, NewKey, VerifyError};

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

    let (out, guard) = capture_logs(tracing::Level::WARN);
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

    let logged = out.text();
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
