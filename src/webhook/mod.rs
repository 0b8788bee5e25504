//! Webhooks: what keyward tells a host's endpoints about keys, signed as
//! the [Standard Webhooks](https://www.standardwebhooks.com/) specification
//! says.
//!
//! Each message is a POST of JSON:
//!
//! ```json
//! {"type": "key.revoked", "timestamp": "2026-12-04T10:00:00Z",
//!  "data": {"key_id": "AbCd1234", "key_prefix": "sk_AbCd1234", "tenant": "acme", …}}
//! ```
//!
//! with three headers:
//!
//! - `webhook-id`: the message's id (`msg_…`), the same on every retry
//!   and for every endpoint the message goes to. Delivery is **at least
//!   once**: a receiver drops a message whose id it has seen.
//! - `webhook-timestamp`: the attempt's time, in Unix seconds. Refuse
//!   messages more than a few minutes from your clock.
//! - `webhook-signature`: `v1,` and the base64 HMAC-SHA256, under the
//!   endpoint's secret (`whsec_…`), of `{id}.{timestamp}.{body}`. Check it
//!   with [`verify`] (or any Standard Webhooks library) before anything
//!   in the body is believed.
//!
//! Messages are not ordered: a retry may arrive after a later message.
//! Order by the payload's `timestamp` where it matters.
//!
//! Events are written to the store's outbox in the same transaction as
//! the change that caused them (see [`crate::store::Outbox`]), and sent
//! by a delivery worker (feature `webhooks`) with retries; a message
//! that keeps failing is set aside as dead after a bounded time, and can
//! be replayed.

mod endpoint;
mod event;
mod secret;
#[cfg(feature = "webhooks")]
mod transport;

#[cfg(feature = "webhooks")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhooks")))]
pub use transport::{
    HttpTransport, HttpTransportBuilder, TransportError, WebhookTransport, DEFAULT_ATTEMPT_TIMEOUT,
};

pub(crate) use endpoint::url_problem;
pub use endpoint::{
    CreatedEndpoint, NewEndpoint, WebhookEndpoint, MAX_DESCRIPTION_CHARS, MAX_ENDPOINTS,
    MAX_URL_CHARS,
};

pub use event::{EventType, InvalidEventType, LIMIT_EVENT_WINDOW};
pub use secret::{sign, verify, InvalidSecret, SignatureError, WebhookSecret, SIGNATURE_TOLERANCE};
