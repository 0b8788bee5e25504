//! Lifecycle policies: inactivity expiry with warnings, expiry warnings,
//! retention of dead keys and usage refills.
//!
//! Each policy is a plain value whose fields document their defaults, set
//! on [`KeywardBuilder`](crate::KeywardBuilder). Time always comes from the
//! [`Keyward`](crate::Keyward)'s [`Clock`](crate::Clock).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::token::{DisplayPrefix, KeyId};

/// Keys unused for a while stop working and are deleted, with warnings
/// before (by default 90 days, warned 15, 7 and 1 days before).
///
/// "Unused" counts from the last successful verification, or from creation
/// for a key never used. An inactive key is refused with
/// [`VerifyError::Inactive`](crate::VerifyError::Inactive) at once, even
/// before a [`sweep`](crate::Keyward::sweep) deletes it. Applies to active
/// keys; revoked and expired keys follow [`Retention`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InactivityPolicy {
    /// How long a key may go unused. `None` switches the policy off.
    /// Defaults to 90 days.
    pub after: Option<Duration>,
    /// How long before deletion the sweep warns, once per threshold per
    /// period of disuse. Defaults to 15, 7 and 1 days.
    pub warn_before: Vec<Duration>,
}

impl Default for InactivityPolicy {
    fn default() -> Self {
        Self {
            after: Some(Duration::days(90)),
            warn_before: default_thresholds(),
        }
    }
}

impl InactivityPolicy {
    /// No inactivity expiry at all.
    pub fn disabled() -> Self {
        Self {
            after: None,
            warn_before: Vec::new(),
        }
    }

    /// Expire after `after` of disuse, with the default warnings.
    pub fn after(after: Duration) -> Self {
        Self {
            after: Some(after),
            ..Self::default()
        }
    }
}

fn default_thresholds() -> Vec<Duration> {
    vec![Duration::days(15), Duration::days(7), Duration::days(1)]
}

/// Keys with a fixed expiry are reported by the sweep before they expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryWarnings {
    /// How long before expiry to warn, once per threshold. Defaults to 15,
    /// 7 and 1 days; empty switches the warnings off.
    pub warn_before: Vec<Duration>,
}

impl Default for ExpiryWarnings {
    fn default() -> Self {
        Self {
            warn_before: default_thresholds(),
        }
    }
}

/// How long revoked and expired keys stay listed before the sweep purges
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Purge revoked or expired keys this long after they were revoked or
    /// expired. `None` keeps them for audit. Defaults to `None`.
    pub purge_after: Option<Duration>,
}

/// Refill of a usage-limited key: back to `amount` uses once `every` has
/// passed since the last refill (checked when the key is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refill {
    /// Uses after a refill.
    pub amount: u64,
    /// Time between refills, in seconds.
    pub every_secs: u64,
}

impl Refill {
    /// Back to `amount` uses every `every` (at least one second, at most
    /// [`Refill::MAX_EVERY_SECS`]).
    pub fn new(amount: u64, every: Duration) -> Option<Self> {
        let secs = every.num_seconds();
        (secs >= 1 && secs.unsigned_abs() <= Self::MAX_EVERY_SECS).then_some(Self {
            amount,
            every_secs: secs as u64,
        })
    }

    /// The longest refill period: 100 years, in seconds. Longer periods
    /// given as fields are capped to it.
    pub const MAX_EVERY_SECS: u64 = 100 * 366 * 24 * 3600;

    /// The refill period (never longer than [`Refill::MAX_EVERY_SECS`]).
    pub fn every(&self) -> Duration {
        let secs = self.every_secs.min(Self::MAX_EVERY_SECS);
        Duration::try_seconds(i64::try_from(secs).unwrap_or(i64::MAX)).unwrap_or(Duration::MAX)
    }
}

/// Which warning threshold was last announced for which deadline, so that
/// each warning is given once however often and wherever the sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarningMark {
    /// The deadline warned about (deletion or expiry). A new deadline (the
    /// key was used) starts a new cycle of warnings.
    pub deadline: DateTime<Utc>,
    /// The most urgent threshold announced, in seconds before the deadline.
    pub before_secs: i64,
}

impl WarningMark {
    /// The threshold announced.
    pub fn before(&self) -> Duration {
        Duration::seconds(self.before_secs)
    }
}

/// What a sweep warns about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WarningKind {
    /// The key will be deleted for disuse at the deadline.
    Inactivity,
    /// The key's fixed expiry is the deadline.
    Expiry,
}

/// One warning for the host to turn into a notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SweepWarning {
    /// Inactivity or expiry.
    pub kind: WarningKind,
    /// The key.
    pub key_id: KeyId,
    /// Its display prefix.
    pub prefix: DisplayPrefix,
    /// Its tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// Who created it (whom to notify).
    pub created_by: String,
    /// When it will be deleted (inactivity) or expire.
    pub deadline: DateTime<Utc>,
    /// The threshold reached, e.g. 7 days.
    pub before: Duration,
}

/// Why a sweep removed a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemovalReason {
    /// Unused for the inactivity period.
    Inactive,
    /// Revoked or expired for longer than the retention period.
    Retention,
}

/// A key a sweep deleted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SweptKey {
    /// The key.
    pub key_id: KeyId,
    /// Its display prefix.
    pub prefix: DisplayPrefix,
    /// Its tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// Why it was removed.
    pub reason: RemovalReason,
}

/// What one [`Keyward::sweep`](crate::Keyward::sweep) did and found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SweepReport {
    /// Keys read.
    pub scanned: usize,
    /// New warnings, each given once per key, threshold and deadline.
    pub warnings: Vec<SweepWarning>,
    /// Keys deleted for disuse.
    pub deleted: Vec<SweptKey>,
    /// Revoked or expired keys purged after the retention period.
    pub purged: Vec<SweptKey>,
}

/// The most urgent threshold reached before `deadline` at `now`, if any.
fn crossed(
    thresholds: &[Duration],
    deadline: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let left = deadline - now;
    thresholds.iter().copied().filter(|t| left <= *t).min()
}

/// Whether `mark` already covers `threshold` for `deadline`.
fn already_warned(mark: Option<WarningMark>, deadline: DateTime<Utc>, threshold: Duration) -> bool {
    mark.is_some_and(|m| m.deadline == deadline && m.before_secs <= threshold.num_seconds())
}

/// The warning due for `deadline` at `now`, if a threshold was reached
/// that `mark` does not already cover: the new mark to store.
pub(crate) fn due_warning(
    thresholds: &[Duration],
    deadline: DateTime<Utc>,
    now: DateTime<Utc>,
    mark: Option<WarningMark>,
) -> Option<WarningMark> {
    let threshold = crossed(thresholds, deadline, now)?;
    (!already_warned(mark, deadline, threshold)).then_some(WarningMark {
        deadline,
        before_secs: threshold.num_seconds(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let t = default_thresholds();
        let d = DateTime::from_timestamp(1_000_000_000, 0).expect("valid");
        assert_eq!(crossed(&t, d, d - Duration::days(16)), None);
        assert_eq!(
            crossed(&t, d, d - Duration::days(15)),
            Some(Duration::days(15))
        );
        assert_eq!(
            crossed(&t, d, d - Duration::days(3)),
            Some(Duration::days(7))
        );
        assert_eq!(
            crossed(&t, d, d - Duration::hours(1)),
            Some(Duration::days(1))
        );
        let mark = Some(WarningMark {
            deadline: d,
            before_secs: Duration::days(7).num_seconds(),
        });
        assert!(already_warned(mark, d, Duration::days(15)));
        assert!(already_warned(mark, d, Duration::days(7)));
        assert!(!already_warned(mark, d, Duration::days(1)));
        assert!(!already_warned(
            mark,
            d + Duration::days(1),
            Duration::days(15)
        ));
    }
}
