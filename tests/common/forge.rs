//! Builds well-formed tokens that are not real keys: shared by the tests
//! and the benchmarks.
#![allow(dead_code)]

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Appends the token checksum (CRC32 as 6 base62 digits) to `signed`.
pub fn with_checksum(signed: &str) -> String {
    let mut v = crc32fast::hash(signed.as_bytes());
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    format!("{signed}{}", std::str::from_utf8(&sum).unwrap_or_default())
}

/// A well-formed token with the same display prefix (so the same key id)
/// as `token` but another secret: it passes the parser and fails the hash.
pub fn same_id_other_secret(token: &str) -> String {
    let split = token.len() - 32;
    let mut random = token.as_bytes()[split..token.len() - 6].to_vec();
    random[0] = if random[0] == b'a' { b'b' } else { b'a' };
    let random = String::from_utf8(random).unwrap_or_default();
    with_checksum(&format!("{}{random}", &token[..split]))
}

/// A well-formed token whose id encodes `n` (so distinct `n` give distinct
/// ids), for keys that do not exist.
pub fn unknown_token(n: u64) -> String {
    let mut id = [b'0'; 8];
    let mut v = n;
    for slot in id.iter_mut().rev() {
        *slot = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    let id = std::str::from_utf8(&id).unwrap_or_default();
    with_checksum(&format!("sk_{id}_{}", "x".repeat(26)))
}
