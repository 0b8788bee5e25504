//! Leaked-token reports on arbitrary bytes: `parse_reports` never
//! panics, and a report's `Debug` never shows its token.
//!
//! Input: the body of a report.

#![no_main]

use keyward::leak::parse_reports;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reports) = parse_reports(data) {
        for r in &reports {
            let shown = format!("{r:?}");
            assert!(
                shown.starts_with("LeakReport { token: \"<redacted>\""),
                "the token is redacted"
            );
        }
    }
});
