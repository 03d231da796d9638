//! A YAML (and so JSON) document tree that remembers where every node stands,
//! so that every diagnostic can name `file:line:column`.
//!
//! Maps keep their entries in order and keep duplicate keys (a typo an
//! operator must be told about, where most loaders silently keep the last).

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr::Scalar;
use saphyr_parser::{Event, Parser, ScalarStyle};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    /// Whether a scalar was written in quotes (its text starts one column later).
    pub quoted: bool,
    pub value: Value,
}

impl Node {
    /// The node's value in a short form for messages: `"256MB"`, `12`, `a map`.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a map".to_string(),
        }
    }

    /// The scalar's text, for values that may be written as a string or a number.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Looks up a key in a map node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The plain JSON value, positions dropped (the last of duplicate keys wins,
    /// but duplicates are reported before anything is converted).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A syntax error: the document is not YAML at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// How deep lists and maps may nest. Manifests need about ten levels; every
/// walk over the tree (schema, conversion, drop) recurses, so the bound keeps
/// a hostile document from overflowing a stack.
pub const MAX_DEPTH: usize = 64;

/// How many nodes aliases may add to a stream, beyond the nodes written out.
/// An alias copies its anchor's whole subtree; without a budget, 475 bytes of
/// nested aliases expand to gigabytes (the "billion laughs").
pub const MAX_ALIAS_NODES: usize = 10_000;

/// A list or map being read: where it starts, its anchor, how many nodes the
/// stream had produced when it began (its size is the difference at its end),
/// and what it holds so far.
struct Frame {
    pos: Pos,
    anchor: usize,
    first_node: usize,
    items: Items,
}

enum Items {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

/// Loads every document of a YAML stream. Empty documents are skipped.
///
/// Lists and maps deeper than [`MAX_DEPTH`], and aliases that together copy
/// more than [`MAX_ALIAS_NODES`] nodes, are refused at the position where the
/// limit is crossed.
pub fn load(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut documents = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // Each anchor's node and the number of nodes in its subtree.
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    // Nodes produced so far, and how many of them came from aliases.
    let mut produced = 0usize;
    let mut aliased = 0usize;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let pos = Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        let (node, anchor, size) = match event {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        pos,
                        message: format!("lists and maps nest deeper than {MAX_DEPTH} levels"),
                    });
                }
                let items = if matches!(event, Event::SequenceStart(..)) {
                    Items::Seq(Vec::new())
                } else {
                    Items::Map(Vec::new(), None)
                };
                stack.push(Frame {
                    pos,
                    anchor,
                    first_node: produced,
                    items,
                });
                produced += 1;
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = stack.pop() else { continue };
                let value = match frame.items {
                    Items::Seq(items) => Value::Seq(items),
                    Items::Map(entries, _) => Value::Map(entries),
                };
                let node = Node {
                    pos: frame.pos,
                    quoted: false,
                    value,
                };
                (node, frame.anchor, produced - frame.first_node)
            }
            Event::Scalar(text, style, anchor, tag) => {
                let quoted = matches!(style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted);
                if style == ScalarStyle::Plain && tag.is_none() && is_oversized_integer(&text) {
                    // YAML would read it as a float and show it rounded.
                    return Err(SyntaxError {
                        pos,
                        message: format!(
                            "{text} is too large for a whole number (at most {}; quote it if it is text)",
                            i64::MAX
                        ),
                    });
                }
                let value = match Scalar::parse_from_cow_and_metadata(text.clone(), style, tag.as_ref()) {
                    Some(Scalar::Null) => Value::Null,
                    Some(Scalar::Boolean(b)) => Value::Bool(b),
                    Some(Scalar::Integer(i)) => Value::Int(i),
                    Some(Scalar::FloatingPoint(f)) => Value::Float(f.into_inner()),
                    Some(Scalar::String(s)) => Value::Str(s.into_owned()),
                    None => Value::Str(text.into_owned()),
                };
                produced += 1;
                (Node { pos, quoted, value }, anchor, 1)
            }
            Event::Alias(id) => {
                let Some((node, size)) = anchors.get(&id) else {
                    return Err(SyntaxError {
                        pos,
                        message: "alias to an unknown anchor".to_string(),
                    });
                };
                aliased += size;
                if aliased > MAX_ALIAS_NODES {
                    return Err(SyntaxError {
                        pos,
                        message: format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} nodes (write the repeated part out, or repeat it less)"
                        ),
                    });
                }
                produced += size;
                (node.clone(), 0, *size)
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => continue,
        };
        if anchor != 0 {
            anchors.insert(anchor, (node.clone(), size));
        }
        match stack.last_mut().map(|frame| &mut frame.items) {
            Some(Items::Seq(items)) => items.push(node),
            Some(Items::Map(entries, pending)) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => *pending = Some(node),
            },
            None if node.value == Value::Null => {}
            None => documents.push(node),
        }
    }
    Ok(documents)
}

/// Digits (with an optional sign) that do not fit in 64 bits.
fn is_oversized_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && text.parse::<i64>().is_err()
}

/// Reads the first document of a YAML text into a serde type (for small
/// files such as the CLI configuration, where positions matter less).
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let documents = load(text).map_err(|e| format!("line {}: {}", e.pos.line, e.message))?;
    let document = documents.into_iter().next().ok_or("the file is empty")?;
    serde_json::from_value(document.to_json()).map_err(|e| e.to_string())
}

/// Keys as an operator reads them, for messages.
pub(crate) fn key_text(node: &Node) -> Cow<'_, str> {
    match &node.value {
        Value::Str(s) => Cow::Borrowed(s),
        _ => Cow::Owned(node.describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_documents() {
        let docs = load("a: 1\nb:\n  - x\n  - 'y'\n---\n# empty\n---\nc: {d: 2.5}\n").unwrap();
        assert_eq!(docs.len(), 2);
        let b = docs[0].get("b").unwrap();
        let Value::Seq(items) = &b.value else {
            panic!("not a list")
        };
        assert_eq!(items[1].pos, Pos { line: 4, column: 5 });
        assert!(items[1].quoted);
        assert_eq!(
            docs[1].get("c").unwrap().get("d").unwrap().value,
            Value::Float(2.5)
        );
    }

    #[test]
    fn keeps_duplicates_and_types() {
        let doc = &load("k: 1\nk: '1'\nv: 1.4\nn: ~\nt: true\n").unwrap()[0];
        let Value::Map(entries) = &doc.value else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[1].1.value, Value::Str("1".into()));
        assert_eq!(entries[3].1.value, Value::Null);
    }

    #[test]
    fn aliases_resolve() {
        let doc = &load("base: &b {x: 1}\nother: *b\n").unwrap()[0];
        assert_eq!(doc.get("other").unwrap().to_json(), serde_json::json!({"x": 1}));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = load("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 2, column: 2 }, "{err:?}");
        assert!(!err.message.is_empty());
    }

    /// Issue 11, defect 1: seven levels of ten aliases each (475 bytes)
    /// expanded to ten million nodes and 2.2 GB. The budget stops it at the
    /// alias that crosses it.
    #[test]
    fn alias_bomb_is_refused_at_its_alias() {
        let mut text = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..=8 {
            let aliases = vec![format!("*l{}", level - 1); 10].join(", ");
            text.push_str(&format!("l{level}: &l{level} [{aliases}]\n"));
        }
        let err = load(&text).unwrap_err();
        assert!(
            err.message.contains("aliases expand to more than 10000 nodes"),
            "{err:?}"
        );
        // Levels 1 and 2 copy 110 and 1,110 nodes; level 3 copies level 2
        // (1,111 nodes) ten times, and its eighth alias crosses the budget.
        assert_eq!(err.pos, Pos { line: 4, column: 45 }, "{err:?}");
        // An honest use of aliases is untouched.
        let doc = &load("base: &b {x: 1}\na: *b\nb: *b\n").unwrap()[0];
        assert_eq!(doc.get("b").unwrap().to_json(), serde_json::json!({"x": 1}));
    }

    /// Issue 11: `replicas: 99999999999999999999` was shown as a rounded float.
    #[test]
    fn oversized_integers_are_named_as_written() {
        let err = load("replicas: 99999999999999999999\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 1, column: 11 });
        assert!(
            err.message.starts_with("99999999999999999999 is too large"),
            "{err:?}"
        );
        assert_eq!(
            load("n: -9223372036854775808\n").unwrap()[0]
                .get("n")
                .unwrap()
                .value,
            Value::Int(i64::MIN)
        );
        assert!(load("v: '99999999999999999999'\n").is_ok());
    }

    /// Issue 11, defect 2: `x:` and 40,000 `- ` overflowed a worker's stack.
    #[test]
    fn deep_nesting_is_refused_at_the_limit() {
        let text = format!("x:\n{}1\n", "- ".repeat(40_000));
        let err = load(&text).unwrap_err();
        assert!(err.message.contains("deeper than 64 levels"), "{err:?}");
        // The map is level 1; the 64th `- ` opens level 65, at column 127.
        assert_eq!(err.pos, Pos { line: 2, column: 127 }, "{err:?}");
        let flow = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(load(&flow).unwrap_err().message.contains("deeper"));
        assert!(load(&format!("x:\n{}1\n", "- ".repeat(63))).is_ok());
    }

    #[test]
    fn json_is_yaml() {
        let doc = &load("{\n  \"kind\": \"Site\",\n  \"n\": 3\n}").unwrap()[0];
        assert_eq!(doc.get("n").unwrap().pos, Pos { line: 3, column: 8 });
    }
}
