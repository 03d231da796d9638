//! Helpers of the application-stream tests: a container's endpoint and
//! token (from its environment), plain HTTP to the agent's endpoint, every
//! stored record of a topic, and a time zone that puts a window open or
//! closed now.

use std::time::Duration;

use super::{ControlPlane, docker};

/// `OUTPOST_STREAMS_URL` and `OUTPOST_STREAMS_TOKEN` of a container.
pub fn endpoint(container: &str) -> (String, String) {
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        container,
    ]);
    let value = |name: &str| {
        env.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{container} has no {name} in {env}"))
            .to_string()
    };
    (value("OUTPOST_STREAMS_URL"), value("OUTPOST_STREAMS_TOKEN"))
}

/// One request to the agent's endpoint: (status, body).
pub fn call(method: &str, url: &str, token: Option<&str>, body: Option<(&str, Vec<u8>)>) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut request = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// Every stored record of a topic, oldest first, page by page.
pub fn stored(control: &ControlPlane, application: &str, topic: &str) -> Vec<serde_json::Value> {
    let (http, token) = (control.http(), control.token());
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/api/v1/streams/{application}/{topic}?after={after}&limit=10000");
        let response = http.send("GET", &path, Some(&token), None);
        assert_eq!(response.status, 200, "{}", response.body);
        let page = response.body["records"].as_array().unwrap().clone();
        if page.is_empty() {
            return records;
        }
        after = response.body["next"].as_i64().unwrap();
        records.extend(page);
    }
}

/// An `Etc/GMT±N` zone whose local hour now is inside `[start, end)` (or
/// outside it, with `open` false): a clock the test controls, by moving
/// the site to another zone.
pub fn zone(open: bool, (start, end): (i64, i64)) -> String {
    let utc_hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        % 24) as i64;
    // Etc/GMT+N is UTC-N; the names run from Etc/GMT-14 to Etc/GMT+12. An
    // hour that could roll over into (or out of) the window is skipped.
    (-14..=12)
        .find_map(|n: i64| {
            let local = (utc_hour - n).rem_euclid(24);
            let next = (local + 1) % 24;
            let inside = |hour: i64| hour >= start && hour < end;
            (inside(local) == open && inside(next) == open).then(|| match n {
                0 => "Etc/GMT".to_string(),
                n if n > 0 => format!("Etc/GMT+{n}"),
                n => format!("Etc/GMT{n}"),
            })
        })
        .unwrap()
}
