//! Bad input never panics and never reaches the store.

mod common;

use common::{admin, harness};
use keyward::{NewKey, VerifyError};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// Strings that are close to tokens, plus plain garbage.
fn malformed(valid: String) -> impl Strategy<Value = String> {
    let v = valid.clone();
    let len = valid.len();
    prop_oneof![
        // Arbitrary unicode of any length, including empty.
        any::<String>(),
        // Up to 10 kB of printable garbage.
        proptest::collection::vec(any::<u8>(), 0..10_240).prop_map(|b| b
            .into_iter()
            .map(|c| char::from(c % 95 + 32))
            .collect::<String>()),
        // One character of a valid token replaced.
        (0..len, any::<char>()).prop_filter_map("unchanged", {
            let v = v.clone();
            move |(i, c)| {
                let mut s: Vec<char> = v.chars().collect();
                if s[i] == c {
                    return None;
                }
                s[i] = c;
                Some(s.into_iter().collect())
            }
        }),
        // Truncated or extended.
        (0..len).prop_map({
            let v = v.clone();
            move |n| v[..n].to_string()
        }),
        "[0-9A-Za-z]{1,3}".prop_map({
            let v = v.clone();
            move |tail| format!("{v}{tail}")
        }),
        // Two adjacent characters swapped (a typo the checksum must catch).
        (0..len - 1).prop_filter_map("same characters", move |i| {
            let mut s: Vec<u8> = valid.clone().into_bytes();
            if s[i] == s[i + 1] {
                return None;
            }
            s.swap(i, i + 1);
            String::from_utf8(s).ok()
        }),
    ]
}

#[tokio::test]
async fn ten_thousand_malformed_tokens_never_panic_or_reach_the_store() {
    let h = harness();
    let k = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("k"))
        .await
        .expect("created");
    let valid = k.token.expose_secret().to_string();
    let before = h.store.calls();

    let mut runner = TestRunner::new(Config {
        cases: 10_000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = malformed(valid.clone());
    let mut checked = 0;
    for _ in 0..10_000 {
        let input = strategy.new_tree(&mut runner).expect("generates").current();
        let trimmed_same = input.trim_ascii() == valid;
        if trimmed_same {
            continue;
        }
        checked += 1;
        let result = h.keys.verify(&input).await;
        assert!(
            matches!(result, Err(VerifyError::Malformed)),
            "{input:?} gave {result:?}"
        );
    }
    assert!(checked > 9_000, "only {checked} cases were checked");
    assert_eq!(
        h.store.calls(),
        before,
        "a malformed token reached the store"
    );
    // The audit trail saw every refusal (after the create), and none
    // carries anything of the token.
    let events = h.audit.take();
    let refusals: Vec<_> = events
        .iter()
        .filter(|e| e.outcome == keyward::AuditOutcome::Denied("malformed"))
        .collect();
    assert_eq!(refusals.len(), checked, "one audit event per refusal");
    assert!(refusals
        .iter()
        .all(|e| e.key_prefix.is_none() && e.key_id.is_none()));
}

#[tokio::test]
async fn fixed_malformed_cases() {
    let h = harness();
    let k = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("k"))
        .await
        .expect("created");
    let t = k.token.expose_secret();
    let before = h.store.calls();
    let cases = [
        String::new(),
        " ".into(),
        "sk_".into(),
        "sk__".into(),
        t.replacen("sk_", "rk_", 1),
        t.replacen("sk_", "SK_", 1),
        t[..43].to_string(),
        format!("{t}x"),
        format!("Bearer {t}"),
        t.replacen('_', "-", 1),
        format!("{}é{}", &t[..20], &t[22..]),
        format!("{}\0{}", &t[..20], &t[21..]),
        "x".repeat(10_240),
        "\u{1F600}".repeat(11),
        format!("{t}\u{00A0}"),
    ];
    for c in &cases {
        assert!(
            matches!(h.keys.verify(c).await, Err(VerifyError::Malformed)),
            "{c:?}"
        );
    }
    assert_eq!(h.store.calls(), before);
    // Surrounding ASCII whitespace is tolerated (copied from an env file).
    h.keys
        .verify(&format!(" {t}\r\n"))
        .await
        .expect("trimmed token verifies");
}

/// The cached path leaves the checksum until the hash fails to match: a
/// typo in a cached key's secret is still `Malformed`, as for a key that
/// is not cached, and a well-formed other secret still `Invalid`; neither
/// reads the store.
#[tokio::test]
async fn a_typo_in_a_cached_key_is_malformed_as_in_one_not_cached() {
    let h = harness();
    let admin = admin(&h.keys, "acme");
    let cached = h
        .keys
        .create(&admin, NewKey::new("cached"))
        .await
        .expect("created");
    let cached = cached.token.expose_secret().to_string();
    h.keys.verify(&cached).await.expect("valid");
    let cold = h
        .keys
        .create(&admin, NewKey::new("cold"))
        .await
        .expect("created");
    let cold = cold.token.expose_secret().to_string();
    let before = h.store.gets();
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for (i, t) in [&cached, &cold].into_iter().enumerate() {
        // Every position of the secret and checksum, one character off:
        // CRC32 catches every single-character change.
        for pos in 12..t.len() {
            let mut typo = t.clone().into_bytes();
            let at = alphabet
                .iter()
                .position(|&c| c == typo[pos])
                .expect("base62");
            typo[pos] = alphabet[(at + 1 + pos % 61) % 62];
            let typo = String::from_utf8(typo).expect("ascii");
            let got = h.keys.verify(&typo).await;
            assert!(
                matches!(got, Err(VerifyError::Malformed)),
                "key {i}, position {pos}: {got:?}"
            );
        }
        assert_eq!(h.store.gets(), before, "a typo reached the store");
        let other = common::forge::same_id_other_secret(t);
        let got = h.keys.verify(&other).await;
        assert!(matches!(got, Err(VerifyError::Invalid)), "key {i}: {got:?}");
    }
    h.keys.verify(&cached).await.expect("still valid");
    h.keys.verify(&cold).await.expect("valid");
}
