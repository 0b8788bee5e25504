//! The one Redis script every shared decision is: GCRA on one key,
//! atomically, granting up to a lease of requests at once and taking
//! back what an expired lease did not use.

use std::fmt::Write as _;

use super::super::{Bucket, RateLimit};

/// GCRA in Redis, in integer microseconds (exact in Lua's doubles up to
/// 2^53 µs, the year 2255).
///
/// `KEYS[1]`: the bucket's state, the theoretical arrival time. `ARGV`:
/// the emission interval, the tolerance (`emission × (max − 1)`), the
/// caller's time (negative: Redis's own clock), how many requests to grant at most, how much time an
/// earlier lease gives back unused (µs, only the part of it still ahead),
/// and the state that lease left (time is given back only from a state
/// at least that far: one that lost the key never counted it). Returns `{granted, wait, tat}`: `granted` requests were
/// counted (at least 1, at most the count asked, or 0), and when none
/// was, `wait` µs until one can be; `tat` is the state after. The state
/// expires once it has refilled, which is the same as no state.
const GCRA: &str = r"
local e = tonumber(ARGV[1])
local tol = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local want = tonumber(ARGV[4])
local back = tonumber(ARGV[5])
local leased = tonumber(ARGV[6])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
if back > 0 and tat >= leased then
  tat = math.max(tat - back, now)
else
  back = 0
end
local function keep()
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', math.ceil((tat - now) / 1000)))
end
local earliest = tat - tol
if now < earliest then
  if back > 0 then
    keep()
  end
  return {0, earliest - now, tat, now}
end
local granted = math.min(want, math.floor((now - earliest) / e) + 1)
-- (The division is in doubles: never grant a request it rounded up to.)
if granted > 1 and tat + (granted - 1) * e - tol > now then
  granted = granted - 1
end
tat = tat + granted * e
keep()
return {granted, 0, tat, now}
";

/// A key's named limits in Redis, all or none, in integer microseconds.
///
/// `KEYS`: each limit's state. `ARGV[1]`: the caller's time (negative:
/// Redis's own clock); then, per key, the emission interval, the
/// tolerance and the request's cost for it. Every limit is checked
/// before any is charged: returns `{1, 0, 0}` when all were charged, or
/// `{0, wait, i}` (µs until limit `i`, 1-based, the first that refused,
/// has room) and nothing changed.
const NAMED: &str = r"
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local next = {}
for i = 1, #KEYS do
  local e = tonumber(ARGV[3 * i - 1])
  local tol = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then
    tat = now
  end
  local n = tat + cost * e
  local limit = now + tol + e
  if n > limit then
    return {0, math.min(n - limit, tol + e), i}
  end
  next[i] = n
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f', next[i]), 'PX', string.format('%.0f', math.max(1, math.ceil((next[i] - now) / 1000))))
end
return {1, 0, 0}
";

/// The named-limits script, hashed once.
pub(super) fn named() -> redis::Script {
    redis::Script::new(NAMED)
}

/// The Redis key of key `id`'s named limit `name` under `limit`. Names
/// hold no `:`; the id comes last.
pub(super) fn named_key(namespace: &str, id: &str, name: &str, limit: RateLimit) -> String {
    format!("{namespace}:n:{name}:{}/{}:{id}", limit.max(), limit.per_ms)
}

/// The script, hashed once; `EVALSHA` loads it on first use per server.
pub(super) fn gcra() -> redis::Script {
    redis::Script::new(GCRA)
}

/// A limit as the script's integer parameters: the emission interval
/// and the tolerance, in µs. The interval is rounded up, so a limit is
/// never looser in Redis than written (a rate over a million a second
/// per bucket is counted as a million).
pub(super) fn params(limit: RateLimit) -> (u64, u64) {
    let per_us = limit.per_ms.saturating_mul(1_000);
    let max = u64::from(limit.max());
    let emission = per_us.div_ceil(max).max(1);
    (emission, emission.saturating_mul(max - 1))
}

/// The Redis key of a bucket under a limit. The limit is part of it, as
/// in [`LocalLimiter`](super::super::LocalLimiter): a changed limit starts
/// afresh. The tenant or key id comes last, so no name can end in
/// another's key.
pub(super) fn key(namespace: &str, bucket: Bucket<'_>, limit: RateLimit) -> String {
    let mut k = String::with_capacity(namespace.len() + 48);
    let (kind, name) = match bucket {
        Bucket::Key(id) => ("k", id.as_str().to_owned()),
        Bucket::Tenant(t) => ("q", t.to_owned()),
    };
    let _ = write!(
        k,
        "{namespace}:{kind}:{}/{}:{name}",
        limit.max(),
        limit.per_ms
    );
    k
}

/// What the script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Grant {
    /// Requests counted.
    pub(super) granted: u32,
    /// When none was: µs until one can be.
    pub(super) wait_us: u64,
    /// The bucket's state after (µs), on the caller's clock.
    pub(super) tat_us: i64,
}

impl Grant {
    /// The script's answer to a caller whose clock read `caller_now_us`:
    /// the state moved onto the caller's clock, and how far Redis's clock
    /// (the one the script used) is ahead of it.
    pub(super) fn from_reply(reply: (i64, i64, i64, i64), caller_now_us: i64) -> (Self, i64) {
        let offset = reply.3.saturating_sub(caller_now_us);
        let grant = Self {
            granted: u32::try_from(reply.0.max(0)).unwrap_or(u32::MAX),
            wait_us: u64::try_from(reply.1.max(0)).unwrap_or(0),
            tat_us: reply.2.saturating_sub(offset),
        };
        (grant, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::KeyId;
    use chrono::Duration;

    #[test]
    fn parameters_are_whole_microseconds() {
        let l = RateLimit::per_minute(200).expect("valid");
        assert_eq!(params(l), (300_000, 300_000 * 199));
        let fast = RateLimit::new(u32::MAX, Duration::milliseconds(1)).expect("valid");
        assert_eq!(params(fast), (1, u64::from(u32::MAX) - 1));
        // 600 a millisecond is 1⅔ µs apart: 2 µs, never 1 (which would
        // let 1,000 through).
        let six_hundred = RateLimit::new(600, Duration::milliseconds(1)).expect("valid");
        assert_eq!(params(six_hundred), (2, 2 * 599));
        let seven = RateLimit::per_minute(7).expect("valid");
        assert_eq!(params(seven).0, 8_571_429);
        let one = RateLimit::per_second(1).expect("valid");
        assert_eq!(params(one), (1_000_000, 0));
    }

    #[test]
    fn keys_name_the_kind_and_the_limit_before_the_name() {
        let l = RateLimit::per_minute(200).expect("valid");
        assert_eq!(
            key("kw", Bucket::Tenant("acme/eu"), l),
            "kw:q:200/60000:acme/eu"
        );
        let id = KeyId::random().expect("entropy");
        assert_eq!(
            key("kw", Bucket::Key(id), l),
            format!("kw:k:200/60000:{}", id.as_str())
        );
    }
}
