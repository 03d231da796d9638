//! The JSON Schema of the manifests, generated from the types, and a walker
//! that checks a located YAML tree against it and reports every structural
//! problem at once: unknown fields (with a did-you-mean), missing fields,
//! wrong types, values out of range, duplicate keys, and values that do not
//! parse as their format (sizes, durations, selectors, names, images).
//!
//! **Architecture Invariant:** what `outpost schema` prints is exactly what
//! the validator enforces, since both come from `manifest_schema()`.

use std::sync::OnceLock;

use serde_json::{Map, Value as J};

use crate::diagnostic::{Diagnostics, Path};
use crate::selector::Selector;
use crate::yaml::{Node, Pos, Value, key_text};
use crate::{manifest, quantity};

/// The JSON Schema of every manifest kind (a `oneOf` tagged by `kind`).
pub fn manifest_schema() -> &'static J {
    static SCHEMA: OnceLock<J> = OnceLock::new();
    SCHEMA.get_or_init(|| schemars::schema_for!(manifest::Manifest).to_value())
}

/// Checks one document against the schema of its kind.
pub(crate) fn check_document(file: &str, node: &Node, out: &mut Diagnostics) {
    let root = manifest_schema();
    let walker = Walker { file, root };
    let path = Path::root();
    let Value::Map(_) = &node.value else {
        out.push(
            file,
            node.pos,
            &path,
            format!(
                "expected a manifest (a map with apiVersion, kind, metadata and spec), found {}",
                node.describe()
            ),
        );
        return;
    };
    let branches = root
        .get("oneOf")
        .and_then(J::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let kinds: Vec<&str> = branches.iter().filter_map(branch_kind).collect();
    let Some(kind_node) = node.get("kind") else {
        out.push(
            file,
            node.pos,
            &path,
            format!("missing field \"kind\" (one of {})", quoted_list(&kinds)),
        );
        return;
    };
    let Value::Str(kind) = &kind_node.value else {
        out.push(
            file,
            kind_node.pos,
            &path.field("kind"),
            format!("expected a string, found {}", kind_node.describe()),
        );
        return;
    };
    let Some(branch) = branches.iter().find(|b| branch_kind(b) == Some(kind.as_str())) else {
        let mut message = format!("unknown kind {kind:?} (expected {})", quoted_list(&kinds));
        if let Some(near) = closest(kind, kinds.iter().copied()) {
            message = format!("unknown kind {kind:?} (did you mean {near:?}?)");
        }
        out.push(file, kind_node.pos, &path.field("kind"), message);
        return;
    };
    walker.check(node, branch, &path, out);
}

fn branch_kind(branch: &J) -> Option<&str> {
    branch.pointer("/properties/kind/const").and_then(J::as_str)
}

struct Walker<'a> {
    file: &'a str,
    root: &'a J,
}

impl Walker<'_> {
    fn resolve<'s>(&'s self, mut schema: &'s J) -> &'s J {
        while let Some(reference) = schema.get("$ref").and_then(J::as_str) {
            let target = reference
                .strip_prefix('#')
                .and_then(|pointer| self.root.pointer(pointer));
            match target {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }

    fn check(&self, node: &Node, schema: &J, path: &Path, out: &mut Diagnostics) {
        let schema = self.resolve(schema);
        let alternatives = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(J::as_array);
        if let Some(alternatives) = alternatives {
            return self.check_alternatives(node, alternatives, path, out);
        }
        if let Some(allowed) = schema.get("enum").and_then(J::as_array) {
            return self.check_allowed(node, allowed.iter().collect(), path, out);
        }
        if let Some(expected) = schema.get("const") {
            return self.check_allowed(node, vec![expected], path, out);
        }
        let types = expected_types(schema);
        let found = node_type(node);
        let fits =
            types.is_empty() || types.contains(&found) || (found == "integer" && types.contains(&"number"));
        if !fits {
            let mut message = format!("expected {}, found {}", describe_types(&types), node.describe());
            if types.contains(&"string")
                && matches!(node.value, Value::Int(_) | Value::Float(_) | Value::Bool(_))
            {
                message.push_str(&format!(
                    " (quote it: \"{}\")",
                    node.scalar_text().unwrap_or_default()
                ));
            }
            out.push(self.file, node.pos, path, message);
            return;
        }
        match &node.value {
            Value::Map(entries) => self.check_map(node, entries, schema, path, out),
            Value::Seq(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item, item_schema, &path.index(i), out);
                    }
                }
            }
            Value::Int(n) => {
                let min = schema.get("minimum").and_then(J::as_i64);
                let max = schema.get("maximum").and_then(J::as_i64);
                if min.is_some_and(|min| *n < min) || max.is_some_and(|max| *n > max) {
                    let range = match (min, max) {
                        (Some(min), Some(max)) => format!("{min} to {max}"),
                        (Some(min), None) => format!("at least {min}"),
                        (None, Some(max)) => format!("at most {max}"),
                        (None, None) => String::new(),
                    };
                    out.push(
                        self.file,
                        node.pos,
                        path,
                        format!("{n} is out of range ({range})"),
                    );
                } else {
                    self.check_format(node, schema, path, out);
                }
            }
            _ => self.check_format(node, schema, path, out),
        }
    }

    fn check_alternatives(&self, node: &Node, alternatives: &[J], path: &Path, out: &mut Diagnostics) {
        let resolved: Vec<&J> = alternatives.iter().map(|a| self.resolve(a)).collect();
        let is_null = |s: &&J| s.get("type").and_then(J::as_str) == Some("null");
        if node.value == Value::Null && resolved.iter().any(is_null) {
            return;
        }
        let rest: Vec<&J> = resolved.into_iter().filter(|s| !is_null(s)).collect();
        // An enum written as `oneOf` of constants (schemars does this when
        // variants carry doc comments).
        let constants: Option<Vec<&J>> = rest.iter().map(|s| s.get("const")).collect();
        if let Some(constants) = constants.filter(|c| !c.is_empty()) {
            return self.check_allowed(node, constants, path, out);
        }
        match rest.as_slice() {
            [only] => self.check(node, only, path, out),
            _ => {
                // When none fits, report against the alternative of the
                // node's own type (a map that lacks a field is told so,
                // not that it should have been a string).
                let mut first = None;
                let mut same_type = None;
                for alternative in &rest {
                    let mut attempt = Diagnostics::default();
                    self.check(node, alternative, path, &mut attempt);
                    if attempt.is_empty() {
                        return;
                    }
                    if same_type.is_none() && expected_types(alternative).contains(&node_type(node)) {
                        same_type = Some(attempt);
                    } else {
                        first.get_or_insert(attempt);
                    }
                }
                out.extend(same_type.or(first).unwrap_or_default());
            }
        }
    }

    fn check_allowed(&self, node: &Node, allowed: Vec<&J>, path: &Path, out: &mut Diagnostics) {
        let value = node.to_json();
        if allowed.iter().any(|a| **a == value) {
            return;
        }
        let names: Vec<&str> = allowed.iter().filter_map(|a| a.as_str()).collect();
        if let [only] = names.as_slice() {
            let message = format!("{} is not supported (use {only:?})", node.describe());
            out.push(self.file, node.pos, path, message);
            return;
        }
        let mut message = format!("{} is not one of {}", node.describe(), quoted_list(&names));
        if let Some(near) = node
            .scalar_text()
            .and_then(|text| closest(&text, names.iter().copied()))
        {
            message.push_str(&format!(" (did you mean {near:?}?)"));
        }
        out.push(self.file, node.pos, path, message);
    }

    fn check_map(
        &self,
        node: &Node,
        entries: &[(Node, Node)],
        schema: &J,
        path: &Path,
        out: &mut Diagnostics,
    ) {
        let empty = Map::new();
        let properties = schema.get("properties").and_then(J::as_object).unwrap_or(&empty);
        let additional = schema.get("additionalProperties");
        let mut seen: Vec<(&str, Pos)> = Vec::new();
        for (key, value) in entries {
            let Value::Str(name) = &key.value else {
                out.push(
                    self.file,
                    key.pos,
                    path,
                    format!("keys must be strings, found {}", key.describe()),
                );
                continue;
            };
            let field_path = path.field(name);
            if let Some((_, first)) = seen.iter().find(|(seen_name, _)| seen_name == name) {
                out.push(
                    self.file,
                    key.pos,
                    &field_path,
                    format!("duplicate key {name:?} (first at line {})", first.line),
                );
                continue;
            }
            seen.push((name, key.pos));
            if let Some(property) = properties.get(name.as_str()) {
                self.check(value, property, &field_path, out);
            } else if let Some(J::Bool(false)) = additional {
                let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                let message = match closest(name, known.iter().copied()) {
                    Some(near) => format!("unknown field {name:?} (did you mean {near:?}?)"),
                    None => format!("unknown field {name:?} (expected {})", quoted_list(&known)),
                };
                out.push(self.file, key.pos, &field_path, message);
            } else if let Some(additional @ J::Object(_)) = additional {
                self.check(value, additional, &field_path, out);
            }
        }
        let required = schema
            .get("required")
            .and_then(J::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for name in required.iter().filter_map(J::as_str) {
            if !entries.iter().any(|(k, _)| key_text(k) == name) {
                out.push(self.file, node.pos, path, format!("missing field {name:?}"));
            }
        }
    }

    fn check_format(&self, node: &Node, schema: &J, path: &Path, out: &mut Diagnostics) {
        let Some(format) = schema.get("format").and_then(J::as_str) else {
            return;
        };
        let Some(text) = node.scalar_text() else {
            return;
        };
        if format == "selector" {
            if let Err(err) = text.parse::<Selector>() {
                let column = node.pos.column + err.offset + usize::from(node.quoted);
                let pos = Pos {
                    line: node.pos.line,
                    column,
                };
                out.push(
                    self.file,
                    pos,
                    path,
                    format!("invalid selector {text:?}: {}", err.message),
                );
            }
            return;
        }
        let verdict = quantity::check_format(format, &text).or_else(|| manifest::check_format(format, &text));
        if let Some(Err(message)) = verdict {
            out.push(self.file, node.pos, path, message);
        }
    }
}

fn expected_types(schema: &J) -> Vec<&str> {
    match schema.get("type") {
        Some(J::String(t)) => vec![t.as_str()],
        Some(J::Array(ts)) => ts.iter().filter_map(J::as_str).collect(),
        _ => Vec::new(),
    }
}

fn node_type(node: &Node) -> &'static str {
    match node.value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::Float(_) => "number",
        Value::Str(_) => "string",
        Value::Seq(_) => "array",
        Value::Map(_) => "object",
    }
}

fn describe_types(types: &[&str]) -> String {
    let words: Vec<&str> = types
        .iter()
        .filter(|t| **t != "null")
        .map(|t| match *t {
            "object" => "a map",
            "array" => "a list",
            "string" => "a string",
            "integer" => "a whole number",
            "number" => "a number",
            "boolean" => "true or false",
            other => other,
        })
        .collect();
    words.join(" or ")
}

fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match quoted.as_slice() {
        [] => String::from("nothing"),
        [only] => only.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The candidate closest to a misspelt word, if one is close enough.
pub(crate) fn closest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    let word_lower = word.to_ascii_lowercase();
    candidates
        .map(|c| (edit_distance(&word_lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean() {
        let fields = ["image", "name", "healthyFor", "resources"];
        assert_eq!(closest("imgae", fields.iter().copied()), Some("image"));
        assert_eq!(closest("healthyfor", fields.iter().copied()), Some("healthyFor"));
        assert_eq!(closest("resource", fields.iter().copied()), Some("resources"));
        assert_eq!(closest("zzz", fields.iter().copied()), None);
    }
}
