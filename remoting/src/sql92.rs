//! RocketMQ's SQL92 message filter (`expressionType=SQL92`): a parser and an evaluator
//! that give the answers RocketMQ 4.9.8's `SelectorParser` and `filter/expression/`
//! classes give, on message properties (`TAGS` is the tag's property).
//!
//! # Grammar (RocketMQ 4.9.8's `SelectorParser.jj`)
//!
//! `OR` < `AND` < `=`, `<>`, `IS [NOT] NULL` < `>`, `>=`, `<`, `<=`, `[NOT] BETWEEN x AND y`,
//! `[NOT] IN ('a', ...)` < unary `+`, `-`, `NOT` < literals, properties, `( ... )`.
//! Keywords are case-insensitive; literals are strings (`'it''s'`), decimals (an `int` when
//! it fits, else a `long`, optional `L` suffix), floats (`double`), `TRUE`, `FALSE`,
//! `NULL`; properties are `[a-zA-Z_$][a-zA-Z0-9_$]*`. `--` line and `/* */` block comments
//! are skipped. RocketMQ 5's `[NOT] CONTAINS 'x'`, `[NOT] STARTSWITH 'x'` and
//! `[NOT] ENDSWITH 'x'` are accepted too (so, as in RocketMQ 5, those three words are
//! keywords, not property names).
//!
//! # Semantics (RocketMQ's, quirks included)
//!
//! - Properties are strings. Compared with a number literal, the property is parsed as
//!   that literal's type (`Integer.valueOf`, `Long.valueOf`, `Double.valueOf`); compared
//!   with `TRUE`/`FALSE`, as `Boolean.valueOf`. `>`, `>=`, `<`, `<=` between two strings
//!   parse both as doubles. A value that does not parse makes the whole evaluation fail,
//!   and a failed evaluation does not match (even under an `OR` that would be true).
//! - A missing property is `NULL`; a comparison with `NULL` is `NULL` (unknown), `AND`,
//!   `OR` and `NOT` are three-valued, and a message matches only when the result is TRUE.
//!   `a = b` with both missing is TRUE (as in RocketMQ); `IN` and `NOT IN` of a missing
//!   property are `NULL`; `CONTAINS` and the like of a missing property are FALSE.
//! - Checked at parse time, as RocketMQ does: `>`-style operands must be numbers or
//!   properties; `= NULL` is refused (use `IS NULL`); `IN` needs a property on its left;
//!   `BETWEEN` of two literals needs low <= high; float literals must be at least
//!   `Double.MIN_VALUE` (so `0.0` is refused, as in RocketMQ 4.9.8).
//! - Parsing stops at the first token that cannot continue the expression and ignores the
//!   rest, as RocketMQ's generated parser does (`a = 1 b` is `a = 1`).
//!
//! # Limits
//!
//! An expression is at most [`MAX_EXPRESSION_BYTES`] long and nests at most
//! [`MAX_DEPTH`] deep (parentheses, unary operators and chained comparisons; `AND` and
//! `OR` chains are flat), so a hostile expression cannot exhaust the stack while it is
//! parsed, evaluated or dropped.

use std::cmp::Ordering;
use std::fmt;

/// The longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 16 * 1024;
/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// RocketMQ's expression type for SQL92 filters.
pub const EXPRESSION_TYPE_SQL92: &str = "SQL92";

/// Why an expression does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Invalid MessageSelector. {}", self.message)
    }
}

impl std::error::Error for ParseError {}

/// Why an evaluation failed (RocketMQ throws; the message does not match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    pub message: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A value during evaluation: Java's `null`, `Boolean`, `Integer`, `Long`, `Double`,
/// `String`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(&'a str),
}

/// Where property values come from.
pub trait Properties {
    fn get(&self, name: &str) -> Option<&str>;
}

/// A stored record's properties string (`name\u{1}value\u{2}...`).
pub struct PropertiesString<'a>(pub &'a str);

impl Properties for PropertiesString<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        crate::message::property_value(self.0, name)
    }
}

impl<S: std::borrow::Borrow<str> + Ord> Properties for std::collections::BTreeMap<S, S> {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| (*k).borrow() == name)
            .map(|(_, v)| v.borrow())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrOp {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Const(Literal),
    Property(String),
    Negate(Box<Expr>),
    Not(Box<Expr>),
    BoolCast(Box<Expr>),
    /// Left to right, as RocketMQ's left-nested binary `AND`s evaluate.
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Equal(Box<Expr>, Box<Expr>),
    Compare(Cmp, Box<Expr>, Box<Expr>),
    In {
        property: String,
        list: Vec<String>,
        not: bool,
    },
    Str {
        op: StrOp,
        operand: Box<Expr>,
        search: String,
        not: bool,
    },
}

impl Expr {
    /// RocketMQ's `instanceof BooleanExpression`.
    fn is_boolean(&self) -> bool {
        match self {
            Expr::Const(l) => matches!(l, Literal::Null | Literal::Bool(_)),
            Expr::Property(_) | Expr::Negate(_) => false,
            _ => true,
        }
    }
}

/// A compiled SQL92 expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Sql92Filter {
    expression: String,
    root: Expr,
    ignored_tail: Option<String>,
}

impl Sql92Filter {
    /// Compiles `expression` as RocketMQ's `SqlFilter.compile` does.
    pub fn parse(expression: &str) -> Result<Sql92Filter, ParseError> {
        if expression.len() > MAX_EXPRESSION_BYTES {
            return Err(perr(format!(
                "the expression is {} bytes long; at most {MAX_EXPRESSION_BYTES} are accepted",
                expression.len()
            )));
        }
        let tokens = lex(expression);
        let mut parser = Parser {
            tokens,
            at: 0,
            nesting: 0,
        };
        let (expr, _) = parser.or_expression()?;
        let root = as_boolean(expr)?;
        let ignored_tail = match parser.peek()? {
            Tok::Eof => None,
            t => Some(format!("{t:?} at token {}", parser.at + 1)),
        };
        Ok(Sql92Filter {
            expression: expression.to_string(),
            root,
            ignored_tail,
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Where parsing stopped before the end of the text (RocketMQ ignores the rest too:
    /// `a LIKE 'x'` compiles as `a`), for a warning; `None` when all of it was read.
    pub fn ignored_tail(&self) -> Option<&str> {
        self.ignored_tail.as_deref()
    }

    /// The result of the expression on a message's properties: TRUE, FALSE or NULL
    /// (`Value::Null`), or the error RocketMQ would throw.
    pub fn evaluate<'a>(&'a self, properties: &'a dyn Properties) -> Result<Value<'a>, EvalError> {
        eval(&self.root, properties)
    }

    /// True only when the expression is TRUE for these properties (RocketMQ's
    /// `ExpressionMessageFilter.isMatchedByCommitLog`): NULL, FALSE and a failed
    /// evaluation do not match.
    pub fn matches(&self, properties: &dyn Properties) -> bool {
        matches!(self.evaluate(properties), Ok(Value::Bool(true)))
    }
}

fn perr(message: impl Into<String>) -> ParseError {
    ParseError {
        message: message.into(),
    }
}

fn eerr(message: impl Into<String>) -> EvalError {
    EvalError {
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Not,
    And,
    Or,
    Between,
    In,
    True,
    False,
    Null,
    Is,
    Contains,
    StartsWith,
    EndsWith,
    Decimal(String),
    Float(String),
    Str(String),
    Id(String),
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    LParen,
    Comma,
    RParen,
    Plus,
    Minus,
    Eof,
    /// A lexical error here; reported only if the parser looks this far, as JavaCC's
    /// lazy token manager reports it.
    Bad(String),
}

fn keyword(word: &str) -> Option<Tok> {
    Some(match word.to_ascii_uppercase().as_str() {
        "NOT" => Tok::Not,
        "AND" => Tok::And,
        "OR" => Tok::Or,
        "BETWEEN" => Tok::Between,
        "IN" => Tok::In,
        "TRUE" => Tok::True,
        "FALSE" => Tok::False,
        "NULL" => Tok::Null,
        "IS" => Tok::Is,
        "CONTAINS" => Tok::Contains,
        "STARTSWITH" => Tok::StartsWith,
        "ENDSWITH" => Tok::EndsWith,
        _ => return None,
    })
}

/// Splits the expression into tokens, ending with `Eof` or at the first lexical error
/// (`Bad`).
fn lex(s: &str) -> Vec<Tok> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        // Whitespace and comments.
        loop {
            match b.get(i) {
                Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0c) => i += 1,
                // A `--` comment ends with a new line; without one, JavaCC's longest
                // match makes the first `-` a minus sign instead.
                Some(b'-') if b.get(i + 1) == Some(&b'-') => {
                    match b[i..].iter().position(|c| *c == b'\n' || *c == b'\r') {
                        Some(p) => i += p + 1,
                        None => break,
                    }
                }
                Some(b'/') if b.get(i + 1) == Some(&b'*') => match s[i + 2..].find("*/") {
                    Some(p) => i += p + 4,
                    None => {
                        out.push(Tok::Bad("unterminated /* comment".into()));
                        return out;
                    }
                },
                _ => break,
            }
        }
        let Some(&c) = b.get(i) else {
            out.push(Tok::Eof);
            return out;
        };
        let (tok, len) = match c {
            b'\'' => match lex_string(&s[i..]) {
                Some((v, len)) => (Tok::Str(v), len),
                None => (Tok::Bad("unterminated string literal".into()), 0),
            },
            b'0'..=b'9' | b'.' => lex_number(&b[i..]),
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'$' => {
                let len = b[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$'))
                    .unwrap_or(b.len() - i);
                let word = &s[i..i + len];
                (
                    keyword(word).unwrap_or_else(|| Tok::Id(word.to_string())),
                    len,
                )
            }
            b'=' => (Tok::Eq, 1),
            b'<' if b.get(i + 1) == Some(&b'>') => (Tok::Ne, 2),
            b'<' if b.get(i + 1) == Some(&b'=') => (Tok::Le, 2),
            b'<' => (Tok::Lt, 1),
            b'>' if b.get(i + 1) == Some(&b'=') => (Tok::Ge, 2),
            b'>' => (Tok::Gt, 1),
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b',' => (Tok::Comma, 1),
            b'+' => (Tok::Plus, 1),
            b'-' => (Tok::Minus, 1),
            _ => (Tok::Bad(format!("unexpected character at byte {i}")), 0),
        };
        if len == 0 {
            if let Tok::Bad(_) = tok {
                out.push(tok);
            } else {
                out.push(Tok::Bad(format!("unexpected character at byte {i}")));
            }
            return out;
        }
        out.push(tok);
        i += len;
    }
}

/// `'...'` with `''` for a quote; returns the value and the length in bytes.
fn lex_string(s: &str) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut chars = s.char_indices().skip(1).peekable();
    while let Some((at, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().map(|(_, c)| *c) == Some('\'') {
                chars.next();
                value.push('\'');
            } else {
                return Some((value, at + 1));
            }
        } else {
            value.push(c);
        }
    }
    None
}

/// The longest of DECIMAL_LITERAL (`0 | [1-9][0-9]*[lL]?`) and FLOATING_POINT_LITERAL.
fn lex_number(b: &[u8]) -> (Tok, usize) {
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let exponent = |from: usize| -> usize {
        if !matches!(b.get(from), Some(b'e' | b'E')) {
            return 0;
        }
        let sign = usize::from(matches!(b.get(from + 1), Some(b'+' | b'-')));
        let n = digits(from + 1 + sign);
        if n == 0 {
            0
        } else {
            1 + sign + n
        }
    };
    let text = |len: usize| String::from_utf8_lossy(&b[..len]).into_owned();
    let int_len = digits(0);
    // Floating point candidates.
    let mut float_len = 0;
    if int_len > 0 && b.get(int_len) == Some(&b'.') {
        let frac = digits(int_len + 1);
        float_len = int_len + 1 + frac + exponent(int_len + 1 + frac);
    } else if int_len == 0 && b.first() == Some(&b'.') {
        let frac = digits(1);
        if frac > 0 {
            float_len = 1 + frac + exponent(1 + frac);
        }
    } else if int_len > 0 {
        let e = exponent(int_len);
        if e > 0 {
            float_len = int_len + e;
        }
    }
    // Decimal candidate.
    let mut dec_len = 0;
    if int_len > 0 {
        if b[0] == b'0' {
            dec_len = 1;
        } else {
            dec_len = int_len;
            if matches!(b.get(int_len), Some(b'l' | b'L')) {
                dec_len += 1;
            }
        }
    }
    if float_len > dec_len {
        (Tok::Float(text(float_len)), float_len)
    } else if dec_len > 0 {
        (Tok::Decimal(text(dec_len)), dec_len)
    } else {
        (Tok::Bad("a lone `.`".into()), 0)
    }
}

// ---------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------

struct Parser {
    tokens: Vec<Tok>,
    at: usize,
    nesting: usize,
}

/// An expression and the depth of its tree.
type Node = (Expr, usize);

fn deeper(depth: usize) -> Result<usize, ParseError> {
    if depth > MAX_DEPTH {
        Err(perr(format!(
            "the expression nests deeper than {MAX_DEPTH} levels"
        )))
    } else {
        Ok(depth)
    }
}

impl Parser {
    fn peek_at(&self, ahead: usize) -> Result<&Tok, ParseError> {
        let i = (self.at + ahead).min(self.tokens.len() - 1);
        match &self.tokens[i] {
            Tok::Bad(why) => Err(perr(format!("lexical error: {why}"))),
            t => Ok(t),
        }
    }

    fn peek(&self) -> Result<&Tok, ParseError> {
        self.peek_at(0)
    }

    fn next(&mut self) -> Result<Tok, ParseError> {
        let t = self.peek()?.clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        Ok(t)
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), ParseError> {
        let got = self.next()?;
        if got == want {
            Ok(())
        } else {
            Err(perr(format!("expected {what}, found {got:?}")))
        }
    }

    fn or_expression(&mut self) -> Result<Node, ParseError> {
        let (first, mut depth) = self.and_expression()?;
        if *self.peek()? != Tok::Or {
            return Ok((first, depth));
        }
        let mut terms = vec![as_boolean(first)?];
        while *self.peek()? == Tok::Or {
            self.next()?;
            let (e, d) = self.and_expression()?;
            depth = depth.max(d);
            terms.push(as_boolean(e)?);
        }
        Ok((Expr::Or(terms), deeper(depth + 2)?))
    }

    fn and_expression(&mut self) -> Result<Node, ParseError> {
        let (first, mut depth) = self.equality_expression()?;
        if *self.peek()? != Tok::And {
            return Ok((first, depth));
        }
        let mut terms = vec![as_boolean(first)?];
        while *self.peek()? == Tok::And {
            self.next()?;
            let (e, d) = self.equality_expression()?;
            depth = depth.max(d);
            terms.push(as_boolean(e)?);
        }
        Ok((Expr::And(terms), deeper(depth + 2)?))
    }

    fn equality_expression(&mut self) -> Result<Node, ParseError> {
        let (mut left, mut depth) = self.comparison_expression()?;
        loop {
            match self.peek()? {
                Tok::Eq | Tok::Ne => {
                    let negate = self.next()? == Tok::Ne;
                    let (right, d) = self.comparison_expression()?;
                    let equal = create_equal(left, right)?;
                    left = if negate {
                        Expr::Not(Box::new(equal))
                    } else {
                        equal
                    };
                    depth = deeper(depth.max(d) + 2)?;
                }
                Tok::Is => {
                    self.next()?;
                    let not = *self.peek()? == Tok::Not;
                    if not {
                        self.next()?;
                    }
                    self.expect(Tok::Null, "NULL after IS")?;
                    let is_null = Expr::Equal(Box::new(left), Box::new(Expr::Const(Literal::Null)));
                    left = if not {
                        Expr::Not(Box::new(is_null))
                    } else {
                        is_null
                    };
                    depth = deeper(depth + 2)?;
                }
                _ => return Ok((left, depth)),
            }
        }
    }

    fn comparison_expression(&mut self) -> Result<Node, ParseError> {
        let (mut left, mut depth) = self.unary_expr()?;
        loop {
            let tok = self.peek()?.clone();
            let not = tok == Tok::Not
                && matches!(
                    self.peek_at(1)?,
                    Tok::Between | Tok::In | Tok::Contains | Tok::StartsWith | Tok::EndsWith
                );
            if tok == Tok::Not && !not {
                // RocketMQ's parser commits to `NOT BETWEEN` / `NOT IN` here and fails.
                return Err(perr(
                    "NOT here must be followed by BETWEEN, IN, CONTAINS, STARTSWITH or ENDSWITH",
                ));
            }
            let op = if not { self.peek_at(1)?.clone() } else { tok };
            let cmp = match op {
                Tok::Gt => Some(Cmp::Gt),
                Tok::Ge => Some(Cmp::Ge),
                Tok::Lt => Some(Cmp::Lt),
                Tok::Le => Some(Cmp::Le),
                _ => None,
            };
            if let Some(cmp) = cmp {
                self.next()?;
                let (right, d) = self.unary_expr()?;
                left = create_compare(cmp, left, right)?;
                depth = deeper(depth.max(d) + 1)?;
                continue;
            }
            let str_op = match op {
                Tok::Contains => Some(StrOp::Contains),
                Tok::StartsWith => Some(StrOp::StartsWith),
                Tok::EndsWith => Some(StrOp::EndsWith),
                _ => None,
            };
            match op {
                Tok::Between => {
                    self.skip(not)?;
                    let (low, d1) = self.unary_expr()?;
                    self.expect(Tok::And, "AND in BETWEEN")?;
                    let (high, d2) = self.unary_expr()?;
                    left = create_between(left, low, high, not)?;
                    depth = deeper(depth.max(d1).max(d2) + 2)?;
                }
                Tok::In => {
                    self.skip(not)?;
                    let list = self.string_list()?;
                    let Expr::Property(property) = left else {
                        return Err(perr(format!(
                            "Expected a property for In expression, got: {left:?}"
                        )));
                    };
                    left = Expr::In {
                        property,
                        list,
                        not,
                    };
                    depth = deeper(depth + 1)?;
                }
                _ if str_op.is_some() => {
                    self.skip(not)?;
                    let Tok::Str(search) = self.next()? else {
                        return Err(perr("expected a string literal"));
                    };
                    left = Expr::Str {
                        op: str_op.unwrap(),
                        operand: Box::new(left),
                        search,
                        not,
                    };
                    depth = deeper(depth + 1)?;
                }
                _ => return Ok((left, depth)),
            }
        }
    }

    /// Consumes `[NOT] KEYWORD`.
    fn skip(&mut self, not: bool) -> Result<(), ParseError> {
        if not {
            self.next()?;
        }
        self.next()?;
        Ok(())
    }

    fn string_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect(Tok::LParen, "( after IN")?;
        let mut list = Vec::new();
        loop {
            match self.next()? {
                Tok::Str(s) => list.push(s),
                t => return Err(perr(format!("IN takes string literals, found {t:?}"))),
            }
            match self.next()? {
                Tok::Comma => {}
                Tok::RParen => return Ok(list),
                t => return Err(perr(format!("expected , or ) in IN, found {t:?}"))),
            }
        }
    }

    fn unary_expr(&mut self) -> Result<Node, ParseError> {
        self.nesting += 1;
        let result = if self.nesting > MAX_DEPTH {
            Err(perr(format!(
                "the expression nests deeper than {MAX_DEPTH} levels"
            )))
        } else {
            self.unary_expr_inner()
        };
        self.nesting -= 1;
        result
    }

    fn unary_expr_inner(&mut self) -> Result<Node, ParseError> {
        match self.peek()? {
            Tok::Plus => {
                self.next()?;
                self.unary_expr()
            }
            Tok::Minus => {
                self.next()?;
                let (e, d) = self.unary_expr()?;
                Ok((Expr::Negate(Box::new(e)), deeper(d + 1)?))
            }
            Tok::Not => {
                self.next()?;
                let (e, d) = self.unary_expr()?;
                Ok((Expr::Not(Box::new(as_boolean(e)?)), deeper(d + 2)?))
            }
            _ => self.primary_expr(),
        }
    }

    fn primary_expr(&mut self) -> Result<Node, ParseError> {
        let lit = match self.next()? {
            Tok::Str(s) => Literal::Str(s),
            Tok::Decimal(text) => decimal(&text)?,
            Tok::Float(text) => float(&text)?,
            Tok::True => Literal::Bool(true),
            Tok::False => Literal::Bool(false),
            Tok::Null => Literal::Null,
            Tok::Id(name) => return Ok((Expr::Property(name), 1)),
            Tok::LParen => {
                let inner = self.or_expression()?;
                self.expect(Tok::RParen, ")")?;
                return Ok(inner);
            }
            t => return Err(perr(format!("unexpected {t:?}"))),
        };
        Ok((Expr::Const(lit), 1))
    }
}

/// RocketMQ's `createFromDecimal`: an `Integer` when it fits, else a `Long`.
fn decimal(text: &str) -> Result<Literal, ParseError> {
    let digits = text.trim_end_matches(['l', 'L']);
    let v: i64 = digits
        .parse()
        .map_err(|_| perr(format!("{text} does not fit in a long")))?;
    Ok(match i32::try_from(v) {
        Ok(i) => Literal::Int(i),
        Err(_) => Literal::Long(v),
    })
}

/// RocketMQ's `createFloat`: a finite double at least `Double.MIN_VALUE`.
fn float(text: &str) -> Result<Literal, ParseError> {
    let v: f64 = text
        .parse()
        .map_err(|_| perr(format!("{text} is not a number")))?;
    if v > f64::MAX {
        return Err(perr(format!("{text} is greater than {}", f64::MAX)));
    }
    // Java's Double.MIN_VALUE is the smallest positive double.
    if v < f64::from_bits(1) {
        return Err(perr(format!("{text} is less than 4.9E-324")));
    }
    Ok(Literal::Double(v))
}

/// RocketMQ's `asBooleanExpression`: a property becomes a boolean cast.
fn as_boolean(e: Expr) -> Result<Expr, ParseError> {
    if e.is_boolean() {
        Ok(e)
    } else if let Expr::Property(_) = e {
        Ok(Expr::BoolCast(Box::new(e)))
    } else {
        Err(perr(format!(
            "Expression will not result in a boolean value: {e:?}"
        )))
    }
}

fn create_equal(left: Expr, right: Expr) -> Result<Expr, ParseError> {
    for e in [&left, &right] {
        if let Expr::Const(Literal::Null) = e {
            return Err(perr("'NULL' cannot be compared (use IS NULL)"));
        }
    }
    if let (Expr::Const(_), Expr::Const(_)) = (&left, &right) {
        if left.is_boolean() && !right.is_boolean() {
            return Err(perr(format!(
                "'{left:?}' cannot be compared with '{right:?}'"
            )));
        }
    }
    Ok(Expr::Equal(Box::new(left), Box::new(right)))
}

/// RocketMQ's `checkLessThanOperand`: only numbers and non-boolean expressions.
fn check_less_than_operand(e: &Expr) -> Result<(), ParseError> {
    match e {
        Expr::Const(Literal::Int(_) | Literal::Long(_) | Literal::Double(_)) => Ok(()),
        Expr::Const(_) => Err(perr(format!("Value '{e:?}' cannot be compared."))),
        _ if e.is_boolean() => Err(perr(format!("Value '{e:?}' cannot be compared."))),
        _ => Ok(()),
    }
}

fn create_compare(cmp: Cmp, left: Expr, right: Expr) -> Result<Expr, ParseError> {
    check_less_than_operand(&left)?;
    check_less_than_operand(&right)?;
    Ok(Expr::Compare(cmp, Box::new(left), Box::new(right)))
}

fn literal_value(l: &Literal) -> Value<'_> {
    match l {
        Literal::Null => Value::Null,
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Int(i) => Value::Int(*i),
        Literal::Long(v) => Value::Long(*v),
        Literal::Double(d) => Value::Double(*d),
        Literal::Str(s) => Value::Str(s),
    }
}

fn create_between(value: Expr, low: Expr, high: Expr, not: bool) -> Result<Expr, ParseError> {
    if not {
        // NOT BETWEEN: value < low OR value > high (no check of the bounds' order).
        return Ok(Expr::Or(vec![
            create_compare(Cmp::Lt, value.clone(), low)?,
            create_compare(Cmp::Gt, value, high)?,
        ]));
    }
    if let (Expr::Const(l), Expr::Const(h)) = (&low, &high) {
        let (lv, hv) = (literal_value(l), literal_value(h));
        if lv == Value::Null || hv == Value::Null {
            return Err(perr("Illegal values of between, values can not be null!"));
        }
        let order = java_compare(&hv, &lv).map_err(|e| perr(e.message))?;
        if order < 0 {
            return Err(perr(format!(
                "Illegal values of between, left value({lv:?}) must less than or equal to right value({hv:?})"
            )));
        }
    }
    Ok(Expr::And(vec![
        create_compare(Cmp::Ge, value.clone(), low)?,
        create_compare(Cmp::Le, value, high)?,
    ]))
}

// ---------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------

fn eval<'a>(e: &'a Expr, p: &'a dyn Properties) -> Result<Value<'a>, EvalError> {
    Ok(match e {
        Expr::Const(l) => literal_value(l),
        Expr::Property(name) => p.get(name).map_or(Value::Null, Value::Str),
        Expr::Negate(inner) => match eval(inner, p)? {
            Value::Int(i) => Value::Int(i.wrapping_neg()),
            Value::Long(v) => Value::Long(v.wrapping_neg()),
            Value::Double(d) => Value::Double(-d),
            _ => Value::Null,
        },
        Expr::Not(inner) => match boolean(eval(inner, p)?)? {
            None => Value::Null,
            Some(b) => Value::Bool(!b),
        },
        Expr::BoolCast(inner) => match eval(inner, p)? {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            _ => Value::Bool(false),
        },
        Expr::And(terms) => logic(terms, p, false)?,
        Expr::Or(terms) => logic(terms, p, true)?,
        Expr::Equal(l, r) => equal(eval(l, p)?, eval(r, p)?)?,
        Expr::Compare(cmp, l, r) => compare(*cmp, l, r, p)?,
        Expr::In {
            property,
            list,
            not,
        } => match p.get(property) {
            None => Value::Null,
            Some(v) => Value::Bool(list.iter().any(|s| s == v) ^ not),
        },
        Expr::Str {
            op,
            operand,
            search,
            not,
        } => {
            if search.is_empty() {
                return Ok(Value::Bool(false));
            }
            match eval(operand, p)? {
                Value::Str(v) => {
                    let hit = match op {
                        StrOp::Contains => v.contains(search.as_str()),
                        StrOp::StartsWith => v.starts_with(search.as_str()),
                        StrOp::EndsWith => v.ends_with(search.as_str()),
                    };
                    Value::Bool(hit ^ not)
                }
                _ => Value::Bool(false),
            }
        }
    })
}

/// Java's `(Boolean) value`.
fn boolean(v: Value<'_>) -> Result<Option<bool>, EvalError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        other => Err(eerr(format!("{other:?} is not a Boolean"))),
    }
}

/// `AND` (`decisive == false`) or `OR` (`decisive == true`) over terms, left to right:
/// the first decisive term decides; otherwise NULL if any term was NULL.
fn logic<'a>(
    terms: &'a [Expr],
    p: &'a dyn Properties,
    decisive: bool,
) -> Result<Value<'a>, EvalError> {
    let mut unknown = false;
    for t in terms {
        match boolean(eval(t, p)?)? {
            Some(b) if b == decisive => return Ok(Value::Bool(decisive)),
            Some(_) => {}
            None => unknown = true,
        }
    }
    Ok(if unknown {
        Value::Null
    } else {
        Value::Bool(!decisive)
    })
}

fn equal<'a>(lv: Value<'a>, rv: Value<'a>) -> Result<Value<'a>, EvalError> {
    match (&lv, &rv) {
        (Value::Null, Value::Null) => return Ok(Value::Bool(true)),
        (Value::Null, _) => return Ok(Value::Null),
        (_, Value::Null) => return Ok(Value::Bool(false)),
        _ => {}
    }
    if java_equals(&lv, &rv) {
        return Ok(Value::Bool(true));
    }
    Ok(Value::Bool(java_compare(&lv, &rv)? == 0))
}

fn compare<'a>(
    cmp: Cmp,
    l: &'a Expr,
    r: &'a Expr,
    p: &'a dyn Properties,
) -> Result<Value<'a>, EvalError> {
    let lv = eval(l, p)?;
    if lv == Value::Null {
        return Ok(Value::Null);
    }
    let rv = eval(r, p)?;
    if rv == Value::Null {
        return Ok(Value::Null);
    }
    let order = if let (Value::Str(a), Value::Str(b)) = (&lv, &rv) {
        let (Some(a), Some(b)) = (java_parse_double(a), java_parse_double(b)) else {
            return Err(eerr(format!(
                "It's illegal to compare string by '>=', '>', '<', '<='. lv={a}, rv={b}"
            )));
        };
        java_double_cmp(a, b)
    } else {
        java_compare(&lv, &rv)?
    };
    Ok(Value::Bool(match cmp {
        Cmp::Gt => order > 0,
        Cmp::Ge => order >= 0,
        Cmp::Lt => order < 0,
        Cmp::Le => order <= 0,
    }))
}

/// Java's `Object.equals` on two values of this model.
fn java_equals(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Long(x), Value::Long(y)) => x == y,
        (Value::Double(x), Value::Double(y)) => java_double_bits(*x) == java_double_bits(*y),
        (Value::Str(x), Value::Str(y)) => x == y,
        _ => false,
    }
}

/// RocketMQ's `ComparisonExpression.__compare` with `convertStringExpressions` on (the
/// parser always sets it): converts one side to the other's type, else answers -1.
fn java_compare(lv: &Value<'_>, rv: &Value<'_>) -> Result<i32, EvalError> {
    use Value as V;
    let nfe = |s: &str| {
        eerr(format!(
            "java.lang.NumberFormatException: For input string: \"{s}\""
        ))
    };
    let int = |s: &str| {
        java_parse_long(s)
            .and_then(|v| i32::try_from(v).ok())
            .ok_or_else(|| nfe(s))
    };
    let long = |s: &str| java_parse_long(s).ok_or_else(|| nfe(s));
    let double = |s: &str| java_parse_double(s).ok_or_else(|| nfe(s));
    let ord = |o: Ordering| o as i32;
    Ok(match (lv, rv) {
        (V::Bool(a), V::Bool(b)) => ord(a.cmp(b)),
        (V::Int(a), V::Int(b)) => ord(a.cmp(b)),
        (V::Long(a), V::Long(b)) => ord(a.cmp(b)),
        (V::Double(a), V::Double(b)) => java_double_cmp(*a, *b),
        (V::Str(a), V::Str(b)) => ord(a.encode_utf16().cmp(b.encode_utf16())),
        // Java casts the Boolean to String here and throws ClassCastException.
        (V::Bool(_), V::Str(_)) => {
            return Err(eerr(
                "java.lang.ClassCastException: Boolean cannot be cast to String",
            ))
        }
        (V::Int(a), V::Long(b)) => ord((*a as i64).cmp(b)),
        (V::Int(a), V::Double(b)) => java_double_cmp(*a as f64, *b),
        (V::Int(a), V::Str(b)) => ord(a.cmp(&int(b)?)),
        (V::Long(a), V::Int(b)) => ord(a.cmp(&(*b as i64))),
        (V::Long(a), V::Double(b)) => java_double_cmp(*a as f64, *b),
        (V::Long(a), V::Str(b)) => ord(a.cmp(&long(b)?)),
        (V::Double(a), V::Int(b)) => java_double_cmp(*a, *b as f64),
        (V::Double(a), V::Long(b)) => java_double_cmp(*a, *b as f64),
        (V::Double(a), V::Str(b)) => java_double_cmp(*a, double(b)?),
        (V::Str(a), V::Bool(b)) => ord(a.eq_ignore_ascii_case("true").cmp(b)),
        (V::Str(a), V::Int(b)) => ord(int(a)?.cmp(b)),
        (V::Str(a), V::Long(b)) => ord(long(a)?.cmp(b)),
        (V::Str(a), V::Double(b)) => java_double_cmp(double(a)?, *b),
        _ => -1,
    })
}

/// Java's `Double.doubleToLongBits` (every NaN is the canonical NaN).
fn java_double_bits(d: f64) -> i64 {
    if d.is_nan() {
        0x7ff8_0000_0000_0000
    } else {
        d.to_bits() as i64
    }
}

/// Java's `Double.compare`: -0.0 < 0.0, NaN equals NaN and is above everything.
fn java_double_cmp(a: f64, b: f64) -> i32 {
    if a < b {
        -1
    } else if a > b {
        1
    } else {
        java_double_bits(a).cmp(&java_double_bits(b)) as i32
    }
}

/// Java's `Long.parseLong(s)` (also `Integer.parseInt` before the range check): an
/// optional sign and ASCII digits, nothing else.
fn java_parse_long(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Java's `Double.valueOf(s)` for decimal forms: surrounding whitespace (<= ' ') is
/// trimmed, a trailing `f`/`F`/`d`/`D` is allowed, and `NaN`, `Infinity` are accepted
/// with an optional sign. Java's hexadecimal floats (`0x1p3`) are not accepted here.
fn java_parse_double(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c: char| c <= ' ');
    let (sign, body) = match t.as_bytes().first() {
        Some(b'-') => (-1.0, &t[1..]),
        Some(b'+') => (1.0, &t[1..]),
        _ => (1.0, t),
    };
    match body {
        "NaN" => return Some(f64::NAN),
        "Infinity" => return Some(sign * f64::INFINITY),
        _ => {}
    }
    let body = body.strip_suffix(['f', 'F', 'd', 'D']).unwrap_or(body);
    // Only digits, one '.', and an exponent: Rust's parser also takes "inf" and "nan".
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
        && body.bytes().any(|c| c.is_ascii_digit());
    if !ok {
        return None;
    }
    body.parse::<f64>().ok().map(|v| sign * v)
}

#[cfg(test)]
#[path = "sql92_tests.rs"]
mod tests;
