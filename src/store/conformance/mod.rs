//! The behaviour every [`KeyStore`] must have, as runnable checks.
//!
//! keyward runs this suite against each store it ships; run it against
//! yours. Each check gets a fresh, empty store from your factory. A failed
//! check panics with a message naming the rule, like an assertion in a
//! test. Call it from a multi-threaded tokio runtime so the concurrency
//! checks really race:
//!
//! ```
//! # async fn demo() {
//! use keyward::MemoryStore;
//! use keyward::store::conformance;
//!
//! // In a test: #[tokio::test(flavor = "multi_thread")]
//! conformance::run(|| async { MemoryStore::new() }).await;
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

mod access;
mod credits;
mod outbox;
mod records;
mod sweep;

use access::*;
use credits::*;
use outbox::*;
use records::*;
use sweep::*;

use super::KeyStore;
use crate::key::{sample_record, KeyRecord};
use crate::limit::RateLimit;
use crate::token::KeyId;

/// Runs every check, each against a fresh store from `new_store`.
///
/// # Panics
/// When the store breaks a rule; the message names it.
pub async fn run<S, F, Fut>(new_store: F)
where
    S: KeyStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    insert_then_get_round_trips(Arc::new(new_store().await)).await;
    duplicate_insert_is_refused(Arc::new(new_store().await)).await;
    inserts_in_bulk_skip_taken_ids(Arc::new(new_store().await)).await;
    concurrent_inserts_of_one_id_admit_one(Arc::new(new_store().await)).await;
    update_is_conditional_on_version(Arc::new(new_store().await)).await;
    update_leaves_last_used_and_immutable_fields(Arc::new(new_store().await)).await;
    last_used_only_moves_forward(Arc::new(new_store().await)).await;
    concurrent_updates_admit_one_per_version(Arc::new(new_store().await)).await;
    last_used_and_updates_do_not_lose_each_other(Arc::new(new_store().await)).await;
    delete_is_final(Arc::new(new_store().await)).await;
    tenants_are_isolated_and_paged(Arc::new(new_store().await)).await;
    scan_visits_every_key_once_in_order(Arc::new(new_store().await)).await;
    unlimited_and_missing_keys_have_no_credits(Arc::new(new_store().await)).await;
    credits_are_consumed_and_refilled(Arc::new(new_store().await)).await;
    concurrent_credits_never_overspend(Arc::new(new_store().await)).await;
    credits_move_in_bulk_and_never_below_zero(Arc::new(new_store().await)).await;
    credits_and_updates_do_not_lose_each_other(Arc::new(new_store().await)).await;
    changes_are_reported_to_subscribers(Arc::new(new_store().await)).await;
    scan_due_selects_exactly_the_due_keys(Arc::new(new_store().await)).await;
    access_rules_are_updated_and_kept(Arc::new(new_store().await)).await;
    credits_are_spent_by_cost(Arc::new(new_store().await)).await;
    roles_are_defined_and_announced(Arc::new(new_store().await)).await;
    deliveries_land_with_their_change_or_not_at_all(Arc::new(new_store().await)).await;
    claims_lease_settle_and_replay(Arc::new(new_store().await)).await;
    concurrent_claims_never_share_a_delivery(Arc::new(new_store().await)).await;
    endpoints_are_kept_per_tenant(Arc::new(new_store().await)).await;
    dead_deliveries_are_purged_after_a_while(Arc::new(new_store().await)).await;
    one_endpoints_backlog_never_fills_a_claim(Arc::new(new_store().await)).await;
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<KeyId>>);

impl super::ChangeListener for Recorder {
    fn changed(&self, id: &KeyId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(*id);
    }
    fn reset(&self) {}
}

impl Recorder {
    fn count(&self, id: KeyId) -> usize {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().filter(|s| **s == id).count()
    }

    /// Lets reports of earlier operations arrive (stores may report the
    /// same change more than once, e.g. locally and through a database
    /// channel), then returns how many there are.
    async fn settle(&self, id: KeyId) -> usize {
        let mut last = self.count(id);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let now = self.count(id);
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// Waits up to 5 s for a report about `id` beyond the first `seen`.
    async fn wait_beyond(&self, id: KeyId, seen: usize, what: &str) {
        for _ in 0..500 {
            if self.count(id) > seen {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("a store that subscribes must report {what}");
    }
}

async fn changes_are_reported_to_subscribers<S: KeyStore>(store: Arc<S>) {
    let recorder = Arc::new(Recorder::default());
    let weak: std::sync::Weak<Recorder> = Arc::downgrade(&recorder);
    if !store.subscribe(weak) {
        return;
    }
    let r = record("acme");
    store.insert(&r).await.expect("insert must succeed");
    recorder.wait_beyond(r.id, 0, "an insert").await;
    let seen = recorder.settle(r.id).await;
    let mut changed = r.clone();
    changed.revoked_at = Some(t0());
    store.update(&changed).await.expect("update must succeed");
    recorder.wait_beyond(r.id, seen, "an update").await;
    let seen = recorder.settle(r.id).await;
    assert!(store.delete(&r.id).await.expect("delete must succeed"));
    recorder.wait_beyond(r.id, seen, "a delete").await;
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default()
}

/// A realistic record in `tenant` with a fresh random id.
fn record(tenant: &str) -> KeyRecord {
    KeyRecord {
        name: "conformance key".to_string(),
        permissions: vec!["contacts:read".into(), "contacts:write".into()],
        created_by: "user_1".to_string(),
        created_at: t0(),
        expires_at: Some(t0() + Duration::days(30)),
        metadata: Some(serde_json::json!({"integration": "zapier", "n": 1})),
        rate_limit: Some(RateLimit::per_minute(200).expect("valid")),
        rolled_from: Some(KeyId::random().expect("OS randomness")),
        allowed_ips: Some("10.0.0.0/8, 2001:db8::/32".parse().expect("allowlist")),
        not_before: Some(t0() - Duration::days(1)),
        roles: vec!["support".into()],
        limits: vec![crate::limit::NamedLimit::new(
            "tokens",
            RateLimit::per_hour(100_000).expect("valid"),
        )
        .expect("name")],
        ..sample_record(tenant)
    }
}

async fn get<S: KeyStore>(store: &S, id: &KeyId) -> KeyRecord {
    store
        .get(id)
        .await
        .expect("get must succeed")
        .expect("the record must exist")
}
