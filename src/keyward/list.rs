//! Listing keys: all of a tenant's keys, or one page of them, newest
//! first, filtered by status and name.

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::{Keyward, PAGE};
use crate::error::KeyError;
use crate::key::{Actor, KeyInfo, KeyRecord, KeyStatus};
use crate::token::KeyId;

/// Most keys one page holds.
pub const MAX_PAGE_KEYS: usize = 100;
/// Keys per page unless [`KeyQuery::limit`] says otherwise.
const DEFAULT_PAGE_KEYS: usize = 20;

/// Which keys [`Keyward::list_page`] lists: a tenant's, newest first,
/// optionally only those of one status or whose name contains a text.
///
/// ```
/// use keyward::{KeyQuery, KeyStatus};
/// let query = KeyQuery::new().status(KeyStatus::Active).name_contains("deploy").limit(50);
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct KeyQuery {
    tenant: Option<String>,
    status: Option<KeyStatus>,
    name: Option<String>,
    after: Option<KeyCursor>,
    limit: Option<usize>,
}

impl KeyQuery {
    /// The actor's own tenant, every status, 20 keys from the newest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another tenant than the actor's own: with nested tenants, one below
    /// it. Defaults to the actor's tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Only keys of this status, as of the call. Defaults to every status.
    pub fn status(mut self, status: KeyStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only keys whose name contains `text`, ignoring case. An empty text
    /// matches every key. Defaults to every name.
    pub fn name_contains(mut self, text: impl Into<String>) -> Self {
        self.name = Some(text.into());
        self
    }

    /// The page after the one that returned this cursor
    /// ([`KeyPage::next`]). Defaults to the first page.
    pub fn after(mut self, cursor: KeyCursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// Keys per page, 1 to [`MAX_PAGE_KEYS`] (larger values are lowered to
    /// it, 0 raised to 1). Defaults to 20.
    pub fn limit(mut self, keys: usize) -> Self {
        self.limit = Some(keys);
        self
    }

    fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_PAGE_KEYS)
            .clamp(1, MAX_PAGE_KEYS)
    }

    fn matches(&self, key: &KeyInfo) -> bool {
        self.status.is_none_or(|s| s == key.status)
            && self
                .name
                .as_deref()
                .is_none_or(|text| contains_ignoring_case(&key.name, text))
            && self
                .after
                .is_none_or(|c| c.precedes(key.created_at, key.id))
    }
}

fn contains_ignoring_case(name: &str, text: &str) -> bool {
    name.to_lowercase().contains(&text.to_lowercase())
}

/// Where a page of keys ended: pass it to [`KeyQuery::after`] for the
/// next page. Its text form (`Display`, `FromStr`) is what an HTTP API
/// hands out; treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCursor {
    created_at: DateTime<Utc>,
    id: KeyId,
}

impl KeyCursor {
    fn of(key: &KeyInfo) -> Self {
        Self {
            created_at: key.created_at,
            id: key.id,
        }
    }

    /// Whether a key created at `created_at` with `id` comes after the
    /// cursor in newest-first order.
    fn precedes(&self, created_at: DateTime<Utc>, id: KeyId) -> bool {
        (created_at, id) < (self.created_at, self.id)
    }
}

impl fmt::Display for KeyCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_at.timestamp_micros(), self.id)
    }
}

/// A cursor that [`KeyPage::next`] did not produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor: pass back the `next` value of the previous page unchanged")]
pub struct InvalidCursor;

impl FromStr for KeyCursor {
    type Err = InvalidCursor;

    fn from_str(s: &str) -> Result<Self, InvalidCursor> {
        let (micros, id) = s.split_once('.').ok_or(InvalidCursor)?;
        let micros: i64 = micros.parse().map_err(|_| InvalidCursor)?;
        Ok(Self {
            created_at: DateTime::from_timestamp_micros(micros).ok_or(InvalidCursor)?,
            id: id.parse().map_err(|_| InvalidCursor)?,
        })
    }
}

/// One page of keys, newest first.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KeyPage {
    /// The keys, newest first (by creation time, then id).
    pub keys: Vec<KeyInfo>,
    /// The cursor of the next page; `None` on the last page.
    pub next: Option<KeyCursor>,
}

impl Keyward {
    /// Every key of `tenant`, newest first. With nested tenants, an actor
    /// may list a descendant tenant; the list holds that tenant's own keys
    /// only. For large tenants, page with [`Keyward::list_page`].
    ///
    /// # Errors
    /// [`KeyError::InvalidTenant`] if `tenant` is not a canonical tenant
    /// path; [`KeyError::Forbidden`] if the actor may not manage keys or
    /// may not act for `tenant`; [`KeyError::Store`].
    pub async fn list(&self, actor: &Actor, tenant: &str) -> Result<Vec<KeyInfo>, KeyError> {
        self.ensure_manages_tenant(actor, tenant)?;
        let now = self.now();
        let mut keys: Vec<KeyInfo> = self
            .tenant_records(tenant)
            .await?
            .into_iter()
            .map(|r| self.info(r, now))
            .collect();
        newest_first(&mut keys);
        Ok(keys)
    }

    /// One page of a tenant's keys, newest first, filtered as `query`
    /// says. Pages are stable under concurrent creation: a key created
    /// while a client pages lands before its first page, never twice.
    ///
    /// The tenant's keys are read from the store in pages of 500 and
    /// filtered here, so a call costs a read of the whole tenant.
    ///
    /// # Errors
    /// As [`Keyward::list`].
    pub async fn list_page(&self, actor: &Actor, query: &KeyQuery) -> Result<KeyPage, KeyError> {
        let tenant = query.tenant.as_deref().unwrap_or(actor.tenant());
        self.ensure_manages_tenant(actor, tenant)?;
        let now = self.now();
        let mut keys: Vec<KeyInfo> = self
            .tenant_records(tenant)
            .await?
            .into_iter()
            .map(|r| self.info(r, now))
            .filter(|k| query.matches(k))
            .collect();
        newest_first(&mut keys);
        let size = query.page_size();
        let next = (keys.len() > size).then(|| KeyCursor::of(&keys[size - 1]));
        keys.truncate(size);
        Ok(KeyPage { keys, next })
    }

    /// Whether `actor` may manage the keys of `tenant`, and so read its
    /// audit trail: a canonical tenant path at or (with nested tenants)
    /// below the actor's own.
    ///
    /// # Errors
    /// [`KeyError::InvalidTenant`] or [`KeyError::Forbidden`].
    pub fn authorize_tenant(&self, actor: &Actor, tenant: &str) -> Result<(), KeyError> {
        self.ensure_manages_tenant(actor, tenant)
    }

    /// Every record of `tenant`, read in pages.
    async fn tenant_records(&self, tenant: &str) -> Result<Vec<KeyRecord>, KeyError> {
        let mut out = Vec::new();
        self.tenant_pages(tenant, |page| {
            out.extend(page);
            ControlFlow::Continue(())
        })
        .await?;
        Ok(out)
    }

    /// Reads `tenant`'s records in pages, in id order, handing each page
    /// to `visit` until it breaks or the records end.
    pub(super) async fn tenant_pages(
        &self,
        tenant: &str,
        mut visit: impl FnMut(Vec<KeyRecord>) -> ControlFlow<()>,
    ) -> Result<(), KeyError> {
        let mut after = None;
        loop {
            let page = self
                .inner
                .store
                .list_by_tenant(tenant, after.as_ref(), PAGE)
                .await?;
            let full = page.len() == PAGE;
            after = page.last().map(|r| r.id);
            if visit(page).is_break() || !full {
                return Ok(());
            }
        }
    }
}

/// Newest first: by creation time, then by id, both descending.
fn newest_first(keys: &mut [KeyInfo]) {
    keys.sort_unstable_by_key(|k| std::cmp::Reverse((k.created_at, k.id)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written_and_refuses_anything_else() {
        let cursor = KeyCursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"),
            id: KeyId::random().expect("randomness"),
        };
        assert_eq!(cursor.to_string().parse::<KeyCursor>(), Ok(cursor));
        for bad in ["", ".", "12", "x.y", "1.notanid", "99999999999999999999.a"] {
            assert_eq!(bad.parse::<KeyCursor>(), Err(InvalidCursor), "{bad:?}");
        }
    }

    #[test]
    fn names_match_ignoring_case() {
        assert!(contains_ignoring_case("CI Deploy", "deploy"));
        assert!(contains_ignoring_case("Zapier", ""));
        assert!(!contains_ignoring_case("Zapier", "clay"));
    }
}
