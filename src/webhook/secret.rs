//! An endpoint's signing secret (`whsec_` and base64) and the Standard
//! Webhooks signature made with it.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use rand::rngs::SysRng;
use rand::TryRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::token::EntropyError;

/// How far a message's `webhook-timestamp` may be from the receiver's
/// clock, in seconds, for [`verify`]: five minutes, as the specification
/// suggests.
pub const SIGNATURE_TOLERANCE: i64 = 5 * 60;

/// Bytes of a secret keyward draws.
const SECRET_BYTES: usize = 32;
/// Shortest secret accepted (Standard Webhooks: 24 to 64 bytes).
const MIN_SECRET_BYTES: usize = 24;
/// Longest secret accepted.
const MAX_SECRET_BYTES: usize = 64;
/// The prefix of a secret's text form.
const PREFIX: &str = "whsec_";

type HmacSha256 = hmac::Hmac<Sha256>;

/// An endpoint's signing secret: `whsec_` and the base64 of 24 to 64
/// random bytes. `Debug` and `Display` redact it; it is zeroed on drop and
/// read only through [`WebhookSecret::expose_secret`].
#[derive(Clone)]
pub struct WebhookSecret {
    text: String,
    key: Vec<u8>,
}

/// A text that is no `whsec_` secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is \"whsec_\" and the base64 of 24 to 64 bytes")]
#[non_exhaustive]
pub struct InvalidSecret;

/// Why [`verify`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// `webhook-timestamp` is not a number of seconds.
    #[error("webhook-timestamp is not a Unix time in seconds")]
    InvalidTimestamp,
    /// The message is older or newer than [`SIGNATURE_TOLERANCE`]
    /// allows: a replay, or a clock far off.
    #[error("webhook-timestamp is more than five minutes from now")]
    Stale,
    /// No `v1` signature in `webhook-signature` matches.
    #[error("no webhook-signature matches the message")]
    Mismatch,
}

impl WebhookSecret {
    /// A new secret of 32 bytes from the OS random source.
    ///
    /// # Errors
    /// [`EntropyError`] if the random source fails.
    pub fn generate() -> Result<Self, EntropyError> {
        let mut key = vec![0u8; SECRET_BYTES];
        SysRng
            .try_fill_bytes(&mut key)
            .map_err(EntropyError::from_sys)?;
        let text = format!("{PREFIX}{}", STANDARD.encode(&key));
        Ok(Self { text, key })
    }

    /// Reads a secret from its text form (`whsec_…`).
    ///
    /// # Errors
    /// [`InvalidSecret`] unless it is `whsec_` and the standard base64 of
    /// 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let body = text.strip_prefix(PREFIX).ok_or(InvalidSecret)?;
        let mut key = STANDARD.decode(body).map_err(|_| InvalidSecret)?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            key.zeroize();
            return Err(InvalidSecret);
        }
        Ok(Self {
            text: text.to_string(),
            key,
        })
    }

    /// The secret's text form, `whsec_…`: show it to the endpoint's owner
    /// once, store it where the receiver reads it, never log it.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        // Any key length is valid for HMAC.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl PartialEq for WebhookSecret {
    /// In constant time.
    fn eq(&self, other: &Self) -> bool {
        self.key.ct_eq(&other.key).into()
    }
}

impl Eq for WebhookSecret {}

impl Drop for WebhookSecret {
    fn drop(&mut self) {
        self.text.zeroize();
        self.key.zeroize();
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(whsec_<redacted>)")
    }
}

impl fmt::Display for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_<redacted>")
    }
}

/// The `webhook-signature` header of a message: `v1,` and the base64
/// HMAC-SHA256 of `{id}.{timestamp}.{body}` under `secret`.
///
/// ```
/// use keyward::webhook::{sign, WebhookSecret};
///
/// let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let signature = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
/// assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
/// # Ok::<(), keyward::webhook::InvalidSecret>(())
/// ```
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(secret.mac(id, timestamp, body)))
}

/// Checks a received message, for a receiver written in Rust: the
/// timestamp is within [`SIGNATURE_TOLERANCE`] of `now` (Unix seconds)
/// and one of the space-separated `v1,` signatures of `signature` (the
/// `webhook-signature` header) is the message's, compared in constant
/// time. Check it before reading the body, and drop a `webhook-id` you
/// have seen.
///
/// # Errors
/// [`SignatureError`]: why the message is not to be believed.
pub fn verify(
    secret: &WebhookSecret,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::InvalidTimestamp)?;
    if now.abs_diff(at) > SIGNATURE_TOLERANCE.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let expected = secret.mac(id, at, body);
    let matched = signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| STANDARD.decode(s).ok())
        .fold(0u8, |found, s| found | s.ct_eq(&expected).unwrap_u8());
    if matched == 1 {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    /// The specification's own example.
    #[test]
    fn the_specification_example_signs_and_verifies() {
        let secret = WebhookSecret::parse(SECRET).expect("valid");
        let sig = sign(&secret, ID, 1614265330, BODY);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            verify(&secret, ID, "1614265330", &sig, BODY, 1614265330),
            Ok(())
        );
        // One of several signatures (a secret being rotated) is enough.
        let several = format!("v1,bm90IGl0 {sig}");
        assert_eq!(
            verify(&secret, ID, "1614265330", &several, BODY, 1614265400),
            Ok(())
        );
    }

    #[test]
    fn tampering_staleness_and_other_secrets_are_refused() {
        let secret = WebhookSecret::parse(SECRET).expect("valid");
        let sig = sign(&secret, ID, 1614265330, BODY);
        let at = "1614265330";
        let now = 1614265330;
        assert_eq!(
            verify(&secret, ID, at, &sig, b"{}", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&secret, "msg_other", at, &sig, BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&secret, ID, "1614265331", &sig, BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&secret, ID, at, "v2,abc", BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&secret, ID, at, "", BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&secret, ID, at, &sig, BODY, now + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&secret, ID, at, &sig, BODY, now - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&secret, ID, "soon", &sig, BODY, now),
            Err(SignatureError::InvalidTimestamp)
        );
        let other = WebhookSecret::generate().expect("entropy");
        assert_eq!(
            verify(&other, ID, at, &sig, BODY, now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn secrets_parse_strictly_and_never_show() {
        let s = WebhookSecret::generate().expect("entropy");
        assert!(s.expose_secret().starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(s.expose_secret()), Ok(s.clone()));
        assert_ne!(WebhookSecret::generate().expect("entropy"), s);
        assert!(!format!("{s:?}{s}").contains(&s.expose_secret()[6..]));
        for bad in [
            "",
            "whsec_",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!!!",
            "whsec_AAAA",
        ] {
            assert_eq!(WebhookSecret::parse(bad), Err(InvalidSecret), "{bad:?}");
        }
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert_eq!(WebhookSecret::parse(&long), Err(InvalidSecret));
    }
}
