//! Tokens of another format, brought along by an import: a user whose
//! integrations hold `acme_live_…` keys keeps them working.
//!
//! A [`LegacyFormat`] is a fixed prefix and a body of one character set
//! and bounded length. Such a token carries no id and no checksum, so its
//! [`KeyId`] is derived from its SHA-256 (the hash the store keeps, as for
//! any key): a token and its stored hash name the same id, whether the
//! import brought the token or only its hash. Verification then goes as
//! for a keyward token: the id is looked up, the hash compared in
//! constant time.
//!
//! Without a checksum, a made-up token of a legacy format costs a store
//! read the first time its (derived) id is asked for; keyward tokens stop
//! at the checksum. Issue keyward tokens for new keys.

use std::fmt;
use std::ops::RangeInclusive;

use crate::token::{DisplayPrefix, KeyHash, KeyId, ParsedToken};

/// Longest legacy prefix: it is the key's display prefix.
const MAX_PREFIX_LEN: usize = 20;
/// Longest legacy body.
const MAX_BODY_LEN: usize = 200;
/// Least entropy a legacy body must hold: its shortest allowed length
/// times the bits of a character of its set. The derived id is public and
/// names 47 bits of the token's hash; 128 bits keep that useless.
const MIN_BITS: f64 = 128.0;

/// The characters a legacy token's body is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Charset {
    /// `A–Z`, `a–z`, `0–9` (base62).
    Alphanumeric,
    /// `0–9`, `a–f`, `A–F`.
    Hex,
    /// `A–Z`, `a–z`, `0–9`, `-`, `_` (unpadded base64url).
    Base64Url,
}

impl Charset {
    fn contains(self, b: u8) -> bool {
        match self {
            Self::Alphanumeric => b.is_ascii_alphanumeric(),
            Self::Hex => b.is_ascii_hexdigit(),
            Self::Base64Url => b.is_ascii_alphanumeric() || b == b'-' || b == b'_',
        }
    }

    fn bits(self) -> f64 {
        match self {
            Self::Alphanumeric => 62f64.log2(),
            Self::Hex => 4.0,
            Self::Base64Url => 6.0,
        }
    }

    fn class(self) -> &'static str {
        match self {
            Self::Alphanumeric => "[0-9A-Za-z]",
            Self::Hex => "[0-9A-Fa-f]",
            Self::Base64Url => "[0-9A-Za-z_-]",
        }
    }
}

/// A [`LegacyFormat`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidLegacyFormat {
    /// The prefix is empty, longer than 20 characters, or holds a
    /// character other than letters, digits, `_` and `-`.
    #[error("invalid legacy token prefix {0:?}: expected 1-20 letters, digits, '_' or '-'")]
    Prefix(String),
    /// The body lengths are empty or longer than 200 characters.
    #[error(
        "invalid legacy token body length {min}..={max}: expected a non-empty range within 1..=200"
    )]
    Length {
        /// The shortest length given.
        min: usize,
        /// The longest length given.
        max: usize,
    },
    /// The shortest body holds less than 128 bits: such tokens can be
    /// guessed, and keyward will not vouch for them.
    #[error(
        "legacy tokens of {min} characters of this set hold {bits} bits; at least 128 are needed"
    )]
    TooWeak {
        /// The shortest length given.
        min: usize,
        /// Its entropy in bits, rounded down.
        bits: u32,
    },
    /// The prefix begins with the instance's own token prefix and `_`:
    /// the two formats could not be told apart.
    #[error("legacy token prefix {0:?} begins with this instance's own token prefix")]
    Shadowed(String),
}

/// A token format other than keyward's, kept verifiable after an import:
/// a fixed prefix, then a body of `lengths` characters of one
/// [`Charset`].
///
/// ```
/// use keyward::{Charset, LegacyFormat};
///
/// let acme = LegacyFormat::new("acme_live_", Charset::Alphanumeric, 32..=32)?;
/// assert!(acme.matches("acme_live_4eC39HqLyjWDarjtT1zdp7dc4eC39HqL"));
/// assert!(!acme.matches("acme_test_4eC39HqLyjWDarjtT1zdp7dc4eC39HqL"));
/// // Too short to be unguessable:
/// assert!(LegacyFormat::new("acme_", Charset::Hex, 16..=16).is_err());
/// # Ok::<(), keyward::InvalidLegacyFormat>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LegacyFormat {
    prefix: Box<str>,
    charset: Charset,
    min: usize,
    max: usize,
}

impl fmt::Debug for LegacyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LegacyFormat({})", self.scanner_regex())
    }
}

impl LegacyFormat {
    /// A format: `prefix` (1–20 letters, digits, `_` or `-`), then a body
    /// of `lengths` characters of `charset`, at most 200, the shortest
    /// holding at least 128 bits.
    ///
    /// # Errors
    /// [`InvalidLegacyFormat`] naming what is wrong.
    pub fn new(
        prefix: &str,
        charset: Charset,
        lengths: RangeInclusive<usize>,
    ) -> Result<Self, InvalidLegacyFormat> {
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !prefix_ok {
            return Err(InvalidLegacyFormat::Prefix(
                prefix.chars().take(64).collect(),
            ));
        }
        let (min, max) = (*lengths.start(), *lengths.end());
        if min == 0 || min > max || max > MAX_BODY_LEN {
            return Err(InvalidLegacyFormat::Length { min, max });
        }
        let bits = min as f64 * charset.bits();
        if bits < MIN_BITS {
            return Err(InvalidLegacyFormat::TooWeak {
                min,
                bits: bits as u32,
            });
        }
        Ok(Self {
            prefix: prefix.into(),
            charset,
            min,
            max,
        })
    }

    /// The prefix, e.g. `acme_live_`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key's display prefix for tokens of this format: the format's
    /// prefix (the body holds no public part).
    pub(crate) fn display_prefix(&self) -> DisplayPrefix {
        DisplayPrefix::new(self.prefix.as_bytes())
    }

    /// Whether `token` (surrounding ASCII whitespace ignored) is of this
    /// format.
    pub fn matches(&self, token: &str) -> bool {
        let t = token.trim_ascii().as_bytes();
        match t.strip_prefix(self.prefix.as_bytes()) {
            Some(body) => {
                (self.min..=self.max).contains(&body.len())
                    && body.iter().all(|&b| self.charset.contains(b))
            }
            None => false,
        }
    }

    /// A regular expression that matches the tokens of this format, for
    /// secret scanners.
    pub fn scanner_regex(&self) -> String {
        let quoted: String = self
            .prefix
            .chars()
            .flat_map(|c| (c == '-').then_some('\\').into_iter().chain([c]))
            .collect();
        format!(
            r"\b{quoted}{}{{{},{}}}\b",
            self.charset.class(),
            self.min,
            self.max
        )
    }

    /// `token` as a [`ParsedToken`] of this format: its id derived from
    /// its hash.
    fn parse<'a>(&self, token: &'a str) -> Option<ParsedToken<'a>> {
        if !self.matches(token) {
            return None;
        }
        let t = token.trim_ascii().as_bytes();
        let id = key_id(&KeyHash::of(t));
        Some(ParsedToken::foreign(t, id, self.prefix.len()))
    }
}

/// `token` read as the first of `formats` it matches.
pub(crate) fn parse<'a>(formats: &[LegacyFormat], token: &'a str) -> Option<ParsedToken<'a>> {
    formats.iter().find_map(|f| f.parse(token))
}

/// The id of the legacy token whose SHA-256 is `hash`.
pub(crate) fn key_id(hash: &KeyHash) -> KeyId {
    KeyId::derived_in(b"keyward legacy key id\0", hash.as_bytes())
}

/// Checks `formats` against the instance's own token prefix: a token of
/// either kind must never read as the other, so neither prefix may begin
/// the other (`sk_live_` under `sk`, or `s` with a set holding `_`).
pub(crate) fn check(formats: &[LegacyFormat], own_prefix: &str) -> Result<(), InvalidLegacyFormat> {
    let own = format!("{own_prefix}_");
    let overlaps = |f: &&LegacyFormat| f.prefix.starts_with(&own) || own.starts_with(&*f.prefix);
    match formats.iter().find(overlaps) {
        Some(f) => Err(InvalidLegacyFormat::Shadowed(f.prefix.to_string())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> LegacyFormat {
        LegacyFormat::new("acme_live_", Charset::Alphanumeric, 24..=40).expect("valid")
    }

    #[test]
    fn matches_prefix_charset_and_length() {
        let f = acme();
        let body = "a".repeat(24);
        assert!(f.matches(&format!("acme_live_{body}")));
        assert!(f.matches(&format!(" acme_live_{body}\n")));
        assert!(!f.matches(&format!("acme_live_{}", "a".repeat(23))));
        assert!(!f.matches(&format!("acme_live_{}", "a".repeat(41))));
        assert!(!f.matches(&format!("acme_live_{}-", "a".repeat(24))));
        assert!(!f.matches("acme_live_"));
        assert!(!f.matches(""));
        assert!(!f.matches(&format!("acme_test_{body}")));
    }

    #[test]
    fn refuses_weak_or_malformed_formats() {
        assert!(matches!(
            LegacyFormat::new("x_", Charset::Hex, 31..=64),
            Err(InvalidLegacyFormat::TooWeak { min: 31, bits: 124 })
        ));
        assert!(LegacyFormat::new("x_", Charset::Hex, 32..=64).is_ok());
        assert!(LegacyFormat::new("x_", Charset::Alphanumeric, 21..=21).is_err());
        assert!(LegacyFormat::new("x_", Charset::Alphanumeric, 22..=22).is_ok());
        assert!(LegacyFormat::new("", Charset::Hex, 32..=32).is_err());
        assert!(LegacyFormat::new("a b", Charset::Hex, 32..=32).is_err());
        assert!(LegacyFormat::new(&"a".repeat(21), Charset::Hex, 32..=32).is_err());
        let (long, short) = (40, 32);
        assert!(LegacyFormat::new("x_", Charset::Hex, long..=short).is_err());
        assert!(LegacyFormat::new("x_", Charset::Hex, 32..=201).is_err());
    }

    #[test]
    fn a_token_and_its_hash_name_the_same_id() {
        let f = acme();
        let token = format!("acme_live_{}", "Q".repeat(30));
        let parsed = f.parse(&token).expect("matches");
        assert_eq!(parsed.id(), key_id(&KeyHash::of(token.as_bytes())));
        assert_eq!(parsed.hash(), KeyHash::of(token.as_bytes()));
        assert_eq!(parsed.display_prefix().as_str(), "acme_live_");
        let other = format!("acme_live_{}", "R".repeat(30));
        assert_ne!(f.parse(&other).map(|p| p.id()), Some(parsed.id()));
    }

    #[test]
    fn a_prefix_inside_the_own_format_is_refused() {
        let shadow = LegacyFormat::new("sk_live_", Charset::Alphanumeric, 32..=32).expect("valid");
        assert!(check(&[acme()], "sk").is_ok());
        let under = LegacyFormat::new("s", Charset::Base64Url, 43..=43).expect("valid");
        assert!(check(std::slice::from_ref(&under), "sk").is_err());
        assert!(check(&[under], "pk").is_ok());
        assert!(matches!(
            check(&[acme(), shadow], "sk"),
            Err(InvalidLegacyFormat::Shadowed(_))
        ));
    }

    #[test]
    fn scanner_regex_names_the_shape() {
        let f = LegacyFormat::new("xo-", Charset::Base64Url, 22..=30).expect("valid");
        assert_eq!(f.scanner_regex(), r"\bxo\-[0-9A-Za-z_-]{22,30}\b");
    }
}
