//! The rule of key management, through the public API: a key never holds
//! more than the actor who created or last changed it, in any dimension.
//! One test per finding of step 6's review (findings 1–7; finding 8 is a
//! unit test in `permission.rs`, finding 9 is in `tests/http.rs`).

mod common;

use chrono::Duration;
use common::{admin, harness, harness_with, CountingStore};
use keyward::{
    Actor, Dimension, KeyError, KeyId, KeyUpdate, Keyward, ManualClock, NewKey, RateLimit, Refill,
    VerifyError,
};

fn per_minute(n: u32) -> RateLimit {
    RateLimit::per_minute(n).expect("valid limit")
}

/// A manager key's actor, as the example service makes it.
async fn manager_of(keys: &Keyward, token: &str) -> Actor {
    keys.verify(token)
        .await
        .expect("the manager key verifies")
        .actor()
        .may_manage_keys(true)
}

fn bound(result: Result<impl std::fmt::Debug, KeyError>) -> Dimension {
    match result {
        Err(KeyError::BoundExceeded { dimension }) => dimension,
        other => panic!("expected BoundExceeded, got {other:?}"),
    }
}

fn outranked(result: Result<impl std::fmt::Debug, KeyError>) -> Dimension {
    match result {
        Err(KeyError::Outranked { dimension, .. }) => dimension,
        other => panic!("expected Outranked, got {other:?}"),
    }
}

/// Finding 1: a manager key that expires in an hour, is limited to 5/min
/// and has 3 uses minted a child with no expiry, no limit and unlimited
/// uses, which then lifted its creator's limit and outlived it.
#[tokio::test]
async fn a_key_cannot_mint_a_key_that_outlives_or_outruns_it() {
    let h = harness();
    let root = admin(&h.keys, "acme");
    let manager = h
        .keys
        .create(
            &root,
            NewKey::new("manager")
                .permission_set(h.keys.catalog().all())
                .expires_in(Duration::hours(1))
                .rate_limit(per_minute(5))
                .remaining(3),
        )
        .await
        .expect("created");
    let actor = manager_of(&h.keys, manager.token.expose_secret()).await;

    // A usage-limited key cannot mint an unlimited key.
    assert_eq!(
        bound(h.keys.create(&actor, NewKey::new("unlimited")).await),
        Dimension::Usage
    );
    // Expiry and rate limit are inherited, not lifted; uses are split.
    let child = h
        .keys
        .create(
            &actor,
            NewKey::new("child")
                .permission_set(h.keys.catalog().all())
                .remaining(1),
        )
        .await
        .expect("created within the manager's bounds");
    assert_eq!(child.key.expires_at, manager.key.expires_at);
    assert_eq!(child.key.rate_limit, Some(per_minute(5)));
    assert_eq!(child.key.remaining, Some(1));
    let left = h.keys.get(&root, &manager.key.id).await.expect("get");
    assert_eq!(
        left.remaining,
        Some(1),
        "3 uses: one spent verifying, one given to the child, one left"
    );

    // Asking for more is refused, dimension by dimension.
    let ask = |n: NewKey| h.keys.create(&actor, n);
    assert_eq!(
        bound(ask(NewKey::new("x").expires_in(Duration::hours(2))).await),
        Dimension::Expiry
    );
    assert_eq!(
        bound(ask(NewKey::new("x").rate_limit(per_minute(6))).await),
        Dimension::RateLimit
    );
    assert_eq!(
        bound(ask(NewKey::new("x").rate_limit(RateLimit::per_second(5).expect("valid"))).await),
        Dimension::RateLimit,
        "the same burst at a higher rate is looser"
    );
    assert_eq!(
        bound(ask(NewKey::new("x").remaining(100)).await),
        Dimension::Usage
    );
    assert_eq!(
        bound(ask(NewKey::new("x").remaining(2)).await),
        Dimension::Usage,
        "the manager's snapshot said 2 left, but one went to the child"
    );
    let refill = Refill::new(1, Duration::days(1)).expect("valid");
    assert_eq!(
        bound(ask(NewKey::new("x").remaining(1).refill(refill)).await),
        Dimension::Usage,
        "a usage-limited manager cannot hand out a refill it does not have"
    );

    // The child cannot lift its creator's limit, nor loosen itself.
    let child_actor = manager_of(&h.keys, child.token.expose_secret()).await;
    assert_eq!(
        outranked(
            h.keys
                .set_rate_limit(&child_actor, &manager.key.id, None)
                .await
        ),
        Dimension::Usage,
        "the manager had more uses left than its child: the child cannot touch it"
    );
    let still = h.keys.get(&root, &manager.key.id).await.expect("get");
    assert_eq!(still.rate_limit, Some(per_minute(5)));
    assert_eq!(
        bound(
            h.keys
                .set_rate_limit(&child_actor, &child.key.id, Some(per_minute(50)))
                .await
        ),
        Dimension::RateLimit
    );

    // It ends when its creator does.
    h.clock.advance(Duration::hours(1) + Duration::seconds(1));
    assert!(matches!(
        h.keys.verify(child.token.expose_secret()).await,
        Err(VerifyError::Expired)
    ));
}

/// The default rate limit counts: a child left to the instance's default
/// gets the manager's limit when the default is looser.
#[tokio::test]
async fn the_instance_default_limit_is_no_way_around_the_bound() {
    let h = harness_with(|b| b.rate_limit(per_minute(100)));
    let root = admin(&h.keys, "acme");
    let manager = h
        .keys
        .create(
            &root,
            NewKey::new("manager")
                .permission_set(h.keys.catalog().all())
                .rate_limit(per_minute(5)),
        )
        .await
        .expect("created");
    let actor = manager_of(&h.keys, manager.token.expose_secret()).await;
    let child = h
        .keys
        .create(&actor, NewKey::new("child"))
        .await
        .expect("created");
    assert_eq!(child.key.rate_limit, Some(per_minute(5)));
    assert_eq!(
        bound(h.keys.set_rate_limit(&actor, &child.key.id, None).await),
        Dimension::RateLimit,
        "back to the 100/min default would be looser than the manager"
    );
}

/// Finding 2: a manager holding `contacts:read` plus key management
/// renamed, re-limited, downgraded, revoked and deleted a full-admin key.
#[tokio::test]
async fn a_lesser_manager_cannot_touch_a_stronger_key() {
    let h = harness();
    let root = admin(&h.keys, "acme");
    let strong = h
        .keys
        .create(
            &root,
            NewKey::new("bootstrap admin").permission_set(h.keys.catalog().all()),
        )
        .await
        .expect("created");
    let weak_key = h
        .keys
        .create(&root, NewKey::new("reader").permissions(["contacts:read"]))
        .await
        .expect("created");
    let human = Actor::new("user_7", "acme")
        .permissions(
            h.keys
                .catalog()
                .parse_set(["contacts:read"])
                .expect("known"),
        )
        .may_manage_keys(true);
    let keyed = manager_of(&h.keys, weak_key.token.expose_secret()).await;
    let id = strong.key.id;
    for lesser in [&human, &keyed] {
        let k = &h.keys;
        assert_eq!(
            outranked(k.rename(lesser, &id, "pwned").await),
            Dimension::Permissions
        );
        assert_eq!(
            outranked(k.set_rate_limit(lesser, &id, Some(per_minute(1))).await),
            Dimension::Permissions
        );
        assert_eq!(
            outranked(k.set_permissions(lesser, &id, ["contacts:read"]).await),
            Dimension::Permissions
        );
        assert_eq!(
            outranked(k.update(lesser, &id, KeyUpdate::new().name("x")).await),
            Dimension::Permissions
        );
        assert_eq!(
            outranked(k.revoke(lesser, &id).await),
            Dimension::Permissions
        );
        assert_eq!(
            outranked(k.roll(lesser, &id, Duration::zero()).await),
            Dimension::Permissions
        );
        assert_eq!(
            outranked(k.delete(lesser, &id).await),
            Dimension::Permissions
        );
    }
    let info = h.keys.get(&root, &id).await.expect("still there");
    assert_eq!(info.name, "bootstrap admin");
    assert_eq!(info.permissions, h.keys.catalog().all());
    assert_eq!(info.rate_limit, None);
    h.keys
        .verify(strong.token.expose_secret())
        .await
        .expect("the admin key still works");

    // Revoked by someone entitled, it stays beyond the lesser manager.
    h.keys.revoke(&root, &id).await.expect("revoked");
    assert_eq!(
        outranked(h.keys.reactivate(&human, &id).await),
        Dimension::Permissions
    );
    // An expiring manager cannot touch a key that never expires either.
    let expiring = Actor::new("user_8", "acme")
        .permissions(h.keys.catalog().all())
        .expires_at(keyward::Clock::now(&h.clock) + Duration::days(1))
        .may_manage_keys(true);
    assert_eq!(
        outranked(h.keys.reactivate(&expiring, &id).await),
        Dimension::Expiry
    );

    // What the lesser manager does hold, it may manage.
    h.keys
        .rename(&human, &weak_key.key.id, "still mine")
        .await
        .expect("a key within the manager's bounds");
}

/// Finding 3, at the library level: tenant paths are canonical or
/// refused, never compared as strings.
#[tokio::test]
async fn tenant_tricks_are_refused_as_invalid_not_matched() {
    let h = harness_with(|b| b.nested_tenants(true));
    let agency = admin(&h.keys, "agency");
    let parent = h
        .keys
        .create(&agency, NewKey::new("parent"))
        .await
        .expect("created");
    let child = h
        .keys
        .create(&agency, NewKey::new("child").tenant("agency/loc1"))
        .await
        .expect("created below");
    let tricks = [
        "agency/",
        "agency//x",
        "agency/../globex",
        "agency/%",
        "agency/*",
        "agency/\0",
        "agency/loc1/../loc2",
        "agency/loc1/",
        "agency/loc1/.",
        "agency/\u{202E}1col",
        " agency",
        "",
    ];
    for trick in tricks {
        for token in [&parent.token, &child.token] {
            assert!(
                matches!(
                    h.keys.verify_for_tenant(token.expose_secret(), trick).await,
                    Err(VerifyError::InvalidTenant(_))
                ),
                "{trick:?} must be refused as invalid"
            );
        }
        let loc1 = admin(&h.keys, "agency/loc1");
        assert!(
            matches!(
                h.keys.create(&loc1, NewKey::new("x").tenant(trick)).await,
                Err(KeyError::InvalidTenant(_))
            ),
            "creating in {trick:?} must be refused"
        );
        assert!(matches!(
            h.keys.list(&agency, trick).await,
            Err(KeyError::InvalidTenant(_))
        ));
        let odd = admin(&h.keys, trick);
        assert!(
            matches!(
                h.keys.create(&odd, NewKey::new("x")).await,
                Err(KeyError::Forbidden { .. })
            ),
            "an actor of {trick:?} manages nothing"
        );
    }
    // The real paths still work, and never the wrong way round.
    h.keys
        .verify_for_tenant(parent.token.expose_secret(), "agency/loc1")
        .await
        .expect("a parent acts for its child");
    assert!(matches!(
        h.keys
            .verify_for_tenant(child.token.expose_secret(), "agency")
            .await,
        Err(VerifyError::WrongTenant)
    ));
    assert!(matches!(
        h.keys
            .verify_for_tenant(child.token.expose_secret(), "agency/loc2")
            .await,
        Err(VerifyError::WrongTenant)
    ));
}

/// Finding 4: `roll` copied `remaining` while the old key kept its own
/// uses, and the old key could be rolled again: a 10-use key rolled twice
/// gave 30 successful verifies.
#[tokio::test]
async fn rolling_never_multiplies_uses() {
    let h = harness();
    let root = admin(&h.keys, "acme");
    let first = h
        .keys
        .create(&root, NewKey::new("metered").remaining(10))
        .await
        .expect("created");
    let second = h
        .keys
        .roll(&root, &first.key.id, Duration::hours(1))
        .await
        .expect("rolled");
    assert!(
        matches!(
            h.keys.roll(&root, &first.key.id, Duration::hours(1)).await,
            Err(KeyError::RolledAway { .. })
        ),
        "a key in its grace period cannot be rolled again"
    );
    // Spend a few on the old key during its grace: they come out of the
    // same pool.
    for _ in 0..3 {
        h.keys
            .verify(first.token.expose_secret())
            .await
            .expect("grace");
    }
    let third = h
        .keys
        .roll(&root, &second.key.id, Duration::hours(1))
        .await
        .expect("the new key rolls");
    let tokens = [&first.token, &second.token, &third.token];
    let mut successes = 3;
    for round in 0..20 {
        for token in tokens {
            if h.keys.verify(token.expose_secret()).await.is_ok() {
                successes += 1;
            }
        }
        let _ = round;
    }
    assert_eq!(successes, 10, "one pool of 10 uses across the lineage");
    let third = h.keys.get(&root, &third.key.id).await.expect("get");
    assert_eq!(third.remaining, Some(0));
}

/// Finding 5: after a zero-grace roll (of a leaked key, say),
/// `reactivate` brought the old key back beside the new one.
#[tokio::test]
async fn a_rolled_away_key_never_comes_back() {
    let h = harness();
    let root = admin(&h.keys, "acme");
    for grace in [Duration::zero(), Duration::hours(1)] {
        let leaked = h
            .keys
            .create(&root, NewKey::new("leaked"))
            .await
            .expect("created");
        let new = h
            .keys
            .roll(&root, &leaked.key.id, grace)
            .await
            .expect("rolled");
        match h.keys.reactivate(&root, &leaked.key.id).await {
            Err(KeyError::RolledAway { successor, .. }) => assert_eq!(successor, new.key.id),
            other => panic!("expected RolledAway, got {other:?}"),
        }
        let info = h.keys.get(&root, &leaked.key.id).await.expect("listed");
        assert_eq!(info.rolled_to, Some(new.key.id));
    }
    // An expired key is not brought back either: expiry is final.
    let temp = h
        .keys
        .create(&root, NewKey::new("temp").expires_in(Duration::hours(1)))
        .await
        .expect("created");
    h.keys.revoke(&root, &temp.key.id).await.expect("revoked");
    h.clock.advance(Duration::hours(2));
    assert!(matches!(
        h.keys.reactivate(&root, &temp.key.id).await,
        Err(KeyError::NotActive { .. })
    ));
}

/// Finding 6: with a 2/min quota on `agency/loc1`, an `agency` key acting
/// for `agency/loc1` got 20 of 20 requests through.
#[tokio::test]
async fn a_parent_key_pays_the_child_tenants_quota_and_its_own() {
    let h = harness_with(|b| {
        b.nested_tenants(true)
            .tenant_quota_for("agency/loc1", per_minute(2))
            .tenant_quota_for("agency", per_minute(5))
    });
    let agency = admin(&h.keys, "agency");
    let parent = h
        .keys
        .create(&agency, NewKey::new("parent"))
        .await
        .expect("created");
    let local = h
        .keys
        .create(&agency, NewKey::new("local").tenant("agency/loc1"))
        .await
        .expect("created");
    let mut through = 0;
    for _ in 0..20 {
        match h
            .keys
            .verify_for_tenant(parent.token.expose_secret(), "agency/loc1")
            .await
        {
            Ok(_) => through += 1,
            Err(VerifyError::QuotaExceeded { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(through, 2, "the child's quota applies to the parent's key");
    assert!(
        matches!(
            h.keys.verify(local.token.expose_secret()).await,
            Err(VerifyError::QuotaExceeded { .. })
        ),
        "and it is the same quota the child's own keys share"
    );
    // The parent's own quota applies too: 2 used above, 3 left of 5.
    let mut through = 0;
    for _ in 0..10 {
        if h.keys
            .verify_for_tenant(parent.token.expose_secret(), "agency/loc2")
            .await
            .is_ok()
        {
            through += 1;
        }
    }
    assert_eq!(through, 3, "the parent's own quota still counts");
}

/// Finding 7: the last-used flush ran inside a request, so a store that
/// held its write lock stalled verifies; and a store read had no time
/// limit of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sick_store_stalls_no_request() {
    use std::sync::atomic::Ordering;
    let store = CountingStore::default();
    let clock = ManualClock::default();
    let keys = Keyward::builder(store.clone(), common::catalog())
        .clock(clock.clone())
        .store_timeout(Duration::milliseconds(200))
        .build()
        .expect("config");
    let root = admin(&keys, "acme");
    let k = keys.create(&root, NewKey::new("k")).await.expect("created");
    let other = keys
        .create(&root, NewKey::new("other"))
        .await
        .expect("created");
    // Writes of "last used" hang for a minute: every verify is still quick.
    store.last_used_delay_ms.store(60_000, Ordering::SeqCst);
    for _ in 0..3 {
        clock.advance(Duration::minutes(2));
        let verified = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            keys.verify(k.token.expose_secret()),
        )
        .await;
        assert!(
            matches!(verified, Ok(Ok(_))),
            "a verify waited for the last-used write"
        );
    }
    // A read that never answers ends in a store error at the deadline.
    store.get_delay_ms.store(60_000, Ordering::SeqCst);
    let verified = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        keys.verify(other.token.expose_secret()),
    )
    .await;
    match verified {
        Ok(Err(VerifyError::Store(e))) => {
            assert!(
                e.to_string().contains("did not answer within 200 ms"),
                "{e}"
            )
        }
        other => panic!("expected a store error by the deadline, got {other:?}"),
    }
}

/// A usage-limited key's children share its uses: however they are
/// split, the family never gets more successful verifies than the first
/// key had.
#[tokio::test]
async fn children_of_a_usage_limited_key_split_its_uses() {
    let h = harness();
    let root = admin(&h.keys, "acme");
    let parent = h
        .keys
        .create(
            &root,
            NewKey::new("parent")
                .permission_set(h.keys.catalog().all())
                .remaining(10),
        )
        .await
        .expect("created");
    let mut tokens = vec![parent.token];
    let mut successes = 0;
    // Every key mints a child with half of what it has left, repeatedly.
    for _ in 0..6 {
        let mut born = Vec::new();
        for token in &tokens {
            let Ok(v) = h.keys.verify(token.expose_secret()).await else {
                continue;
            };
            successes += 1;
            let half = v.remaining().unwrap_or(0) / 2;
            if half == 0 {
                continue;
            }
            let actor = v.actor().may_manage_keys(true);
            let child = h
                .keys
                .create(
                    &actor,
                    NewKey::new("child")
                        .permission_set(h.keys.catalog().all())
                        .remaining(half),
                )
                .await
                .expect("within bounds");
            born.push(child.token);
        }
        tokens.extend(born);
    }
    for token in &tokens {
        while h.keys.verify(token.expose_secret()).await.is_ok() {
            successes += 1;
        }
    }
    assert_eq!(successes, 10, "{} keys shared 10 uses", tokens.len());
    // A refill would make uses out of nothing.
    let v = h
        .keys
        .create(
            &root,
            NewKey::new("p2")
                .permission_set(h.keys.catalog().all())
                .remaining(5),
        )
        .await
        .expect("created");
    let actor = manager_of(&h.keys, v.token.expose_secret()).await;
    let refill = Refill::new(1, Duration::days(1)).expect("valid");
    assert_eq!(
        bound(
            h.keys
                .create(&actor, NewKey::new("r").remaining(1).refill(refill))
                .await
        ),
        Dimension::Usage
    );
}

/// A leaked key in its grace period manages nothing, least of all its
/// own successor.
#[tokio::test]
async fn a_rolled_away_key_manages_nothing() {
    let h = harness();
    let root = admin(&h.keys, "acme");
    let old = h
        .keys
        .create(
            &root,
            NewKey::new("admin key").permission_set(h.keys.catalog().all()),
        )
        .await
        .expect("created");
    let new = h
        .keys
        .roll(&root, &old.key.id, Duration::hours(1))
        .await
        .expect("rolled");
    let leaked = manager_of(&h.keys, old.token.expose_secret()).await;
    assert!(matches!(
        h.keys.roll(&leaked, &new.key.id, Duration::zero()).await,
        Err(KeyError::Forbidden { .. })
    ));
    assert!(matches!(
        h.keys.revoke(&leaked, &new.key.id).await,
        Err(KeyError::Forbidden { .. })
    ));
    assert!(matches!(
        h.keys.create(&leaked, NewKey::new("backdoor")).await,
        Err(KeyError::Forbidden { .. })
    ));
    h.keys
        .verify(new.token.expose_secret())
        .await
        .expect("the successor is untouched");
}

/// On a key's actor, the builder's setters only tighten.
#[tokio::test]
async fn a_keys_actor_can_be_narrowed_never_widened() {
    let h = harness();
    let root = admin(&h.keys, "acme");
    let soon = keyward::Clock::now(&h.clock) + Duration::hours(1);
    let k = h
        .keys
        .create(
            &root,
            NewKey::new("k")
                .permissions(["contacts:read"])
                .expires_at(soon)
                .rate_limit(per_minute(5)),
        )
        .await
        .expect("created");
    let v = h.keys.verify(k.token.expose_secret()).await.expect("valid");
    let widened = v
        .actor()
        .permissions(h.keys.catalog().all())
        .expires_at(soon + Duration::days(365))
        .rate_limit(per_minute(1_000))
        .may_manage_keys(true);
    let child = h
        .keys
        .create(&widened, NewKey::new("child"))
        .await
        .expect("created");
    assert_eq!(child.key.expires_at, Some(soon));
    assert_eq!(child.key.rate_limit, Some(per_minute(5)));
    assert!(matches!(
        h.keys
            .create(&widened, NewKey::new("c").permissions(["contacts:write"]))
            .await,
        Err(KeyError::PermissionEscalation { .. })
    ));
}

/// A [`MemoryStore`] that, once armed, interferes with a roll at one of
/// its steps, as a racing request or a failing database would.
#[derive(Debug, Clone, Default)]
struct Interfering {
    inner: keyward::MemoryStore,
    /// Delete this key just before uses are taken from it.
    delete_before_take: std::sync::Arc<std::sync::Mutex<Option<keyward::KeyId>>>,
    /// Revoke this key, then fail the next insert.
    revoke_then_fail_insert: std::sync::Arc<std::sync::Mutex<Option<keyward::KeyId>>>,
    /// Write this key unchanged (as a revoke that keeps the instant does),
    /// then fail the next insert.
    touch_then_fail_insert: std::sync::Arc<std::sync::Mutex<Option<keyward::KeyId>>>,
    /// Fail the next insert.
    fail_insert: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl keyward::store::KeyStore for Interfering {
    async fn insert(&self, record: &keyward::store::KeyRecord) -> Result<(), keyward::StoreError> {
        if self
            .fail_insert
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(keyward::StoreError::Unavailable {
                message: "insert failed".into(),
                source: None,
            });
        }
        let touched = self.touch_then_fail_insert.lock().expect("lock").take();
        if let Some(id) = touched {
            let r = self.inner.get(&id).await?.expect("armed key exists");
            self.inner.update(&r).await?;
            return Err(keyward::StoreError::Unavailable {
                message: "insert failed".into(),
                source: None,
            });
        }
        let armed = self.revoke_then_fail_insert.lock().expect("lock").take();
        if let Some(id) = armed {
            let mut r = self.inner.get(&id).await?.expect("armed key exists");
            r.revoked_at = Some(chrono::Utc::now());
            self.inner.update(&r).await?;
            return Err(keyward::StoreError::Unavailable {
                message: "insert failed".into(),
                source: None,
            });
        }
        self.inner.insert(record).await
    }
    async fn get(
        &self,
        id: &KeyId,
    ) -> Result<Option<keyward::store::KeyRecord>, keyward::StoreError> {
        self.inner.get(id).await
    }
    async fn update(&self, record: &keyward::store::KeyRecord) -> Result<u64, keyward::StoreError> {
        self.inner.update(record).await
    }
    async fn delete(&self, id: &KeyId) -> Result<bool, keyward::StoreError> {
        self.inner.delete(id).await
    }
    async fn list_by_tenant(
        &self,
        tenant: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<keyward::store::KeyRecord>, keyward::StoreError> {
        self.inner.list_by_tenant(tenant, after, limit).await
    }
    async fn scan(
        &self,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<keyward::store::KeyRecord>, keyward::StoreError> {
        self.inner.scan(after, limit).await
    }
    async fn record_last_used(
        &self,
        batch: &[(KeyId, chrono::DateTime<chrono::Utc>)],
    ) -> Result<(), keyward::StoreError> {
        self.inner.record_last_used(batch).await
    }
    async fn consume_credit(
        &self,
        id: &KeyId,
        cost: u64,
        refill: Option<keyward::store::RefillDue>,
    ) -> Result<keyward::store::Credit, keyward::StoreError> {
        self.inner.consume_credit(id, cost, refill).await
    }
    async fn roles(&self) -> Result<Vec<keyward::RoleDefinition>, keyward::StoreError> {
        self.inner.roles().await
    }
    async fn put_role(&self, role: &keyward::RoleDefinition) -> Result<(), keyward::StoreError> {
        self.inner.put_role(role).await
    }
    async fn adjust_credits(
        &self,
        id: &KeyId,
        delta: i64,
    ) -> Result<keyward::store::Credit, keyward::StoreError> {
        let armed = self.delete_before_take.lock().expect("lock").take();
        if let Some(victim) = armed.filter(|v| v == id && delta < 0) {
            self.inner.delete(&victim).await?;
        }
        self.inner.adjust_credits(id, delta).await
    }
}

fn interfering() -> (Keyward, Interfering) {
    let store = Interfering::default();
    let keys = Keyward::builder(store.clone(), common::catalog())
        .build()
        .expect("config");
    (keys, store)
}

/// Second review, finding 1: a delete racing a roll made the successor of
/// a usage-limited key unlimited. A roll never turns a limited key into
/// an unlimited one: it fails, and stores no successor.
#[tokio::test]
async fn a_delete_racing_a_roll_never_yields_an_unlimited_key() {
    let (keys, store) = interfering();
    let root = admin(&keys, "acme");
    let k = keys
        .create(&root, NewKey::new("metered").remaining(1))
        .await
        .expect("created");
    *store.delete_before_take.lock().expect("lock") = Some(k.key.id);
    let rolled = keys.roll(&root, &k.key.id, Duration::hours(1)).await;
    assert!(matches!(rolled, Err(KeyError::NotFound(_))), "{rolled:?}");
    let left = keys.list(&root, "acme").await.expect("list");
    assert!(
        left.iter().all(|k| k.remaining.is_some()),
        "no unlimited key came out of a limited one: {left:?}"
    );
}

/// Second review, finding 4: a failed roll gave back what it had taken,
/// and also undid a revocation made meanwhile.
#[tokio::test]
async fn a_failed_roll_keeps_a_revocation_made_meanwhile() {
    let (keys, store) = interfering();
    let root = admin(&keys, "acme");
    let k = keys
        .create(&root, NewKey::new("k").remaining(7))
        .await
        .expect("created");
    *store.revoke_then_fail_insert.lock().expect("lock") = Some(k.key.id);
    let rolled = keys.roll(&root, &k.key.id, Duration::hours(1)).await;
    assert!(matches!(rolled, Err(KeyError::Store(_))), "{rolled:?}");
    let info = keys.get(&root, &k.key.id).await.expect("still there");
    assert!(info.revoked_at.is_some(), "the revocation stays");
    assert_eq!(info.rolled_to, None, "no successor");
    assert_eq!(info.remaining, Some(7), "its uses came back");
}

/// Third review: a revoke landing during a zero-grace roll keeps the
/// roll's instant, so comparing values could not tell it from the roll's
/// own write; the version can.
#[tokio::test]
async fn a_failed_roll_keeps_a_revoke_that_kept_its_instant() {
    let (keys, store) = interfering();
    let root = admin(&keys, "acme");
    let k = keys.create(&root, NewKey::new("k")).await.expect("created");
    *store.touch_then_fail_insert.lock().expect("lock") = Some(k.key.id);
    let rolled = keys.roll(&root, &k.key.id, Duration::zero()).await;
    assert!(matches!(rolled, Err(KeyError::Store(_))), "{rolled:?}");
    let info = keys.get(&root, &k.key.id).await.expect("still there");
    assert!(info.revoked_at.is_some(), "the concurrent revoke stays");
    assert_eq!(info.rolled_to, None, "no successor");
    // Without a concurrent change, a failed roll gives the key back whole.
    let other = keys
        .create(&root, NewKey::new("o").remaining(4))
        .await
        .expect("created");
    *store.touch_then_fail_insert.lock().expect("lock") = None;
    store
        .fail_insert
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let rolled = keys.roll(&root, &other.key.id, Duration::zero()).await;
    assert!(matches!(rolled, Err(KeyError::Store(_))), "{rolled:?}");
    let info = keys.get(&root, &other.key.id).await.expect("there");
    assert!(info.revoked_at.is_none(), "the roll's revoke is taken back");
    assert_eq!((info.rolled_to, info.remaining), (None, Some(4)));
}

/// Second review, findings 2 and 3: a key with a refill rolled itself
/// again and again and each rolled-away key refilled its successor's
/// pool; and a key that refills banked uses in carved children.
#[tokio::test]
async fn refills_are_never_multiplied_by_rolls_or_children() {
    let h = harness();
    let root = admin(&h.keys, "acme");
    let daily = Refill::new(5, Duration::days(1)).expect("valid");
    let first = h
        .keys
        .create(
            &root,
            NewKey::new("refilling")
                .permission_set(h.keys.catalog().all())
                .refill(daily),
        )
        .await
        .expect("created");
    let mut tokens = vec![first.token];
    let mut uses = 0;
    for _ in 0..3 {
        let last = tokens.last().expect("a token");
        let v = h.keys.verify(last.expose_secret()).await.expect("valid");
        uses += 1;
        let actor = v.actor().may_manage_keys(true);
        assert_eq!(
            bound(
                h.keys
                    .create(&actor, NewKey::new("bank").remaining(1))
                    .await
            ),
            Dimension::Usage,
            "a key that refills splits nothing"
        );
        let next = h
            .keys
            .roll(&actor, &v.id(), Duration::days(30))
            .await
            .expect("rolls itself");
        tokens.push(next.token);
    }
    for day in 0..3 {
        for token in &tokens {
            while h.keys.verify(token.expose_secret()).await.is_ok() {
                uses += 1;
            }
        }
        assert!(
            uses <= 5 * (day + 1),
            "day {day}: {uses} uses from a 5-a-day key"
        );
        h.clock.advance(Duration::days(1));
    }
}
