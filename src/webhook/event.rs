//! The types of event keyward sends, by their stable names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What happened to a key. The name (`key.created`, …) is the payload's
/// `type` and what an endpoint subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
#[non_exhaustive]
pub enum EventType {
    /// `key.created`: a key was created.
    Created,
    /// `key.revoked`: a key was revoked by a manager.
    Revoked,
    /// `key.reactivated`: a revoked key was reactivated.
    Reactivated,
    /// `key.rolled`: a key was replaced by a new one; the old one works
    /// until `data.grace_until`. The event names the new key, and the old
    /// one as `data.rolled_from`.
    Rolled,
    /// `key.deleted`: a key was deleted, by a manager (`data.reason`
    /// `"deleted"`) or by the sweep (`"inactive"`, `"retention"`).
    Deleted,
    /// `key.leaked`: a secret scanner found the key's token in public
    /// (`data.url`, `data.source`); `data.revoked` says whether it was
    /// revoked for it.
    Leaked,
    /// `key.expiry_warning`: the key expires at `data.deadline`.
    ExpiryWarning,
    /// `key.inactivity_warning`: the key will be deleted for disuse at
    /// `data.deadline` unless it is used.
    InactivityWarning,
    /// `key.limit_exceeded`: the key was refused for a rate limit or
    /// quota (at most one event per key per sampling window).
    LimitExceeded,
}

/// How often a key's refusals for a limit are told, at most:
/// [`EventType::LimitExceeded`] is sampled, one event per key per window.
pub const LIMIT_EVENT_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// A name that is no [`EventType`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown webhook event type {0:?}; known types are {known}", known = EventType::ALL.map(|t| t.as_str()).join(", "))]
pub struct InvalidEventType(pub String);

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 9] = [
        Self::Created,
        Self::Revoked,
        Self::Reactivated,
        Self::Rolled,
        Self::Deleted,
        Self::Leaked,
        Self::ExpiryWarning,
        Self::InactivityWarning,
        Self::LimitExceeded,
    ];

    /// The stable name: `key.created`, `key.revoked`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "key.created",
            Self::Revoked => "key.revoked",
            Self::Reactivated => "key.reactivated",
            Self::Rolled => "key.rolled",
            Self::Deleted => "key.deleted",
            Self::Leaked => "key.leaked",
            Self::ExpiryWarning => "key.expiry_warning",
            Self::InactivityWarning => "key.inactivity_warning",
            Self::LimitExceeded => "key.limit_exceeded",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = InvalidEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| InvalidEventType(s.chars().take(64).collect()))
    }
}

impl TryFrom<String> for EventType {
    type Error = InvalidEventType;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<EventType> for &'static str {
    fn from(t: EventType) -> Self {
        t.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            let json = serde_json::to_string(&t).expect("serializes");
            assert_eq!(serde_json::from_str::<EventType>(&json).expect("parses"), t);
        }
        let err = "key.exploded".parse::<EventType>().expect_err("unknown");
        assert!(err.to_string().contains("key.revoked"), "{err}");
        assert!("".parse::<EventType>().is_err());
        assert!("KEY.CREATED".parse::<EventType>().is_err());
    }
}
