//! The selector language that picks sites and hosts by their labels:
//! `key`, `!key`, `key = v`, `key != v`, `key in (a, b)`, `key not in (a)`,
//! ordering comparisons on numbers and sizes (`memory >= 4Gi`, `cpus > 2`),
//! `and`, `or`, `not` and parentheses. `not` binds tighter than `and`, which
//! binds tighter than `or`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::quantity::Size;

/// A parsed selector; its text form is kept for display and storage.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    text: String,
    expr: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Matches everything (the empty selector).
    All,
    Exists(String),
    Compare(String, Op, String),
    In {
        key: String,
        values: Vec<String>,
        negated: bool,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Levels of the tree: 1 for a leaf.
    fn height(&self) -> usize {
        match self {
            Expr::All | Expr::Exists(_) | Expr::Compare(..) | Expr::In { .. } => 1,
            Expr::Not(inner) => inner.height() + 1,
            Expr::And(a, b) | Expr::Or(a, b) => a.height().max(b.height()) + 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parse error: what is wrong and at which character of the selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    /// Offset in characters from the start of the selector text.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset + 1)
    }
}

impl std::error::Error for SelectorError {}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(Op),
    Bang,
    LParen,
    RParen,
    Comma,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':')
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, SelectorError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let next = chars.get(i + 1).copied();
        let token = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => Token::LParen,
            ')' => Token::RParen,
            ',' => Token::Comma,
            '=' if next == Some('=') => {
                i += 1;
                Token::Op(Op::Eq)
            }
            '=' => Token::Op(Op::Eq),
            '!' if next == Some('=') => {
                i += 1;
                Token::Op(Op::Ne)
            }
            '!' => Token::Bang,
            '<' | '>' => {
                let or_equal = next == Some('=');
                if or_equal {
                    i += 1;
                }
                Token::Op(match (c, or_equal) {
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    ('>', false) => Op::Gt,
                    _ => Op::Ge,
                })
            }
            '"' | '\'' => {
                let quote = c;
                let mut value = String::new();
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    value.push(chars[i]);
                    i += 1;
                }
                if i == chars.len() {
                    return Err(SelectorError {
                        offset: start,
                        message: format!("unterminated {quote} quote"),
                    });
                }
                Token::Quoted(value)
            }
            c if is_word_char(c) => {
                while i + 1 < chars.len() && is_word_char(chars[i + 1]) {
                    i += 1;
                }
                Token::Word(chars[start..=i].iter().collect())
            }
            other => {
                return Err(SelectorError {
                    offset: start,
                    message: format!("unexpected character {other:?}"),
                });
            }
        };
        tokens.push((start, token));
        i += 1;
    }
    Ok(tokens)
}

/// How deep a selector's expression tree may be: parentheses, `not`, and
/// each further term of an `and` or `or` chain add a level. Real selectors
/// use a handful; evaluation recurses, so a bound keeps a hostile one from
/// overflowing a stack.
pub const MAX_DEPTH: usize = 64;

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
    /// Levels of `(` and `not` open around the current token.
    nesting: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(o, _)| *o)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, SelectorError> {
        Err(SelectorError {
            offset: self.offset(),
            message: message.into(),
        })
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == keyword)
    }

    /// Refuses, at the current token, a tree that would pass [`MAX_DEPTH`].
    fn check_depth(&self, height: usize) -> Result<(), SelectorError> {
        if self.nesting + height > MAX_DEPTH {
            return self.error(format!(
                "the selector nests deeper than {MAX_DEPTH} levels (use 'in (a, b)' for long lists of values)"
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, SelectorError> {
        let mut left = self.and()?;
        while self.is_keyword("or") {
            self.check_depth(left.height() + 1)?;
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SelectorError> {
        let mut left = self.unary()?;
        while self.is_keyword("and") {
            self.check_depth(left.height() + 1)?;
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, SelectorError> {
        if self.is_keyword("not") || self.peek() == Some(&Token::LParen) {
            self.check_depth(1)?;
        }
        if self.is_keyword("not") {
            self.pos += 1;
            self.nesting += 1;
            let inner = self.unary();
            self.nesting -= 1;
            return Ok(Expr::Not(Box::new(inner?)));
        }
        if self.peek() == Some(&Token::Bang) {
            self.pos += 1;
            let key = self.key()?;
            return Ok(Expr::Not(Box::new(Expr::Exists(key))));
        }
        if self.peek() == Some(&Token::LParen) {
            self.pos += 1;
            self.nesting += 1;
            let inner = self.or();
            self.nesting -= 1;
            let inner = inner?;
            if self.peek() != Some(&Token::RParen) {
                return self.error("expected ')'");
            }
            self.pos += 1;
            return Ok(inner);
        }
        self.comparison()
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Some(Token::Word(w)) if !matches!(w.as_str(), "and" | "or" | "not" | "in") => {
                let key = w.clone();
                self.pos += 1;
                Ok(key)
            }
            Some(_) => self.error("expected a label key"),
            None => self.error("expected a label key, found the end"),
        }
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Some(Token::Word(w) | Token::Quoted(w)) => {
                let value = w.clone();
                self.pos += 1;
                Ok(value)
            }
            Some(_) => self.error("expected a value"),
            None => self.error("expected a value, found the end"),
        }
    }

    fn comparison(&mut self) -> Result<Expr, SelectorError> {
        let key = self.key()?;
        match self.peek() {
            Some(Token::Op(op)) => {
                let op = *op;
                self.pos += 1;
                let at = self.offset();
                let value = self.value()?;
                if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) && ordinal(&value).is_none() {
                    return Err(SelectorError {
                        offset: at,
                        message: format!("{value:?} is not a number or size, which {} needs", op_text(op)),
                    });
                }
                Ok(Expr::Compare(key, op, value))
            }
            Some(Token::Word(w)) if w == "in" => {
                self.pos += 1;
                self.set(key, false)
            }
            Some(Token::Word(w)) if w == "not" => {
                self.pos += 1;
                if !self.is_keyword("in") {
                    return self.error("expected 'in' after 'not'");
                }
                self.pos += 1;
                self.set(key, true)
            }
            _ => Ok(Expr::Exists(key)),
        }
    }

    fn set(&mut self, key: String, negated: bool) -> Result<Expr, SelectorError> {
        if self.peek() != Some(&Token::LParen) {
            return self.error("expected '(' to start the list of values");
        }
        self.pos += 1;
        let mut values = vec![self.value()?];
        loop {
            match self.peek() {
                Some(Token::Comma) => {
                    self.pos += 1;
                    values.push(self.value()?);
                }
                Some(Token::RParen) => {
                    self.pos += 1;
                    return Ok(Expr::In { key, values, negated });
                }
                _ => return self.error("expected ',' or ')' in the list of values"),
            }
        }
    }
}

fn op_text(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    }
}

/// The number a label value or literal stands for in an ordering comparison:
/// plain numbers as they are, sizes (`4Gi`) in bytes.
fn ordinal(text: &str) -> Option<f64> {
    text.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .or_else(|| text.parse::<Size>().ok().map(|s| s.0 as f64))
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, SelectorError> {
        let tokens = tokenize(text)?;
        let end = text.chars().count();
        if tokens.is_empty() {
            return Ok(Selector {
                text: String::new(),
                expr: Expr::All,
            });
        }
        let mut parser = Parser {
            tokens,
            pos: 0,
            end,
            nesting: 0,
        };
        let expr = parser.or()?;
        if parser.pos < parser.tokens.len() {
            return parser.error("expected 'and', 'or' or the end of the selector");
        }
        Ok(Selector {
            text: text.trim().to_string(),
            expr,
        })
    }
}

impl Selector {
    /// The selector that matches everything.
    pub fn all() -> Self {
        Selector {
            text: String::new(),
            expr: Expr::All,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Matches what both match (`(A) and (B)`).
    pub fn and(&self, other: &Selector) -> Selector {
        match (&self.expr, &other.expr) {
            (Expr::All, _) => other.clone(),
            (_, Expr::All) => self.clone(),
            (a, b) => Selector {
                text: format!("({}) and ({})", self.text, other.text),
                expr: Expr::And(Box::new(a.clone()), Box::new(b.clone())),
            },
        }
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether a set of labels satisfies the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        eval(&self.expr, labels)
    }

    /// Why a set of labels does not satisfy the selector, as an operator
    /// would say it (`no camera`, `memory 1Gi < 2Gi`); `None` if it does.
    pub fn explain(&self, labels: &BTreeMap<String, String>) -> Option<String> {
        explain(&self.expr, labels)
    }
}

fn explain(expr: &Expr, labels: &BTreeMap<String, String>) -> Option<String> {
    if eval(expr, labels) {
        return None;
    }
    Some(match expr {
        Expr::All => return None,
        Expr::Exists(key) => format!("no {key}"),
        Expr::Compare(key, op, want) => match labels.get(key) {
            None => format!("no {key}"),
            Some(have) => match op {
                Op::Eq => format!("{key} is {have}, not {want}"),
                Op::Ne => format!("{key} is {want}"),
                _ => format!("{key} {have} {} {want}", op_text(negate(*op))),
            },
        },
        Expr::In {
            key,
            values,
            negated: false,
        } => match labels.get(key) {
            None => format!("no {key}"),
            Some(have) => format!("{key} is {have}, not one of {}", values.join(", ")),
        },
        Expr::In {
            key, negated: true, ..
        } => format!("{key} is {}", labels.get(key).map_or("", String::as_str)),
        Expr::Not(inner) => match inner.as_ref() {
            Expr::Exists(key) => format!("has {key}"),
            _ => "a `not` condition holds".to_string(),
        },
        Expr::And(a, b) => explain(a, labels).or_else(|| explain(b, labels))?,
        Expr::Or(a, b) => format!("{}, and {}", explain(a, labels)?, explain(b, labels)?),
    })
}

/// The comparison that holds when `op` does not.
fn negate(op: Op) -> Op {
    match op {
        Op::Lt => Op::Ge,
        Op::Le => Op::Gt,
        Op::Gt => Op::Le,
        Op::Ge => Op::Lt,
        other => other,
    }
}

fn eval(expr: &Expr, labels: &BTreeMap<String, String>) -> bool {
    match expr {
        Expr::All => true,
        Expr::Exists(key) => labels.contains_key(key),
        Expr::Compare(key, op, want) => {
            let Some(have) = labels.get(key) else {
                // An absent label is "not equal" to anything, as in Kubernetes.
                return *op == Op::Ne;
            };
            match op {
                Op::Eq => have == want,
                Op::Ne => have != want,
                ordering => match (ordinal(have), ordinal(want)) {
                    (Some(h), Some(w)) => match ordering {
                        Op::Lt => h < w,
                        Op::Le => h <= w,
                        Op::Gt => h > w,
                        _ => h >= w,
                    },
                    _ => false,
                },
            }
        }
        Expr::In { key, values, negated } => {
            let found = labels.get(key).is_some_and(|v| values.contains(v));
            found != *negated
        }
        Expr::Not(inner) => !eval(inner, labels),
        Expr::And(a, b) => eval(a, labels) && eval(b, labels),
        Expr::Or(a, b) => eval(a, labels) || eval(b, labels),
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Selector {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Selector")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "selector",
            "description": "a label selector such as 'customer = acme and memory >= 2Gi'"
        })
    }
}

#[cfg(test)]
mod tests;
