//! Leaked-key reports from secret scanners (GitHub's secret scanning
//! partner program, feature `leaks`): the reports, the signature that
//! proves GitHub sent them, and the answer.
//!
//! GitHub POSTs a JSON array of `{token, type, url, source}` and signs
//! the raw body with ECDSA P-256 / SHA-256:
//! `Github-Public-Key-Signature` is the base64 DER signature and
//! `Github-Public-Key-Identifier` names the public key, one of those
//! GitHub lists at its `meta/public_keys/secret_scanning` endpoint.
//! [`ScannerKeys`] holds those keys (given by the host, or fetched by a
//! [`KeyFetcher`] the host supplies, refreshed when an unknown identifier
//! appears) and verifies a report before anything in it is read.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Longest report body read: 16 MiB (GitHub batches can be large).
pub const MAX_REPORT_BYTES: usize = 16 * 1024 * 1024;
/// Most tokens one report may carry.
pub const MAX_REPORT_TOKENS: usize = 100_000;
/// Least time between two fetches of the scanner's keys.
const REFETCH_EVERY: Duration = Duration::from_secs(60);

/// One public key of a scanner, as GitHub lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ScannerKey {
    /// The key's identifier, as `Github-Public-Key-Identifier` names it.
    pub key_identifier: String,
    /// The key as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub key: String,
}

/// Fetches a scanner's current public keys, e.g. from
/// `https://api.github.com/meta/public_keys/secret_scanning` (the host's
/// HTTP client; keyward makes no outbound request of its own).
#[async_trait]
pub trait KeyFetcher: fmt::Debug + Send + Sync + 'static {
    /// The keys the scanner lists now.
    ///
    /// # Errors
    /// A message saying why they could not be fetched.
    async fn fetch(&self) -> Result<Vec<ScannerKey>, String>;
}

/// Why a report was refused before it was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature or key identifier header is missing.
    #[error("the report is not signed: Github-Public-Key-Signature and Github-Public-Key-Identifier are required")]
    Unsigned,
    /// No key with that identifier is known (or could be fetched).
    #[error("the report is signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify over the body.
    #[error("the report's signature does not verify")]
    Invalid,
    /// A public key given by the host is not a P-256 key in PEM.
    #[error("scanner key {0:?} is not a P-256 public key in PEM")]
    BadKey(String),
}

/// The public keys reports must be signed with.
pub struct ScannerKeys {
    /// The host's keys: never replaced by a fetch.
    given: HashMap<String, VerifyingKey>,
    /// The fetcher's keys, replaced by each successful fetch (a key the
    /// scanner withdraws is dropped).
    keys: RwLock<HashMap<String, VerifyingKey>>,
    fetcher: Option<Arc<dyn KeyFetcher>>,
    fetched: Mutex<Option<Instant>>,
}

/// A signature ready to check against a body: its key is known and its
/// encoding sound, so reading the body is worth it.
#[derive(Debug)]
pub struct Prepared {
    key: VerifyingKey,
    signature: Signature,
}

impl Prepared {
    /// Checks the signature over `body`, the raw bytes of the request.
    ///
    /// # Errors
    /// [`SignatureError::Invalid`] when it does not verify.
    pub fn verify(&self, body: &[u8]) -> Result<(), SignatureError> {
        self.key
            .verify(body, &self.signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

impl fmt::Debug for ScannerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<String> = self.given.keys().cloned().collect();
        ids.extend(
            self.keys
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .cloned(),
        );
        f.debug_struct("ScannerKeys")
            .field("keys", &ids)
            .field("fetcher", &self.fetcher)
            .finish()
    }
}

impl Default for ScannerKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl ScannerKeys {
    /// No key yet.
    pub fn new() -> Self {
        Self {
            given: HashMap::new(),
            keys: RwLock::new(HashMap::new()),
            fetcher: None,
            fetched: Mutex::new(None),
        }
    }

    /// With the key `identifier`, given as PEM.
    ///
    /// # Errors
    /// [`SignatureError::BadKey`] for anything but a P-256 public key.
    pub fn with_key(mut self, identifier: &str, pem: &str) -> Result<Self, SignatureError> {
        let key = parse_key(identifier, pem)?;
        self.given.insert(identifier.to_string(), key);
        Ok(self)
    }

    /// Fetches keys with `fetcher` when a report names an identifier not
    /// known yet (at most once a minute).
    pub fn fetcher(mut self, fetcher: impl KeyFetcher) -> Self {
        self.fetcher = Some(Arc::new(fetcher));
        self
    }

    /// Checks that `signature` (base64 DER) by key `identifier` signs
    /// `body`, the raw bytes of the request.
    ///
    /// # Errors
    /// [`SignatureError`] naming why not.
    pub async fn verify(
        &self,
        identifier: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        self.prepare(identifier, signature).await?.verify(body)
    }

    /// The first half of [`ScannerKeys::verify`], before the body is
    /// read: the headers are there, the signature is well-formed DER and
    /// its key is known (fetched if need be).
    ///
    /// # Errors
    /// [`SignatureError`] naming why the body need not be read.
    pub async fn prepare(
        &self,
        identifier: Option<&str>,
        signature: Option<&str>,
    ) -> Result<Prepared, SignatureError> {
        let (Some(identifier), Some(signature)) = (identifier, signature) else {
            return Err(SignatureError::Unsigned);
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| SignatureError::Invalid)?;
        let signature = Signature::from_der(&der).map_err(|_| SignatureError::Invalid)?;
        let key = match self.key(identifier) {
            Some(key) => key,
            None => {
                self.refresh().await;
                self.key(identifier).ok_or(SignatureError::UnknownKey)?
            }
        };
        Ok(Prepared { key, signature })
    }

    fn key(&self, identifier: &str) -> Option<VerifyingKey> {
        if let Some(key) = self.given.get(identifier) {
            return Some(*key);
        }
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(identifier)
            .copied()
    }

    /// Fetches the scanner's keys, if a fetcher is set and the last fetch
    /// is a minute old: an attacker naming made-up identifiers cannot
    /// make keyward hammer the scanner.
    async fn refresh(&self) {
        let Some(fetcher) = &self.fetcher else {
            return;
        };
        {
            let mut fetched = self.fetched.lock().unwrap_or_else(PoisonError::into_inner);
            if fetched.is_some_and(|at| at.elapsed() < REFETCH_EVERY) {
                return;
            }
            *fetched = Some(Instant::now());
        }
        match fetcher.fetch().await {
            Ok(listed) => {
                let mut fresh = HashMap::new();
                for k in listed {
                    match parse_key(&k.key_identifier, &k.key) {
                        Ok(key) => {
                            fresh.insert(k.key_identifier, key);
                        }
                        Err(e) => {
                            tracing::warn!(target: "keyward", error = %e, "a fetched scanner key was skipped")
                        }
                    }
                }
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = fresh;
            }
            Err(e) => {
                tracing::warn!(target: "keyward", error = %e, "the scanner's keys could not be fetched")
            }
        }
    }
}

fn parse_key(identifier: &str, pem: &str) -> Result<VerifyingKey, SignatureError> {
    VerifyingKey::from_public_key_pem(pem.trim())
        .map_err(|_| SignatureError::BadKey(identifier.chars().take(100).collect()))
}

/// One token a scanner found.
#[derive(Deserialize)]
pub struct LeakReport {
    /// The token, as found. Wiped on drop.
    pub token: String,
    /// The token type the issuer registered with the scanner.
    #[serde(rename = "type", default)]
    pub token_type: String,
    /// Where it was found.
    #[serde(default)]
    pub url: Option<String>,
    /// What kind of place: `content`, `commit`, `pull_request_comment`,
    /// `gist_content`, `npm`, …
    #[serde(default)]
    pub source: Option<String>,
}

impl Drop for LeakReport {
    fn drop(&mut self) {
        self.token.zeroize();
    }
}

impl fmt::Debug for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakReport")
            .field("token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("url", &self.url)
            .field("source", &self.source)
            .finish()
    }
}

/// Whether a reported token was one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// A real key's token (revoked or marked exposed now).
    TruePositive,
    /// Not a key's token: malformed, wrong checksum, unknown id, or
    /// another secret.
    FalsePositive,
}

/// The answer for one reported token, in GitHub's feedback format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeakFeedback {
    /// SHA-256 of the token, lowercase hex.
    pub token_hash: String,
    /// The reported type, echoed.
    pub token_type: String,
    /// Whether it was one of ours.
    pub label: Label,
}

/// Reads a report body (a JSON array of tokens).
///
/// # Errors
/// A message for a body that is too large, not such an array, or holds
/// more than [`MAX_REPORT_TOKENS`] tokens.
pub fn parse_reports(body: &[u8]) -> Result<Vec<LeakReport>, String> {
    if body.len() > MAX_REPORT_BYTES {
        return Err(format!(
            "the report is larger than {MAX_REPORT_BYTES} bytes"
        ));
    }
    let reports: Vec<LeakReport> = serde_json::from_slice(body)
        .map_err(|_| "the report is not a JSON array of {token, type, url, source}".to_string())?;
    if reports.len() > MAX_REPORT_TOKENS {
        return Err(format!(
            "the report holds more than {MAX_REPORT_TOKENS} tokens"
        ));
    }
    Ok(reports)
}
