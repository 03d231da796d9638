//! The store on a real PostgreSQL (`outpost control --store postgres://…`):
//! an apply is all or nothing even when the control plane is killed
//! halfway through it, a restarted control plane finds everything, and a
//! bad `--store` is refused by name. (The whole suite runs on PostgreSQL
//! too with `OUTPOST_TEST_STORE=postgres`; see ARCHITECTURE.md.)

use std::time::Instant;

use crate::common::{BIN, ControlPlane, postgres, site};

/// `count` sites named `PREFIX-N`, in one batch.
fn sites(prefix: &str, count: usize) -> String {
    (0..count)
        .map(|n| site(&format!("{prefix}-{n}"), "batch: big"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn stored_sites(control: &ControlPlane, token: &str, prefix: &str) -> usize {
    control
        .http()
        .names(token, "sites")
        .iter()
        .filter(|name| name.starts_with(&format!("{prefix}-")))
        .count()
}

#[test]
fn an_apply_of_a_thousand_sites_is_all_there_or_absent_after_a_sigkill() {
    let database = postgres::database();
    let mut control = ControlPlane::start_with("info", &["--store", &database]);
    let token = control.token();

    // How long a whole apply of 1,000 sites takes here, to kill the next
    // ones at a quarter, half and three quarters of it.
    let started = Instant::now();
    let batch = sites("first", 1000);
    assert_eq!(
        control
            .http()
            .apply(&token, &[("sites.yaml", &batch)], false)
            .status,
        200
    );
    let whole = started.elapsed();
    assert_eq!(stored_sites(&control, &token, "first"), 1000);

    let mut outcomes = Vec::new();
    for (round, quarter) in [1u32, 2, 3].into_iter().enumerate() {
        let prefix = format!("killed{round}");
        let batch = sites(&prefix, 1000);
        let http = control.http();
        let applying = {
            let token = token.clone();
            std::thread::spawn(move || http.apply(&token, &[("sites.yaml", &batch)], false).status)
        };
        std::thread::sleep(whole * quarter / 4);
        control.kill();
        let answered = applying.join().ok();
        control.restart();
        let token = control.token();
        let stored = stored_sites(&control, &token, &prefix);
        assert!(
            stored == 0 || stored == 1000,
            "{stored} of 1,000 sites stored after a SIGKILL at {quarter}/4 of an apply"
        );
        if answered == Some(200) {
            assert_eq!(stored, 1000, "an apply answered 200 must be stored whole");
        }
        outcomes.push(stored);
    }
    // What was there before the kills is all still there.
    assert_eq!(stored_sites(&control, &token, "first"), 1000);
    eprintln!("sites stored after each kill: {outcomes:?} (apply of 1,000 took {whole:?})");
}

#[test]
fn a_store_that_is_not_postgres_or_cannot_be_reached_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = |store: &str| {
        std::process::Command::new(BIN)
            .args([
                "control",
                "--listen",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--store", store])
            .output()
            .unwrap()
    };
    let wrong = run("mysql://db.example/outpost");
    assert_eq!(wrong.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("--store") && stderr.contains("is not a PostgreSQL URL"),
        "{stderr}"
    );

    // Nothing listens on port 1: the error names the store, never the password.
    let unreachable = run("postgres://outpost:hunter2@127.0.0.1:1/outpost");
    assert_eq!(unreachable.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.contains("opening the store in PostgreSQL (postgres://outpost:***@127.0.0.1:1/outpost)"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(
        !dir.path().join("outpost.db").exists(),
        "no SQLite store is made beside it"
    );
}
