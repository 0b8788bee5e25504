//! GCRA, the generic cell rate algorithm: one `u64` of state per limit,
//! updated with one compare-and-swap.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Duration;

/// A [`RateLimit`] as GCRA parameters, in nanoseconds: a request at `now`
/// is allowed when the state (the "theoretical arrival time") is at most
/// `now + tolerance`, and then moves the state to `max(state, now) +
/// emission`. The state is one `u64`, updated with one compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    pub(super) emission_ns: NonZeroU64,
    pub(super) tolerance_ns: u64,
}

impl Gcra {
    /// Counts one request at `now_ns` against `state`; on refusal, the
    /// wait in nanoseconds until a request can succeed.
    #[inline]
    pub(crate) fn check(&self, state: &AtomicU64, now_ns: u64) -> Result<(), u64> {
        let mut tat = state.load(Ordering::Relaxed);
        loop {
            let earliest = self.earliest(tat);
            if now_ns < earliest {
                return Err(earliest - now_ns);
            }
            let next = tat.max(now_ns).saturating_add(self.emission_ns.get());
            match state.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    /// Whether [`Gcra::check`] at `now_ns` would refuse: one load, no
    /// write. The answer may be out of date by the time it is acted on:
    /// another request may take the last one meanwhile (`check` then
    /// refuses what this did not), or a refund may give one back (a
    /// later call finds it).
    #[inline]
    pub(crate) fn spent(&self, state: &AtomicU64, now_ns: u64) -> bool {
        now_ns < self.earliest(state.load(Ordering::Relaxed))
    }

    /// The earliest instant a request passes against state `tat`.
    #[inline]
    fn earliest(&self, tat: u64) -> u64 {
        tat.saturating_sub(self.tolerance_ns)
    }

    /// Gives back one request counted by [`Gcra::check`], when a later
    /// limit refused the request it was counted for.
    pub(crate) fn refund(&self, state: &AtomicU64) {
        let _ = state.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
            Some(tat.saturating_sub(self.emission_ns.get()))
        });
    }

    /// Counts a request of weight `cost` at `now_ns` against the state
    /// `tat` held under a lock: the new state, or the wait in nanoseconds
    /// until a request of that weight can pass (one heavier than the
    /// whole burst never can; its wait is the time to refill fully).
    #[inline]
    pub(crate) fn charge(&self, tat: u64, now_ns: u64, cost: u32) -> Result<u64, u64> {
        let window = self.tolerance_ns.saturating_add(self.emission_ns.get());
        let next = tat
            .max(now_ns)
            .saturating_add(self.emission_ns.get().saturating_mul(u64::from(cost)));
        let limit = now_ns.saturating_add(window);
        if next <= limit {
            Ok(next)
        } else {
            Err((next - limit).min(window.max(1)).max(1))
        }
    }

    /// Gives back what [`Gcra::charge`] took.
    pub(crate) fn uncharge(&self, tat: u64, cost: u32) -> u64 {
        tat.saturating_sub(self.emission_ns.get().saturating_mul(u64::from(cost)))
    }

    /// Whether a state has fully refilled by `now_ns` (is the same as no
    /// state at all).
    pub(crate) fn idle(state: u64, now_ns: u64) -> bool {
        state <= now_ns
    }
}

/// A time in clock microseconds as GCRA nanoseconds (times before 1970
/// count as 1970).
pub(crate) fn gcra_now(now_us: i64) -> u64 {
    u64::try_from(now_us).unwrap_or(0).saturating_mul(1_000)
}

/// A GCRA wait as a duration, rounded up to the microsecond.
pub(crate) fn wait(ns: u64) -> Duration {
    Duration::microseconds(i64::try_from(ns.div_ceil(1_000)).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Nanosecond figures of every size, small ones (real periods) as
    /// often as large ones.
    fn ns() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..=10_000_000_000_000, any::<u64>()]
    }

    proptest! {
        /// `spent` refuses exactly what `check` refuses, from any state,
        /// at any instant (often within a few nanoseconds of the edge),
        /// with any parameters; it never writes, and `check` writes only
        /// what it grants.
        #[test]
        fn spent_is_what_check_refuses(
            emission in ns(),
            tolerance in ns(),
            tat in ns(),
            now in ns(),
            near_edge in any::<bool>(),
            offset in -2i64..=2,
        ) {
            let g = Gcra {
                emission_ns: NonZeroU64::new(emission.max(1)).expect("positive"),
                tolerance_ns: tolerance,
            };
            let now = if near_edge {
                g.earliest(tat).saturating_add_signed(offset)
            } else {
                now
            };
            let state = AtomicU64::new(tat);
            let spent = g.spent(&state, now);
            prop_assert_eq!(state.load(Ordering::Relaxed), tat);
            prop_assert_eq!(spent, g.check(&state, now).is_err());
            let granted = tat.max(now).saturating_add(g.emission_ns.get());
            let after = if spent { tat } else { granted };
            prop_assert_eq!(state.load(Ordering::Relaxed), after);
        }
    }

    /// At the edge: a request at `earliest` passes, one a nanosecond
    /// before it does not, and `check` agrees.
    #[test]
    fn spent_turns_at_the_earliest_instant() {
        let g = Gcra {
            emission_ns: NonZeroU64::new(1_000).expect("positive"),
            tolerance_ns: 5_000,
        };
        let at = |tat| AtomicU64::new(tat);
        assert!(g.spent(&at(20_000), 14_999));
        assert!(g.check(&at(20_000), 14_999).is_err());
        assert!(!g.spent(&at(20_000), 15_000));
        assert!(g.check(&at(20_000), 15_000).is_ok());
    }
}
