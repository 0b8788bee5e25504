//! The keyed id hash and the lock-free open-addressing table.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::CachedKey;
use crate::token::KeyId;

/// A keyed hash of ids: ids are chosen by whoever sends a token, so an
/// unkeyed hash (say, the id's bytes) would let a flood pile into one
/// slot run or shard. One 64×64→128-bit multiply, folded: a few cycles.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdHash {
    pub(super) k0: u64,
    pub(super) k1: u64,
}

impl IdHash {
    pub(super) fn random() -> Self {
        // A per-process random seed is all that is needed here; std's
        // RandomState keys come from the OS once and are cheap after.
        let seed = std::hash::RandomState::new();
        let k0 = seed.hash_one(0x6b65_7977_6172_6431_u64);
        let k1 = seed.hash_one(0x6b65_7977_6172_6432_u64) | 1;
        Self { k0, k1 }
    }

    #[inline]
    pub(super) fn of(&self, id: &KeyId) -> u64 {
        fold(id.as_u64() ^ self.k0, self.k1)
    }
}

#[inline]
pub(super) fn fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m >> 64) as u64 ^ m as u64
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            keys: *self,
            state: self.k0,
        }
    }
}

/// The [`Hasher`] of [`IdHash`]: [`KeyId`] writes one `u64`.
pub(crate) struct IdHasher {
    keys: IdHash,
    state: u64,
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.state = fold(self.state ^ n, self.keys.k1);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

/// An open-addressing table (linear probing, at most half full) of
/// entries, each slot swapped atomically: a lookup takes no lock and
/// writes no shared memory, so threads verifying the same key do not
/// contend on the cache. Allocated once at twice the capacity (16 bytes a
/// slot: the entry and its id), so a lookup follows no pointer to find
/// the table, and none to pass another key's slot.
///
/// An empty slot holds the table's `empty` entry (an id no token can
/// name), so that a lookup hands out a guard of a plain `Arc`: a
/// [`Verified`](crate::Verified) keeps that guard and costs no
/// reference-count traffic on the key's entry.
pub(super) struct Table {
    pub(super) slots: Box<[Slot]>,
    pub(super) mask: usize,
    pub(super) empty: Arc<CachedKey>,
    /// The id of `empty`, which no token can name.
    empty_id: u64,
}

/// One slot of a [`Table`]: the entry, and its id beside it so that a
/// probe passes other keys' slots without taking a guard on them or
/// reading their entries (at a million keys, each such read is a cache
/// miss). Written only by the cache's writer, id first when an entry
/// goes in and last when it goes out: a lookup that finds the id may
/// still find another entry (a write between the two); it then probes on,
/// and if the key was moved out of its reach meanwhile, misses, and a miss
/// reads the store, which is always correct.
pub(super) struct Slot {
    id: AtomicU64,
    pub(super) entry: ArcSwap<CachedKey>,
}

impl Table {
    pub(super) fn new(size: usize) -> Self {
        let empty = Arc::new(CachedKey::empty());
        let empty_id = empty.id.as_u64();
        Self {
            slots: (0..size)
                .map(|_| Slot {
                    id: AtomicU64::new(empty_id),
                    entry: ArcSwap::new(empty.clone()),
                })
                .collect(),
            mask: size - 1,
            empty,
            empty_id,
        }
    }

    #[inline]
    pub(super) fn occupied(&self, e: &Arc<CachedKey>) -> bool {
        !Arc::ptr_eq(e, &self.empty)
    }

    /// The id slot `i` holds, as a `u64`; [`Table::is_empty_id`] for none.
    #[inline]
    pub(super) fn id_at(&self, i: usize) -> u64 {
        self.slots[i].id.load(Ordering::Acquire)
    }

    #[inline]
    pub(super) fn is_empty_id(&self, id: u64) -> bool {
        id == self.empty_id
    }

    /// Puts `entry` in slot `i` (the writer's).
    pub(super) fn put(&self, i: usize, entry: Arc<CachedKey>) {
        self.slots[i].id.store(entry.id.as_u64(), Ordering::Release);
        self.slots[i].entry.store(entry);
    }

    /// Empties slot `i`, returning what it held (the writer's).
    pub(super) fn take(&self, i: usize) -> Option<Arc<CachedKey>> {
        let old = self.slots[i].entry.swap(self.empty.clone());
        self.slots[i].id.store(self.empty_id, Ordering::Release);
        self.occupied(&old).then_some(old)
    }
}
