//! Why a call about webhook endpoints failed.

use crate::error::StoreError;
use crate::token::EntropyError;

/// Why creating, listing, deleting or replaying webhook endpoints failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The actor may not manage keys, so not their webhooks either.
    #[error("actor `{actor}` may not manage webhook endpoints here")]
    Forbidden {
        /// The actor's id.
        actor: String,
    },
    /// No such endpoint in the actor's tenant (another tenant's endpoint
    /// is reported the same way).
    #[error("no webhook endpoint with id {0}")]
    NotFound(String),
    /// The URL is not an absolute `https://` (or `http://`) URL of at most
    /// 2,000 characters.
    #[error("invalid webhook URL: {0}")]
    InvalidUrl(&'static str),
    /// The description is longer than 200 characters.
    #[error("a webhook endpoint's description is at most 200 characters")]
    InvalidDescription,
    /// The tenant has as many endpoints as it may.
    #[error("this tenant has {max} webhook endpoints already; delete one first")]
    TooManyEndpoints {
        /// The most a tenant may have.
        max: usize,
    },
    /// The store keeps no webhook outbox (a store of the host's own that
    /// does not implement [`Outbox`](crate::store::Outbox)).
    #[error("the key store keeps no webhook outbox")]
    Unsupported,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS random source failed; no secret was made.
    #[error(transparent)]
    Entropy(#[from] EntropyError),
}

impl WebhookError {
    /// A stable snake_case code: `forbidden`, `not_found`, `invalid_url`,
    /// `invalid_description`, `too_many_endpoints`, `unsupported`,
    /// `store`, `entropy`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::InvalidUrl(_) => "invalid_url",
            Self::InvalidDescription => "invalid_description",
            Self::TooManyEndpoints { .. } => "too_many_endpoints",
            Self::Unsupported => "unsupported",
            Self::Store(_) => "store",
            Self::Entropy(_) => "entropy",
        }
    }
}
