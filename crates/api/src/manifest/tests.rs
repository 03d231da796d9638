//! Tests of the manifest types: names, images and formats.

use super::*;

#[test]
fn dns_labels() {
    for ok in ["a", "store-042", "x1", &"a".repeat(63)] {
        assert_eq!(check_dns_label(ok), Ok(()), "{ok}");
    }
    assert_eq!(
        check_dns_label("Store_042").unwrap_err(),
        r#""Store_042" is not a DNS label (lower-case letters, digits and '-'; try "store-042")"#
    );
    for bad in ["", "-a", "a-", "a.b", &"a".repeat(64)] {
        assert!(check_dns_label(bad).is_err(), "{bad}");
    }
}

#[test]
fn images() {
    for ok in [
        "busybox",
        "busybox:1.36",
        "registry.example.com/pos/api:1.4.2",
        "localhost:5000/cam/analytics",
        "registry.example.com:5000/a/b/c:v1-rc.1",
        "outpost/busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert_eq!(check_image(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "Registry/Pos",
        "pos api",
        "pos/api:",
        "pos//api",
        "pos/api:-x",
        "pos/api@sha256:xyz",
        "-pos/api",
    ] {
        assert!(check_image(bad).is_err(), "{bad}");
    }
}

#[test]
fn kinds_from_cli() {
    assert_eq!(Kind::from_cli("apps"), Some(Kind::Application));
    assert_eq!(Kind::from_cli("Deploy"), Some(Kind::Deployment));
    assert_eq!(Kind::from_cli("pods"), None);
}
