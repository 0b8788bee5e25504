//! Batched mode: the requests an instance has leased from Redis for each
//! hot bucket, handed out locally, and the refusals it may repeat
//! without asking again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::Duration;

use super::super::{Bucket, Decision, RateLimit};
use crate::token::KeyId;

/// Lookups between sweeps of idle slots.
const SWEEP_EVERY: u64 = 4096;

/// One bucket's lease at this instance.
#[derive(Debug, Default)]
pub(super) struct Slot {
    state: Mutex<Lease>,
    /// Held while this instance asks Redis for the bucket: one lease at
    /// a time per bucket and instance.
    pub(super) turn: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Lease {
    /// The limit the lease was granted under.
    limit: Option<RateLimit>,
    /// Requests leased and not yet handed out.
    left: u32,
    /// When (caller µs) what is left must go back to Redis.
    until_us: i64,
    /// The bucket's state in Redis right after the lease was granted: the
    /// unspent requests are the time just before it.
    tat_us: i64,
    /// Until when (caller µs) a refusal from Redis is repeated.
    denied_until_us: i64,
    /// When (caller µs) Redis said a request can pass again.
    retry_at_us: i64,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Lease> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers from the lease when it can: one of its requests, or the
    /// refusal Redis gave until it runs out.
    pub(super) fn take(&self, limit: RateLimit, now_us: i64) -> Option<Decision> {
        let mut lease = self.lock();
        if lease.limit != Some(limit) {
            return None;
        }
        if lease.left > 0 && now_us < lease.until_us {
            lease.left -= 1;
            return Some(Decision::Allow);
        }
        if now_us < lease.denied_until_us {
            return Some(Decision::Deny {
                retry_after: Duration::microseconds(lease.retry_at_us.saturating_sub(now_us)),
            });
        }
        None
    }

    /// What a new request to Redis gives back, in µs of the bucket's
    /// state: the requests of an expired lease under the same limit that
    /// were never handed out (`emission_us` apart), as far as they are
    /// still ahead of `now_us` (those behind it have refilled anyway, and
    /// giving them back would give back other instances' requests).
    ///
    /// Also the state the lease left the bucket at: Redis takes the time
    /// back only from a state at least that far (one that lost the key,
    /// restarted, started afresh, never counted it).
    pub(super) fn unused(&self, limit: RateLimit, emission_us: u64, now_us: i64) -> (u64, i64) {
        let mut lease = self.lock();
        if lease.limit != Some(limit) {
            return (0, 0);
        }
        let left = u64::from(std::mem::take(&mut lease.left));
        let ahead = u64::try_from(lease.tat_us.saturating_sub(now_us)).unwrap_or(0);
        (left.saturating_mul(emission_us).min(ahead), lease.tat_us)
    }

    /// Redis granted `granted` requests (one of them for the request that
    /// asked), to hand out until `until_us`; its state is now `tat_us`.
    pub(super) fn granted(&self, limit: RateLimit, granted: u32, until_us: i64, tat_us: i64) {
        *self.lock() = Lease {
            limit: Some(limit),
            left: granted.saturating_sub(1),
            until_us,
            tat_us,
            ..Lease::default()
        };
    }

    /// Redis refused until `retry_at_us`: the refusal is repeated until
    /// `until_us` (no later), but for what is left of a lease under the
    /// same limit (counted already).
    pub(super) fn denied(&self, limit: RateLimit, until_us: i64, retry_at_us: i64) {
        let mut lease = self.lock();
        if lease.limit != Some(limit) {
            *lease = Lease::default();
            lease.limit = Some(limit);
        }
        lease.denied_until_us = until_us;
        lease.retry_at_us = retry_at_us;
    }

    /// Whether the slot holds nothing worth keeping at `now_us`.
    fn idle(&self, now_us: i64) -> bool {
        let lease = self.lock();
        (lease.left == 0 || now_us >= lease.until_us) && now_us >= lease.denied_until_us
    }
}

/// The slots of one instance, per bucket.
#[derive(Debug, Default)]
pub(super) struct Leases {
    map: Mutex<Slots>,
    lookups: AtomicU64,
}

#[derive(Debug, Default)]
struct Slots {
    keys: HashMap<KeyId, Arc<Slot>>,
    tenants: HashMap<Box<str>, Arc<Slot>>,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bucket's slot, if it has one (no allocation).
    pub(super) fn get(&self, bucket: Bucket<'_>) -> Option<Arc<Slot>> {
        let map = self.lock();
        match bucket {
            Bucket::Key(id) => map.keys.get(&id).cloned(),
            Bucket::Tenant(t) => map.tenants.get(t).cloned(),
        }
    }

    /// The bucket's slot, made if new. Every 4,096 calls, slots that hold
    /// nothing at `now_us` and that no request is using are dropped, so
    /// memory follows the buckets in use.
    pub(super) fn slot(&self, bucket: Bucket<'_>, now_us: i64) -> Arc<Slot> {
        let mut map = self.lock();
        if self
            .lookups
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            let keep = |s: &mut Arc<Slot>| Arc::strong_count(s) > 1 || !s.idle(now_us);
            map.keys.retain(|_, s| keep(s));
            map.tenants.retain(|_, s| keep(s));
        }
        match bucket {
            Bucket::Key(id) => map.keys.entry(id).or_default().clone(),
            Bucket::Tenant(t) => match map.tenants.get(t) {
                Some(s) => s.clone(),
                None => map.tenants.entry(t.into()).or_default().clone(),
            },
        }
    }

    /// Slots held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        let map = self.lock();
        map.keys.len() + map.tenants.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_hands_out_what_was_granted_until_it_expires() {
        let limit = RateLimit::per_minute(100).expect("valid");
        let slot = Slot::default();
        assert_eq!(slot.take(limit, 0), None, "nothing leased");
        slot.granted(limit, 3, 1_000, 5_000);
        assert_eq!(slot.take(limit, 10), Some(Decision::Allow));
        assert_eq!(slot.take(limit, 20), Some(Decision::Allow));
        assert_eq!(slot.take(limit, 30), None, "the third went to the asker");
        // Two unspent, 600 µs apart, the state at 5,000 µs.
        slot.granted(limit, 3, 1_000, 5_000);
        assert_eq!(slot.take(limit, 1_000), None, "expired");
        assert_eq!(slot.unused(limit, 600, 1_000), (1_200, 5_000), "given back");
        assert_eq!(slot.unused(limit, 600, 1_000).0, 0);
        // Only the part still ahead goes back.
        slot.granted(limit, 3, 1_000, 5_000);
        assert_eq!(slot.unused(limit, 600, 4_500).0, 500);
        slot.granted(limit, 3, 1_000, 5_000);
        assert_eq!(slot.unused(limit, 600, 6_000).0, 0, "all refilled");
        let other = RateLimit::per_minute(5).expect("valid");
        slot.granted(limit, 3, 1_000, 5_000);
        assert_eq!(slot.take(other, 10), None, "another limit starts afresh");
        assert_eq!(slot.unused(other, 600, 10).0, 0);
    }

    #[test]
    fn a_refusal_keeps_what_is_left_of_the_lease() {
        let limit = RateLimit::per_minute(100).expect("valid");
        let slot = Slot::default();
        slot.granted(limit, 3, 1_000, 5_000);
        slot.denied(limit, 500, 500);
        assert_eq!(slot.take(limit, 10), Some(Decision::Allow));
        assert_eq!(slot.take(limit, 10), Some(Decision::Allow));
        assert!(matches!(slot.take(limit, 10), Some(Decision::Deny { .. })));
    }

    #[test]
    fn a_refusal_is_repeated_until_its_wait_is_over() {
        let limit = RateLimit::per_minute(100).expect("valid");
        let slot = Slot::default();
        slot.denied(limit, 500, 900);
        assert_eq!(
            slot.take(limit, 200),
            Some(Decision::Deny {
                retry_after: Duration::microseconds(700)
            })
        );
        assert_eq!(slot.take(limit, 500), None, "repeated until 500 only");
    }

    #[test]
    fn idle_slots_are_dropped() {
        let leases = Leases::default();
        let limit = RateLimit::per_minute(100).expect("valid");
        for _ in 0..SWEEP_EVERY {
            let id = KeyId::random().expect("entropy");
            leases.slot(Bucket::Key(id), 0).granted(limit, 2, 100, 100);
        }
        let busy = leases.slot(Bucket::Tenant("acme"), 0);
        busy.granted(limit, 5, 1_000, 1_000);
        assert_eq!(leases.len(), SWEEP_EVERY as usize + 1);
        // Past the key leases' expiry: a sweep comes within 4,096 lookups.
        for _ in 0..SWEEP_EVERY {
            let _ = leases.slot(Bucket::Tenant("acme"), 200);
        }
        assert_eq!(leases.len(), 1, "only the tenant's live lease is kept");
    }
}
