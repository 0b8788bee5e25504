//! Endpoints as the host sees them: what to make, what was made.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{EventType, WebhookSecret};

/// Longest endpoint URL, in characters.
pub const MAX_URL_CHARS: usize = 2_000;
/// Longest endpoint description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 200;
/// Most endpoints one tenant may have.
pub const MAX_ENDPOINTS: usize = 20;

/// An endpoint to make: see
/// [`Keyward::create_endpoint`](crate::Keyward::create_endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewEndpoint {
    /// Where messages are POSTed: an absolute `https://` URL (`http://`
    /// is accepted here, and refused by the delivery transport unless the
    /// host allows it, e.g. for a receiver on loopback in development).
    pub url: String,
    /// The event types it wants; empty for all.
    pub event_types: Vec<EventType>,
    /// A note of its owner's (at most 200 characters).
    pub description: String,
}

impl NewEndpoint {
    /// An endpoint at `url` that wants every event.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            event_types: Vec::new(),
            description: String::new(),
        }
    }

    /// Only these event types.
    pub fn event_types(mut self, types: impl IntoIterator<Item = EventType>) -> Self {
        self.event_types = types.into_iter().collect();
        self.event_types.sort();
        self.event_types.dedup();
        self
    }

    /// A note of its owner's.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
}

/// An endpoint, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WebhookEndpoint {
    /// `ep_` and 24 base62 characters.
    pub id: String,
    /// The tenant whose keys' events it receives.
    pub tenant: String,
    /// Where messages go.
    pub url: String,
    /// The event types it wants; empty for all.
    pub event_types: Vec<EventType>,
    /// Its owner's note.
    pub description: String,
    /// The actor who made it.
    pub created_by: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Deliveries waiting to be sent to it.
    pub pending: u64,
    /// Deliveries given up on: replay them with
    /// [`Keyward::replay_webhooks`](crate::Keyward::replay_webhooks).
    pub dead: u64,
}

/// A new endpoint and its signing secret, shown this once.
#[derive(Debug)]
#[non_exhaustive]
pub struct CreatedEndpoint {
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// Its secret (`whsec_…`): give it to the receiver; keyward shows it
    /// only now.
    pub secret: WebhookSecret,
}

/// Why `url` is no endpoint URL, if it is not.
pub(crate) fn url_problem(url: &str) -> Option<&'static str> {
    if url.chars().count() > MAX_URL_CHARS {
        return Some("longer than 2000 characters");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some("it holds spaces or control characters");
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Some("it must start with https:// (or http://)");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Some("credentials in the URL are not allowed; authenticate by the signature");
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') {
            h
        } else {
            authority
        }
    });
    if host.is_empty() || host == "[]" {
        return Some("it has no host");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        for good in [
            "https://hooks.example.com/keyward",
            "https://hooks.example.com:8443/k?x=1",
            "http://127.0.0.1:9000/",
            "https://[2001:db8::1]:443/in",
        ] {
            assert_eq!(url_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "ftp://example.com/",
            "https://",
            "https:///path",
            "https://user:pw@example.com/",
            "https://exa mple.com/",
            "https://example.com/\n",
            "example.com/hook",
        ] {
            assert!(url_problem(bad).is_some(), "{bad:?}");
        }
        assert!(url_problem(&format!("https://e.com/{}", "a".repeat(2000))).is_some());
    }
}
