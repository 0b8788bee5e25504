//! Permission expressions: `contacts:read and (tickets:write or admin:*)`,
//! parsed once against a catalog and compiled to bit masks, so that a
//! check is a few word operations and allocates nothing.
//!
//! Grammar (keywords in any case; `and` binds tighter than `or`):
//!
//! ```text
//! expr   = term { "or" term }
//! term   = factor { "and" factor }
//! factor = permission | "(" expr ")"
//! ```
//!
//! A permission is any written form [`Catalog::parse_set`] reads:
//! `contacts:write`, `write:contacts`, `contacts:*` (every action the
//! catalog declares for the resource when the expression is compiled: a
//! catalog that later gains an action makes the rule stricter) or `*`
//! (everything).

use std::fmt;
use std::sync::Arc;

use super::{or_into, Bits, Catalog, Item, PermissionError, PermissionSet, WORDS};

/// Longest expression text, in bytes.
const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses.
const MAX_DEPTH: usize = 32;
/// Most alternatives an expression may expand to (`(a or b) and (c or d)`
/// is four): the bound of a check's cost.
pub const MAX_ALTERNATIVES: usize = 64;

/// Why an expression was refused: at start-up, never at a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExprError {
    /// The text is empty, or a list of permissions is.
    #[error("empty permission expression: name at least one permission")]
    Empty,
    /// Longer than 4,096 bytes.
    #[error("permission expression longer than 4096 bytes")]
    TooLong,
    /// Parentheses nested deeper than 32.
    #[error("permission expression nested deeper than 32 parentheses")]
    TooDeep,
    /// It expands to more than [`MAX_ALTERNATIVES`] alternatives, or an
    /// operand of `and` does.
    #[error(
        "permission expression too complex: it expands to more than 64 alternatives; factor it"
    )]
    TooComplex,
    /// Something else than was expected at byte `at`.
    #[error("permission expression: expected {expected} at byte {at}, found {found}")]
    Syntax {
        /// Byte offset in the text.
        at: usize,
        /// What would have been valid there.
        expected: &'static str,
        /// What was there (at most 40 characters), or `the end`.
        found: String,
    },
    /// A permission the catalog does not have.
    #[error(transparent)]
    Permission(#[from] PermissionError),
}

/// A compiled permission expression of one [`Catalog`]: check it with
/// [`PermissionSet::satisfies`] (or `Verified::satisfies`), which
/// allocates nothing.
///
/// ```
/// use keyward::Catalog;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let catalog = Catalog::builder()
///     .resource("contacts", ["read", "write"])
///     .resource("tickets", ["read", "write"])
///     .resource("admin", ["read", "write"])
///     .build()?;
/// let rule = catalog.expression("contacts:read and (tickets:write or admin:*)")?;
/// assert!(catalog.parse_set(["contacts:read", "tickets:write"])?.satisfies(&rule));
/// assert!(!catalog.parse_set(["contacts:write", "admin:read"])?.satisfies(&rule));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PermissionExpr {
    /// Alternatives: the set must hold every bit of one of them.
    alternatives: Arc<[Bits]>,
    text: Arc<str>,
    catalog: Catalog,
}

impl fmt::Debug for PermissionExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PermissionExpr").field(&self.text).finish()
    }
}

impl fmt::Display for PermissionExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PermissionExpr {
    /// The catalog it was compiled against.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// How many alternatives it compiled to.
    pub fn alternatives(&self) -> usize {
        self.alternatives.len()
    }
}

impl PermissionSet {
    /// Whether the set satisfies `expr`: holds every permission of one of
    /// its alternatives. False for an expression of another catalog. A
    /// few word operations per alternative; no allocation.
    pub fn satisfies(&self, expr: &PermissionExpr) -> bool {
        self.catalog == expr.catalog
            && expr
                .alternatives
                .iter()
                .any(|need| need.iter().zip(&self.bits).all(|(n, h)| n & !h == 0))
    }
}

impl Catalog {
    /// Compiles a permission expression, such as
    /// `contacts:read and (tickets:write or admin:*)`.
    ///
    /// # Errors
    /// [`ExprError`]: a syntax error with its byte offset, an unknown
    /// permission, or an expression too long, deep or complex.
    pub fn expression(&self, text: &str) -> Result<PermissionExpr, ExprError> {
        if text.len() > MAX_LEN {
            return Err(ExprError::TooLong);
        }
        let mut parser = Parser {
            catalog: self,
            tokens: tokens(text),
            next: 0,
            end: text.len(),
        };
        if parser.tokens.is_empty() {
            return Err(ExprError::Empty);
        }
        let alternatives = parser.expr(0)?;
        if let Some(&(at, token)) = parser.tokens.get(parser.next) {
            return Err(syntax(at, "`and`, `or` or the end", token));
        }
        self.compiled(alternatives, text.trim())
    }

    /// An expression that holds when every permission named holds.
    ///
    /// # Errors
    /// [`ExprError::Empty`] for no permission; [`ExprError::Permission`].
    pub fn require_all<I, S>(&self, permissions: I) -> Result<PermissionExpr, ExprError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut need = [0u64; WORDS];
        let mut names = Vec::new();
        for p in permissions {
            or_into(&mut need, &self.mask(p.as_ref())?);
            names.push(p.as_ref().trim().to_string());
        }
        if names.is_empty() {
            return Err(ExprError::Empty);
        }
        self.compiled(vec![need], &names.join(" and "))
    }

    /// An expression that holds when any permission named holds.
    ///
    /// # Errors
    /// [`ExprError::Empty`] for no permission; [`ExprError::TooComplex`]
    /// for more than [`MAX_ALTERNATIVES`]; [`ExprError::Permission`].
    pub fn require_any<I, S>(&self, permissions: I) -> Result<PermissionExpr, ExprError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut alternatives = Vec::new();
        let mut names = Vec::new();
        for p in permissions {
            alternatives = or(alternatives, vec![self.mask(p.as_ref())?]);
            names.push(p.as_ref().trim().to_string());
        }
        if names.is_empty() {
            return Err(ExprError::Empty);
        }
        self.compiled(alternatives, &names.join(" or "))
    }

    /// The bits one written permission needs.
    fn mask(&self, name: &str) -> Result<Bits, PermissionError> {
        Ok(match self.parse_item(name)? {
            Item::One(bit) => {
                let mut bits = [0u64; WORDS];
                super::set_bit(&mut bits, bit as usize);
                bits
            }
            Item::Many(bits) => bits,
        })
    }

    /// The expression, once the whole of it is known: only the final
    /// alternatives count against the bound, since a later alternative
    /// may absorb many earlier ones.
    fn compiled(&self, alternatives: Vec<Bits>, text: &str) -> Result<PermissionExpr, ExprError> {
        if alternatives.len() > MAX_ALTERNATIVES {
            return Err(ExprError::TooComplex);
        }
        Ok(PermissionExpr {
            alternatives: alternatives.into(),
            text: text.into(),
            catalog: self.clone(),
        })
    }
}

/// `a or b`: both lists of alternatives, without those another makes
/// redundant. Unbounded here: the text's length bounds it, and the bound
/// applies to the final list.
fn or(mut a: Vec<Bits>, b: Vec<Bits>) -> Vec<Bits> {
    for term in b {
        // A term needing everything another needs, and more, adds nothing.
        if a.iter().any(|t| subset(t, &term)) {
            continue;
        }
        a.retain(|t| !subset(&term, t));
        a.push(term);
    }
    a
}

/// `a and b`: every pairing of an alternative of each. Each side may
/// have at most [`MAX_ALTERNATIVES`]: that bounds the pairings, and so
/// the cost of compiling.
fn and(a: &[Bits], b: &[Bits]) -> Result<Vec<Bits>, ExprError> {
    if a.len() > MAX_ALTERNATIVES || b.len() > MAX_ALTERNATIVES {
        return Err(ExprError::TooComplex);
    }
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let mut both = *x;
            or_into(&mut both, y);
            out = or(out, vec![both]);
        }
    }
    Ok(out)
}

/// Whether every bit of `small` is in `big`.
fn subset(small: &Bits, big: &Bits) -> bool {
    small.iter().zip(big).all(|(s, b)| s & !b == 0)
}

fn syntax(at: usize, expected: &'static str, found: &str) -> ExprError {
    ExprError::Syntax {
        at,
        expected,
        found: if found.is_empty() {
            "the end".into()
        } else {
            format!("`{}`", found.chars().take(40).collect::<String>())
        },
    }
}

/// The tokens of `text` with their byte offsets: `(`, `)`, and words.
fn tokens(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() || c == '(' || c == ')' {
            if let Some(s) = start.take() {
                out.push((s, &text[s..i]));
            }
            if !c.is_whitespace() {
                out.push((i, &text[i..i + 1]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

struct Parser<'a> {
    catalog: &'a Catalog,
    tokens: Vec<(usize, &'a str)>,
    next: usize,
    /// The text's length: where "the end" is.
    end: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.next).map(|t| t.1)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |t| t.0)
    }

    fn keyword(&mut self, word: &str) -> bool {
        if self.peek().is_some_and(|t| t.eq_ignore_ascii_case(word)) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Vec<Bits>, ExprError> {
        let mut alternatives = self.term(depth)?;
        while self.keyword("or") {
            alternatives = or(alternatives, self.term(depth)?);
        }
        Ok(alternatives)
    }

    fn term(&mut self, depth: usize) -> Result<Vec<Bits>, ExprError> {
        let mut alternatives = self.factor(depth)?;
        while self.keyword("and") {
            alternatives = and(&alternatives, &self.factor(depth)?)?;
        }
        Ok(alternatives)
    }

    fn factor(&mut self, depth: usize) -> Result<Vec<Bits>, ExprError> {
        let at = self.at();
        match self.peek() {
            Some("(") => {
                if depth >= MAX_DEPTH {
                    return Err(ExprError::TooDeep);
                }
                self.next += 1;
                let inner = self.expr(depth + 1)?;
                if self.peek() != Some(")") {
                    return Err(syntax(self.at(), "`)`", self.peek().unwrap_or("")));
                }
                self.next += 1;
                Ok(inner)
            }
            Some(word)
                if word != ")"
                    && !word.eq_ignore_ascii_case("and")
                    && !word.eq_ignore_ascii_case("or") =>
            {
                self.next += 1;
                Ok(vec![self.catalog.mask(word)?])
            }
            other => Err(syntax(at, "a permission or `(`", other.unwrap_or(""))),
        }
    }
}
