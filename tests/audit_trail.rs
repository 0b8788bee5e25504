//! The persisted audit trail (`SqliteStore::audit_trail`,
//! `PostgresStore::audit_trail`): events written by the key database's
//! own table, read back per tenant and per key, paged, kept across
//! restarts, shared by a fleet, and pruned after the retention period.

mod common;

use chrono::Duration;
use common::catalog;
use keyward::{
    Actor, AuditQuery, AuditSettings, AuditTrail, Keyward, ManualClock, NewKey, SqlAuditTrail,
    SqliteStore,
};

fn admin(keys: &Keyward, tenant: &str) -> Actor {
    Actor::new("ops", tenant)
        .permissions(keys.catalog().all())
        .may_manage_keys(true)
}

fn actions(page: &keyward::AuditPage) -> Vec<&str> {
    page.events.iter().map(|e| e.action.as_str()).collect()
}

/// What every persisted trail must do, on a `Keyward` writing to `trail`.
async fn records_and_reads_back(keys: &Keyward, trail: &SqlAuditTrail) {
    let acme = admin(keys, "acme");
    let other = admin(keys, "other");
    let key = keys
        .create(&acme, NewKey::new("zap").permissions(["contacts:read"]))
        .await
        .expect("create");
    let id = key.key.id;
    keys.revoke(&acme, &id).await.expect("revoke");
    assert!(keys.verify(key.token.expose_secret()).await.is_err());
    keys.reactivate(&acme, &id).await.expect("reactivate");
    let rolled = keys
        .roll(&acme, &id, Duration::hours(1))
        .await
        .expect("roll");
    keys.create(&other, NewKey::new("theirs"))
        .await
        .expect("create");

    let page = trail
        .query(&AuditQuery::new().key(id))
        .await
        .expect("query");
    assert_eq!(
        actions(&page),
        ["roll", "reactivate", "verify", "revoke", "create"]
    );
    let roll = &page.events[0];
    assert_eq!(roll.related_key_id.as_deref(), Some(rolled.key.id.as_str()));
    assert_eq!(roll.actor.as_deref(), Some("ops"));
    assert_eq!(roll.key_prefix.as_deref(), Some(key.key.prefix.as_str()));
    assert_eq!(page.events[2].outcome, "denied");
    assert_eq!(page.events[2].reason.as_deref(), Some("api_key_revoked"));
    assert!(
        page.events.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first"
    );
    // The new key's trail holds the roll that made it.
    let new = trail
        .query(&AuditQuery::new().key(rolled.key.id))
        .await
        .expect("query");
    assert_eq!(actions(&new), ["roll"]);
    // Per tenant: only acme's.
    let acme_page = trail
        .query(&AuditQuery::new().tenant("acme"))
        .await
        .expect("query");
    assert!(acme_page
        .events
        .iter()
        .all(|e| e.tenant.as_deref() == Some("acme")));
    let other_page = trail
        .query(&AuditQuery::new().tenant("other"))
        .await
        .expect("query");
    assert_eq!(actions(&other_page), ["create"]);
    // Paged: pages of two see the same events, once each.
    let mut seen = Vec::new();
    let mut query = AuditQuery::new().key(id).limit(2);
    loop {
        let page = trail.query(&query).await.expect("query");
        assert!(page.events.len() <= 2);
        seen.extend(page.events.iter().map(|e| e.seq));
        match page.next {
            Some(next) => query = AuditQuery::new().key(id).limit(2).before(next),
            None => break,
        }
    }
    let all: Vec<u64> = trail
        .query(&AuditQuery::new().key(id))
        .await
        .expect("query")
        .events
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seen, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_trail_across_a_restart() {
    let dir = common::TempDir::new("audit");
    let db = dir.path().join("keys.db");
    let id = {
        let store = SqliteStore::open(&db).await.expect("open");
        let trail = store.audit_trail(AuditSettings::default());
        let keys = Keyward::builder(store, catalog())
            .audit(trail.clone())
            .build()
            .expect("config");
        records_and_reads_back(&keys, &trail).await;
        let made = keys
            .create(&admin(&keys, "acme"), NewKey::new("last"))
            .await
            .expect("create");
        trail.flush().await;
        made.key.id
    };
    let store = SqliteStore::open(&db).await.expect("reopen");
    let trail = store.audit_trail(AuditSettings::default());
    let page = trail
        .query(&AuditQuery::new().key(id))
        .await
        .expect("query");
    assert_eq!(actions(&page), ["create"], "written before the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_retention_period_are_pruned() {
    let store = SqliteStore::in_memory().await.expect("sqlite");
    let clock = ManualClock::default();
    let trail = store.audit_trail(
        AuditSettings::default()
            .retention(Some(Duration::days(7)))
            .clock(clock.clone()),
    );
    let keys = Keyward::builder(store, catalog())
        .clock(clock.clone())
        .audit(trail.clone())
        .build()
        .expect("config");
    let acme = admin(&keys, "acme");
    let old = keys
        .create(&acme, NewKey::new("old"))
        .await
        .expect("create");
    clock.advance(Duration::days(6));
    let young = keys
        .create(&acme, NewKey::new("young"))
        .await
        .expect("create");
    trail.flush().await;
    assert_eq!(
        trail.prune().await.expect("prune"),
        0,
        "nothing is 7 days old yet"
    );
    clock.advance(Duration::days(1) + Duration::seconds(1));
    assert_eq!(trail.prune().await.expect("prune"), 1);
    let page = trail
        .query(&AuditQuery::new().tenant("acme"))
        .await
        .expect("query");
    let ids: Vec<_> = page.events.iter().map(|e| e.key_id.clone()).collect();
    assert_eq!(ids, [Some(young.key.id.to_string())]);
    assert!(!ids.contains(&Some(old.key.id.to_string())));
    // Kept forever when asked.
    let forever = SqliteStore::in_memory()
        .await
        .expect("sqlite")
        .audit_trail(AuditSettings::default().retention(None));
    assert_eq!(forever.prune().await.expect("prune"), 0);
}

#[test]
fn refusals_are_bounded_and_made_up_tokens_cost_no_row() {
    // One thread: the writer cannot run while the loops record, since
    // nothing below waits on it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let clock = ManualClock::default();
        let store = SqliteStore::in_memory().await.expect("sqlite");
        let trail = store.audit_trail(
            AuditSettings::default()
                .queue(3)
                .refusals_per_second(1000)
                .clock(clock.clone()),
        );
        let keys = Keyward::builder(keyward::MemoryStore::new(), catalog())
            .clock(clock.clone())
            .audit(trail.clone())
            .build()
            .expect("config");
        // Made-up tokens and wrong secrets: no row, nothing counted.
        for _ in 0..100 {
            assert!(keys.verify("not a token").await.is_err());
            assert!(keys
                .verify("sk_abcdefgh_0000000000000000000000000000000000")
                .await
                .is_err());
        }
        assert_eq!(trail.dropped(), 0);
        // A revoked key's refusals: three wait, the rest are dropped.
        let acme = admin(&keys, "acme");
        let key = keys.create(&acme, NewKey::new("k")).await.expect("create");
        keys.revoke(&acme, &key.key.id).await.expect("revoke");
        for _ in 0..100 {
            assert!(keys.verify(key.token.expose_secret()).await.is_err());
        }
        assert_eq!(trail.dropped(), 97);
        assert!(trail.flush().await);
        let page = trail
            .query(&AuditQuery::new().limit(200))
            .await
            .expect("query");
        assert_eq!(
            actions(&page),
            ["verify", "verify", "verify", "revoke", "create"]
        );
        // Management events are never dropped for want of room.
        for _ in 0..10 {
            keys.create(&acme, NewKey::new("more"))
                .await
                .expect("create");
        }
        assert_eq!(trail.dropped(), 97);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_past_the_per_second_cap_are_dropped() {
    let clock = ManualClock::default();
    let store = SqliteStore::in_memory().await.expect("sqlite");
    let trail = store.audit_trail(
        AuditSettings::default()
            .refusals_per_second(5)
            .clock(clock.clone()),
    );
    let keys = Keyward::builder(keyward::MemoryStore::new(), catalog())
        .clock(clock.clone())
        .audit(trail.clone())
        .build()
        .expect("config");
    let acme = admin(&keys, "acme");
    let key = keys.create(&acme, NewKey::new("k")).await.expect("create");
    keys.revoke(&acme, &key.key.id).await.expect("revoke");
    for _ in 0..20 {
        assert!(keys.verify(key.token.expose_secret()).await.is_err());
    }
    clock.advance(Duration::seconds(1));
    for _ in 0..20 {
        assert!(keys.verify(key.token.expose_secret()).await.is_err());
    }
    assert!(trail.flush().await);
    let page = trail
        .query(&AuditQuery::new().key(key.key.id).limit(200))
        .await
        .expect("query");
    let refusals = page.events.iter().filter(|e| e.action == "verify").count();
    assert_eq!(refusals, 10, "five a second, over two seconds");
    assert_eq!(trail.dropped(), 30);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shares_one_trail_across_a_fleet() {
    use common::pg::PgServer;
    let Some(server) = PgServer::start() else {
        return;
    };
    let a = keyward::PostgresStore::connect(&server.url())
        .await
        .expect("a");
    let b = keyward::PostgresStore::connect(&server.url())
        .await
        .expect("b");
    let trail_a = a.audit_trail(AuditSettings::default());
    let trail_b = b.audit_trail(AuditSettings::default());
    let keys_a = Keyward::builder(a, catalog())
        .audit(trail_a.clone())
        .build()
        .expect("config");
    records_and_reads_back(&keys_a, &trail_a).await;
    let made = keys_a
        .create(&admin(&keys_a, "acme"), NewKey::new("seen by b"))
        .await
        .expect("create");
    trail_a.flush().await;
    let page = trail_b
        .query(&AuditQuery::new().key(made.key.id))
        .await
        .expect("query");
    assert_eq!(actions(&page), ["create"], "instance b reads what a wrote");
    assert_eq!(trail_a.dropped(), 0);
    drop(b);
}
