//! Application event streams (issue 15): a busybox producer at a site that
//! is cut off, a real control plane, a real NATS server, and the agent
//! killed on the way. What is produced arrives once and in order, urgent
//! first; a window holds its topic until the site's clock (its time zone)
//! opens it; what is published while the site is away arrives when it
//! returns; a token opens only its own application's topics.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::link::Link;
use crate::common::nats::Nats;
use crate::common::streams::{call, endpoint, stored, zone};
use crate::common::{Agent, ControlPlane, docker, eventually, unique_site};

const WINDOW: (i64, i64) = (1, 5);

fn site(name: &str, zone: &str) -> String {
    format!(
        "apiVersion: outpost/v1\nkind: Site\nmetadata: {{ name: {name}, labels: {{ group: {name} }} }}\nspec:\n  variables: {{ timezone: \"{zone}\" }}\n"
    )
}

fn applications(group: &str) -> String {
    let app = |name: &str, streams: &str| {
        format!(
            "apiVersion: outpost/v1\nkind: Application\nmetadata: {{ name: {name} }}\nspec:\n  version: \"1\"\n  services:\n    - name: till\n      containers:\n        - name: till\n          image: outpost-local/busybox:1\n          command: [\"sh\", \"-c\", \"sleep 3600\"]\n  streams:\n{streams}---\napiVersion: outpost/v1\nkind: Deployment\nmetadata: {{ name: {name} }}\nspec: {{ application: {name}, sites: group = {group} }}\n---\n"
        )
    };
    app(
        "pos",
        "    - { name: receipts, direction: up, retention: 64Mi, priority: bulk }\n    - { name: nightly, direction: up, retention: 1Mi, priority: bulk, window: \"01:00-05:00\" }\n    - { name: alarms, direction: up, retention: 1Mi, priority: urgent }\n    - { name: prices, direction: down, retention: 1Mi }\n    - { name: readings, direction: local, retention: 1Mi }\n",
    ) + &app(
        "meter",
        "    - { name: telemetry, direction: up, retention: 1Mi }\n",
    )
}

fn container(site: &str, application: &str) -> String {
    eventually(Duration::from_secs(60), "the application's container", || {
        let names = docker(&[
            "ps",
            "--filter",
            &format!("label=io.outpost.site={site}"),
            "--filter",
            &format!("label=io.outpost.application={application}"),
            "--format",
            "{{.Names}}",
        ]);
        names.lines().next().map(str::to_string)
    })
}

#[test]
fn a_cut_off_site_keeps_its_records_and_each_arrives_once_in_order_urgent_first() {
    let nats = Nats::start();
    let control = ControlPlane::start_with("info", &["--streams-nats", &nats.url]);
    let link = Link::to(&control.agent_url);
    let name = unique_site("streams");
    control.apply(&site(&name, &zone(false, WINDOW))).success();
    let mut agent = Agent::enroll_through(&control, &name, "till", &link.url, &[]);
    control.apply(&applications(&name)).success();
    let pos = container(&name, "pos");
    let meter = container(&name, "meter");

    // Each container has the endpoint and a token of its own.
    let (url, token) = endpoint(&pos);
    let (_, meter_token) = endpoint(&meter);
    assert!(url.starts_with("http://172."), "{url}");
    let topic = |topic: &str| format!("{url}/v1/streams/{topic}");
    let ndjson = |text: String| Some(("application/x-ndjson", text.into_bytes()));

    // A token opens its own application's topics, and nothing else.
    assert_eq!(
        call(
            "POST",
            &topic("telemetry"),
            Some(&meter_token),
            ndjson("{}".into())
        )
        .0,
        200
    );
    let (status, why) = call("POST", &topic("telemetry"), Some(&token), ndjson("{}".into()));
    assert_eq!(status, 403, "{why}");
    assert!(
        why.contains("application \\\"pos\\\" has no topic \\\"telemetry\\\""),
        "{why}"
    );
    assert_eq!(call("POST", &topic("receipts"), None, ndjson("{}".into())).0, 401);
    let forged = format!(
        "pos.{}.{}",
        pos.rsplit('.').nth(1).unwrap_or("x"),
        "00".repeat(32)
    );
    assert_eq!(
        call("POST", &topic("receipts"), Some(&forged), ndjson("{}".into())).0,
        403
    );
    let (status, why) = call("GET", &topic("receipts"), Some(&token), None);
    assert_eq!(status, 403, "{why}");
    assert!(why.contains("an up topic"), "{why}");

    // A local topic: written and read at the site, offsets kept per consumer.
    call(
        "POST",
        &topic("readings"),
        Some(&token),
        ndjson("{\"t\":1}\n{\"t\":2}\n".into()),
    );
    let (_, read) = call(
        "GET",
        &format!("{}?consumer=dash", topic("readings")),
        Some(&token),
        None,
    );
    assert!(
        read.contains("{\\\"t\\\":1}") && read.contains("\"next\":3"),
        "{read}"
    );
    call(
        "GET",
        &format!("{}?consumer=dash&from=3", topic("readings")),
        Some(&token),
        None,
    );
    let (_, read) = call(
        "GET",
        &format!("{}?consumer=dash", topic("readings")),
        Some(&token),
        None,
    );
    assert!(
        read.contains("\"records\":[]") && read.contains("\"next\":3"),
        "{read}"
    );

    // The site goes away. A busybox producer writes 1,000 receipts; 10 MB
    // of bulk receipts follow, then one urgent alarm and a nightly record.
    link.cut();
    let produced = docker(&[
        "exec",
        &pos,
        "sh",
        "-c",
        "i=0; while [ $i -lt 1000 ]; do wget -q -O /dev/null --header \"Authorization: Bearer $OUTPOST_STREAMS_TOKEN\" --post-data \"{\\\"n\\\":$i}\" \"$OUTPOST_STREAMS_URL/v1/streams/receipts\" || exit 1; i=$((i+1)); done; echo produced",
    ]);
    assert_eq!(produced.trim(), "produced");
    let bulk: String = (0..1024)
        .map(|i| format!("{{\"bulk\":\"{i:01012}\"}}\n"))
        .collect();
    for _ in 0..10 {
        let (status, body) = call("POST", &topic("receipts"), Some(&token), ndjson(bulk.clone()));
        assert_eq!(status, 200, "{body}");
    }
    call(
        "POST",
        &topic("alarms"),
        Some(&token),
        ndjson("{\"alarm\":\"door\"}".into()),
    );
    call(
        "POST",
        &topic("nightly"),
        Some(&token),
        ndjson("{\"report\":1}".into()),
    );
    // Published while the site is away.
    let published = control
        .cli_stdin(
            &["streams", "publish", "pos", "prices", "-f", "-"],
            "{\"sku\":7,\"price\":250}\n",
        )
        .success()
        .to_string();
    assert!(
        published.contains("1 record(s)") && published.contains(&name),
        "{published}"
    );

    // The agent is killed outright while the site is cut off, and comes back.
    agent.kill();
    agent.start();
    std::thread::sleep(Duration::from_secs(2));
    link.heal();

    let expected = 1000 + 10 * 1024;
    let receipts = eventually(Duration::from_secs(120), "every receipt stored", || {
        let records = stored(&control, "pos", "receipts");
        (records.len() >= expected).then_some(records)
    });
    assert_eq!(receipts.len(), expected, "a record was stored twice");
    let seqs: Vec<u64> = receipts.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=expected as u64).collect::<Vec<_>>(),
        "out of order or a gap"
    );
    for (i, record) in receipts.iter().take(1000).enumerate() {
        assert_eq!(record["data"], format!("{{\"n\":{i}}}"));
    }
    let alarms = stored(&control, "pos", "alarms");
    assert_eq!(alarms.len(), 1);
    let first_receipt = receipts[0]["id"].as_i64().unwrap();
    assert!(
        alarms[0]["id"].as_i64().unwrap() < first_receipt,
        "the urgent alarm must arrive before 10 MB of bulk"
    );

    // The down-record reached the site, and its consumer reads it.
    let consumed = eventually(Duration::from_secs(60), "the price list at the site", || {
        let read = docker(&[
            "exec",
            &pos,
            "sh",
            "-c",
            "wget -q -O - --header \"Authorization: Bearer $OUTPOST_STREAMS_TOKEN\" \"$OUTPOST_STREAMS_URL/v1/streams/prices?consumer=pricer\"",
        ]);
        read.contains("sku").then_some(read)
    });
    assert!(consumed.contains("\"offset\":1"), "{consumed}");

    // The window is closed at the site's time: the nightly record waits,
    // and the site says why.
    assert!(stored(&control, "pos", "nightly").is_empty());
    let described = eventually(Duration::from_secs(30), "the held topic in describe site", || {
        let text = control.cli(&["describe", "site", &name]).success().to_string();
        text.contains("held until its window").then_some(text)
    });
    assert!(described.contains("pos/nightly"), "{described}");
    // The site's clock moves into the window (another time zone).
    control.apply(&site(&name, &zone(true, WINDOW))).success();
    eventually(
        Duration::from_secs(60),
        "the nightly record once the window opens",
        || (stored(&control, "pos", "nightly").len() == 1).then_some(()),
    );

    // NATS got every receipt once, in order, after it was stored.
    let subject = format!("outpost.pos.receipts.{name}");
    let messages = eventually(Duration::from_secs(60), "every receipt in JetStream", || {
        let messages = nats.messages("OUTPOST", &subject);
        (messages.len() >= expected).then_some(messages)
    });
    assert_eq!(messages.len(), expected);
    let nats_seqs: Vec<String> = messages.iter().map(|(seq, _)| seq.clone()).collect();
    let want: Vec<String> = (1..=expected).map(|s| s.to_string()).collect();
    assert_eq!(nats_seqs, want);
    assert_eq!(messages[0].1, "{\"n\":0}");

    // Nothing is left behind at the site.
    let metrics = control
        .http()
        .send("GET", "/metrics", Some(&control.token()), None);
    let text = metrics.body.as_str().unwrap_or_default().to_string();
    let backlog: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("outpost_stream_backlog_records{") && l.contains("direction=\"up\""))
        .collect();
    assert!(!backlog.is_empty(), "{text}");
    eventually(Duration::from_secs(30), "the backlog reported empty", || {
        let metrics = control
            .http()
            .send("GET", "/metrics", Some(&control.token()), None);
        let text = metrics.body.as_str().unwrap_or_default().to_string();
        text.lines()
            .filter(|l| l.starts_with("outpost_stream_backlog_records{") && l.contains("direction=\"up\""))
            .all(|l| l.ends_with(" 0"))
            .then_some(())
    });
}

#[test]
fn a_polling_site_sends_and_receives_records_on_its_polls() {
    let control = ControlPlane::start();
    let name = unique_site("streams-poll");
    control.apply(&site(&name, "UTC")).success();
    let _agent = Agent::enroll_with(&control, &name, "till", &["--mode", "poll", "--interval", "2s"]);
    let app = "apiVersion: outpost/v1\nkind: Application\nmetadata: { name: pos }\nspec:\n  version: \"1\"\n  services:\n    - name: till\n      containers:\n        - name: till\n          image: outpost-local/busybox:1\n          command: [\"sh\", \"-c\", \"sleep 3600\"]\n  streams:\n    - { name: receipts, direction: up, retention: 1Mi }\n    - { name: prices, direction: down, retention: 1Mi }\n";
    control.apply(&format!("{app}---\napiVersion: outpost/v1\nkind: Deployment\nmetadata: {{ name: pos }}\nspec: {{ application: pos, sites: group = {name} }}\n")).success();
    let pos = container(&name, "pos");
    let (url, token) = endpoint(&pos);
    let records: String = (0..1500).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let (status, body) = call(
        "POST",
        &format!("{url}/v1/streams/receipts"),
        Some(&token),
        Some(("application/x-ndjson", records.into_bytes())),
    );
    assert_eq!(status, 200, "{body}");
    // More than one poll's batch: the poll goes on until the queue is empty.
    let receipts = eventually(Duration::from_secs(60), "the receipts of a polling site", || {
        let records = stored(&control, "pos", "receipts");
        (records.len() >= 1500).then_some(records)
    });
    assert_eq!(receipts.len(), 1500);
    assert_eq!(receipts[1499]["data"], "{\"n\":1499}");

    control
        .cli_stdin(
            &[
                "streams",
                "publish",
                "pos",
                "prices",
                "--sites",
                &format!("group = {name}"),
                "-f",
                "-",
            ],
            "{\"sku\":1}\n{\"sku\":2}\n",
        )
        .success();
    let read = eventually(Duration::from_secs(60), "the prices at a polling site", || {
        let (_, read) = call(
            "GET",
            &format!("{url}/v1/streams/prices?from=1"),
            Some(&token),
            None,
        );
        read.contains("{\\\"sku\\\":2}").then_some(read)
    });
    assert!(read.contains("\"next\":3"), "{read}");
}
