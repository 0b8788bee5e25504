//! Importing keys from another system: 100,000 rows into SQLite, a second
//! run importing nothing, legacy tokens verifying, bad rows reported.

mod common;

use std::fmt::Write as _;
use std::time::Instant;

use base64::Engine as _;
use chrono::{Duration, TimeZone, Utc};
use keyward::import::{read_csv, read_jsonl};
use keyward::{
    Actor, Charset, ImportOptions, KeyError, Keyward, LegacyFormat, MemoryStore, NewKey,
    SqliteStore, TenantPolicy, VerifyError,
};
use sha2::{Digest, Sha256};

use common::{catalog, forge, TempDir};

const ROWS: usize = 100_000;

fn acme() -> LegacyFormat {
    LegacyFormat::new("acme_live_", Charset::Alphanumeric, 32..=32).expect("valid format")
}

/// A legacy token for `n`: 32 base62 characters.
fn legacy_token(n: usize) -> String {
    format!(
        "acme_live_{n:0>12}{}",
        "Zq7".repeat(7).get(..20).unwrap_or_default()
    )
}

fn sha(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn operator(keys: &Keyward) -> Actor {
    Actor::new("ops", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true)
}

/// The `n`th row: a legacy token in plaintext, a keyward token's hash
/// and id, or a legacy token's hash (base64) and prefix, in turn.
fn csv_row(out: &mut String, n: usize, used: &str) {
    let at = "2024-05-01T10:00:00Z";
    match n % 3 {
        0 => {
            let t = legacy_token(n);
            let _ = writeln!(out, "{t},,,,Zapier {n},acme,contacts:read,{at},");
        }
        1 => {
            let t = forge::unknown_token(n as u64);
            let id = &t[3..11];
            let h = hex(&sha(&t));
            let _ = writeln!(out, ",{h},{id},,CI {n},acme/eu,contacts:write,{at},{used}");
        }
        _ => {
            let h = base64::engine::general_purpose::STANDARD.encode(sha(&legacy_token(n)));
            let _ = writeln!(
                out,
                ",{h},,acme_live_,Clay {n},acme,users:read leads:create,,"
            );
        }
    }
}

fn token_of(n: usize) -> String {
    match n % 3 {
        1 => forge::unknown_token(n as u64),
        _ => legacy_token(n),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_rows_import_once_and_keep_verifying() {
    let dir = TempDir::new("import");
    let store = SqliteStore::open(dir.path().join("keys.db"))
        .await
        .expect("sqlite");
    let keys = Keyward::builder(store, catalog())
        .nested_tenants(true)
        .legacy_format(acme())
        .build()
        .expect("valid config");
    let ops = operator(&keys);

    let mut file =
        String::from("token,hash,id,prefix,name,tenant,permissions,created_at,last_used_at\n");
    let used = (Utc::now() - Duration::days(10)).to_rfc3339();
    for n in 0..ROWS {
        csv_row(&mut file, n, &used);
    }
    // Bad rows, at known lines (the header is line 1).
    let bad = [
        (",,,,no secret,acme,,,", "neither a token nor a hash"),
        ("acme_live_short,,,,x,acme,,,", "legacy format"),
        (",nothex,AbCd1234,,x,acme,,,", "hash is neither"),
        (
            &format!("{},,,,x,acme,contacts:fly,,", legacy_token(ROWS + 1)),
            "no action `fly`",
        ),
        (
            &format!("{},,,,x,other,contacts:read,,", legacy_token(ROWS + 2)),
            "invalid tenant",
        ),
        (
            &format!(
                "{},,,,x,acme,,2999-01-01T00:00:00Z,",
                legacy_token(ROWS + 3)
            ),
            "future",
        ),
        ("a,b", "cells"),
    ];
    for (row, _) in &bad {
        file.push_str(row);
        file.push('\n');
    }

    let started = Instant::now();
    let dry = keys
        .import(
            &ops,
            read_csv(file.as_bytes()),
            ImportOptions::new().dry_run(true),
        )
        .await
        .expect("dry run");
    println!(
        "dry run of {} rows in {:?}",
        dry.imported,
        started.elapsed()
    );
    assert_eq!((dry.imported, dry.already_present), (ROWS as u64, 0));
    assert_eq!(dry.rejected.len(), bad.len());
    assert!(
        keys.list(&ops, "acme").await.expect("list").is_empty(),
        "a dry run stores nothing"
    );

    let started = Instant::now();
    let report = keys
        .import(&ops, read_csv(file.as_bytes()), ImportOptions::new())
        .await
        .expect("import");
    println!(
        "imported {} rows in {:?}",
        report.imported,
        started.elapsed()
    );
    assert_eq!(report.imported, ROWS as u64);
    assert_eq!(report.already_present, 0);
    assert_eq!(report.rejected.len(), bad.len(), "{:?}", report.rejected);
    for (i, ((_, reason), rejected)) in bad.iter().zip(&report.rejected).enumerate() {
        assert_eq!(rejected.line, (ROWS + 2 + i) as u64, "{rejected:?}");
        assert!(
            rejected.reason.contains(reason),
            "{rejected:?} should say {reason:?}"
        );
    }
    let text = format!("{:?}", report.rejected);
    assert!(
        !text.contains("acme_live_0"),
        "no token in the report: {text}"
    );

    let started = Instant::now();
    let again = keys
        .import(&ops, read_csv(file.as_bytes()), ImportOptions::new())
        .await
        .expect("second run");
    println!("second run in {:?}", started.elapsed());
    assert_eq!((again.imported, again.already_present), (0, ROWS as u64));
    assert_eq!(again.rejected.len(), bad.len());

    for n in [0, 1, 2, 3, 4, 5, 49_999, 50_000, 50_001, ROWS - 1] {
        let token = token_of(n);
        let verified = keys
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("row {n}: {e}"));
        let (perm, tenant) = match n % 3 {
            0 => ("contacts:read", "acme"),
            1 => ("contacts:write", "acme/eu"),
            _ => ("leads:read", "acme"),
        };
        assert!(verified.require(perm).is_ok(), "row {n} holds {perm}");
        assert_eq!(verified.tenant(), tenant);
        // Twice: the second from the cache.
        assert!(keys.verify(&token).await.is_ok());
    }
    let info = keys
        .get(&ops, &keys.verify(&token_of(1)).await.expect("valid").id())
        .await
        .expect("get");
    assert_eq!(
        info.created_at,
        Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()
    );
    // The brought last use, or the verifies since, which move it on.
    let brought = chrono::DateTime::parse_from_rfc3339(&used).expect("time");
    assert!(info
        .last_used_at
        .is_some_and(|t| t.timestamp() >= brought.timestamp()));
    assert_eq!(info.prefix.as_str(), &token_of(1)[..12]);
    let legacy = keys.verify(&token_of(0)).await.expect("valid");
    assert_eq!(legacy.display_prefix().as_str(), "acme_live_");

    // A changed character, and a legacy token never imported, are refused.
    let mut wrong = token_of(3);
    wrong.replace_range(20..21, "X");
    assert!(matches!(
        keys.verify(&wrong).await,
        Err(VerifyError::Invalid)
    ));
    assert!(matches!(
        keys.verify(&legacy_token(ROWS + 9)).await,
        Err(VerifyError::Invalid)
    ));
    assert!(matches!(
        keys.verify("acme_live_tooshort").await,
        Err(VerifyError::Malformed)
    ));
}

fn memory_keys() -> Keyward {
    Keyward::builder(MemoryStore::new(), catalog())
        .legacy_format(acme())
        .tenant_policy("strict", TenantPolicy::new().require_expiry())
        .build()
        .expect("valid config")
}

#[tokio::test]
async fn json_lines_import_with_the_same_checks_as_create() {
    let keys = memory_keys();
    let ops = operator(&keys);
    let limited = Actor::new("clerk", "acme")
        .permissions(keys.catalog().parse_set(["contacts:read"]).expect("valid"))
        .may_manage_keys(true);
    let file = format!(
        "{}\n{}\n{}\n",
        serde_json::json!({"token": legacy_token(1), "name": "a", "permissions": ["contacts:read"], "metadata": {"plan": "pro"}}),
        serde_json::json!({"token": legacy_token(2), "name": "b", "permissions": ["contacts:write"]}),
        serde_json::json!({"token": legacy_token(3), "name": "c", "tenant": "strict"}),
    );
    let report = keys
        .import(&limited, read_jsonl(file.as_bytes()), ImportOptions::new())
        .await
        .expect("import");
    assert_eq!(report.imported, 1);
    assert_eq!(report.rejected.len(), 2);
    assert!(
        report.rejected[0].reason.contains("contacts:write"),
        "{:?}",
        report.rejected
    );
    assert_eq!(report.rejected[0].line, 2);
    assert_eq!(report.rejected[1].line, 3);

    // An operator of the parent may import into the strict tenant only
    // with an expiry, as create demands.
    let strict_ops = Actor::new("ops", "strict")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let expiring = (Utc::now() + Duration::days(30)).to_rfc3339();
    let file = format!(
        "{}\n{}\n",
        serde_json::json!({"token": legacy_token(4), "name": "no expiry"}),
        serde_json::json!({"token": legacy_token(5), "name": "expiring", "expires_at": expiring}),
    );
    let report = keys
        .import(
            &strict_ops,
            read_jsonl(file.as_bytes()),
            ImportOptions::new(),
        )
        .await
        .expect("import");
    assert_eq!(report.imported, 1);
    assert!(
        report.rejected[0].reason.contains("expiry"),
        "{:?}",
        report.rejected
    );
    let _ = ops;
}

#[tokio::test]
async fn an_id_held_by_another_key_is_refused_and_nothing_is_overwritten() {
    let keys = memory_keys();
    let ops = operator(&keys);
    let issued = keys
        .create(&ops, NewKey::new("real"))
        .await
        .expect("create");
    let id = issued.key.id;
    let other = hex(&sha("sk_someone_elses_token"));
    let file = format!(
        "{}\n",
        serde_json::json!({"hash": other, "id": id.to_string(), "name": "imposter"})
    );
    let report = keys
        .import(&ops, read_jsonl(file.as_bytes()), ImportOptions::new())
        .await
        .expect("import");
    assert_eq!(report.imported, 0);
    assert!(report.rejected[0].reason.contains("held by another key"));
    assert!(keys.verify(issued.token.expose_secret()).await.is_ok());
    assert_eq!(keys.get(&ops, &id).await.expect("get").name, "real");

    // The same key's own hash is already present.
    let own = hex(&sha(issued.token.expose_secret()));
    let file = format!(
        "{}\n",
        serde_json::json!({"hash": own, "id": id.to_string(), "name": "again"})
    );
    let report = keys
        .import(&ops, read_jsonl(file.as_bytes()), ImportOptions::new())
        .await
        .expect("import");
    assert_eq!((report.imported, report.already_present), (0, 1));
}

#[tokio::test]
async fn a_legacy_token_tried_before_its_import_verifies_after_it() {
    let keys = memory_keys();
    let ops = operator(&keys);
    let token = legacy_token(7);
    // Unknown now: remembered as unknown by the cache.
    assert!(matches!(
        keys.verify(&token).await,
        Err(VerifyError::Invalid)
    ));
    assert!(matches!(
        keys.verify(&token).await,
        Err(VerifyError::Invalid)
    ));
    let file = format!("{}\n", serde_json::json!({"token": token, "name": "late"}));
    let report = keys
        .import(&ops, read_jsonl(file.as_bytes()), ImportOptions::new())
        .await
        .expect("import");
    assert_eq!(report.imported, 1);
    assert!(keys.verify(&token).await.is_ok());
    // A plain key-management call works on it as on any key.
    let id = keys.verify(&token).await.expect("valid").id();
    keys.revoke(&ops, &id).await.expect("revoke");
    assert!(matches!(
        keys.verify(&token).await,
        Err(VerifyError::Revoked)
    ));
}

#[tokio::test]
async fn only_a_manager_may_import_and_unknown_legacy_prefixes_are_refused() {
    let keys = memory_keys();
    let viewer = Actor::new("viewer", "acme").permissions(keys.catalog().all());
    let file = format!(
        "{}\n",
        serde_json::json!({"token": legacy_token(1), "name": "x"})
    );
    assert!(matches!(
        keys.import(&viewer, read_jsonl(file.as_bytes()), ImportOptions::new())
            .await,
        Err(KeyError::Forbidden { .. })
    ));
    let ops = operator(&keys);
    let file = format!(
        "{}\n",
        serde_json::json!({"hash": hex(&sha("x")), "prefix": "beta_", "name": "x"})
    );
    let report = keys
        .import(&ops, read_jsonl(file.as_bytes()), ImportOptions::new())
        .await
        .expect("import");
    assert!(report.rejected[0]
        .reason
        .contains("not that of a legacy format"));
}

#[tokio::test]
async fn a_usage_limited_key_cannot_import_keys() {
    let keys = memory_keys();
    let ops = operator(&keys);
    let limited = keys
        .create(
            &ops,
            NewKey::new("metered manager")
                .permissions(["contacts:read"])
                .remaining(10),
        )
        .await
        .expect("create");
    let actor = keys
        .verify(limited.token.expose_secret())
        .await
        .expect("valid")
        .actor()
        .may_manage_keys(true);
    let file = format!(
        "{}\n",
        serde_json::json!({"token": legacy_token(1), "name": "x", "permissions": ["contacts:read"]})
    );
    assert!(matches!(
        keys.import(&actor, read_jsonl(file.as_bytes()), ImportOptions::new())
            .await,
        Err(KeyError::BoundExceeded { .. })
    ));
}

#[tokio::test]
async fn a_tenant_cap_counts_the_rows_of_the_same_run() {
    let keys = Keyward::builder(MemoryStore::new(), catalog())
        .legacy_format(acme())
        .tenant_policy("acme", TenantPolicy::new().max_active_keys(2))
        .build()
        .expect("valid config");
    let ops = operator(&keys);
    let file: String = (0..10)
        .map(|n| {
            format!(
                "{}\n",
                serde_json::json!({"token": legacy_token(n), "name": format!("k{n}")})
            )
        })
        .collect();
    let report = keys
        .import(&ops, read_jsonl(file.as_bytes()), ImportOptions::new())
        .await
        .expect("import");
    assert_eq!(report.imported, 2);
    assert_eq!(report.rejected.len(), 8);
    assert!(
        report.rejected[0].reason.contains("max_active_keys"),
        "{:?}",
        report.rejected
    );
}

#[tokio::test]
async fn rows_that_would_mislead_are_refused_without_quoting_secrets() {
    let audit = keyward::MemoryAuditSink::default();
    let keys = Keyward::builder(MemoryStore::new(), catalog())
        .legacy_format(acme())
        .audit(audit.clone())
        .build()
        .expect("valid config");
    let ops = operator(&keys);
    let secret_looking = legacy_token(99);
    let file = format!(
        "{}\n{}\n{}\n{}\n",
        // A year PostgreSQL cannot keep.
        serde_json::json!({"token": legacy_token(1), "name": "old", "created_at": "0000-06-01T00:00:00Z"}),
        // The same id twice, with different secrets (keyward hashes).
        serde_json::json!({"hash": hex(&sha("one")), "id": "AbCd1234", "name": "first"}),
        serde_json::json!({"hash": hex(&sha("two")), "id": "AbCd1234", "name": "second"}),
        // A token pasted into the tenant column.
        serde_json::json!({"token": legacy_token(2), "name": "x", "tenant": secret_looking}),
    );
    let report = keys
        .import(&ops, read_jsonl(file.as_bytes()), ImportOptions::new())
        .await
        .expect("import");
    assert_eq!(report.imported, 1, "{:?}", report.rejected);
    let reasons: Vec<&str> = report.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert!(reasons[0].contains("1970"), "{reasons:?}");
    assert!(reasons[1].contains("another secret"), "{reasons:?}");
    assert!(reasons[2].contains("invalid tenant"), "{reasons:?}");
    assert!(!format!("{reasons:?}").contains(&secret_looking[10..]));
    // A refusal by the rules is in the audit trail.
    let events = audit.events();
    assert!(events
        .iter()
        .any(|e| e.action == keyward::AuditAction::Import
            && e.outcome != keyward::AuditOutcome::Success));

    // The same secret already held in another tenant is not "present".
    let other = Actor::new("ops", "globex")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let file = format!(
        "{}\n",
        serde_json::json!({"token": legacy_token(1), "name": "dup"})
    );
    let first = keys
        .import(&ops, read_jsonl(file.as_bytes()), ImportOptions::new())
        .await
        .expect("import");
    assert_eq!(first.imported, 1);
    let theirs = keys
        .import(&other, read_jsonl(file.as_bytes()), ImportOptions::new())
        .await
        .expect("import");
    assert_eq!((theirs.imported, theirs.already_present), (0, 0));
    assert!(theirs.rejected[0].reason.contains("held by another key"));
}
