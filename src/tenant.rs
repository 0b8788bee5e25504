//! Tenant paths: the one canonical form every tenant has, and which
//! tenant covers which.
//!
//! A tenant is a path of segments joined by `/`, e.g. `agency/loc1`:
//!
//! - each segment is 1 to [`MAX_SEGMENT_BYTES`] of `A–Z a–z 0–9 . _ -`,
//!   and is not `.` or `..`;
//! - no empty segment, so no leading, trailing or doubled `/`;
//! - at most [`MAX_DEPTH`] segments and [`MAX_TENANT_BYTES`] bytes.
//!
//! Anything else is refused as invalid, never normalised: `agency/`,
//! `agency//x`, `agency/../globex`, `agency/%`, `agency/*`, a NUL or a
//! bidirectional override never match `agency`. Comparison is then plain
//! byte equality of canonical paths.
//!
//! ```
//! use keyward::tenant;
//!
//! assert!(tenant::validate("agency/loc1").is_ok());
//! assert!(tenant::validate("agency/loc1/../loc2").is_err());
//! assert!(tenant::validate("agency/").is_err());
//! ```

/// Most bytes in one segment of a tenant path.
pub const MAX_SEGMENT_BYTES: usize = 64;
/// Most segments in a tenant path.
pub const MAX_DEPTH: usize = 8;
/// Most bytes in a whole tenant path.
pub const MAX_TENANT_BYTES: usize = 255;

/// A tenant that is not a canonical path (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTenant {
    /// The tenant is empty.
    #[error("the tenant is empty")]
    Empty,
    /// Longer than [`MAX_TENANT_BYTES`] or deeper than [`MAX_DEPTH`].
    #[error("the tenant is too long: at most 255 bytes and 8 segments")]
    TooLong,
    /// An empty segment: a leading, trailing or doubled `/`.
    #[error("the tenant has an empty segment: no leading, trailing or doubled '/'")]
    EmptySegment,
    /// A segment that is `.` or `..`.
    #[error("the tenant has a '.' or '..' segment")]
    DotSegment,
    /// A segment longer than [`MAX_SEGMENT_BYTES`].
    #[error("a tenant segment is longer than 64 bytes")]
    LongSegment,
    /// A character outside `A–Z a–z 0–9 . _ -` (and `/` between segments).
    #[error(
        "the tenant may only contain ASCII letters, digits, '.', '_', '-' and '/' between segments"
    )]
    Character,
}

/// Checks that `tenant` is a canonical tenant path.
///
/// # Errors
/// [`InvalidTenant`] saying what is wrong.
pub fn validate(tenant: &str) -> Result<(), InvalidTenant> {
    if tenant.is_empty() {
        return Err(InvalidTenant::Empty);
    }
    if tenant.len() > MAX_TENANT_BYTES {
        return Err(InvalidTenant::TooLong);
    }
    let mut depth = 0;
    for segment in tenant.split('/') {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(InvalidTenant::TooLong);
        }
        if segment.is_empty() {
            return Err(InvalidTenant::EmptySegment);
        }
        if segment.len() > MAX_SEGMENT_BYTES {
            return Err(InvalidTenant::LongSegment);
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(InvalidTenant::Character);
        }
        if segment == "." || segment == ".." {
            return Err(InvalidTenant::DotSegment);
        }
    }
    Ok(())
}

/// Whether `tenant` is a canonical tenant path.
pub fn is_valid(tenant: &str) -> bool {
    validate(tenant).is_ok()
}

/// Whether an actor or key of `parent` may act for `tenant`: the same
/// tenant or, with nesting on, a descendant (`agency` covers
/// `agency/loc1`, never `agency2`, a sibling or an ancestor).
///
/// Both must be canonical ([`validate`]); a non-canonical path covers
/// nothing and is covered by nothing, so a string trick can never turn
/// into a match.
pub fn covers(parent: &str, tenant: &str, nested: bool) -> bool {
    is_valid(parent) && is_valid(tenant) && covers_canonical(parent, tenant, nested)
}

/// [`covers`] for two paths already known to be canonical: the verify
/// path, whose request tenant was validated on the way in and whose key
/// tenants were validated when read from the store.
pub(crate) fn covers_canonical(parent: &str, tenant: &str, nested: bool) -> bool {
    tenant == parent
        || (nested
            && tenant.len() > parent.len()
            && tenant.starts_with(parent)
            && tenant.as_bytes()[parent.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        for ok in [
            "acme",
            "agency/loc1",
            "a.b/c_d/e-f",
            "A9",
            "a/b/c/d/e/f/g/h",
            "..a",
            "a..",
            ".hidden",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        let long_segment = "x".repeat(65);
        let long = vec!["x".repeat(60); 5].join("/");
        for (bad, why) in [
            ("", InvalidTenant::Empty),
            ("agency/", InvalidTenant::EmptySegment),
            ("/agency", InvalidTenant::EmptySegment),
            ("agency//x", InvalidTenant::EmptySegment),
            ("agency/../globex", InvalidTenant::DotSegment),
            ("agency/loc1/.", InvalidTenant::DotSegment),
            ("..", InvalidTenant::DotSegment),
            ("agency/%", InvalidTenant::Character),
            ("agency/*", InvalidTenant::Character),
            ("agency/\0", InvalidTenant::Character),
            ("agency/\u{202E}x", InvalidTenant::Character),
            ("agency loc", InvalidTenant::Character),
            ("agency\\loc", InvalidTenant::Character),
            ("agency/loc1 ", InvalidTenant::Character),
            ("a/b/c/d/e/f/g/h/i", InvalidTenant::TooLong),
            (&long_segment, InvalidTenant::LongSegment),
            (&long, InvalidTenant::TooLong),
        ] {
            assert_eq!(validate(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn coverage() {
        assert!(covers("agency", "agency", false));
        assert!(!covers("agency", "agency/loc1", false));
        assert!(covers("agency", "agency/loc1", true));
        assert!(covers("agency", "agency/loc1/desk", true));
        assert!(!covers("agency", "agency2", true));
        assert!(!covers("agency/loc1", "agency", true));
        assert!(!covers("agency/loc1", "agency/loc2", true));
        for trick in [
            "agency/",
            "agency//x",
            "agency/../globex",
            "agency/%",
            "agency/*",
            "agency/\0",
            "agency/loc1/../loc2",
        ] {
            assert!(!covers("agency", trick, true), "{trick:?}");
            assert!(!covers("agency/loc1", trick, true), "{trick:?}");
            assert!(!covers(trick, trick, true), "{trick:?}");
        }
    }
}
