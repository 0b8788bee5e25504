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
