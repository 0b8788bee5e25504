//! A property test of the management model: random sequences of create,
//! edit, roll, revoke, reactivate and verify calls by random actors
//! (people and keys, in nested tenants). After every call that succeeds,
//! the key it left is checked against the actor that made it, in every
//! dimension; and every usage-limited lineage (a key, its roll successors
//! and the keys its holders created from its uses) never gets more
//! successful verifies than the uses it started with.

mod common;

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use keyward::{
    Actor, Clock, KeyId, KeyInfo, KeyUpdate, Keyward, ManualClock, MemoryStore, NewKey,
    PermissionSet, RateLimit, SecretToken,
};
use proptest::prelude::*;

const TENANTS: [&str; 4] = ["t", "t/a", "t/b", "t/a/x"];
const PERMISSIONS: [&str; 5] = [
    "contacts:read",
    "contacts:write",
    "users:read",
    "leads:create",
    "leads:delete",
];

/// Who acts: one of the people, or the holder of one of the keys so far.
#[derive(Debug, Clone)]
enum Who {
    Person(usize),
    Key(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        who: Who,
        /// Trim the request to what the actor holds, so that most of these
        /// succeed and the rule is tested on what it lets through.
        fit: bool,
        tenant: usize,
        perms: u8,
        expiry_hours: Option<i64>,
        limit: Option<u32>,
        uses: Option<u64>,
    },
    Update {
        who: Who,
        target: usize,
        perms: Option<u8>,
        limit: Option<Option<u32>>,
    },
    Roll {
        who: Who,
        target: usize,
        grace_hours: i64,
    },
    Revoke {
        who: Who,
        target: usize,
    },
    Reactivate {
        who: Who,
        target: usize,
    },
    Verify {
        target: usize,
    },
    Advance {
        minutes: i64,
    },
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        (0..4usize).prop_map(Who::Person),
        (0..64usize).prop_map(Who::Key)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            who(),
            any::<bool>(),
            0..TENANTS.len(),
            any::<u8>(),
            proptest::option::of(1..2_000i64),
            proptest::option::of(1..200u32),
            proptest::option::of(0..30u64),
        )
            .prop_map(|(who, fit, tenant, perms, expiry_hours, limit, uses)| Op::Create {
                who,
                fit,
                tenant,
                perms,
                expiry_hours,
                limit,
                uses,
            }),
        2 => (
            who(),
            0..64usize,
            proptest::option::of(any::<u8>()),
            proptest::option::of(proptest::option::of(1..200u32)),
        )
            .prop_map(|(who, target, perms, limit)| Op::Update {
                who,
                target,
                perms,
                limit,
            }),
        2 => (who(), 0..64usize, 0..3i64).prop_map(|(who, target, grace_hours)| Op::Roll {
            who,
            target,
            grace_hours
        }),
        1 => (who(), 0..64usize).prop_map(|(who, target)| Op::Revoke { who, target }),
        1 => (who(), 0..64usize).prop_map(|(who, target)| Op::Reactivate { who, target }),
        4 => (0..64usize).prop_map(|target| Op::Verify { target }),
        1 => (1..600i64).prop_map(|minutes| Op::Advance { minutes }),
    ]
}

/// What an actor holds, as the test knows it independently of keyward.
#[derive(Debug, Clone)]
struct Bounds {
    tenant: String,
    permissions: PermissionSet,
    expires_at: Option<DateTime<Utc>>,
    rate_limit: Option<RateLimit>,
    uses: Option<u64>,
}

struct Model {
    keys: Keyward,
    clock: ManualClock,
    default_limit: RateLimit,
    people: Vec<(Actor, Bounds)>,
    tokens: Vec<(KeyId, SecretToken)>,
    /// Which lineage a usage-limited key's uses belong to.
    lineage: HashMap<KeyId, usize>,
    /// Per lineage: the uses it started with, and successful verifies.
    budgets: Vec<(u64, u64)>,
}

fn perms(model: &Model, mask: u8) -> Vec<&'static str> {
    let _ = model;
    PERMISSIONS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, p)| *p)
        .collect()
}

fn within_limit(key: Option<RateLimit>, bound: Option<RateLimit>) -> bool {
    match (key, bound) {
        (_, None) => true,
        (Some(k), Some(b)) => k.is_within(&b),
        (None, Some(_)) => false,
    }
}

impl Model {
    fn new() -> Self {
        let clock = ManualClock::default();
        let default_limit = RateLimit::per_minute(100).expect("valid");
        let keys = Keyward::builder(MemoryStore::new(), common::catalog())
            .clock(clock.clone())
            .nested_tenants(true)
            .rate_limit(default_limit)
            .build()
            .expect("config");
        let catalog = keys.catalog().clone();
        let now = clock.now();
        let person = |id: &str, tenant: &str, p: PermissionSet| {
            let actor = Actor::new(id, tenant)
                .permissions(p.clone())
                .may_manage_keys(true);
            let bounds = Bounds {
                tenant: tenant.into(),
                permissions: p,
                expires_at: None,
                rate_limit: None,
                uses: None,
            };
            (actor, bounds)
        };
        let mut people = vec![
            person("owner", "t", catalog.all()),
            person(
                "reader",
                "t",
                catalog.parse_set(["contacts:read"]).expect("known"),
            ),
        ];
        // A bounded person: expiry, rate limit and a usage cap.
        let limited_perms = catalog
            .parse_set(["contacts:write", "leads:create"])
            .expect("known");
        let soon = now + Duration::days(30);
        let limit = RateLimit::per_minute(10).expect("valid");
        people.push((
            Actor::new("contractor", "t/a")
                .permissions(limited_perms.clone())
                .expires_at(soon)
                .rate_limit(limit)
                .remaining(20)
                .may_manage_keys(true),
            Bounds {
                tenant: "t/a".into(),
                permissions: limited_perms,
                expires_at: Some(soon),
                rate_limit: Some(limit),
                uses: Some(20),
            },
        ));
        people.push(person("b-admin", "t/b", catalog.all()));
        Self {
            keys,
            clock,
            default_limit,
            people,
            tokens: Vec::new(),
            lineage: HashMap::new(),
            budgets: Vec::new(),
        }
    }

    /// A verify that counts against its lineage when it succeeds.
    async fn verify(&mut self, i: usize) -> Option<keyward::Verified> {
        if self.tokens.is_empty() {
            return None;
        }
        let (id, token) = &self.tokens[i % self.tokens.len()];
        let id = *id;
        let v = self.keys.verify(token.expose_secret()).await.ok()?;
        if let Some(l) = self.lineage.get(&id) {
            self.budgets[*l].1 += 1;
        }
        Some(v)
    }

    /// The actor and its bounds; `None` when a key's holder cannot act
    /// (its key does not verify).
    async fn actor(&mut self, who: &Who) -> Option<(Actor, Bounds, Option<KeyId>)> {
        match who {
            Who::Person(i) => {
                let (a, b) = self.people[*i % self.people.len()].clone();
                Some((a, b, None))
            }
            Who::Key(i) => {
                let v = self.verify(*i).await?;
                let bounds = Bounds {
                    tenant: v.tenant().to_string(),
                    permissions: v.permissions().clone(),
                    expires_at: v.expires_at(),
                    rate_limit: v.rate_limit(),
                    uses: v.remaining(),
                };
                Some((v.actor().may_manage_keys(true), bounds, Some(v.id())))
            }
        }
    }

    /// The rule itself, checked from outside: `key` holds no more than
    /// `bounds` in any dimension.
    fn check_within(&self, key: &KeyInfo, bounds: &Bounds, what: &str) {
        let covered =
            key.tenant == bounds.tenant || key.tenant.starts_with(&format!("{}/", bounds.tenant));
        assert!(
            covered,
            "{what}: tenant {} outside {}",
            key.tenant, bounds.tenant
        );
        assert!(
            key.permissions.is_subset_of(&bounds.permissions),
            "{what}: permissions {} beyond {}",
            key.permissions,
            bounds.permissions
        );
        if let Some(limit) = bounds.expires_at {
            assert!(
                key.expires_at.is_some_and(|e| e <= limit),
                "{what}: expiry {:?} beyond {limit}",
                key.expires_at
            );
        }
        let effective = key.rate_limit.or(Some(self.default_limit));
        assert!(
            within_limit(effective, bounds.rate_limit),
            "{what}: rate limit {effective:?} looser than {:?}",
            bounds.rate_limit
        );
        if let Some(uses) = bounds.uses {
            assert!(
                key.remaining.is_some_and(|r| r <= uses) && key.refill.is_none(),
                "{what}: uses {:?} beyond {uses}",
                key.remaining
            );
        }
    }

    fn target(&self, i: usize) -> Option<KeyId> {
        if self.tokens.is_empty() {
            None
        } else {
            Some(self.tokens[i % self.tokens.len()].0)
        }
    }

    async fn run(&mut self, op: Op) {
        match op {
            Op::Create {
                who,
                fit,
                tenant,
                perms: mask,
                mut expiry_hours,
                mut limit,
                mut uses,
            } => {
                let Some((actor, bounds, by_key)) = self.actor(&who).await else {
                    return;
                };
                let mut wanted = self
                    .keys
                    .catalog()
                    .parse_set(perms(self, mask))
                    .expect("known");
                let mut tenant = TENANTS[tenant].to_string();
                if fit {
                    wanted = wanted.intersection(&bounds.permissions);
                    tenant.clone_from(&bounds.tenant);
                    expiry_hours = None;
                    limit = None;
                    uses = match (uses, bounds.uses) {
                        (Some(u), Some(b)) => Some(u.min(b)),
                        (None, Some(b)) => Some(b / 2),
                        (u, None) => u,
                    };
                }
                let mut new = NewKey::new("k").permission_set(wanted).tenant(tenant);
                if let Some(h) = expiry_hours {
                    new = new.expires_in(Duration::hours(h));
                }
                if let Some(n) = limit {
                    new = new.rate_limit(RateLimit::per_minute(n).expect("valid"));
                }
                if let Some(n) = uses {
                    new = new.remaining(n);
                }
                if let Ok(issued) = self.keys.create(&actor, new).await {
                    self.check_within(&issued.key, &bounds, "create");
                    let id = issued.key.id;
                    if let Some(n) = issued.key.remaining {
                        // Uses carved from a key stay in its lineage; a
                        // person's grant starts a new one.
                        let parent = by_key.and_then(|k| self.lineage.get(&k).copied());
                        let l = parent.unwrap_or_else(|| {
                            self.budgets.push((n, 0));
                            self.budgets.len() - 1
                        });
                        self.lineage.insert(id, l);
                    }
                    self.tokens.push((id, issued.token));
                }
            }
            Op::Update {
                who,
                target,
                perms: mask,
                limit,
            } => {
                let Some(id) = self.target(target) else {
                    return;
                };
                let Some((actor, bounds, _)) = self.actor(&who).await else {
                    return;
                };
                let mut update = KeyUpdate::new();
                if let Some(m) = mask {
                    update = update.permissions(perms(self, m));
                }
                if let Some(l) = limit {
                    update = update.rate_limit(l.map(|n| RateLimit::per_minute(n).expect("valid")));
                }
                if update.is_empty() {
                    update = update.name("renamed");
                }
                if let Ok(info) = self.keys.update(&actor, &id, update).await {
                    self.check_within(&info, &bounds, "update");
                }
            }
            Op::Roll {
                who,
                target,
                grace_hours,
            } => {
                let Some(id) = self.target(target) else {
                    return;
                };
                let Some((actor, bounds, _)) = self.actor(&who).await else {
                    return;
                };
                if let Ok(issued) = self
                    .keys
                    .roll(&actor, &id, Duration::hours(grace_hours))
                    .await
                {
                    self.check_within(&issued.key, &bounds, "roll");
                    if let Some(l) = self.lineage.get(&id).copied() {
                        self.lineage.insert(issued.key.id, l);
                    }
                    self.tokens.push((issued.key.id, issued.token));
                }
            }
            Op::Revoke { who, target } => {
                let Some(id) = self.target(target) else {
                    return;
                };
                if let Some((actor, _, _)) = self.actor(&who).await {
                    let _ = self.keys.revoke(&actor, &id).await;
                }
            }
            Op::Reactivate { who, target } => {
                let Some(id) = self.target(target) else {
                    return;
                };
                let Some((actor, bounds, _)) = self.actor(&who).await else {
                    return;
                };
                if let Ok(info) = self.keys.reactivate(&actor, &id).await {
                    self.check_within(&info, &bounds, "reactivate");
                    assert!(info.rolled_to.is_none(), "a rolled-away key came back");
                }
            }
            Op::Verify { target } => {
                let _ = self.verify(target).await;
            }
            Op::Advance { minutes } => self.clock.advance(Duration::minutes(minutes)),
        }
        for (l, (budget, used)) in self.budgets.iter().enumerate() {
            assert!(
                used <= budget,
                "lineage {l} got {used} successful uses of {budget}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_key_is_looser_than_its_manager_and_no_lineage_outspends(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut model = Model::new();
            for op in ops {
                model.run(op).await;
            }
            // Spend whatever is left: still within every budget.
            for i in 0..model.tokens.len() {
                for _ in 0..40 {
                    if model.verify(i).await.is_none() {
                        break;
                    }
                }
            }
            for (budget, used) in &model.budgets {
                assert!(used <= budget, "{used} uses of {budget}");
            }
        });
    }
}
