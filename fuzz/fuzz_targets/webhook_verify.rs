//! A webhook receiver's input on arbitrary bytes: `WebhookSecret::parse`
//! and `verify` never panic; a secret that parses prints as redacted and
//! re-parses to itself; a message signed with `sign` always verifies,
//! and changing its body makes it fail.
//!
//! Input: lines of secret text, `webhook-id`, `webhook-timestamp`,
//! `webhook-signature`, then the body.

#![no_main]

use keyward::webhook::{sign, verify, WebhookSecret};
use libfuzzer_sys::fuzz_target;

const KNOWN: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\n');
    let secret_text = parts.next().unwrap_or("");
    let id = parts.next().unwrap_or("");
    let timestamp = parts.next().unwrap_or("");
    let signature = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("").as_bytes();
    if let Ok(secret) = WebhookSecret::parse(secret_text) {
        assert_eq!(format!("{secret}"), "whsec_<redacted>");
        assert_eq!(
            WebhookSecret::parse(secret.expose_secret()).ok().as_ref(),
            Some(&secret)
        );
    }
    let secret = WebhookSecret::parse(KNOWN).expect("a valid secret");
    let now = 1_614_265_330;
    let _ = verify(&secret, id, timestamp, signature, body, now);
    let signed = sign(&secret, id, now, body);
    assert_eq!(
        verify(&secret, id, &now.to_string(), &signed, body, now),
        Ok(())
    );
    let mut other = body.to_vec();
    other.push(b'!');
    assert!(verify(&secret, id, &now.to_string(), &signed, &other, now).is_err());
});
