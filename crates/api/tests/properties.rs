//! Property tests (issue 11): generated and mutated manifests and selectors
//! never panic, never expand past their bounds, and every refusal names a
//! position inside the input. `PROPTEST_CASES` sets the number of cases
//! (`scripts/test` runs 2,000; `bench/properties` many more).

#![allow(clippy::unwrap_used)]

use outpost_api::Selector;
use outpost_api::parse_documents;
use outpost_api::yaml::{self, MAX_ALIAS_NODES, Node, Value};
use proptest::prelude::*;

const EXAMPLES: [&str; 3] = [
    include_str!("../../../examples/sites.yaml"),
    include_str!("../../../examples/pos-gateway.yaml"),
    include_str!("../../../examples/camera-analytics.yaml"),
];

/// Characters that mean something to YAML, and a few that mean nothing.
const SIGNIFICANT: &[char] = &[
    ':', '-', '[', ']', '{', '}', '&', '*', '!', '|', '>', '\'', '"', '#', '\n', ' ', '\t', ',', '?', '%',
    '@', '`', '0', '9', 'a', 'Z', '\u{0}', '\u{feff}', 'é', '\u{2028}',
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Insert(usize, char),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), prop::sample::select(SIGNIFICANT)).prop_map(|(at, c)| Mutation::Insert(at, c)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for mutation in mutations {
        match *mutation {
            Mutation::Delete(at) if !chars.is_empty() => {
                chars.remove(at % chars.len());
            }
            Mutation::Insert(at, c) => chars.insert(at % (chars.len() + 1), c),
            Mutation::Truncate(at) => chars.truncate(at % (chars.len() + 1)),
            Mutation::DuplicateLine(at) | Mutation::SwapLines(at, _) => {
                let text: String = chars.iter().collect();
                let mut lines: Vec<&str> = text.split('\n').collect();
                let i = at % lines.len();
                if let Mutation::SwapLines(_, other) = *mutation {
                    let j = other % lines.len();
                    lines.swap(i, j);
                } else {
                    lines.insert(i, lines[i]);
                }
                chars = lines.join("\n").chars().collect();
            }
            Mutation::Delete(_) => {}
        }
    }
    chars.into_iter().collect()
}

/// Parses and checks that every refusal is positioned inside the text.
fn assert_positioned(text: &str) -> Result<(), TestCaseError> {
    let lines = text.split('\n').count();
    if let Err(diagnostics) = parse_documents("input.yaml", text) {
        prop_assert!(!diagnostics.is_empty());
        for diagnostic in &diagnostics.0 {
            prop_assert_eq!(&diagnostic.file, "input.yaml");
            prop_assert!(
                (1..=lines + 1).contains(&diagnostic.line),
                "line {} of {lines}: {diagnostic}",
                diagnostic.line
            );
            prop_assert!(diagnostic.column >= 1, "{diagnostic}");
            prop_assert!(!diagnostic.message.is_empty());
        }
    }
    Ok(())
}

fn count(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(count).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| count(k) + count(v)).sum(),
        _ => 0,
    }
}

proptest! {
    /// Issue 13: a rollout's release label reads back as it was written,
    /// and any text reads as a label without a panic.
    #[test]
    fn release_labels_read_back(
        version in "[a-z0-9.+_-]{1,20}",
        secrets in prop::collection::btree_map("[a-z][a-z0-9-]{0,10}", any::<u64>(), 0..4),
        noise in ".{0,60}",
    ) {
        let label = outpost_api::secret::release(&version, &secrets);
        let (read_version, read_secrets) = outpost_api::secret::split_release(&label);
        prop_assert_eq!(read_version, version.as_str());
        prop_assert_eq!(read_secrets, secrets);
        let _ = outpost_api::secret::split_release(&noise);
    }

    #[test]
    fn mutated_examples_are_parsed_or_refused_with_a_position(
        example in 0..EXAMPLES.len(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        assert_positioned(&mutate(EXAMPLES[example], &mutations))?;
    }

    #[test]
    fn arbitrary_text_is_parsed_or_refused_with_a_position(text in "\\PC{0,300}") {
        assert_positioned(&text)?;
    }

    #[test]
    fn yaml_shaped_text_is_parsed_or_refused_with_a_position(
        text in "([a-z0-9]{1,6}|[:\\-\\[\\]{}&*!|>'\"#,? ]|\n  ){0,120}",
    ) {
        assert_positioned(&text)?;
    }

    /// Anchors and aliases nested `levels` deep with `fanout` aliases each:
    /// what loads never has more nodes than were written plus the budget.
    #[test]
    fn aliases_never_expand_past_the_budget(levels in 1usize..12, fanout in 1usize..16) {
        let mut text = String::from("l0: &l0 [x, y]\n");
        for level in 1..=levels {
            let aliases = vec![format!("*l{}", level - 1); fanout].join(", ");
            text.push_str(&format!("l{level}: &l{level} [{aliases}]\n"));
        }
        let written = 1 + 2 * (3 + levels * (fanout + 1));
        match yaml::load(&text) {
            Ok(documents) => {
                let nodes: usize = documents.iter().map(count).sum();
                prop_assert!(nodes <= written + MAX_ALIAS_NODES, "{nodes} nodes from {written}");
            }
            Err(err) => {
                prop_assert!(err.message.contains("aliases expand"), "{:?}", err);
                prop_assert!(err.pos.line >= 2 && err.pos.line <= levels + 1, "{:?}", err);
            }
        }
    }

    #[test]
    fn nesting_of_any_depth_is_loaded_or_refused(depth in 1usize..400, flow in any::<bool>()) {
        let text = if flow {
            format!("x: {}1{}\n", "[".repeat(depth), "]".repeat(depth))
        } else {
            format!("x:\n{}1\n", "- ".repeat(depth))
        };
        let loaded = yaml::load(&text);
        if depth < yaml::MAX_DEPTH {
            prop_assert!(loaded.is_ok(), "{:?}", loaded.err());
        } else {
            prop_assert!(loaded.is_err());
        }
    }

    #[test]
    fn selectors_are_parsed_or_refused_at_a_character_inside(
        text in "([a-z]{1,4}|=|!=|>=|<|!|\\(|\\)|,| and | or | not | in |'|[0-9]{1,3}(Gi)?| ){0,80}",
    ) {
        match text.parse::<Selector>() {
            Ok(selector) => {
                let again: Selector = selector.as_str().parse().unwrap();
                prop_assert_eq!(again.expr(), selector.expr());
            }
            Err(err) => prop_assert!(err.offset <= text.chars().count(), "{err} in {text:?}"),
        }
    }

    #[test]
    fn arbitrary_selectors_never_panic(text in "\\PC{0,200}") {
        if let Err(err) = text.parse::<Selector>() {
            prop_assert!(err.offset <= text.chars().count());
        }
    }

    #[test]
    fn workloads_from_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<outpost_api::workload::Workload>(&bytes);
    }
}
