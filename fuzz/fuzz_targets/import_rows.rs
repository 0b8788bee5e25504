//! The import readers and legacy token formats on arbitrary bytes: a file
//! read as JSON lines and as CSV never panics, yields at most one result
//! per line or record, redacts every token it reads, and every
//! legacy format check agrees with a plain model (prefix, then a body of
//! the set's characters within the lengths).
//!
//! Input: the first byte picks the reader; the rest is the file.

#![no_main]

use keyward::import::{read_csv, read_jsonl, ImportedSecret};
use keyward::{Charset, LegacyFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, file)) = data.split_first() else {
        return;
    };
    // CSV ends records at \r too.
    let lines = file.iter().filter(|&&b| b == b'\n' || b == b'\r').count() as u64 + 1;
    let rows: Vec<_> = if mode & 1 == 0 {
        read_jsonl(file).collect()
    } else {
        read_csv(file).collect()
    };
    assert!(rows.len() as u64 <= lines, "more rows than lines");
    for row in &rows {
        match row {
            Ok(r) => {
                assert!(r.line >= 1 && r.line <= lines + 1);
                if let ImportedSecret::Token(t) = &r.secret {
                    let shown = format!("{:?}", r.secret);
                    assert!(
                        shown == "Token(ImportToken(<redacted>))",
                        "the token is redacted"
                    );
                    let _ = t;
                }
            }
            Err(e) => assert!(e.line <= lines + 1),
        }
    }

    let text = String::from_utf8_lossy(file);
    let format = LegacyFormat::new("ac-me_", Charset::Base64Url, 22..=40).expect("valid");
    let model = text
        .trim_ascii()
        .strip_prefix("ac-me_")
        .is_some_and(|body| {
            (22..=40).contains(&body.len())
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    assert_eq!(format.matches(&text), model);
});
