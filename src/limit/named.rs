//! Named limits: several rate limits on one key (`requests` at 200/min,
//! `tokens` at 100,000 a day), each charged the request's cost for it,
//! all together or not at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::{Gcra, RateLimit};
use crate::token::KeyId;

/// Most named limits one key carries.
pub const MAX_NAMED_LIMITS: usize = 8;

/// One named rate limit of a key.
///
/// ```
/// use keyward::{NamedLimit, RateLimit};
///
/// let tokens = NamedLimit::new("tokens", RateLimit::per_hour(100_000)?)?;
/// assert_eq!(tokens.name, "tokens");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NamedLimit {
    /// The limit's name: 1–32 characters of `a-z`, `0-9`, `_`, `-`, `.`.
    pub name: String,
    /// Its rate.
    pub limit: RateLimit,
}

/// A limit name that is empty, too long, or uses other characters than
/// `a-z 0-9 _ - .`; or more than [`MAX_NAMED_LIMITS`] limits on a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid named limit {name:?}: names are 1-32 characters of a-z, 0-9, '_', '-', '.', and a key carries at most {MAX_NAMED_LIMITS}")]
pub struct InvalidNamedLimit {
    /// The name, shortened to 40 characters.
    pub name: String,
}

impl NamedLimit {
    /// The limit `limit` named `name`.
    ///
    /// # Errors
    /// [`InvalidNamedLimit`] for a name outside 1–32 characters of
    /// `a-z 0-9 _ - .`.
    pub fn new(name: impl Into<String>, limit: RateLimit) -> Result<Self, InvalidNamedLimit> {
        let name = name.into();
        check_name(&name)?;
        Ok(Self { name, limit })
    }
}

/// Whether `name` is a valid limit name.
pub(crate) fn check_name(name: &str) -> Result<(), InvalidNamedLimit> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(InvalidNamedLimit {
            name: name.chars().take(40).collect(),
        })
    }
}

/// Checks a key's limits as written: valid names, at most
/// [`MAX_NAMED_LIMITS`]; returns them sorted by name.
pub(crate) fn checked(mut limits: Vec<NamedLimit>) -> Result<Vec<NamedLimit>, InvalidNamedLimit> {
    for l in &limits {
        check_name(&l.name)?;
    }
    limits.sort_by(|a, b| a.name.cmp(&b.name));
    limits.dedup_by(|a, b| a.name == b.name);
    if limits.len() > MAX_NAMED_LIMITS {
        return Err(InvalidNamedLimit {
            name: limits[MAX_NAMED_LIMITS].name.clone(),
        });
    }
    Ok(limits)
}

/// One named limit of a request: what a [`RateLimiter`](super::RateLimiter)
/// charges, all of a request's together. A request's charges name
/// distinct limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Charge<'a> {
    /// The limit's name.
    pub name: &'a str,
    /// Its rate.
    pub limit: RateLimit,
    /// What this request takes from it (0 takes nothing but still needs
    /// the limit to have room for nothing, i.e. always passes).
    pub cost: u32,
}

impl<'a> Charge<'a> {
    /// A charge of `cost` to the limit `name` at `limit`.
    pub fn new(name: &'a str, limit: RateLimit, cost: u32) -> Self {
        Self { name, limit, cost }
    }
}

/// The answer of [`RateLimiter::check_named`](super::RateLimiter::check_named).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NamedDecision {
    /// Every limit had room; each was charged its cost.
    Allow,
    /// A limit had no room; none was charged.
    Deny {
        /// Which one: its index in the charges asked.
        limit: usize,
        /// The earliest time a retry of the same cost can pass it.
        retry_after: chrono::Duration,
    },
    /// The limiter could not decide and fails closed, as
    /// [`Decision::Unavailable`](super::Decision::Unavailable).
    Unavailable,
}

/// A named limit as a cached key holds it.
#[derive(Debug, Clone)]
pub(crate) struct NamedSlot {
    pub(crate) name: Arc<str>,
    pub(crate) limit: RateLimit,
    pub(crate) gcra: Gcra,
}

impl NamedSlot {
    pub(crate) fn of(limits: &[NamedLimit]) -> Box<[NamedSlot]> {
        limits
            .iter()
            .map(|l| NamedSlot {
                name: l.name.as_str().into(),
                limit: l.limit,
                gcra: l.limit.gcra(),
            })
            .collect()
    }
}

/// What a request costs: `cost` for every named limit and for usage
/// credits, except the limits `by_name` prices otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Costs<'a> {
    pub(crate) cost: u32,
    pub(crate) by_name: &'a [(&'a str, u32)],
    /// One more name's cost, looked at first.
    pub(crate) one: Option<(&'a str, u32)>,
}

impl Costs<'_> {
    /// One unit everywhere.
    #[cfg(test)]
    pub(crate) const ONE: Costs<'static> = Costs {
        cost: 1,
        by_name: &[],
        one: None,
    };

    /// The cost for the limit named `name`.
    #[inline]
    pub(crate) fn of(&self, name: &str) -> u32 {
        if let Some((n, c)) = self.one {
            if n == name {
                return c;
            }
        }
        self.by_name
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(self.cost, |(_, c)| *c)
    }
}

/// Checks between evictions of idle state, per shard.
const EVICT_EVERY: u64 = 4096;
const SHARDS: usize = 16;
/// Named limits' states kept per key before idle ones are dropped.
const STATES_PER_KEY: usize = 32;

/// The built-in limiter's state of every key's named limits: one GCRA
/// word per key and limit name, in a sharded map. A request's limits are
/// checked and charged under one shard lock, so they pass together or
/// not at all, however many requests race.
///
/// State is kept by name: a limit whose rate changes keeps what was
/// spent (tightened, it may refuse until that drains), as a key's own
/// limit does; and a limit a request does not charge keeps its state for
/// the requests that do.
#[derive(Debug, Default)]
pub(crate) struct NamedStates {
    shards: [Mutex<Shard>; SHARDS],
}

#[derive(Debug, Default)]
struct Shard {
    /// Per key: the states of the limit names it was charged.
    tats: HashMap<KeyId, Vec<State>>,
    checks: u64,
}

/// One named limit's state.
#[derive(Debug)]
struct State {
    name: Arc<str>,
    tat: u64,
}

/// A named limit refused a request: its index and the wait in ns.
pub(crate) type Over = (usize, u64);

impl NamedStates {
    fn shard(&self, id: &KeyId) -> std::sync::MutexGuard<'_, Shard> {
        let i = usize::from(id.as_str().as_bytes()[0]) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Charges `costs` to every limit of `slots` at `now_ns`, or to none.
    pub(crate) fn charge(
        &self,
        id: &KeyId,
        slots: &[NamedSlot],
        costs: &Costs<'_>,
        now_ns: u64,
    ) -> Result<(), Over> {
        let mut shard = self.shard(id);
        shard.checks += 1;
        if shard.checks.is_multiple_of(EVICT_EVERY) {
            shard.tats.retain(|_, states| {
                states.retain(|s| !Gcra::idle(s.tat, now_ns));
                !states.is_empty()
            });
        }
        let states = shard.tats.entry(*id).or_default();
        for slot in slots {
            if !states.iter().any(|s| s.name == slot.name) {
                if states.len() >= STATES_PER_KEY {
                    states.retain(|s| !Gcra::idle(s.tat, now_ns));
                }
                states.push(State {
                    name: slot.name.clone(),
                    tat: 0,
                });
            }
        }
        let tat = |states: &[State], name: &str| {
            states
                .iter()
                .find(|s| &*s.name == name)
                .map_or(0, |s| s.tat)
        };
        // Every limit first, then every charge: all or none.
        for (i, slot) in slots.iter().enumerate() {
            slot.gcra
                .charge(tat(states, &slot.name), now_ns, costs.of(&slot.name))
                .map_err(|wait| (i, wait))?;
        }
        for slot in slots {
            if let Some(state) = states.iter_mut().find(|s| s.name == slot.name) {
                if let Ok(next) = slot.gcra.charge(state.tat, now_ns, costs.of(&slot.name)) {
                    state.tat = next;
                }
            }
        }
        Ok(())
    }

    /// Gives key `to` the named-limit states of key `from` (a roll's
    /// successor its predecessor's), where it has none of its own.
    pub(crate) fn inherit(&self, from: &KeyId, to: KeyId) {
        let copied: Vec<State> = match self.shard(from).tats.get(from) {
            Some(states) => states
                .iter()
                .map(|s| State {
                    name: s.name.clone(),
                    tat: s.tat,
                })
                .collect(),
            None => return,
        };
        self.shard(&to).tats.entry(to).or_insert(copied);
    }

    /// Gives back what [`NamedStates::charge`] took, when a later limit
    /// refused the request.
    pub(crate) fn refund(&self, id: &KeyId, slots: &[NamedSlot], costs: &Costs<'_>) {
        let mut shard = self.shard(id);
        if let Some(states) = shard.tats.get_mut(id) {
            for slot in slots {
                if let Some(state) = states.iter_mut().find(|s| s.name == slot.name) {
                    state.tat = slot.gcra.uncharge(state.tat, costs.of(&slot.name));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Box<[NamedSlot]> {
        NamedSlot::of(&[
            NamedLimit::new("requests", RateLimit::per_minute(10).expect("valid")).expect("name"),
            NamedLimit::new("tokens", RateLimit::per_minute(100).expect("valid")).expect("name"),
        ])
    }

    #[test]
    fn all_or_nothing() {
        let states = NamedStates::default();
        let id = KeyId::random().expect("OS randomness");
        let slots = slots();
        let now = 1_000_000_000_000;
        let big = Costs {
            cost: 1,
            by_name: &[("tokens", 60)],
            one: None,
        };
        states.charge(&id, &slots, &big, now).expect("first fits");
        // 40 tokens left: the second is refused, and `requests` keeps its 9.
        let (limit, _) = states.charge(&id, &slots, &big, now).expect_err("over");
        assert_eq!(&*slots[limit].name, "tokens");
        let small = Costs {
            cost: 1,
            by_name: &[],
            one: Some(("tokens", 4)),
        };
        for _ in 0..9 {
            states
                .charge(&id, &slots, &small, now)
                .expect("requests left");
        }
        let (limit, _) = states.charge(&id, &slots, &small, now).expect_err("over");
        assert_eq!(&*slots[limit].name, "requests");
        states.refund(&id, &slots, &small);
        states.charge(&id, &slots, &small, now).expect("refunded");
    }

    #[test]
    fn state_is_kept_by_name_and_any_number_is_counted() {
        let states = NamedStates::default();
        let id = KeyId::random().expect("OS randomness");
        let now = 1_000_000_000_000;
        let one = |n| Costs {
            cost: n,
            by_name: &[],
            one: None,
        };
        let per_minute = |n| RateLimit::per_minute(n).expect("valid");
        let tight = NamedSlot::of(&[NamedLimit::new("t", per_minute(2)).expect("name")]);
        states
            .charge(&id, &tight, &one(2), now)
            .expect("room for 2");
        assert!(states.charge(&id, &tight, &one(1), now).is_err());
        // Same name, another rate: what was spent stays spent (a key
        // cannot reset its limit by retuning it). Two of 2 a minute is a
        // full window of 3 a minute too: the next unit comes 20 s later.
        let retuned = NamedSlot::of(&[NamedLimit::new("t", per_minute(3)).expect("name")]);
        assert!(states.charge(&id, &retuned, &one(1), now).is_err());
        let later = now + 20_000_000_000;
        states
            .charge(&id, &retuned, &one(1), later)
            .expect("one unit refilled");
        // A limit a call leaves out keeps its state for the calls that
        // charge it.
        let other = NamedSlot::of(&[NamedLimit::new("u", per_minute(1)).expect("name")]);
        states.charge(&id, &other, &one(1), later).expect("u");
        assert!(
            states.charge(&id, &retuned, &one(1), later).is_err(),
            "t kept"
        );
        // More limits than a key may hold (a host's own charges): no panic.
        let many: Vec<NamedLimit> = (0..MAX_NAMED_LIMITS + 4)
            .map(|i| NamedLimit::new(format!("l{i}"), per_minute(1)).expect("name"))
            .collect();
        let many = NamedSlot::of(&many);
        states.charge(&id, &many, &one(1), now).expect("first");
        assert!(states.charge(&id, &many, &one(1), now).is_err());
    }

    #[test]
    fn names_are_checked() {
        let l = RateLimit::per_minute(1).expect("valid");
        assert!(NamedLimit::new("Tokens", l).is_err());
        assert!(NamedLimit::new("", l).is_err());
        assert!(NamedLimit::new("a".repeat(33), l).is_err());
        let many: Vec<NamedLimit> = (0..=MAX_NAMED_LIMITS)
            .map(|i| NamedLimit::new(format!("l{i}"), l).expect("name"))
            .collect();
        assert!(checked(many).is_err());
    }
}
