//! Tests of the selector language: evaluation, explanations, precedence,
//! positioned errors and depth bounds.

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn evaluates() {
    let store = labels(&[
        ("customer", "acme"),
        ("env", "prod"),
        ("region", "eu-north"),
        ("memory", "8Gi"),
        ("cpus", "4"),
        ("camera", "true"),
    ]);
    let table = [
        ("", true),
        ("customer", true),
        ("!customer", false),
        ("!gpu", true),
        ("customer = acme", true),
        ("customer == acme", true),
        ("customer = 'acme'", true),
        ("customer != acme", false),
        ("tier != gold", true),
        ("tier = gold", false),
        ("region in (eu-north, eu-west)", true),
        ("region in (us-east)", false),
        ("region not in (us-east)", true),
        ("tier not in (gold)", true),
        ("memory >= 4Gi", true),
        ("memory >= 8Gi", true),
        ("memory > 8Gi", false),
        ("memory < 16G", true),
        ("cpus > 2", true),
        ("cpus <= 2", false),
        ("customer > 2", false),
        ("missing >= 1", false),
        ("customer = acme and env = prod", true),
        ("customer = acme and env = dev", false),
        ("customer = other or env = prod", true),
        ("not customer = other", true),
        ("not (customer = acme and env = prod)", false),
        // `and` binds tighter than `or`:
        ("env = dev and customer = other or camera", true),
        ("env = dev and (customer = other or camera)", false),
        // `not` binds tighter than `and`:
        ("not env = dev and camera", true),
        ("not (env = prod and camera)", false),
        ("camera and memory >= 2Gi", true),
    ];
    for (text, want) in table {
        let selector: Selector = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(selector.matches(&store), want, "{text}");
    }
}

#[test]
fn explains_why_not() {
    let host = labels(&[("memory", "1Gi"), ("cpus", "2"), ("zone", "b"), ("gpu", "1")]);
    let table = [
        ("camera", Some("no camera")),
        ("memory >= 2Gi", Some("memory 1Gi < 2Gi")),
        ("cpus > 2", Some("cpus 2 <= 2")),
        ("zone = a", Some("zone is b, not a")),
        ("zone in (a, c)", Some("zone is b, not one of a, c")),
        ("!gpu", Some("has gpu")),
        ("camera and memory >= 2Gi", Some("no camera")),
        ("memory >= 512Mi and camera", Some("no camera")),
        ("camera or zone = a", Some("no camera, and zone is b, not a")),
        ("memory >= 512Mi", None),
    ];
    for (text, want) in table {
        let selector: Selector = text.parse().unwrap();
        assert_eq!(selector.explain(&host).as_deref(), want, "{text}");
    }
}

#[test]
fn precedence_shapes() {
    let parsed: Selector = "a or b and not c".parse().unwrap();
    assert_eq!(
        parsed.expr,
        Expr::Or(
            Box::new(Expr::Exists("a".into())),
            Box::new(Expr::And(
                Box::new(Expr::Exists("b".into())),
                Box::new(Expr::Not(Box::new(Expr::Exists("c".into()))))
            ))
        )
    );
}

#[test]
fn rejects_with_position() {
    let table = [
        ("customer =", 10, "expected a value, found the end"),
        ("customer = acme and", 19, "expected a label key, found the end"),
        ("(env = prod", 11, "expected ')'"),
        (
            "env = prod)",
            10,
            "expected 'and', 'or' or the end of the selector",
        ),
        (
            "env = prod env = dev",
            11,
            "expected 'and', 'or' or the end of the selector",
        ),
        (
            "region in eu-north",
            10,
            "expected '(' to start the list of values",
        ),
        ("region in (a b)", 13, "expected ',' or ')' in the list of values"),
        (
            "memory >= lots",
            10,
            "\"lots\" is not a number or size, which >= needs",
        ),
        ("env = 'prod", 6, "unterminated ' quote"),
        ("env ~ prod", 4, "unexpected character '~'"),
        ("region not (a)", 11, "expected 'in' after 'not'"),
        ("and", 0, "expected a label key"),
    ];
    for (text, offset, message) in table {
        let err = text.parse::<Selector>().unwrap_err();
        assert_eq!((err.offset, err.message.as_str()), (offset, message), "{text}");
    }
}

/// Issue 11, defect 3: 2,500 parentheses overflowed the stack of the
/// control plane (in `?selector=` and a Deployment's `sites`) and the CLI.
#[test]
fn deep_selectors_are_refused_with_position() {
    let parens = format!("{}a{}", "(".repeat(2500), ")".repeat(2500));
    let err = parens.parse::<Selector>().unwrap_err();
    assert_eq!(err.offset, 64, "{err}");
    assert!(err.message.contains("deeper than 64 levels"), "{err}");

    let nots = format!("{}a", "not ".repeat(1000));
    assert_eq!(nots.parse::<Selector>().unwrap_err().offset, 64 * 4);

    // A long chain of `and` is as deep as it is long when evaluated.
    let chain = vec!["a"; 1000].join(" and ");
    let err = chain.parse::<Selector>().unwrap_err();
    assert_eq!(err.offset, 63 * 6 + 2, "{err}"); // the 64th `and`
    assert!(err.message.contains("use 'in (a, b)'"), "{err}");

    // What real selectors do stays well inside.
    let fine = format!("{}a{}", "(".repeat(60), ")".repeat(60));
    assert!(fine.parse::<Selector>().is_ok());
    assert!(vec!["a"; 60].join(" or ").parse::<Selector>().is_ok());
}
