//! The check of [`KeyStore::scan_due`]: exactly the keys
//! [`SweepDue::matches`] selects, paged, in id order.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::{record, t0};
use crate::store::{KeyStore, SweepDue};
use crate::token::KeyId;

pub(super) async fn scan_due_selects_exactly_the_due_keys<S: KeyStore>(store: Arc<S>) {
    let now = t0() + Duration::days(100);
    let mut all = Vec::new();
    for _ in 0..3 {
        for (expires_at, revoked_at, last_used_at) in shapes(now) {
            let mut r = record("acme");
            r.created_at = t0();
            r.expires_at = expires_at;
            r.revoked_at = revoked_at;
            r.last_used_at = last_used_at;
            store.insert(&r).await.expect("insert must succeed");
            all.push(r);
        }
    }
    all.sort_by_key(|r| r.id);
    for due in sweeps(now) {
        let want: Vec<KeyId> = all
            .iter()
            .filter(|r| due.matches(r))
            .map(|r| r.id)
            .collect();
        assert_eq!(
            scan_all_due(&*store, &due).await,
            want,
            "scan_due must return exactly the keys SweepDue::matches selects, in id order ({due:?})"
        );
    }
}

/// `(expires_at, revoked_at, last_used_at)` around every bound of
/// [`sweeps`].
type Times = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn shapes(now: DateTime<Utc>) -> Vec<Times> {
    let day = Duration::days(1);
    vec![
        (None, None, None),                                // idle since creation (t0)
        (None, None, Some(now - day)),                     // recently used
        (None, None, Some(now - Duration::days(80))),      // idle exactly at the bound
        (None, None, Some(now - Duration::days(79))),      // just inside activity
        (Some(now + Duration::days(15)), None, Some(now)), // expiring at the bound
        (Some(now + Duration::days(16)), None, Some(now)), // expiring later
        (Some(now), None, Some(now)),                      // expired just now
        (
            Some(now - Duration::days(30)),
            None,
            Some(now - Duration::days(40)),
        ), // ended at the bound
        (Some(now - Duration::days(29)), None, None),      // ended, within retention
        (None, Some(now - Duration::days(30)), None),      // revoked at the bound
        (None, Some(now - Duration::days(2)), None),       // revoked recently (idle, but revoked)
        (Some(now + day), Some(now - Duration::days(31)), None), // revoked, would be expiring
    ]
}

/// Every rule on, each rule alone, and none.
fn sweeps(now: DateTime<Utc>) -> [SweepDue; 4] {
    let expiring = Some(now + Duration::days(15));
    let idle = Some(now - Duration::days(80));
    let ended = Some(now - Duration::days(30));
    let due = |expiring_before, idle_since, ended_before| SweepDue {
        now,
        expiring_before,
        idle_since,
        ended_before,
    };
    [
        due(expiring, idle, ended),
        due(None, idle, None),
        due(expiring, None, None),
        due(None, None, None),
    ]
}

/// Every key `due` selects, paged by 4 as a sweep pages.
async fn scan_all_due<S: KeyStore>(store: &S, due: &SweepDue) -> Vec<KeyId> {
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .scan_due(due, after.as_ref(), 4)
            .await
            .expect("scan_due must succeed");
        assert!(page.len() <= 4, "scan_due must respect the limit");
        after = page.last().map(|r| r.id);
        let done = page.len() < 4;
        got.extend(page.into_iter().map(|r| r.id));
        if done {
            return got;
        }
    }
}
