//! SCIM 2.0 filters and attribute paths (RFC 7644 §3.4.2.2): parsing, canonical
//! printing and evaluation against in-memory JSON resources.
//!
//! The parser is a hand-written recursive descent over bytes so that every error
//! can carry the exact byte offset a client needs to fix its request. Recursion
//! only happens for explicit nesting (parentheses, `not`, value paths), which is
//! capped by [`MAX_DEPTH`]; `and`/`or` chains are parsed in loops, and the input
//! length cap ([`MAX_FILTER_LEN`]) bounds the depth of the resulting left-leaning
//! trees to a few hundred nodes, which recursive `Drop`/`Display`/evaluation
//! handle comfortably.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Number, Value};

/// Longest input accepted by the parsers, in bytes. Filters arrive in query
/// strings and request bodies from untrusted clients; the cap keeps parse time
/// and tree depth small.
pub const MAX_FILTER_LEN: usize = 4096;

/// Deepest allowed nesting of parentheses, `not (...)` and value paths. It keeps
/// the recursive parser far away from stack exhaustion.
pub const MAX_DEPTH: usize = 32;

/// An attribute path such as `userName`, `name.givenName` or
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
///
/// `urn:...:User:name.givenName` → urn `Some("urn:...:User")`, name `"name"`,
/// sub `Some("givenName")`. Names keep the spelling the client used; compare with
/// [`AttrPath::eq_ignore_case`] because SCIM attribute names are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// Schema URN qualifying the attribute, without the trailing colon.
    pub urn: Option<String>,
    /// Top-level attribute name (relative to the element inside a value path).
    pub name: String,
    /// Sub-attribute of a complex attribute; SCIM allows only one level.
    pub sub: Option<String>,
}

impl AttrPath {
    /// Compares two paths the way SCIM does: attribute names and schema URNs are
    /// case-insensitive (RFC 7643 §2.1), so `USERNAME` and `userName` are one path.
    pub fn eq_ignore_case(&self, other: &AttrPath) -> bool {
        fn opt_eq(a: &Option<String>, b: &Option<String>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            }
        }
        opt_eq(&self.urn, &other.urn)
            && self.name.eq_ignore_ascii_case(&other.name)
            && opt_eq(&self.sub, &other.sub)
    }

    /// `name` or `name.sub` without the URN: the key that schema lookups and
    /// attribute mappings use once the schema is already known.
    pub fn dotted(&self) -> String {
        match &self.sub {
            Some(sub) => format!("{}.{}", self.name, sub),
            None => self.name.clone(),
        }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Comparison operators of RFC 7644 Table 3 (`pr` is [`Filter::Present`]
/// because it takes no value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `eq`: equal.
    Eq,
    /// `ne`: not equal.
    Ne,
    /// `co`: string contains.
    Co,
    /// `sw`: string starts with.
    Sw,
    /// `ew`: string ends with.
    Ew,
    /// `gt`: greater than.
    Gt,
    /// `ge`: greater than or equal.
    Ge,
    /// `lt`: less than.
    Lt,
    /// `le`: less than or equal.
    Le,
}

impl CompareOp {
    /// Lowercase spelling, the canonical form used when printing filters.
    fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The literal on the right of a comparison. Date-times are plain strings: the
/// evaluator recognises RFC 3339 values at comparison time, as the filter syntax
/// gives no way to tell them apart.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A JSON number, kept as `serde_json::Number` so integers stay exact.
    Number(Number),
    /// A JSON string with escapes already decoded.
    String(String),
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompValue::Null => f.write_str("null"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Number(n) => write!(f, "{n}"),
            CompValue::String(s) => write_json_string(f, s),
        }
    }
}

/// Escapes per JSON so the printed filter parses back to the same string;
/// non-ASCII text is left as-is because filters are UTF-8 anyway.
fn write_json_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    let mut plain_from = 0;
    for (i, c) in s.char_indices() {
        let escape: Cow<'static, str> = match c {
            '"' => "\\\"".into(),
            '\\' => "\\\\".into(),
            '\n' => "\\n".into(),
            '\r' => "\\r".into(),
            '\t' => "\\t".into(),
            '\u{8}' => "\\b".into(),
            '\u{c}' => "\\f".into(),
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).into(),
            _ => continue,
        };
        f.write_str(&s[plain_from..i])?;
        f.write_str(&escape)?;
        plain_from = i + c.len_utf8();
    }
    f.write_str(&s[plain_from..])?;
    f.write_str("\"")
}

/// A parsed SCIM filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `path op value`.
    Compare {
        /// Attribute being compared.
        path: AttrPath,
        /// Comparison operator.
        op: CompareOp,
        /// Literal compared against.
        value: CompValue,
    },
    /// `path pr`: the attribute has a non-empty value.
    Present(AttrPath),
    /// `left and right`.
    And(Box<Filter>, Box<Filter>),
    /// `left or right`.
    Or(Box<Filter>, Box<Filter>),
    /// `not (inner)`.
    Not(Box<Filter>),
    /// `emails[type eq "work"]`: `path` names the multi-valued attribute (its `sub` is None),
    /// the inner filter's paths are relative to each element.
    ValuePath {
        /// The (multi-valued) attribute whose elements are filtered.
        path: AttrPath,
        /// Filter applied to each element, with element-relative paths.
        filter: Box<Filter>,
    },
}

impl fmt::Display for Filter {
    /// Prints the canonical form: lowercase keywords, single spaces, and only
    /// the parentheses needed for the parser to rebuild exactly this tree
    /// (`and`/`or` are left-associative, so right-nested chains keep theirs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Compare { path, op, value } => write!(f, "{path} {op} {value}"),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::Or(left, right) => {
                write!(f, "{left} or ")?;
                write_child(f, right, matches!(**right, Filter::Or(..)))
            }
            Filter::And(left, right) => {
                write_child(f, left, matches!(**left, Filter::Or(..)))?;
                f.write_str(" and ")?;
                write_child(
                    f,
                    right,
                    matches!(**right, Filter::Or(..) | Filter::And(..)),
                )
            }
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::ValuePath { path, filter } => write!(f, "{path}[{filter}]"),
        }
    }
}

fn write_child(f: &mut fmt::Formatter<'_>, child: &Filter, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({child})")
    } else {
        write!(f, "{child}")
    }
}

/// A PATCH path or a mapping key: `attrPath` | `valuePath` [ "." subAttr ].
/// `name.givenName` → attr{name,sub:givenName}, filter None, sub None.
/// `emails[type eq "work"].value` → attr{emails}, filter Some(..), sub Some("value").
///
/// `sub` is only meaningful together with `filter`; without a filter the
/// sub-attribute lives in `attr.sub`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrRef {
    /// The attribute addressed (for a value path: the multi-valued attribute).
    pub attr: AttrPath,
    /// Element selector of a value path, with element-relative paths.
    pub filter: Option<Filter>,
    /// Sub-attribute of the selected elements (`emails[...].value`).
    pub sub: Option<String>,
}

impl fmt::Display for AttrRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Why a filter or path was rejected, with the byte offset into the input so a
/// SCIM `invalidFilter`/`invalidPath` response can point at the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at byte {offset}")]
pub struct FilterError {
    /// Byte offset into the input where the problem was detected.
    pub offset: usize,
    /// Human-readable description.
    pub message: String,
}

fn err(offset: usize, message: impl Into<String>) -> FilterError {
    FilterError {
        offset,
        message: message.into(),
    }
}

/// Parses a `filter=` expression (RFC 7644 §3.4.2.2). Operators and logical
/// keywords are case-insensitive; the result prints back canonically via
/// `Display`.
pub fn parse_filter(input: &str) -> Result<Filter, FilterError> {
    check_len(input, "filter")?;
    let mut p = Parser::new(input);
    p.skip_ws();
    if p.at_end() {
        return Err(err(p.pos, "empty filter"));
    }
    let filter = p.parse_or()?;
    p.finish()?;
    Ok(filter)
}

/// Parses a PATCH operation path or an attribute-mapping key: an attribute
/// path, optionally followed by `[filter]` and then an optional `.subAttr`.
pub fn parse_attr_ref(input: &str) -> Result<AttrRef, FilterError> {
    check_len(input, "path")?;
    let mut p = Parser::new(input);
    p.skip_ws();
    if p.at_end() {
        return Err(err(p.pos, "empty attribute path"));
    }
    let attr = p.parse_path()?;
    let mut filter = None;
    let mut sub = None;
    if p.peek() == Some(b'[') {
        filter = Some(p.parse_bracket(&attr)?);
        if p.peek() == Some(b'.') {
            p.pos += 1;
            let start = p.pos;
            let end = p.path_run_end(start);
            let name = &input[start..end];
            validate_name(name, start)?;
            p.pos = end;
            sub = Some(name.to_string());
        }
    }
    p.finish()?;
    Ok(AttrRef { attr, filter, sub })
}

/// Parses a plain attribute path, as used by `sortBy`, `attributes=` and
/// `excludedAttributes=` (no value-path filter allowed).
pub fn parse_attr_path(input: &str) -> Result<AttrPath, FilterError> {
    check_len(input, "path")?;
    let mut p = Parser::new(input);
    p.skip_ws();
    if p.at_end() {
        return Err(err(p.pos, "empty attribute path"));
    }
    let path = p.parse_path()?;
    p.finish()?;
    Ok(path)
}

fn check_len(input: &str, what: &str) -> Result<(), FilterError> {
    if input.len() > MAX_FILTER_LEN {
        return Err(err(
            MAX_FILTER_LEN,
            format!("{what} longer than {MAX_FILTER_LEN} bytes"),
        ));
    }
    Ok(())
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Bytes that may appear in an attribute path (URN included). Keywords must not
/// be followed by one of these, so `andrew` or `notes` stay attribute names.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-' | b'$')
}

/// Shortens user input quoted in error messages so a 4 KiB token cannot bloat
/// the error response.
fn excerpt(s: &str) -> String {
    const MAX_CHARS: usize = 24;
    let mut out: String = s.chars().take(MAX_CHARS).collect();
    if s.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

enum OpWord {
    Present,
    Compare(CompareOp),
}

struct Parser<'a> {
    src: &'a str,
    /// Always on a char boundary: we only step over ASCII bytes or whole
    /// string literals, so slicing `src` at `pos` cannot panic.
    pos: usize,
    depth: usize,
    in_value_path: bool,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            pos: 0,
            depth: 0,
            in_value_path: false,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn char_at(&self, at: usize) -> Option<char> {
        self.src.get(at..).and_then(|s| s.chars().next())
    }

    /// Describes what sits at `at` for "found ..." error suffixes.
    fn found(&self, at: usize) -> String {
        match self.char_at(at) {
            Some(c) => format!("found {c:?}"),
            None => "found end of input".to_string(),
        }
    }

    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Case-insensitive keyword test that also demands a word boundary.
    fn keyword_at(&self, at: usize, kw: &str) -> bool {
        let b = self.bytes();
        match b.get(at..at + kw.len()) {
            Some(s) if s.eq_ignore_ascii_case(kw.as_bytes()) => {
                !b.get(at + kw.len()).copied().is_some_and(is_path_byte)
            }
            _ => false,
        }
    }

    fn op_word_at(&self, at: usize) -> Option<OpWord> {
        let b = self.bytes();
        let word = b.get(at..at + 2)?;
        if b.get(at + 2).copied().is_some_and(is_path_byte) {
            return None;
        }
        let op = match word.to_ascii_lowercase().as_slice() {
            b"pr" => return Some(OpWord::Present),
            b"eq" => CompareOp::Eq,
            b"ne" => CompareOp::Ne,
            b"co" => CompareOp::Co,
            b"sw" => CompareOp::Sw,
            b"ew" => CompareOp::Ew,
            b"gt" => CompareOp::Gt,
            b"ge" => CompareOp::Ge,
            b"lt" => CompareOp::Lt,
            b"le" => CompareOp::Le,
            _ => return None,
        };
        Some(OpWord::Compare(op))
    }

    fn path_run_end(&self, start: usize) -> usize {
        let b = self.bytes();
        let mut end = start;
        while b.get(end).copied().is_some_and(is_path_byte) {
            end += 1;
        }
        end
    }

    fn enter(&mut self, at: usize) -> Result<(), FilterError> {
        if self.depth >= MAX_DEPTH {
            return Err(err(
                at,
                format!("filter nesting too deep (limit {MAX_DEPTH})"),
            ));
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn expect_byte(&mut self, want: u8) -> Result<(), FilterError> {
        self.skip_ws();
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(err(
                self.pos,
                format!("expected \"{}\", {}", want as char, self.found(self.pos)),
            ))
        }
    }

    fn finish(&mut self) -> Result<(), FilterError> {
        self.skip_ws();
        if self.at_end() {
            Ok(())
        } else {
            let rest = self.src.get(self.pos..).unwrap_or("");
            Err(err(
                self.pos,
                format!("unexpected trailing input \"{}\"", excerpt(rest)),
            ))
        }
    }

    fn parse_or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_and()?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.keyword_at(self.pos, "or") {
                self.pos += 2;
                let right = self.parse_and()?;
                left = Filter::Or(Box::new(left), Box::new(right));
            } else {
                self.pos = save;
                return Ok(left);
            }
        }
    }

    fn parse_and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_unary()?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.keyword_at(self.pos, "and") {
                self.pos += 3;
                let right = self.parse_unary()?;
                left = Filter::And(Box::new(left), Box::new(right));
            } else {
                self.pos = save;
                return Ok(left);
            }
        }
    }

    fn parse_unary(&mut self) -> Result<Filter, FilterError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => Err(err(start, "expected filter expression, found end of input")),
            Some(b'(') => {
                self.enter(start)?;
                self.pos += 1;
                let inner = self.parse_or()?;
                self.expect_byte(b')')?;
                self.leave();
                Ok(inner)
            }
            Some(_) if self.keyword_at(start, "not") => self.parse_not(start),
            Some(_) => self.parse_attr_expr(),
        }
    }

    /// `not` is also a legal attribute name, so it is only treated as an
    /// attribute when what follows can only continue an attribute expression
    /// (`not[...]`, `not pr`, `not eq 1`); anything else is a missing `(`.
    fn parse_not(&mut self, start: usize) -> Result<Filter, FilterError> {
        let after_kw = start + 3;
        let b = self.bytes();
        let mut p = after_kw;
        while b.get(p).copied().is_some_and(is_ws) {
            p += 1;
        }
        if b.get(p) == Some(&b'(') {
            self.enter(start)?;
            self.pos = p + 1;
            let inner = self.parse_or()?;
            self.expect_byte(b')')?;
            self.leave();
            return Ok(Filter::Not(Box::new(inner)));
        }
        let is_attribute =
            b.get(after_kw) == Some(&b'[') || (p > after_kw && self.op_word_at(p).is_some());
        if is_attribute {
            self.parse_attr_expr()
        } else {
            Err(err(
                p,
                format!("expected \"(\" after \"not\", {}", self.found(p)),
            ))
        }
    }

    fn parse_attr_expr(&mut self) -> Result<Filter, FilterError> {
        let path = self.parse_path()?;
        if self.peek() == Some(b'[') {
            let filter = self.parse_bracket(&path)?;
            return Ok(Filter::ValuePath {
                path,
                filter: Box::new(filter),
            });
        }
        let had_ws = self.skip_ws();
        let op_start = self.pos;
        if self.at_end() {
            return Err(err(op_start, "expected operator, found end of input"));
        }
        if !had_ws {
            return Err(err(
                op_start,
                format!(
                    "expected whitespace and an operator after attribute path, {}",
                    self.found(op_start)
                ),
            ));
        }
        let Some(op) = self.op_word_at(op_start) else {
            let b = self.bytes();
            let mut end = op_start;
            while b
                .get(end)
                .is_some_and(|&c| !is_ws(c) && !matches!(c, b'"' | b'(' | b')' | b'[' | b']'))
            {
                end += 1;
            }
            let word = self.src.get(op_start..end).unwrap_or("");
            return Err(err(
                op_start,
                format!("unknown operator \"{}\"", excerpt(word)),
            ));
        };
        self.pos += 2;
        match op {
            OpWord::Present => Ok(Filter::Present(path)),
            OpWord::Compare(op) => {
                let value = self.parse_value()?;
                Ok(Filter::Compare { path, op, value })
            }
        }
    }

    /// Parses `[valFilter]` at the current `[`; shared by filters and PATCH paths.
    fn parse_bracket(&mut self, path: &AttrPath) -> Result<Filter, FilterError> {
        let open = self.pos;
        if self.in_value_path {
            return Err(err(open, "nested value path not allowed"));
        }
        if path.sub.is_some() {
            return Err(err(
                open,
                "value path attribute must not have a sub-attribute",
            ));
        }
        self.enter(open)?;
        self.pos += 1;
        self.in_value_path = true;
        let inner = self.parse_or()?;
        self.expect_byte(b']')?;
        self.in_value_path = false;
        self.leave();
        Ok(inner)
    }

    fn parse_path(&mut self) -> Result<AttrPath, FilterError> {
        let start = self.pos;
        let end = self.path_run_end(start);
        if end == start {
            return Err(err(
                start,
                format!("expected attribute name, {}", self.found(start)),
            ));
        }
        self.pos = end;
        split_path(&self.src[start..end], start)
    }

    fn parse_value(&mut self) -> Result<CompValue, FilterError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some(b'"') => self.parse_string().map(CompValue::String),
            Some(b'-' | b'0'..=b'9') => self.parse_number().map(CompValue::Number),
            Some(_) => {
                for (kw, value) in [
                    ("true", CompValue::Bool(true)),
                    ("false", CompValue::Bool(false)),
                    ("null", CompValue::Null),
                ] {
                    if self.keyword_at(start, kw) {
                        self.pos += kw.len();
                        return Ok(value);
                    }
                }
                Err(err(
                    start,
                    format!(
                        "expected value (string, number, true, false or null), {}",
                        self.found(start)
                    ),
                ))
            }
            None => Err(err(
                start,
                "expected value (string, number, true, false or null), found end of input",
            )),
        }
    }

    fn parse_string(&mut self) -> Result<String, FilterError> {
        let open = self.pos;
        let b = self.bytes();
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = b.get(self.pos..).unwrap_or(&[]);
            let Some(i) = rest.iter().position(|&c| c == b'"' || c == b'\\') else {
                return Err(err(open, "unterminated string"));
            };
            // Both ends sit next to ASCII bytes, hence on char boundaries.
            out.push_str(&self.src[self.pos..self.pos + i]);
            let at = self.pos + i;
            if b[at] == b'"' {
                self.pos = at + 1;
                return Ok(out);
            }
            let decoded = match b.get(at + 1) {
                None => return Err(err(open, "unterminated string")),
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    let (c, len) = self.unicode_escape(at)?;
                    out.push(c);
                    self.pos = at + len;
                    continue;
                }
                Some(_) => {
                    let c = self.char_at(at + 1).unwrap_or('?');
                    return Err(err(at, format!("invalid escape sequence \"\\{c}\"")));
                }
            };
            out.push(decoded);
            self.pos = at + 2;
        }
    }

    /// Decodes `\uXXXX` (joining a UTF-16 surrogate pair) at backslash `at`;
    /// returns the char and the number of bytes consumed.
    fn unicode_escape(&self, at: usize) -> Result<(char, usize), FilterError> {
        let b = self.bytes();
        let hex4 = |from: usize| -> Option<u32> {
            let digits = b.get(from..from + 4)?;
            digits
                .iter()
                .try_fold(0u32, |acc, &d| Some(acc * 16 + (d as char).to_digit(16)?))
        };
        let Some(first) = hex4(at + 2) else {
            return Err(err(at, "invalid \\u escape: expected 4 hex digits"));
        };
        let unpaired = || err(at, "invalid \\u escape: unpaired UTF-16 surrogate");
        match first {
            0xD800..=0xDBFF => {
                if b.get(at + 6..at + 8) != Some(b"\\u".as_slice()) {
                    return Err(unpaired());
                }
                match hex4(at + 8) {
                    Some(low @ 0xDC00..=0xDFFF) => {
                        let code = 0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(code).map(|c| (c, 12)).ok_or_else(unpaired)
                    }
                    _ => Err(unpaired()),
                }
            }
            0xDC00..=0xDFFF => Err(unpaired()),
            code => char::from_u32(code).map(|c| (c, 6)).ok_or_else(unpaired),
        }
    }

    /// Strict JSON number syntax; the text is then handed to serde_json so the
    /// stored `Number` is exactly what a JSON body with that text would give.
    fn parse_number(&mut self) -> Result<Number, FilterError> {
        let start = self.pos;
        let b = self.bytes();
        let invalid = || err(start, "invalid number");
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - from
        };
        let mut i = start;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        let int_len = digits(&mut i);
        if int_len == 0 || (int_len > 1 && b.get(int_start) == Some(&b'0')) {
            return Err(invalid());
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if digits(&mut i) == 0 {
                return Err(invalid());
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                return Err(invalid());
            }
        }
        if b.get(i).copied().is_some_and(is_path_byte) {
            return Err(invalid());
        }
        let number = self.src[start..i]
            .parse::<Number>()
            .map_err(|_| err(start, "invalid number: out of range"))?;
        self.pos = i;
        Ok(number)
    }
}

/// Splits an attribute-path token. A URN is everything up to the LAST colon,
/// because schema URNs contain dots (`...:2.0:User`) while the part after the
/// last colon is `name[.sub]`.
fn split_path(run: &str, base: usize) -> Result<AttrPath, FilterError> {
    let is_urn = run.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"));
    let (urn, rest, rest_at) = if is_urn {
        // The run contains "urn:", so a colon exists.
        let last = run.rfind(':').unwrap_or(3);
        let urn = &run[..last];
        if last == 3 || urn.split(':').any(str::is_empty) {
            return Err(err(
                base,
                format!(
                    "invalid URN in attribute path \"{}\": expected \"urn:<namespace>:...:<attribute>\"",
                    excerpt(run)
                ),
            ));
        }
        (Some(urn.to_string()), &run[last + 1..], base + last + 1)
    } else {
        if let Some(i) = run.find(':') {
            return Err(err(
                base + i,
                "unexpected \":\" in attribute path (schema URNs must start with \"urn:\")",
            ));
        }
        (None, run, base)
    };
    let (name, sub) = match rest.find('.') {
        Some(dot) => {
            let sub = &rest[dot + 1..];
            validate_name(sub, rest_at + dot + 1)?;
            (&rest[..dot], Some(sub.to_string()))
        }
        None => (rest, None),
    };
    validate_name(name, rest_at)?;
    Ok(AttrPath {
        urn,
        name: name.to_string(),
        sub,
    })
}

/// `ATTRNAME = ALPHA *(ALPHA / DIGIT / "-" / "_")`, plus `$ref` which RFC 7643
/// uses for reference sub-attributes.
fn validate_name(name: &str, at: usize) -> Result<(), FilterError> {
    let b = name.as_bytes();
    match b.first() {
        None => return Err(err(at, "expected attribute name")),
        Some(b'$') if name.eq_ignore_ascii_case("$ref") => return Ok(()),
        Some(c) if c.is_ascii_alphabetic() => {}
        Some(_) => {
            return Err(err(
                at,
                format!(
                    "invalid attribute name \"{}\": must start with a letter",
                    excerpt(name)
                ),
            ))
        }
    }
    match b
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_'))
    {
        Some(i) => Err(err(
            at + i,
            format!(
                "invalid character {:?} in attribute name \"{}\"",
                b[i] as char,
                excerpt(name)
            ),
        )),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

impl Filter {
    /// Does this filter match a SCIM resource (JSON object)? `case_exact(path)` says whether string
    /// comparisons on that attribute are case-exact (SCIM `caseExact`); default false per RFC 7643.
    ///
    /// Inside a value path `case_exact` receives the absolute path
    /// (`emails[value eq "x"]` asks about `emails.value`), so schema lookups work
    /// the same as for `emails.value eq "x"`. Multi-valued attributes match if
    /// any element matches, for `ne` too; a missing attribute behaves as `null`.
    pub fn matches(&self, resource: &Value, case_exact: &dyn Fn(&AttrPath) -> bool) -> bool {
        self.eval(resource, None, case_exact)
    }

    fn eval(
        &self,
        resource: &Value,
        parent: Option<&AttrPath>,
        case_exact: &dyn Fn(&AttrPath) -> bool,
    ) -> bool {
        match self {
            Filter::And(l, r) => {
                l.eval(resource, parent, case_exact) && r.eval(resource, parent, case_exact)
            }
            Filter::Or(l, r) => {
                l.eval(resource, parent, case_exact) || r.eval(resource, parent, case_exact)
            }
            Filter::Not(inner) => !inner.eval(resource, parent, case_exact),
            Filter::Present(path) => lookup(resource, path).into_iter().any(is_present),
            Filter::Compare { path, op, value } => {
                let exact = match parent {
                    Some(parent) if path.urn.is_none() && path.sub.is_none() => {
                        case_exact(&AttrPath {
                            urn: parent.urn.clone(),
                            name: parent.name.clone(),
                            sub: Some(path.name.clone()),
                        })
                    }
                    _ => case_exact(path),
                };
                let mut leaves = Vec::new();
                for found in lookup(resource, path) {
                    collect_leaves(found, path.sub.is_some(), &mut leaves);
                }
                if leaves.is_empty() {
                    // Absent, null and empty attributes are all "no value": `eq null`
                    // matches, `ne "x"` matches, everything else fails.
                    leaves.push(&Value::Null);
                }
                leaves
                    .into_iter()
                    .any(|leaf| compare(leaf, *op, value, exact))
            }
            Filter::ValuePath { path, filter } => {
                let outer = AttrPath {
                    urn: path.urn.clone(),
                    name: path.name.clone(),
                    sub: None,
                };
                let matches_element = |element: &Value| match element {
                    Value::Object(_) => filter.eval(element, Some(path), case_exact),
                    Value::Null => false,
                    // Multi-valued simple attributes: let `value` address the element.
                    other => {
                        let mut wrapped = Map::new();
                        wrapped.insert("value".to_string(), other.clone());
                        filter.eval(&Value::Object(wrapped), Some(path), case_exact)
                    }
                };
                lookup(resource, &outer)
                    .into_iter()
                    .any(|found| match found {
                        Value::Array(items) => items.iter().any(matches_element),
                        other => matches_element(other),
                    })
            }
        }
    }
}

/// Case-insensitive object key lookup; tries the exact key first as the
/// common, cheap case.
fn get_ci<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    let obj = value.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Finds the JSON values a path addresses. URN-qualified paths look inside the
/// extension object named by the URN; core-schema URNs have no such object, so
/// they fall back to top-level lookup.
fn lookup<'v>(resource: &'v Value, path: &AttrPath) -> Vec<&'v Value> {
    let container = path
        .urn
        .as_deref()
        .and_then(|urn| get_ci(resource, urn))
        .filter(|v| v.is_object())
        .unwrap_or(resource);
    let Some(found) = get_ci(container, &path.name) else {
        return Vec::new();
    };
    match &path.sub {
        None => vec![found],
        Some(sub) => match found {
            Value::Array(items) => items.iter().filter_map(|e| get_ci(e, sub)).collect(),
            other => get_ci(other, sub).into_iter().collect(),
        },
    }
}

/// Flattens arrays into the scalar values a comparison looks at; complex
/// values compared without a sub-attribute use their `value` sub-attribute.
fn collect_leaves<'v>(value: &'v Value, has_sub: bool, out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Array(_) => {}
                    Value::Object(_) if !has_sub => out.extend(get_ci(item, "value")),
                    other => out.push(other),
                }
            }
        }
        Value::Object(_) if !has_sub => out.extend(get_ci(value, "value")),
        other => out.push(other),
    }
}

/// RFC 7644 `pr`: not null, not an empty string, not an empty array; a complex
/// value counts when some sub-attribute is present.
fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(is_present),
        Value::Object(map) => map.values().any(is_present),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

fn ordering_matches(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn compare(actual: &Value, op: CompareOp, expected: &CompValue, exact: bool) -> bool {
    match (actual, expected) {
        (_, CompValue::Null) => match op {
            CompareOp::Eq => actual.is_null(),
            CompareOp::Ne => !actual.is_null(),
            _ => false,
        },
        (Value::String(a), CompValue::String(b)) => compare_strings(a, op, b, exact),
        (Value::Number(a), CompValue::Number(b)) => match compare_numbers(a, b) {
            Some(ord) => ordering_matches(op, ord),
            None => op == CompareOp::Ne,
        },
        (Value::Bool(a), CompValue::Bool(b)) => match op {
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
            _ => false,
        },
        // Different types are never equal, and never ordered.
        _ => op == CompareOp::Ne,
    }
}

fn compare_strings(actual: &str, op: CompareOp, expected: &str, exact: bool) -> bool {
    let fold = |s: &str| -> String { s.to_lowercase() };
    let (a, b): (Cow<str>, Cow<str>) = if exact {
        (actual.into(), expected.into())
    } else {
        (fold(actual).into(), fold(expected).into())
    };
    match op {
        CompareOp::Co => a.contains(&*b),
        CompareOp::Sw => a.starts_with(&*b),
        CompareOp::Ew => a.ends_with(&*b),
        _ => {
            // Date-times in different offsets or precisions name the same instant.
            let ord = match (parse_rfc3339(actual), parse_rfc3339(expected)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => a.cmp(&b),
            };
            ordering_matches(op, ord)
        }
    }
}

fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    let exact = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (exact(a), exact(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Parses an RFC 3339 date-time (`2011-08-01T18:29:49.793Z`,
/// `2011-08-01T20:29:49+02:00`) into UTC seconds since the Unix epoch and
/// nanoseconds, so instants compare correctly regardless of offset.
fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        b.get(from..from + len)?.iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let hour = num(11, 2)?;
    let minute = num(14, 2)?;
    let second = num(17, 2)?;
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let from = i;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if i - from < 9 {
                nanos = nanos * 10 + u32::from(d - b'0');
            }
            i += 1;
        }
        let count = i - from;
        if count == 0 {
            return None;
        }
        for _ in count..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b":") => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    Some((secs, nanos))
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil` algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn path(s: &str) -> AttrPath {
        parse_attr_path(s).unwrap()
    }

    fn cmp(p: &str, op: CompareOp, value: CompValue) -> Filter {
        Filter::Compare {
            path: path(p),
            op,
            value,
        }
    }

    fn int(n: i64) -> CompValue {
        CompValue::Number(n.into())
    }

    fn s(v: &str) -> CompValue {
        CompValue::String(v.to_string())
    }

    fn and(l: Filter, r: Filter) -> Filter {
        Filter::And(Box::new(l), Box::new(r))
    }

    fn or(l: Filter, r: Filter) -> Filter {
        Filter::Or(Box::new(l), Box::new(r))
    }

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    /// (input, canonical Display of the parsed filter).
    const VALID_CANONICAL: &[(&str, &str)] = &[
        (r#"userName eq "bjensen""#, r#"userName eq "bjensen""#),
        (
            r#"userName eq "ada@example.com""#,
            r#"userName eq "ada@example.com""#,
        ),
        (r#"userName EQ "x""#, r#"userName eq "x""#),
        (r#"a Ne "x""#, r#"a ne "x""#),
        (r#"a co "x""#, r#"a co "x""#),
        (r#"a SW "x""#, r#"a sw "x""#),
        (r#"a ew "x""#, r#"a ew "x""#),
        ("a gt 1", "a gt 1"),
        ("a GE 1", "a ge 1"),
        ("a lt 1", "a lt 1"),
        ("a le 1", "a le 1"),
        ("title pr", "title pr"),
        ("title PR", "title pr"),
        ("a eq 1 or b eq 2 and c eq 3", "a eq 1 or b eq 2 and c eq 3"),
        ("a eq 1 and b eq 2 or c eq 3", "a eq 1 and b eq 2 or c eq 3"),
        (
            "(a eq 1 or b eq 2) and c eq 3",
            "(a eq 1 or b eq 2) and c eq 3",
        ),
        (
            "a eq 1 and (b eq 2 and c eq 3)",
            "a eq 1 and (b eq 2 and c eq 3)",
        ),
        (
            "(a eq 1 and b eq 2) and c eq 3",
            "a eq 1 and b eq 2 and c eq 3",
        ),
        ("a pr or (b pr or c pr)", "a pr or (b pr or c pr)"),
        ("a pr AND b pr Or NOT (c pr)", "a pr and b pr or not (c pr)"),
        ("not(a pr)", "not (a pr)"),
        ("Not ( a pr and b pr )", "not (a pr and b pr)"),
        ("  ( ( a pr ) )  ", "a pr"),
        ("(a pr)and(b pr)", "a pr and b pr"),
        ("not pr", "not pr"),
        (
            "notes pr and andrew eq 1 or orca pr",
            "notes pr and andrew eq 1 or orca pr",
        ),
        ("and eq 1 and or pr", "and eq 1 and or pr"),
        (r#"emails[type eq "work"]"#, r#"emails[type eq "work"]"#),
        (
            r#"emails[ type eq "work" AND value co "@example.com" ]"#,
            r#"emails[type eq "work" and value co "@example.com"]"#,
        ),
        (
            r#"emails[type eq "work" or not (primary eq true)] and userName pr"#,
            r#"emails[type eq "work" or not (primary eq true)] and userName pr"#,
        ),
        (
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "X""#,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "X""#,
        ),
        (
            "URN:ietf:params:scim:schemas:core:2.0:User:name.givenName pr",
            "URN:ietf:params:scim:schemas:core:2.0:User:name.givenName pr",
        ),
        (r#"title eq "caf\u00e9""#, r#"title eq "café""#),
        (r#"title eq "\ud83d\ude00 \u0041""#, r#"title eq "😀 A""#),
        (
            r#"a eq "q\"b\\s\/\b\f\n\r\t\u0001""#,
            r#"a eq "q\"b\\s/\b\f\n\r\t\u0001""#,
        ),
        (r#"a eq "日本語 ünïcode""#, r#"a eq "日本語 ünïcode""#),
        ("a eq 1", "a eq 1"),
        ("a eq -2", "a eq -2"),
        ("a eq 3.5", "a eq 3.5"),
        ("a eq 1e3", "a eq 1000.0"),
        ("a eq -0.25E+2", "a eq -25.0"),
        ("a eq 18446744073709551615", "a eq 18446744073709551615"),
        // Found by fuzzing: integers past u64 and long decimals became a float that printed
        // as text parsing to a neighbouring float (serde_json's fast float parsing).
        (
            "c eq 18409551646744073709551616",
            "c eq 1.8409551646744073e+25",
        ),
        ("c eq 1.8409551646744075e+25", "c eq 1.8409551646744075e+25"),
        (r#"a eq"x""#, r#"a eq "x""#),
        ("a eq true", "a eq true"),
        ("a eq False", "a eq false"),
        ("a ne NULL", "a ne null"),
        (r#"$ref eq "x""#, r#"$ref eq "x""#),
        ("members.$ref pr", "members.$ref pr"),
        ("name.givenName pr", "name.givenName pr"),
        ("x-y_1 pr", "x-y_1 pr"),
        (
            r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
        ),
        ("a\teq\t1\nand\r\nb pr", "a eq 1 and b pr"),
    ];

    #[test]
    fn valid_filters_print_canonically_and_round_trip() {
        for (input, canonical) in VALID_CANONICAL {
            let parsed = parse_filter(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.to_string(), *canonical, "input: {input}");
            assert_eq!(parse_filter(canonical).as_ref(), Ok(&parsed), "{canonical}");
        }
    }

    #[test]
    fn valid_filters_build_expected_trees() {
        let cases: Vec<(&str, Filter)> = vec![
            (
                "a eq 1 or b eq 2 and c eq 3",
                or(
                    cmp("a", CompareOp::Eq, int(1)),
                    and(
                        cmp("b", CompareOp::Eq, int(2)),
                        cmp("c", CompareOp::Eq, int(3)),
                    ),
                ),
            ),
            (
                "a pr and b pr and c pr",
                and(
                    and(Filter::Present(path("a")), Filter::Present(path("b"))),
                    Filter::Present(path("c")),
                ),
            ),
            (
                "a pr or b pr or c pr",
                or(
                    or(Filter::Present(path("a")), Filter::Present(path("b"))),
                    Filter::Present(path("c")),
                ),
            ),
            (
                "not (a pr) and b pr",
                and(
                    Filter::Not(Box::new(Filter::Present(path("a")))),
                    Filter::Present(path("b")),
                ),
            ),
            (
                r#"emails[type eq "work" and value co "@x.com"]"#,
                Filter::ValuePath {
                    path: path("emails"),
                    filter: Box::new(and(
                        cmp("type", CompareOp::Eq, s("work")),
                        cmp("value", CompareOp::Co, s("@x.com")),
                    )),
                },
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"7\"",
                Filter::Compare {
                    path: AttrPath {
                        urn: Some(ENTERPRISE.to_string()),
                        name: "manager".to_string(),
                        sub: Some("value".to_string()),
                    },
                    op: CompareOp::Eq,
                    value: s("7"),
                },
            ),
            (
                r#"title eq "caf\u00e9 \ud83d\ude00""#,
                cmp("title", CompareOp::Eq, s("café 😀")),
            ),
            (
                "a eq 3.5",
                cmp(
                    "a",
                    CompareOp::Eq,
                    CompValue::Number(Number::from_f64(3.5).unwrap()),
                ),
            ),
            (
                "a eq 1e3",
                cmp(
                    "a",
                    CompareOp::Eq,
                    CompValue::Number(Number::from_f64(1000.0).unwrap()),
                ),
            ),
            ("a eq -2", cmp("a", CompareOp::Eq, int(-2))),
            // Found by fuzzing: the nearest f64, as a correctly rounded parse gives.
            (
                "c eq 18409551646744073709551616",
                cmp(
                    "c",
                    CompareOp::Eq,
                    CompValue::Number(Number::from_f64(1.8409551646744073e25).unwrap()),
                ),
            ),
            ("a eq TRUE", cmp("a", CompareOp::Eq, CompValue::Bool(true))),
            ("a ne null", cmp("a", CompareOp::Ne, CompValue::Null)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_filter(input), Ok(expected), "input: {input}");
        }
    }

    /// (input, offset, message substring).
    const INVALID: &[(&str, usize, &str)] = &[
        (r#"userName xx "a""#, 9, r#"unknown operator "xx""#),
        (r#"userName == "a""#, 9, r#"unknown operator "==""#),
        (r#"userName eqx "a""#, 9, r#"unknown operator "eqx""#),
        (r#"userName=="a""#, 8, "expected whitespace and an operator"),
        ("userName", 8, "expected operator"),
        (r#"userName eq "abc"#, 12, "unterminated string"),
        (r#"userName eq "abc\"#, 12, "unterminated string"),
        ("userName eq", 11, "expected value"),
        ("userName eq )", 12, "expected value"),
        ("a eq tru", 5, "expected value"),
        ("a eq trueish", 5, "expected value"),
        ("a eq-1", 2, r#"unknown operator "eq-1""#),
        (
            r#"userName eq "a" garbage"#,
            16,
            "unexpected trailing input",
        ),
        ("a pr b pr", 5, "unexpected trailing input"),
        ("a eq 1and b pr", 5, "invalid number"),
        ("(userName pr", 12, r#"expected ")""#),
        ("userName pr)", 11, "unexpected trailing input"),
        ("((a pr) or b pr", 15, r#"expected ")""#),
        ("", 0, "empty filter"),
        ("   ", 3, "empty filter"),
        ("()", 1, "expected attribute name"),
        ("a pr and", 8, "expected filter expression"),
        ("a pr or ", 8, "expected filter expression"),
        ("not userName pr", 4, r#"expected "(" after "not""#),
        ("not", 3, r#"expected "(" after "not""#),
        ("emails[type[value pr]]", 11, "nested value path"),
        (r#"emails[type eq "work""#, 21, r#"expected "]""#),
        (r#"emails[type eq "work")"#, 21, r#"expected "]""#),
        ("emails[]", 7, "expected attribute name"),
        (
            "name.givenName[value pr]",
            14,
            "must not have a sub-attribute",
        ),
        ("1abc eq 1", 0, "invalid attribute name"),
        ("_a eq 1", 0, "invalid attribute name"),
        ("$foo eq 1", 0, "invalid attribute name"),
        ("a.1b eq 1", 2, "invalid attribute name"),
        ("a.b.c eq 1", 3, "invalid character '.'"),
        ("a. eq 1", 2, "expected attribute name"),
        ("foo:bar eq 1", 3, "unexpected \":\""),
        ("urn:foo eq 1", 0, "invalid URN"),
        ("urn:a::b eq 1", 0, "invalid URN"),
        ("urn:a:b: eq 1", 8, "expected attribute name"),
        ("é eq 1", 0, "expected attribute name"),
        ("ab€ eq 1", 2, "expected whitespace and an operator"),
        ("a eq 01", 5, "invalid number"),
        ("a eq 1.", 5, "invalid number"),
        ("a eq 1e", 5, "invalid number"),
        ("a eq .5", 5, "expected value"),
        ("a eq 1e400", 5, "out of range"),
        (r#"a eq "\x""#, 6, "invalid escape"),
        (r#"a eq "\u12""#, 6, "4 hex digits"),
        (r#"a eq "\ud83d""#, 6, "unpaired"),
        (r#"a eq "\ud83d\u0041""#, 6, "unpaired"),
        (r#"a eq "\ude00""#, 6, "unpaired"),
        (r#"a eq "\é""#, 6, "invalid escape"),
    ];

    #[test]
    fn invalid_filters_report_offset_and_reason() {
        for (input, offset, needle) in INVALID {
            let e = parse_filter(input).expect_err(input);
            assert_eq!(e.offset, *offset, "input {input:?}: {e}");
            assert!(e.message.contains(needle), "input {input:?}: {e}");
        }
    }

    #[test]
    fn limits_on_length_and_depth() {
        let too_long = format!("a eq \"{}\"", "x".repeat(MAX_FILTER_LEN));
        let e = parse_filter(&too_long).unwrap_err();
        assert_eq!(e.offset, MAX_FILTER_LEN);
        assert!(e.message.contains("longer than 4096 bytes"), "{e}");
        assert!(parse_attr_ref(&too_long).is_err());
        assert!(parse_attr_path(&too_long).is_err());

        let cases: Vec<(String, Result<(), usize>)> = vec![
            (format!("{}a pr{}", "(".repeat(40), ")".repeat(40)), Err(32)),
            (format!("{}a pr{}", "(".repeat(32), ")".repeat(32)), Ok(())),
            (format!("{}a pr{}", "(".repeat(33), ")".repeat(33)), Err(32)),
            (
                format!("{}a pr{}", "not (".repeat(40), ")".repeat(40)),
                Err(160),
            ),
            (
                format!("{}e[a pr]{}", "(".repeat(31), ")".repeat(31)),
                Ok(()),
            ),
            (
                format!("{}e[a pr]{}", "(".repeat(32), ")".repeat(32)),
                Err(33),
            ),
        ];
        for (input, expected) in cases {
            match (parse_filter(&input), expected) {
                (Ok(_), Ok(())) => {}
                (Err(e), Err(offset)) => {
                    assert_eq!(e.offset, offset, "{input}");
                    assert!(e.message.contains("filter nesting too deep"), "{e}");
                }
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn longest_and_chains_survive_display_eval_and_drop() {
        for joiner in [" and ", " or "] {
            let mut input = String::from("a pr");
            while input.len() + joiner.len() + 4 <= MAX_FILTER_LEN {
                input.push_str(joiner);
                input.push_str("a pr");
            }
            let filter = parse_filter(&input).unwrap();
            let printed = filter.to_string();
            assert_eq!(printed, input);
            assert_eq!(parse_filter(&printed).as_ref(), Ok(&filter));
            assert!(filter.matches(&json!({"a": 1}), &|_| false));
            assert!(!filter.matches(&json!({}), &|_| false));
            let negated = Filter::Not(Box::new(filter.clone()));
            assert!(negated.matches(&json!({}), &|_| false));
            drop(negated);
            drop(filter);
        }
    }

    #[test]
    fn attr_refs_parse_and_print() {
        let cases: Vec<(&str, AttrRef, &str)> = vec![
            (
                "name.givenName",
                AttrRef {
                    attr: path("name.givenName"),
                    filter: None,
                    sub: None,
                },
                "name.givenName",
            ),
            (
                r#"members[value eq "123"]"#,
                AttrRef {
                    attr: path("members"),
                    filter: Some(cmp("value", CompareOp::Eq, s("123"))),
                    sub: None,
                },
                r#"members[value eq "123"]"#,
            ),
            (
                r#"emails[type EQ "work"].value"#,
                AttrRef {
                    attr: path("emails"),
                    filter: Some(cmp("type", CompareOp::Eq, s("work"))),
                    sub: Some("value".to_string()),
                },
                r#"emails[type eq "work"].value"#,
            ),
            (
                r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"#,
                AttrRef {
                    attr: AttrPath {
                        urn: Some(ENTERPRISE.to_string()),
                        name: "manager".to_string(),
                        sub: None,
                    },
                    filter: None,
                    sub: None,
                },
                r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"#,
            ),
            (
                r#"addresses[type eq "work" and primary eq true].streetAddress"#,
                AttrRef {
                    attr: path("addresses"),
                    filter: Some(and(
                        cmp("type", CompareOp::Eq, s("work")),
                        cmp("primary", CompareOp::Eq, CompValue::Bool(true)),
                    )),
                    sub: Some("streetAddress".to_string()),
                },
                r#"addresses[type eq "work" and primary eq true].streetAddress"#,
            ),
        ];
        for (input, expected, canonical) in cases {
            let parsed = parse_attr_ref(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed, expected, "{input}");
            assert_eq!(parsed.to_string(), canonical);
        }

        let invalid: &[(&str, usize, &str)] = &[
            ("", 0, "empty attribute path"),
            ("emails[", 7, "expected filter expression"),
            (
                r#"emails[type eq "work"].value.x"#,
                28,
                "invalid character '.'",
            ),
            (r#"emails[type eq "work"].1"#, 23, "invalid attribute name"),
            (
                r#"emails[type eq "work"]x"#,
                22,
                "unexpected trailing input",
            ),
            (r#"emails[type[value pr]]"#, 11, "nested value path"),
            ("a b", 2, "unexpected trailing input"),
            ("name.givenName[a pr]", 14, "must not have a sub-attribute"),
        ];
        for (input, offset, needle) in invalid {
            let e = parse_attr_ref(input).expect_err(input);
            assert_eq!(e.offset, *offset, "{input}: {e}");
            assert!(e.message.contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn attr_paths_parse_and_compare() {
        // (input, urn, name, sub, dotted)
        type Case = (
            &'static str,
            Option<&'static str>,
            &'static str,
            Option<&'static str>,
            &'static str,
        );
        let cases: &[Case] = &[
            ("userName", None, "userName", None, "userName"),
            (
                " name.givenName ",
                None,
                "name",
                Some("givenName"),
                "name.givenName",
            ),
            ("$ref", None, "$ref", None, "$ref"),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                Some(ENTERPRISE),
                "department",
                None,
                "department",
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                Some(ENTERPRISE),
                "manager",
                Some("value"),
                "manager.value",
            ),
            (
                "urn:x:y:name.familyName",
                Some("urn:x:y"),
                "name",
                Some("familyName"),
                "name.familyName",
            ),
        ];
        for (input, urn, name, sub, dotted) in cases {
            let p = parse_attr_path(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(p.urn.as_deref(), *urn, "{input}");
            assert_eq!(p.name, *name, "{input}");
            assert_eq!(p.sub.as_deref(), *sub, "{input}");
            assert_eq!(p.dotted(), *dotted);
            assert_eq!(parse_attr_path(&p.to_string()), Ok(p.clone()));
        }
        let e = parse_attr_path(r#"emails[type eq "x"]"#).unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(parse_attr_path("").is_err());

        let same = [
            ("userName", "USERNAME", true),
            ("name.givenName", "Name.GIVENNAME", true),
            ("name.givenName", "name", false),
            ("urn:a:B:x", "URN:A:b:X", true),
            ("urn:a:B:x", "x", false),
            ("a.b", "a.c", false),
        ];
        for (a, b, expected) in same {
            assert_eq!(path(a).eq_ignore_case(&path(b)), expected, "{a} vs {b}");
        }
    }

    fn user() -> Value {
        json!({
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:User",
                ENTERPRISE
            ],
            "id": "2819c223",
            "externalId": "ABC",
            "userName": "Bjensen@Example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "active": true,
            "age": 42,
            "score": 3.5,
            "big": 18446744073709551615u64,
            "title": "",
            "nickName": null,
            "emails": [
                {"type": "work", "value": "bjensen@example.com", "primary": true},
                {"type": "home", "value": "babs@jensen.org"}
            ],
            "roles": [],
            "tags": ["Red", "blue"],
            "meta": {
                "created": "2011-08-01T18:29:49.793Z",
                "lastModified": "2011-08-01T20:29:49+02:00"
            },
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": "Tour Operations",
                "manager": {"value": "26118915", "displayName": "John Smith"}
            }
        })
    }

    /// (filter, dotted attribute paths that are caseExact, expected match).
    const EVAL: &[(&str, &[&str], bool)] = &[
        // case sensitivity
        (r#"userName eq "bjensen@example.com""#, &[], true),
        (r#"userName eq "bjensen@example.com""#, &["userName"], false),
        (r#"USERNAME sw "BJENSEN""#, &[], true),
        (r#"externalId eq "abc""#, &["externalId"], false),
        (r#"externalId eq "ABC""#, &["externalId"], true),
        (r#"externalId co "b""#, &[], true),
        (r#"userName ew ".COM""#, &[], true),
        (r#"userName gt "a""#, &[], true),
        (r#"userName gt "BZ""#, &[], false),
        (r#"userName gt "BZ""#, &["userName"], true),
        // multi-valued
        (r#"emails.value ew "jensen.org""#, &[], true),
        (r#"emails co "example.com""#, &[], true),
        (r#"emails eq "babs@jensen.org""#, &[], true),
        (r#"emails.type eq "home""#, &[], true),
        (r#"emails.type ne "work""#, &[], true),
        (r#"emails.type eq "other""#, &[], false),
        (r#"tags eq "red""#, &[], true),
        (r#"tags eq "red""#, &["tags"], false),
        // value paths
        (
            r#"emails[type eq "work" and value co "@example.com"]"#,
            &[],
            true,
        ),
        (r#"emails[type eq "home" and primary eq true]"#, &[], false),
        (
            r#"emails[type eq "work"] and name.givenName eq "barbara""#,
            &[],
            true,
        ),
        (r#"emails[value eq "BJENSEN@example.com"]"#, &[], true),
        (
            r#"emails[value eq "BJENSEN@example.com"]"#,
            &["emails.value"],
            false,
        ),
        (r#"emails[not (type eq "work")]"#, &[], true),
        (r#"name[givenName eq "Barbara"]"#, &[], true),
        (r#"tags[value eq "BLUE"]"#, &[], true),
        (r#"members[value eq "1"]"#, &[], false),
        (r#"userName[value pr]"#, &[], true),
        // presence
        ("title pr", &[], false),
        ("nickName pr", &[], false),
        ("roles pr", &[], false),
        ("missing pr", &[], false),
        ("name pr", &[], true),
        ("name.givenName pr", &[], true),
        ("emails.primary pr", &[], true),
        ("emails pr", &[], true),
        // null and missing attributes
        ("missing eq null", &[], true),
        ("nickName eq null", &[], true),
        ("roles eq null", &[], true),
        ("userName eq null", &[], false),
        ("userName ne null", &[], true),
        ("missing ne null", &[], false),
        (r#"missing ne "x""#, &[], true),
        (r#"missing eq "x""#, &[], false),
        ("missing gt 1", &[], false),
        (r#"name.middleName co "x""#, &[], false),
        // numbers
        ("age gt 41", &[], true),
        ("age ge 42", &[], true),
        ("age lt 42", &[], false),
        ("age le 42.0", &[], true),
        ("age eq 42.0", &[], true),
        ("age ne 42", &[], false),
        ("score gt 3", &[], true),
        ("score lt 3.25", &[], false),
        ("big gt 9223372036854775807", &[], true),
        ("big eq 18446744073709551615", &[], true),
        ("age gt -1", &[], true),
        (r#"age eq "42""#, &[], false),
        (r#"age ne "42""#, &[], true),
        ("age co 4", &[], false),
        // booleans
        ("active eq true", &[], true),
        ("active ne false", &[], true),
        ("active eq false", &[], false),
        ("active gt false", &[], false),
        // date-times compare as instants
        (r#"meta.created gt "2011-08-01T18:00:00Z""#, &[], true),
        (r#"meta.created lt "2011-08-01T18:29:49.794Z""#, &[], true),
        (
            r#"meta.created ge "2011-08-01T20:29:49.793+02:00""#,
            &[],
            true,
        ),
        (
            r#"meta.created gt "2011-08-01T20:29:49.793+02:00""#,
            &[],
            false,
        ),
        (r#"meta.lastModified lt "2011-08-01T18:29:50Z""#, &[], true),
        (r#"meta.lastModified eq "2011-08-01T18:29:49Z""#, &[], true),
        (r#"meta.lastModified gt "2011-08-01T19:00:00Z""#, &[], false),
        (r#"meta.created sw "2011-08""#, &[], true),
        // URN lookup
        (
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "tour operations""#,
            &[],
            true,
        ),
        (
            r#"URN:IETF:params:scim:schemas:extension:enterprise:2.0:user:manager.value eq "26118915""#,
            &[],
            true,
        ),
        (
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager[displayName sw "john"]"#,
            &[],
            true,
        ),
        (
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bj""#,
            &[],
            true,
        ),
        (r#"department eq "Tour Operations""#, &[], false),
        // logic
        (r#"not (userName eq "x")"#, &[], true),
        (r#"userName eq "x" or active eq true"#, &[], true),
        (
            r#"userName eq "x" or active eq true and age lt 10"#,
            &[],
            false,
        ),
        (
            r#"(userName eq "x" or active eq true) and not (age lt 10)"#,
            &[],
            true,
        ),
    ];

    #[test]
    fn evaluator_table() {
        let resource = user();
        for (input, exact, expected) in EVAL {
            let filter = parse_filter(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            let case_exact =
                |p: &AttrPath| exact.iter().any(|e| e.eq_ignore_ascii_case(&p.dotted()));
            assert_eq!(filter.matches(&resource, &case_exact), *expected, "{input}");
        }
    }

    #[test]
    fn evaluator_on_non_object_resources_does_not_match() {
        for resource in [json!(null), json!(1), json!("x"), json!([1, 2]), json!([])] {
            for input in ["a pr", "a eq 1", "a[b pr]"] {
                let filter = parse_filter(input).unwrap();
                assert!(
                    !filter.matches(&resource, &|_| false),
                    "{input} on {resource}"
                );
            }
        }
    }

    #[test]
    fn rfc3339_parsing() {
        let cases: &[(&str, Option<(i64, u32)>)] = &[
            ("1970-01-01T00:00:00Z", Some((0, 0))),
            ("1970-01-01t00:00:00z", Some((0, 0))),
            ("1970-01-01 00:00:01Z", Some((1, 0))),
            ("1969-12-31T23:59:59.5Z", Some((-1, 500_000_000))),
            ("2000-02-29T00:00:00Z", Some((951_782_400, 0))),
            ("2020-01-01T00:00:00+01:00", Some((1_577_833_200, 0))),
            ("2020-01-01T00:00:00-00:30", Some((1_577_838_600, 0))),
            (
                "2011-08-01T18:29:49.123456789123Z",
                Some((1_312_223_389, 123_456_789)),
            ),
            ("2016-12-31T23:59:60Z", Some((1_483_228_800, 0))),
            ("2001-02-29T00:00:00Z", None),
            ("2020-13-01T00:00:00Z", None),
            ("2020-01-01T24:00:00Z", None),
            ("2020-01-01T00:00:00", None),
            ("2020-01-01T00:00:00.Z", None),
            ("2020-01-01T00:00:00+0100", None),
            ("2020-01-01T00:00:00+24:00", None),
            ("2020-01-01", None),
            ("2020-01-01T00:00:00Zjunk", None),
            ("2020-01-0éT00:00:00Z", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_rfc3339(input), *expected, "{input}");
        }
    }

    // ---------------------------------------------------------------- proptest

    fn arb_path(with_sub: bool) -> impl Strategy<Value = AttrPath> {
        let urn = prop_oneof![
            4 => Just(None),
            1 => Just(Some("urn:ietf:params:scim:schemas:core:2.0:User".to_string())),
            1 => Just(Some(ENTERPRISE.to_string())),
            1 => Just(Some("URN:x:Y".to_string())),
        ];
        let name = prop::sample::select(vec![
            "userName", "emails", "a", "$ref", "x-y_9", "not", "NOT", "and", "or", "eq", "pr",
            "true", "null", "urn", "Z",
        ]);
        let sub = if with_sub {
            prop::option::of(prop::sample::select(vec![
                "value",
                "givenName",
                "$ref",
                "or",
            ]))
            .boxed()
        } else {
            Just(None).boxed()
        };
        (urn, name, sub).prop_map(|(urn, name, sub)| AttrPath {
            urn,
            name: name.to_string(),
            sub: sub.map(str::to_string),
        })
    }

    fn arb_string() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            3 => any::<char>(),
            1 => prop::sample::select(vec!['"', '\\', '/', '\n', '\t', '\u{0}', '\u{1f}', 'é', '😀', ' ']),
        ];
        prop::collection::vec(ch, 0..8).prop_map(String::from_iter)
    }

    fn arb_value() -> impl Strategy<Value = CompValue> {
        prop_oneof![
            Just(CompValue::Null),
            any::<bool>().prop_map(CompValue::Bool),
            any::<i64>().prop_map(|n| CompValue::Number(n.into())),
            any::<u64>().prop_map(|n| CompValue::Number(n.into())),
            (-1_000_000i64..1_000_000, 0i32..4).prop_map(|(m, e)| {
                // Short decimals print and re-parse to the identical f64.
                let x = m as f64 / 10f64.powi(e);
                CompValue::Number(Number::from_f64(x).expect("finite"))
            }),
            arb_string().prop_map(CompValue::String),
        ]
    }

    fn arb_op() -> impl Strategy<Value = CompareOp> {
        prop::sample::select(vec![
            CompareOp::Eq,
            CompareOp::Ne,
            CompareOp::Co,
            CompareOp::Sw,
            CompareOp::Ew,
            CompareOp::Gt,
            CompareOp::Ge,
            CompareOp::Lt,
            CompareOp::Le,
        ])
    }

    fn arb_leaf() -> impl Strategy<Value = Filter> {
        prop_oneof![
            3 => (arb_path(true), arb_op(), arb_value())
                .prop_map(|(path, op, value)| Filter::Compare { path, op, value }),
            1 => arb_path(true).prop_map(Filter::Present),
        ]
    }

    fn combine(leaf: BoxedStrategy<Filter>) -> BoxedStrategy<Filter> {
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(l, r)| and(l, r)),
                (inner.clone(), inner.clone()).prop_map(|(l, r)| or(l, r)),
                inner.prop_map(|f| Filter::Not(Box::new(f))),
            ]
        })
        .boxed()
    }

    /// Filters valid inside brackets: no nested value paths.
    fn arb_inner_filter() -> BoxedStrategy<Filter> {
        combine(arb_leaf().boxed())
    }

    fn arb_filter() -> BoxedStrategy<Filter> {
        let value_path =
            (arb_path(false), arb_inner_filter()).prop_map(|(path, f)| Filter::ValuePath {
                path,
                filter: Box::new(f),
            });
        combine(prop_oneof![3 => arb_leaf(), 1 => value_path].boxed())
    }

    fn arb_attr_ref() -> impl Strategy<Value = AttrRef> {
        prop_oneof![
            arb_path(true).prop_map(|attr| AttrRef {
                attr,
                filter: None,
                sub: None
            }),
            (
                arb_path(false),
                arb_inner_filter(),
                prop::option::of(prop::sample::select(vec!["value", "display", "$ref"]))
            )
                .prop_map(|(attr, f, sub)| AttrRef {
                    attr,
                    filter: Some(f),
                    sub: sub.map(str::to_string),
                }),
        ]
    }

    /// Token soup that reaches deep parser states far more often than random text.
    fn arb_token_soup() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "(", ")", "[", "]", " ", "not", "and", "or", "eq", "pr", "gt", "\"", "\\", "\\u",
            "d83d", "\\ude00", "urn:", "a", ".", ":", "1", "-", "e", "true", "null", "é", "😀",
            "emails", "$ref",
        ]);
        prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn filter_display_round_trips(f in arb_filter()) {
            let printed = f.to_string();
            prop_assert_eq!(parse_filter(&printed), Ok(f), "printed: {}", printed);
        }

        #[test]
        fn attr_ref_display_round_trips(r in arb_attr_ref()) {
            let printed = r.to_string();
            prop_assert_eq!(parse_attr_ref(&printed), Ok(r), "printed: {}", printed);
        }

        #[test]
        fn parsers_never_panic(input in ".{0,200}") {
            let _ = parse_filter(&input);
            let _ = parse_attr_ref(&input);
            let _ = parse_attr_path(&input);
            let _ = parse_rfc3339(&input);
        }

        #[test]
        fn parsers_never_panic_on_token_soup(input in arb_token_soup()) {
            if let Ok(f) = parse_filter(&input) {
                // Whatever parses must print to something that parses identically.
                prop_assert_eq!(parse_filter(&f.to_string()), Ok(f.clone()));
                let _ = f.matches(&user(), &|_| false);
            }
            let _ = parse_attr_ref(&input);
            if let Some(e) = parse_filter(&input).err() {
                prop_assert!(e.offset <= input.len());
            }
        }
    }
}
