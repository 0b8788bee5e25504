//! Keys brought from another system: the rows of an import and the
//! readers of its files (JSON lines, and CSV with feature `csv`).
//!
//! Every reader yields one `Result` per row, so that a bad line becomes a
//! line of the import's report, not the end of the import. The fields,
//! the same in both formats:
//!
//! | field | meaning |
//! |---|---|
//! | `token` | the plaintext token: keyward's format, or a [`LegacyFormat`](crate::LegacyFormat) the instance accepts |
//! | `hash` | or its SHA-256, as 64 hex digits or base64 (standard or URL-safe, padded or not) |
//! | `id` | with `hash`, for a keyward token: its key id |
//! | `prefix` | with `hash`, for a legacy token: its format's prefix, e.g. `acme_live_` |
//! | `name` | required |
//! | `tenant` | the tenant; the importing actor's if absent |
//! | `permissions` | permission names; in CSV separated by spaces, `,` or `;` |
//! | `roles` | role names, as `permissions` |
//! | `expires_at`, `created_at`, `last_used_at` | RFC 3339 times |
//! | `metadata` | a JSON object (in CSV, its JSON text) |
//!
//! An unknown field refuses the row, so that a misspelt column is not
//! silently dropped.

use std::fmt;
use std::io::BufRead;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use zeroize::Zeroize;

use crate::key::NewKey;
use crate::token::{KeyHash, KeyId};

/// Longest line or record an import reads: 64 KiB (a key's metadata is
/// at most 8 KiB).
pub const MAX_ROW_BYTES: usize = 64 * 1024;

/// A plaintext token to import: redacted in `Debug`, zeroized on drop.
pub struct ImportToken(String);

impl ImportToken {
    /// Wraps a plaintext token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The plaintext.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl Drop for ImportToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for ImportToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ImportToken(<redacted>)")
    }
}

/// What proves an imported key: its token, or the SHA-256 of it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ImportedSecret {
    /// The plaintext token, in keyward's format or a legacy one; only its
    /// hash is stored.
    Token(ImportToken),
    /// The hash of a keyward token, and the id it names.
    KeywardHash {
        /// The key id (the token's second part).
        id: KeyId,
        /// SHA-256 of the whole token.
        hash: KeyHash,
    },
    /// The hash of a token of a legacy format.
    LegacyHash {
        /// The prefix of the format, as given to
        /// [`LegacyFormat::new`](crate::LegacyFormat::new).
        prefix: String,
        /// SHA-256 of the whole token.
        hash: KeyHash,
    },
}

/// One key to import: what proves it, the key as
/// [`Keyward::create`](crate::Keyward::create) would take it, and the
/// times it brings along.
#[derive(Debug)]
#[non_exhaustive]
pub struct ImportRow {
    /// Where the row came from (1-based line or record), for the report.
    pub line: u64,
    /// The token or its hash.
    pub secret: ImportedSecret,
    /// Name, tenant, permissions, roles, expiry, metadata.
    pub key: NewKey,
    /// When the key was created in the old system; the import's time if
    /// absent.
    pub created_at: Option<DateTime<Utc>>,
    /// When it was last used there, if known: the inactivity clock goes
    /// on from it.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ImportRow {
    /// A row for `key`, proven by `secret`.
    pub fn new(line: u64, secret: ImportedSecret, key: NewKey) -> Self {
        Self {
            line,
            secret,
            key,
            created_at: None,
            last_used_at: None,
        }
    }

    /// The tenant the row names, if any (the importing actor's
    /// otherwise).
    pub fn tenant(&self) -> Option<&str> {
        self.key.tenant.as_deref()
    }

    /// With the time the key was created.
    #[must_use]
    pub fn created_at(mut self, at: DateTime<Utc>) -> Self {
        self.created_at = Some(at);
        self
    }

    /// With the time the key was last used.
    #[must_use]
    pub fn last_used_at(mut self, at: DateTime<Utc>) -> Self {
        self.last_used_at = Some(at);
        self
    }
}

/// A row that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RowError {
    /// The 1-based line or record.
    pub line: u64,
    /// What is wrong with it. Never quotes a token or hash.
    pub reason: String,
}

/// Reads JSON lines: one object per line; blank lines are skipped.
///
/// ```
/// use keyward::import::{read_jsonl, ImportedSecret};
///
/// let file = br#"{"token": "acme_live_4eC39HqLyjWDarjtT1zdp7dc", "name": "Zapier", "permissions": ["contacts:read"]}
/// {"name": "no secret"}
/// "#;
/// let rows: Vec<_> = read_jsonl(&file[..]).collect();
/// assert!(matches!(rows[0].as_ref().map(|r| &r.secret), Ok(ImportedSecret::Token(_))));
/// assert!(rows[1].is_err());
/// ```
pub fn read_jsonl<R: BufRead>(reader: R) -> impl Iterator<Item = Result<ImportRow, RowError>> {
    Lines {
        reader,
        line: 0,
        buf: Vec::new(),
        done: false,
    }
}

struct Lines<R> {
    reader: R,
    line: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R> Drop for Lines<R> {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<ImportRow, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.line += 1;
            self.buf.zeroize();
            self.buf.clear();
            let read = std::io::Read::take(&mut self.reader, MAX_ROW_BYTES as u64 + 1)
                .read_until(b'\n', &mut self.buf);
            let line = self.line;
            let fail = |reason: String| Some(Err(RowError { line, reason }));
            match read {
                Ok(0) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return fail(format!("the file could not be read: {e}"));
                }
                Ok(_) if self.buf.len() > MAX_ROW_BYTES => {
                    // Skip the rest of the overlong line, unless the read
                    // took its end already.
                    if !self.buf.ends_with(b"\n") {
                        self.done = skip_line(&mut self.reader);
                    }
                    return fail(format!("longer than {MAX_ROW_BYTES} bytes"));
                }
                Ok(_) if self.buf.trim_ascii().is_empty() => {}
                Ok(_) => {
                    return Some(
                        match serde_json::from_slice::<Map<String, Value>>(&self.buf) {
                            Ok(fields) => row(line, fields, false),
                            Err(e) => Err(RowError {
                                line,
                                reason: format!("not a JSON object: {}", e.classify_text()),
                            }),
                        },
                    )
                }
            }
        }
        None
    }
}

/// Reads up to the end of the line; whether the input ended.
fn skip_line<R: BufRead>(reader: &mut R) -> bool {
    loop {
        let (skip, found, empty) = match reader.fill_buf() {
            Ok(b) => match b.iter().position(|&c| c == b'\n') {
                Some(i) => (i + 1, true, false),
                None => (b.len(), false, b.is_empty()),
            },
            Err(_) => return true,
        };
        reader.consume(skip);
        if found {
            return false;
        }
        if empty {
            return true;
        }
    }
}

trait Classify {
    fn classify_text(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    /// The kind of error without its position's context (which could
    /// quote a token).
    fn classify_text(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "not an object",
            serde_json::error::Category::Eof => "unexpected end of line",
        }
    }
}

/// Reads CSV with a header row naming the fields (feature `csv`). Empty
/// cells are absent fields; quoted cells may hold commas and newlines.
/// (A token read from CSV is wiped when its row is dropped, but the csv
/// crate's own read buffer is not: prefer hashes, or JSON lines, when the
/// importing process's memory matters.)
///
/// ```
/// use keyward::import::read_csv;
///
/// let file = "id,hash,name,tenant,permissions\n\
///     AbCd1234,9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08,CI,acme,contacts:read contacts:write\n";
/// let rows: Vec<_> = read_csv(file.as_bytes()).collect();
/// assert!(rows[0].is_ok());
/// ```
#[cfg(feature = "csv")]
#[cfg_attr(docsrs, doc(cfg(feature = "csv")))]
pub fn read_csv<R: std::io::Read>(reader: R) -> impl Iterator<Item = Result<ImportRow, RowError>> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(Bounded::new(reader));
    let names = match csv.headers() {
        Ok(h) => Ok(h
            .iter()
            .map(|s| s.trim_start_matches('\u{feff}').to_string())
            .collect()),
        Err(e) => Err(csv_reason(&e)),
    };
    CsvRows {
        records: csv.into_records(),
        names,
        done: false,
    }
}

/// A reader that fails once a record (a line, newlines inside quotes
/// included) passes [`MAX_ROW_BYTES`]: the csv crate itself would buffer
/// a record of any length.
#[cfg(feature = "csv")]
struct Bounded<R> {
    inner: R,
    in_record: usize,
    quoted: bool,
}

#[cfg(feature = "csv")]
impl<R> Bounded<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            in_record: 0,
            quoted: false,
        }
    }
}

#[cfg(feature = "csv")]
impl<R: std::io::Read> std::io::Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            match b {
                b'"' => self.quoted = !self.quoted,
                b'\n' | b'\r' if !self.quoted => self.in_record = 0,
                _ => {}
            }
            self.in_record += 1;
            if self.in_record > MAX_ROW_BYTES {
                return Err(std::io::Error::other(format!(
                    "a record is longer than {MAX_ROW_BYTES} bytes"
                )));
            }
        }
        Ok(n)
    }
}

#[cfg(feature = "csv")]
struct CsvRows<R> {
    records: csv::StringRecordsIntoIter<Bounded<R>>,
    names: Result<Vec<String>, String>,
    done: bool,
}

#[cfg(feature = "csv")]
impl<R: std::io::Read> Iterator for CsvRows<R> {
    type Item = Result<ImportRow, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let names = match &self.names {
            Ok(names) => names,
            Err(reason) => {
                self.done = true;
                return Some(Err(RowError {
                    line: 1,
                    reason: format!("the header row could not be read: {reason}"),
                }));
            }
        };
        let record = match self.records.next()? {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                self.done = matches!(e.kind(), csv::ErrorKind::Io(_));
                return Some(Err(RowError {
                    line,
                    reason: csv_reason(&e),
                }));
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        let result = if record.as_slice().len() > MAX_ROW_BYTES {
            Err(RowError {
                line,
                reason: format!("longer than {MAX_ROW_BYTES} bytes"),
            })
        } else {
            let fields = names
                .iter()
                .zip(record.iter())
                .filter(|(_, cell)| !cell.is_empty())
                .map(|(name, cell)| (name.clone(), Value::String(cell.to_string())))
                .collect();
            row(line, fields, true)
        };
        Some(result)
    }
}

/// A csv error, without the cell it was reading.
#[cfg(feature = "csv")]
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Io(e) => format!("the file could not be read further: {e}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} cells where the header names {expected_len}"),
        _ => "not valid CSV".into(),
    }
}

/// The row `fields` describe. `text` when every value is a string (CSV):
/// lists are split and metadata parsed from text.
fn row(line: u64, mut fields: Map<String, Value>, text: bool) -> Result<ImportRow, RowError> {
    let fail = |reason: String| RowError { line, reason };
    // The secret first: taken out of `fields`, it is wiped whatever
    // happens next.
    let secret = secret(&mut fields).map_err(|r| fail(r.into()));
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(fail(format!(
            "unknown field {:?}; the fields are {}",
            unknown.chars().take(40).collect::<String>(),
            FIELDS.join(", ")
        )));
    }
    let secret = secret?;
    let name = string(&fields, "name")
        .map_err(fail)?
        .ok_or_else(|| fail("the name is missing".into()))?;
    let mut key = NewKey::new(name);
    if let Some(tenant) = string(&fields, "tenant").map_err(fail)? {
        key = key.tenant(tenant);
    }
    key = key.permissions(list(&fields, "permissions").map_err(fail)?);
    let roles = list(&fields, "roles").map_err(fail)?;
    if !roles.is_empty() {
        key = key.roles(roles);
    }
    if let Some(at) = time(&fields, "expires_at").map_err(fail)? {
        key = key.expires_at(at);
    }
    if let Some(m) = fields.remove("metadata") {
        let m = match m {
            Value::String(s) if text => serde_json::from_str(&s)
                .map_err(|e| fail(format!("metadata is not JSON: {}", e.classify_text())))?,
            other => other,
        };
        if !m.is_object() {
            return Err(fail("metadata must be a JSON object".into()));
        }
        key = key.metadata(m);
    }
    let mut row = ImportRow::new(line, secret, key);
    row.created_at = time(&fields, "created_at").map_err(fail)?;
    row.last_used_at = time(&fields, "last_used_at").map_err(fail)?;
    Ok(row)
}

const FIELDS: [&str; 12] = [
    "token",
    "hash",
    "id",
    "prefix",
    "name",
    "tenant",
    "permissions",
    "roles",
    "expires_at",
    "created_at",
    "last_used_at",
    "metadata",
];

/// The token or hash of a row, taken out of `fields` (the copy there is
/// wiped).
fn secret(fields: &mut Map<String, Value>) -> Result<ImportedSecret, &'static str> {
    let token = match fields.remove("token") {
        Some(Value::String(t)) => Some(ImportToken(t)),
        Some(_) => return Err("the token must be a string"),
        None => None,
    };
    let hash = match fields.remove("hash") {
        Some(Value::String(h)) => Some(
            decode_hash(&h)
                .ok_or("the hash is neither 64 hex digits nor the base64 of 32 bytes")?,
        ),
        Some(_) => return Err("the hash must be a string"),
        None => None,
    };
    let id = string(fields, "id").map_err(|_| "the id must be a string")?;
    let prefix = string(fields, "prefix").map_err(|_| "the prefix must be a string")?;
    match (token, hash, id, prefix) {
        (Some(t), None, None, None) => Ok(ImportedSecret::Token(t)),
        (None, Some(hash), Some(id), None) => Ok(ImportedSecret::KeywardHash {
            id: id
                .parse()
                .map_err(|_| "the id is not a key id (8 letters and digits)")?,
            hash,
        }),
        (None, Some(hash), None, Some(prefix)) => Ok(ImportedSecret::LegacyHash { prefix, hash }),
        (None, Some(_), None, None) => {
            Err("a hash needs an id (keyward tokens) or a prefix (legacy tokens)")
        }
        (None, None, _, _) => Err("neither a token nor a hash"),
        (Some(_), _, _, _) => Err("a token comes alone, without hash, id or prefix"),
        (None, Some(_), Some(_), Some(_)) => Err("a hash has an id or a prefix, not both"),
    }
}

/// A SHA-256 as 64 hex digits, or base64 (standard or URL-safe, padded
/// or not).
fn decode_hash(text: &str) -> Option<KeyHash> {
    let text = text.trim();
    if let Some(h) = KeyHash::from_hex(text) {
        return Some(h);
    }
    let unpadded = text.trim_end_matches('=');
    let engine = if unpadded.contains(['-', '_']) {
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
    } else {
        &base64::engine::general_purpose::STANDARD_NO_PAD
    };
    let bytes = engine.decode(unpadded).ok()?;
    Some(KeyHash::from_bytes(bytes.try_into().ok()?))
}

fn string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// A list: a JSON array of strings, or a string of names separated by
/// whitespace, `,` or `;`.
fn list(fields: &Map<String, Value>, name: &str) -> Result<Vec<String>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(format!("{name} must hold strings")),
            })
            .collect(),
        Some(_) => Err(format!("{name} must be a list of strings")),
    }
}

fn time(fields: &Map<String, Value>, name: &str) -> Result<Option<DateTime<Utc>>, String> {
    match string(fields, name)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| format!("{name} is not an RFC 3339 time, e.g. 2026-01-31T12:00:00Z")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<ImportRow, RowError> {
        read_jsonl(line.as_bytes()).next().expect("a row")
    }

    #[test]
    fn reads_every_field_of_a_json_line() {
        let r = one(r#"{"token":"x","name":"CI","tenant":"acme","permissions":["a:read"],"roles":"ops","expires_at":"2030-01-01T00:00:00Z","created_at":"2020-01-01T00:00:00+02:00","last_used_at":"2021-01-01T00:00:00Z","metadata":{"k":1}}"#)
            .expect("valid");
        assert_eq!(r.line, 1);
        assert!(matches!(&r.secret, ImportedSecret::Token(t) if t.expose_secret() == "x"));
        assert_eq!(
            r.created_at.map(|t| t.to_rfc3339()),
            Some("2019-12-31T22:00:00+00:00".into())
        );
        assert!(r.last_used_at.is_some());
        assert!(!format!("{r:?}").contains("\"x\""), "the token is redacted");
    }

    #[test]
    fn hashes_in_hex_and_base64() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let h = decode_hash(hex).expect("hex");
        assert_eq!(decode_hash(&hex.to_uppercase()), Some(h));
        let b64 = base64::engine::general_purpose::STANDARD.encode(h.as_bytes());
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.as_bytes());
        assert_eq!(decode_hash(&b64), Some(h));
        assert_eq!(decode_hash(&url), Some(h));
        assert_eq!(decode_hash(&b64[..40]), None);
        assert_eq!(decode_hash("zz"), None);
        assert_eq!(decode_hash(""), None);
    }

    #[test]
    fn bad_rows_name_their_fault() {
        let cases = [
            (r#"{"name":"x"}"#, "neither a token nor a hash"),
            (r#"{"token":"t"}"#, "name is missing"),
            (
                r#"{"token":"t","name":"x","colour":"red"}"#,
                "unknown field",
            ),
            (
                r#"{"hash":"zz","id":"AbCd1234","name":"x"}"#,
                "hash is neither",
            ),
            (
                r#"{"hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","name":"x"}"#,
                "needs an id",
            ),
            (
                r#"{"hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","id":"short","name":"x"}"#,
                "not a key id",
            ),
            (
                r#"{"token":"t","hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","name":"x"}"#,
                "alone",
            ),
            (
                r#"{"token":"t","name":"x","expires_at":"tomorrow"}"#,
                "RFC 3339",
            ),
            (r#"{"token":"t","name":"x","metadata":[1]}"#, "JSON object"),
            (r#"{"token":"t","name":"x","permissions":[1]}"#, "strings"),
            (r#"["token"]"#, "not a JSON object"),
            (r#"{"token":"sk_secret_never_quoted"#, "not a JSON object"),
        ];
        for (line, expected) in cases {
            let e = one(line).expect_err(line);
            assert!(e.reason.contains(expected), "{line}: {}", e.reason);
            assert!(!e.reason.contains("never_quoted"), "{}", e.reason);
        }
    }

    #[test]
    fn blank_lines_are_skipped_and_lines_counted() {
        let rows: Vec<_> = read_jsonl(&b"\n{\"token\":\"t\",\"name\":\"a\"}\n\n{]\n"[..]).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].as_ref().map(|r| r.line).ok(), Some(2));
        assert_eq!(rows[1].as_ref().map_err(|e| e.line).err(), Some(4));
    }

    #[test]
    fn an_overlong_line_is_one_rejected_row() {
        let long = format!(
            "{{\"token\":\"{}\"}}\n{{\"token\":\"t\",\"name\":\"b\"}}\n",
            "a".repeat(MAX_ROW_BYTES)
        );
        let rows: Vec<_> = read_jsonl(long.as_bytes()).collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].is_err());
        assert_eq!(rows[1].as_ref().map(|r| r.line).ok(), Some(2));
    }

    #[test]
    fn a_line_at_the_limit_does_not_swallow_the_next() {
        for newline in ["\n", "\r\n"] {
            let long = "x".repeat(MAX_ROW_BYTES + 1 - newline.len());
            let file = format!("{long}{newline}{{\"token\":\"t\",\"name\":\"b\"}}\n{{\"token\":\"u\",\"name\":\"c\"}}\n");
            let rows: Vec<_> = read_jsonl(file.as_bytes()).collect();
            assert_eq!(rows.len(), 3, "{newline:?}");
            assert!(rows[0].is_err());
            assert_eq!(rows[1].as_ref().map(|r| r.line).ok(), Some(2));
            assert_eq!(rows[2].as_ref().map(|r| r.line).ok(), Some(3));
        }
    }

    #[cfg(feature = "csv")]
    #[test]
    fn an_endless_csv_record_stops_the_reader() {
        let mut file = String::from("token,name\nt1,a\n\"");
        file.push_str(&"y".repeat(MAX_ROW_BYTES * 2));
        let rows: Vec<_> = read_csv(file.as_bytes()).collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].is_ok());
        assert!(rows[1]
            .as_ref()
            .is_err_and(|e| e.reason.contains("longer than")));
    }

    #[cfg(feature = "csv")]
    #[test]
    fn reads_csv_with_lists_metadata_and_quotes() {
        let file = "\u{feff}token,name,permissions,metadata\n\
            t1,\"Zapier, prod\",\"a:read; b:write\",\"{\"\"k\"\": 1}\"\n\
            t2,,a:read,\n\
            t3,x\n";
        let rows: Vec<_> = read_csv(file.as_bytes()).collect();
        assert_eq!(rows.len(), 3);
        let first = rows[0].as_ref().expect("valid");
        assert_eq!(first.line, 2);
        assert!(rows[1]
            .as_ref()
            .is_err_and(|e| e.reason.contains("name is missing") && e.line == 3));
        assert!(rows[2].as_ref().is_err_and(|e| e.reason.contains("cells")));
    }
}
