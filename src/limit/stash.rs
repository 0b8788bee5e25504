//! The limiter states of keys that are not in the verification cache
//! (evicted, invalidated, or never cached), so that leaving the cache
//! does not reset a key's rate limit.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use super::Gcra;
use crate::token::KeyId;

/// Limiter states kept for keys that are not in the cache, at least.
const STASH_MIN: usize = 65_536;

/// Key limiter states (GCRA), bounded: see [`Stash::keep`].
#[derive(Debug, Default)]
pub(crate) struct Stash {
    states: HashMap<KeyId, u64>,
    /// The latest time the owner saw, in GCRA nanoseconds.
    now_ns: u64,
    /// How many states it keeps at most.
    max: usize,
}

impl Stash {
    /// A stash for a cache of `capacity` keys: it keeps `capacity` or
    /// 65,536 states, whichever is more.
    pub(crate) fn for_capacity(capacity: usize) -> Self {
        Self::with_max(capacity.max(STASH_MIN))
    }

    fn with_max(max: usize) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Moves the clock forward to `now_ns` (it never goes back).
    pub(crate) fn advance(&mut self, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
    }

    /// Keeps `tat` as `id`'s state, unless it has refilled (which is the
    /// same as no state). When full, the states closest to refilled are
    /// forgotten first (the least state lost); `id`'s is never dropped.
    pub(crate) fn keep(&mut self, id: KeyId, tat: u64) {
        if Gcra::idle(tat, self.now_ns) {
            self.states.remove(&id);
            return;
        }
        if self.states.len() >= self.max && !self.states.contains_key(&id) {
            let now = self.now_ns;
            self.states.retain(|_, t| !Gcra::idle(*t, now));
            if self.states.len() >= self.max {
                // Still full of keys that are being limited: forget the
                // eighth closest to refilled, so the next inserts find
                // room without another scan. A forgotten key's limit
                // restarts with a full burst.
                let mut tats: Vec<u64> = self.states.values().copied().collect();
                let cut = tats.len() / 8;
                let (_, &mut threshold, _) = tats.select_nth_unstable(cut);
                self.states.retain(|_, t| *t > threshold);
            }
        }
        let slot = self.states.entry(id).or_insert(0);
        *slot = (*slot).max(tat);
    }

    /// `id`'s kept state, if any, leaving it kept.
    pub(crate) fn peek(&self, id: &KeyId) -> Option<u64> {
        self.states.get(id).copied()
    }

    /// Takes `id`'s state out, for an entry going back into the cache.
    pub(crate) fn take(&mut self, id: &KeyId) -> Option<u64> {
        self.states.remove(id)
    }

    /// Applies `gcra` to `id`'s kept state at `now_ns`: the limit of a key
    /// whose entry is not in the cache.
    pub(crate) fn check(&mut self, id: &KeyId, gcra: &Gcra, now_ns: u64) -> Result<(), u64> {
        self.advance(now_ns);
        let tat = AtomicU64::new(self.states.get(id).copied().unwrap_or(0));
        let result = gcra.check(&tat, now_ns);
        if result.is_ok() {
            self.keep(*id, tat.into_inner());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_stash_forgets_the_states_closest_to_refilled() {
        let mut stash = Stash::with_max(16);
        stash.advance(1_000);
        let ids: Vec<KeyId> = (0..16).map(|_| KeyId::random().expect("entropy")).collect();
        for (n, id) in (0u64..).zip(&ids) {
            stash.keep(*id, 2_000 + n);
        }
        assert_eq!(stash.states.len(), 16);
        let newcomer = KeyId::random().expect("entropy");
        stash.keep(newcomer, 5_000);
        assert_eq!(stash.states.get(&newcomer), Some(&5_000), "never dropped");
        assert!(stash.states.len() <= 16);
        assert!(
            !stash.states.contains_key(&ids[0]),
            "closest to refilled goes"
        );
        assert!(stash.states.contains_key(&ids[15]), "furthest stays");
        // Refilled states go before anything else.
        while stash.states.len() < 16 {
            stash.keep(KeyId::random().expect("entropy"), 3_000);
        }
        stash.advance(1_000_000);
        stash.keep(ids[0], 2_000_000);
        assert_eq!(stash.states.len(), 1, "all the others were refilled");
    }
}
