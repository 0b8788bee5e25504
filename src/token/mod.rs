//! The token format, its parser, and the secret and hash types.
//!
//! A token is `<prefix>_<id>_<body>`:
//!
//! | part | length | content |
//! |---|---|---|
//! | prefix | 1–10 | letters and digits, configured per [`Keyward`](crate::Keyward) (`sk` by default) |
//! | id | 8 | base62, chosen at random: the public [`KeyId`] |
//! | body | 32 | 26 random base62 characters (≈155 bits from the OS CSPRNG), then 6 base62 characters of CRC32 over everything before them |
//!
//! The checksum lets [`TokenFormat::parse`] reject typos and made-up strings
//! without a store lookup, and lets secret scanners match keyward tokens with
//! few false positives. The store keeps only the SHA-256 of the whole token
//! (at most 52 bytes: one SHA-256 block).

use std::fmt;
use std::str::FromStr;

use rand::rngs::SysRng;
use rand::TryRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// The 62 characters of ids and bodies, in the order their values take.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of a key id.
pub(crate) const ID_LEN: usize = 8;
/// Length of the body (random part and checksum).
pub(crate) const BODY_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const RANDOM_LEN: usize = BODY_LEN - CHECKSUM_LEN;
/// Longest type prefix: keeps the hashed token within one SHA-256 block
/// (10 + 1 + 8 + 1 + 32 = 52 ≤ 55 bytes).
pub(crate) const MAX_PREFIX_LEN: usize = 10;
const MAX_DISPLAY_LEN: usize = MAX_PREFIX_LEN + 1 + ID_LEN + 1;

const INVALID: u8 = 0xFF;
/// Base62 value of each byte, or `INVALID`.
static DECODE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 62 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

fn is_base62(bytes: &[u8]) -> bool {
    // No early exit to branch on, and byte arithmetic the compiler turns
    // into a few vector instructions per 16 bytes: a digit is one range,
    // a letter of either case one range once bit 5 is set. (A fold of
    // `bool`s, or `is_ascii_alphanumeric`'s three ranges, came out as
    // byte shuffles several times as long.)
    let mut bad = 0u8;
    for &b in bytes {
        let digit = b.wrapping_sub(b'0') < 10;
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        bad |= u8::from(!(digit | letter));
    }
    bad == 0
}

/// The OS random source failed. Practically never happens on supported
/// platforms; keyward refuses to issue a key rather than use weak randomness.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed; no key was issued")]
pub struct EntropyError(#[source] rand::rngs::SysError);

impl EntropyError {
    /// The random source's failure.
    pub(crate) fn from_sys(e: rand::rngs::SysError) -> Self {
        Self(e)
    }
}

/// Fills `out` with uniformly chosen base62 characters from the OS CSPRNG.
pub(crate) fn fill_base62(out: &mut [u8]) -> Result<(), EntropyError> {
    let mut pool = [0u8; 64];
    let mut filled = 0;
    while filled < out.len() {
        SysRng.try_fill_bytes(&mut pool).map_err(EntropyError)?;
        for &b in &pool {
            // 248 = 4 × 62: rejecting larger bytes keeps the choice uniform.
            if b < 248 && filled < out.len() {
                out[filled] = ALPHABET[(b % 62) as usize];
                filled += 1;
            }
        }
    }
    pool.zeroize();
    Ok(())
}

/// The longest message that SHA-256 pads into a single block.
const ONE_BLOCK: usize = 55;

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Whether `sum` (base62 digits, already checked) is the checksum of
/// `bytes`: decodes the digits instead of encoding the CRC (multiplies
/// instead of divisions).
fn checksum_matches(bytes: &[u8], sum: &[u8]) -> bool {
    let crc = u64::from(crc32fast::hash(bytes));
    let value = sum
        .iter()
        .fold(0u64, |acc, &b| acc * 62 + u64::from(DECODE[b as usize]));
    value == crc
}

/// A well-formed token with the id of `token` and another secret (its
/// checksum right again): passes the parser, fails the hash. For tests.
#[cfg(all(test, feature = "axum"))]
pub(crate) fn same_id_other_secret(token: &str) -> String {
    let (signed, _) = token.split_at(token.len() - CHECKSUM_LEN);
    let mut signed = signed.as_bytes().to_vec();
    let first = signed.len() - (BODY_LEN - CHECKSUM_LEN);
    signed[first] = if signed[first] == b'a' { b'b' } else { b'a' };
    let sum = checksum(&signed);
    signed.extend_from_slice(&sum);
    String::from_utf8(signed).unwrap_or_default()
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut v = crc32fast::hash(bytes);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    out
}

/// The public identifier of a key: 8 base62 characters.
///
/// It names the key in lists, logs and errors and in every management call.
/// It is not a secret and can never authenticate.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyId([u8; ID_LEN]);

impl std::hash::Hash for KeyId {
    /// One `u64`: the eight id bytes. (A keyed hasher makes of it what it
    /// will; see the verification cache.)
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.as_u64());
    }
}

impl KeyId {
    /// The smallest id, `00000000`: a cursor that starts a paged walk.
    pub const MIN: KeyId = KeyId([b'0'; ID_LEN]);

    /// Not an id (zero bytes are not base62): names the empty slots of the
    /// verification cache, and no token.
    pub(crate) const NONE: KeyId = KeyId([0; ID_LEN]);

    /// A new random id from the OS CSPRNG.
    ///
    /// # Errors
    /// [`EntropyError`] if the OS random source fails.
    pub fn random() -> Result<Self, EntropyError> {
        let mut id = [0u8; ID_LEN];
        fill_base62(&mut id)?;
        Ok(Self(id))
    }

    /// An id that is a function of `label` (the first bytes of its
    /// SHA-256, as base62): the same label gives the same id on every
    /// instance, so a second insert of it collides. Not secret, as no id
    /// is.
    pub(crate) fn derived(label: &[u8]) -> Self {
        Self::derived_in(b"keyward derived key id\0", label)
    }

    /// [`KeyId::derived`] within `domain`: ids derived in two domains
    /// never meet by design.
    pub(crate) fn derived_in(domain: &[u8], label: &[u8]) -> Self {
        let digest = Sha256::new()
            .chain_update(domain)
            .chain_update(label)
            .finalize();
        let mut id = [0u8; ID_LEN];
        for (slot, b) in id.iter_mut().zip(digest.iter()) {
            *slot = ALPHABET[(b % 62) as usize];
        }
        Self(id)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        // Only base62 bytes are ever stored, which are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The eight id bytes as one word, for hashing.
    pub(crate) fn as_u64(&self) -> u64 {
        u64::from_le_bytes(self.0)
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; ID_LEN] = bytes.try_into().ok()?;
        is_base62(&arr).then_some(Self(arr))
    }
}

/// A string that is not a valid [`KeyId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key id: expected 8 letters and digits")]
pub struct InvalidKeyId;

impl FromStr for KeyId {
    type Err = InvalidKeyId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(s.as_bytes()).ok_or(InvalidKeyId)
    }
}

impl TryFrom<&str> for KeyId {
    type Error = InvalidKeyId;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The public start of a token, `sk_xxxxxxxx_`: type prefix, id and the
/// separators. Shown in key lists, audit events and error messages; it can
/// never authenticate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DisplayPrefix {
    buf: [u8; MAX_DISPLAY_LEN],
    len: u8,
}

impl DisplayPrefix {
    /// The first 20 bytes of `bytes` (public characters).
    pub(crate) fn new(bytes: &[u8]) -> Self {
        let mut buf = [0u8; MAX_DISPLAY_LEN];
        let len = bytes.len().min(MAX_DISPLAY_LEN);
        buf[..len].copy_from_slice(&bytes[..len]);
        Self {
            buf,
            len: len as u8,
        }
    }

    /// The prefix as a string slice, e.g. `sk_AbCd1234_`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or_default()
    }
}

impl fmt::Display for DisplayPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for DisplayPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DisplayPrefix({})", self.as_str())
    }
}

impl Serialize for DisplayPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DisplayPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom("invalid display prefix"))
    }
}

impl FromStr for DisplayPrefix {
    type Err = MalformedToken;

    /// Reads a stored display prefix such as `sk_AbCd1234_` (or, for an
    /// imported key of a [`LegacyFormat`](crate::LegacyFormat), its
    /// prefix, such as `acme_live_`): 1–20 letters, digits, `_` or `-`.
    fn from_str(s: &str) -> Result<Self, MalformedToken> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_DISPLAY_LEN
            && b.iter()
                .all(|&c| c == b'_' || c == b'-' || c.is_ascii_alphanumeric());
        if ok {
            Ok(Self::new(b))
        } else {
            Err(MalformedToken)
        }
    }
}

/// The SHA-256 of a token: all a store keeps.
///
/// `Debug` shows no bytes, so a hash never lands in a log by accident.
#[derive(Clone, Copy)]
pub struct KeyHash([u8; 32]);

impl PartialEq for KeyHash {
    /// Constant-time, like [`KeyHash::ct_eq`].
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for KeyHash {}

impl KeyHash {
    /// Wraps raw hash bytes, e.g. read back from a database.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw hash bytes, e.g. to write to a database.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, for stores that keep text.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
            s.push(char::from(b"0123456789abcdef"[(b & 0xF) as usize]));
        }
        s
    }

    /// Parses 64 hex characters, as written by [`KeyHash::to_hex`].
    pub fn from_hex(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }

    /// Compares in constant time.
    ///
    /// The 32 bytes are folded into one word (XOR, then OR of the four
    /// 64-bit lanes, with no branch or early exit) and only that word goes
    /// through `subtle`'s constant-time check: the same guarantee as a
    /// byte-wise `ct_eq`, at a fraction of the cost (one volatile read
    /// instead of 32).
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        let mut diff = 0u64;
        for (a, b) in self.0.chunks_exact(8).zip(other.0.chunks_exact(8)) {
            let a = u64::from_le_bytes(a.try_into().unwrap_or_default());
            let b = u64::from_le_bytes(b.try_into().unwrap_or_default());
            diff |= a ^ b;
        }
        diff.ct_eq(&0).into()
    }

    pub(crate) fn of(token: &[u8]) -> Self {
        let mut block = [0u8; 64];
        if Self::pad(token, &mut block) {
            Self::of_block(&mut block)
        } else {
            Self(Sha256::digest(token).into())
        }
    }

    /// Pads `token` into `block` (all zeros) as one SHA-256 block, if it
    /// fits (every keyward token does; a long legacy one may not):
    /// padding it here and running the compression function once skips
    /// the streaming hasher's buffering (a quarter of the cost of a short
    /// digest). Returns whether it fit; `block` is untouched if not.
    ///
    /// Built where the caller keeps it, never returned by value: a block
    /// moved right after it is written is read back in 16-byte loads that
    /// span several of the stores that wrote it, and such loads wait for
    /// those stores to reach the cache (a stall of the accept path). Read
    /// later, by the compression after a cache lookup, they have.
    #[inline]
    pub(crate) fn pad(token: &[u8], block: &mut [u8; 64]) -> bool {
        let n = token.len();
        if n > ONE_BLOCK {
            return false;
        }
        debug_assert!(block.iter().all(|&b| b == 0), "a zeroed block");
        if n >= 32 {
            // Two overlapping fixed-size copies: inline moves, no memcpy
            // call for a length only known at run time.
            block[..32].copy_from_slice(&token[..32]);
            block[n - 32..n].copy_from_slice(&token[n - 32..]);
        } else {
            block[..n].copy_from_slice(token);
        }
        block[n] = 0x80;
        block[56..].copy_from_slice(&((n as u64) * 8).to_be_bytes());
        true
    }

    /// Overwrites a block from [`KeyHash::pad`] (a copy of the secret):
    /// a plain store the optimiser must keep (black_box), two vector
    /// writes instead of 64 volatile ones.
    pub(crate) fn scrub(block: &mut [u8; 64]) {
        *block = [0u8; 64];
        std::hint::black_box(&*block);
    }

    /// The hash of a block from [`KeyHash::pad`].
    /// The block, a copy of the secret, is scrubbed afterwards.
    pub(crate) fn of_block(block: &mut [u8; 64]) -> Self {
        let BlockHash(state) = Self::state_of(block);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        Self(out)
    }

    /// SHA-256 of a block from [`KeyHash::pad`], as the compression's
    /// eight state words; the block is scrubbed.
    #[inline]
    fn state_of(block: &mut [u8; 64]) -> BlockHash {
        let hash = Self::of_padded(block);
        Self::scrub(block);
        hash
    }

    /// [`KeyHash::state_of`], the block left for the caller to scrub (with
    /// [`KeyHash::scrub`], on every path).
    #[inline]
    pub(crate) fn of_padded(block: &[u8; 64]) -> BlockHash {
        let mut state = SHA256_IV;
        sha2::block_api::compress256(&mut state, std::slice::from_ref(block));
        BlockHash(state)
    }

    /// Whether this is the hash of a block from [`KeyHash::pad`], in
    /// constant time as [`KeyHash::ct_eq`]; the block is scrubbed.
    #[cfg(any(feature = "axum", feature = "actix", feature = "tonic", test))]
    pub(crate) fn proven_by(&self, block: &mut [u8; 64]) -> bool {
        self.matches(&Self::state_of(block))
    }

    /// Whether this is `hash`, in constant time as [`KeyHash::ct_eq`].
    /// Compares the state words as they came out of the compression, with
    /// no digest written out in between (whose four-byte stores the
    /// compare's eight-byte loads would have waited for).
    #[inline]
    pub(crate) fn matches(&self, hash: &BlockHash) -> bool {
        let mut diff = 0u32;
        for (stored, word) in self.0.chunks_exact(4).zip(hash.0) {
            diff |= u32::from_be_bytes(stored.try_into().unwrap_or_default()) ^ word;
        }
        diff.ct_eq(&0).into()
    }
}

/// A SHA-256 as the compression function leaves it (eight words), for
/// [`KeyHash::matches`]. Not printable: it is the hash of a secret.
pub(crate) struct BlockHash([u32; 8]);

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

impl Serialize for KeyHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom("invalid key hash"))
    }
}

/// A plaintext token: the only copy of an API key's secret.
///
/// `Debug` and `Display` show only the display prefix; the memory is zeroed
/// on drop; the secret is read only through [`SecretToken::expose_secret`].
/// It is deliberately neither `Clone` nor `Serialize`.
pub struct SecretToken {
    token: String,
    prefix_len: usize,
}

impl SecretToken {
    /// The plaintext token. Show it to its owner once; never log it.
    pub fn expose_secret(&self) -> &str {
        &self.token
    }

    /// The public start of the token, safe to show and log.
    pub fn display_prefix(&self) -> DisplayPrefix {
        DisplayPrefix::new(&self.token.as_bytes()[..self.prefix_len])
    }
}

impl Drop for SecretToken {
    fn drop(&mut self) {
        self.token.zeroize();
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretToken({}<redacted>)", self.display_prefix())
    }
}

impl fmt::Display for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<redacted>", self.display_prefix())
    }
}

/// The type prefix was not 1–10 ASCII letters and digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid token prefix {0:?}: use 1 to 10 ASCII letters and digits, such as \"sk\"")]
pub struct InvalidPrefix(pub String);

/// A string that is not a well-formed token of this [`TokenFormat`].
///
/// Deliberately says nothing about which part is wrong beyond this: the
/// input may be someone's secret of another kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed API key: expected a token of the form <prefix>_<8 characters>_<32 characters>")]
pub struct MalformedToken;

/// The shape of the tokens one [`Keyward`](crate::Keyward) issues: their
/// type prefix. Parses and checks tokens without touching any store.
///
/// ```
/// use keyward::TokenFormat;
///
/// let format = TokenFormat::new("sk")?;
/// assert!(format.parse("sk_not_a_token").is_err());
/// # Ok::<(), keyward::InvalidPrefix>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFormat {
    prefix: Box<str>,
}

impl Default for TokenFormat {
    /// The `sk` prefix.
    fn default() -> Self {
        Self {
            prefix: "sk".into(),
        }
    }
}

impl TokenFormat {
    /// A format with the given type prefix: 1–10 ASCII letters and digits.
    ///
    /// # Errors
    /// [`InvalidPrefix`] for an empty, too long or non-alphanumeric prefix.
    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric());
        if ok {
            Ok(Self {
                prefix: prefix.into(),
            })
        } else {
            Err(InvalidPrefix(prefix.chars().take(64).collect()))
        }
    }

    /// The type prefix, e.g. `sk`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Length of every token of this format.
    pub fn token_len(&self) -> usize {
        self.prefix.len() + 2 + ID_LEN + BODY_LEN
    }

    /// A regular expression that matches exactly the tokens of this format
    /// (the checksum aside), for secret scanners.
    pub fn scanner_regex(&self) -> String {
        format!(
            r"\b{}_[0-9A-Za-z]{{{ID_LEN}}}_[0-9A-Za-z]{{{BODY_LEN}}}\b",
            self.prefix
        )
    }

    /// Issues a new token for `id`.
    pub(crate) fn generate(&self, id: KeyId) -> Result<SecretToken, EntropyError> {
        let mut random = [0u8; RANDOM_LEN];
        fill_base62(&mut random)?;
        let mut token = String::with_capacity(self.token_len());
        token.push_str(&self.prefix);
        token.push('_');
        token.push_str(id.as_str());
        token.push('_');
        // Base62 characters are ASCII, so the conversion cannot fail.
        token.push_str(std::str::from_utf8(&random).unwrap_or_default());
        random.zeroize();
        let sum = checksum(token.as_bytes());
        token.push_str(std::str::from_utf8(&sum).unwrap_or_default());
        Ok(SecretToken {
            token,
            prefix_len: self.prefix.len() + 2 + ID_LEN,
        })
    }

    /// Checks the shape and checksum of `input` and splits out its public
    /// parts. Leading and trailing ASCII whitespace is ignored (a token
    /// copied with a newline is still the same token; no token contains
    /// whitespace). Never panics and never allocates.
    ///
    /// # Errors
    /// [`MalformedToken`] for anything that is not a token of this format,
    /// including a wrong prefix or checksum.
    pub fn parse<'a>(&self, input: &'a str) -> Result<ParsedToken<'a>, MalformedToken> {
        let parsed = self.split(input)?;
        if parsed.checksum_ok() {
            Ok(parsed)
        } else {
            Err(MalformedToken)
        }
    }

    /// [`TokenFormat::parse`] less the checksum: the shape alone. For the
    /// verify of a cached key, whose stored hash proves (or refutes) the
    /// whole token; [`ParsedToken::checksum_ok`] is asked before anything
    /// costlier, such as a store read.
    ///
    /// Always inlined: returned through memory, the parts were read back
    /// in wider loads than the stores that wrote them, a stall of the
    /// accept path.
    #[inline(always)]
    pub(crate) fn split<'a>(&self, input: &'a str) -> Result<ParsedToken<'a>, MalformedToken> {
        let t = input.trim_ascii().as_bytes();
        let p = self.prefix.len();
        if t.len() != self.token_len() {
            return Err(MalformedToken);
        }
        let (head, rest) = t.split_at(p);
        if head != self.prefix.as_bytes() || rest[0] != b'_' || rest[1 + ID_LEN] != b'_' {
            return Err(MalformedToken);
        }
        let (Ok(id), Ok(body)) = (
            <[u8; ID_LEN]>::try_from(&rest[1..=ID_LEN]),
            <&[u8; BODY_LEN]>::try_from(&rest[ID_LEN + 2..]),
        ) else {
            return Err(MalformedToken);
        };
        if !(is_base62(&id) & is_base62(body)) {
            return Err(MalformedToken);
        }
        Ok(ParsedToken {
            id: KeyId(id),
            token: t,
            display_len: p + 2 + ID_LEN,
            summed: true,
        })
    }
}

/// A well-formed token, split into its parts. Borrowed from the input; the
/// secret is not copied.
#[derive(Clone, Copy)]
pub struct ParsedToken<'a> {
    id: KeyId,
    token: &'a [u8],
    display_len: usize,
    /// A keyward token, whose last characters are its checksum (a legacy
    /// token has none).
    summed: bool,
}

impl<'a> ParsedToken<'a> {
    /// A token of another format (see `legacy.rs`): `id` derived
    /// from its hash, its first `display_len` bytes public.
    pub(crate) fn foreign(token: &'a [u8], id: KeyId, display_len: usize) -> Self {
        Self {
            id,
            token,
            display_len: display_len.min(token.len()),
            summed: false,
        }
    }
}

impl ParsedToken<'_> {
    /// The key id the token names. Not yet proof of anything.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The public start of the token, e.g. `sk_AbCd1234_`.
    pub fn display_prefix(&self) -> DisplayPrefix {
        DisplayPrefix::new(&self.token[..self.display_len])
    }

    /// The SHA-256 of the token, to compare with the stored hash.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.token)
    }

    /// Whether the token's checksum is right (a token without one, of a
    /// legacy format, has nothing to get wrong).
    pub(crate) fn checksum_ok(&self) -> bool {
        if !self.summed || self.token.len() < CHECKSUM_LEN {
            return !self.summed;
        }
        let (signed, sum) = self.token.split_at(self.token.len() - CHECKSUM_LEN);
        checksum_matches(signed, sum)
    }

    /// Pads the token into `block` (all zeros) for hashing, if it fits:
    /// see [`KeyHash::pad`].
    #[inline]
    pub(crate) fn pad_into(&self, block: &mut [u8; 64]) -> bool {
        KeyHash::pad(self.token, block)
    }
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParsedToken({}<redacted>)", self.display_prefix())
    }
}

#[cfg(test)]
mod tests;
