//! Why a command failed, and its exit code.

use keyward::KeyError;

use crate::exit;

/// Why a command failed: its exit code, a stable snake_case kind, and a
/// message for the operator (never a secret).
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub kind: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            kind,
            message: message.into(),
        }
    }
}

impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Self {
        let code = match &e {
            KeyError::NotFound(_) => exit::NOT_FOUND,
            KeyError::Store(_) => exit::UNAVAILABLE,
            KeyError::Entropy(_) => exit::INTERNAL,
            _ => exit::REFUSED,
        };
        Self::new(code, e.code(), e.to_string())
    }
}

impl From<keyward::WebhookError> for Failure {
    fn from(e: keyward::WebhookError) -> Self {
        use keyward::WebhookError as W;
        let code = match &e {
            W::NotFound(_) => exit::NOT_FOUND,
            W::Store(_) => exit::UNAVAILABLE,
            W::Entropy(_) => exit::INTERNAL,
            _ => exit::REFUSED,
        };
        Self::new(code, e.code(), e.to_string())
    }
}

impl From<keyward::StoreError> for Failure {
    fn from(e: keyward::StoreError) -> Self {
        Self::new(exit::UNAVAILABLE, "store_unavailable", e.to_string())
    }
}
