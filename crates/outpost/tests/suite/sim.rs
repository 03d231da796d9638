//! The fleet simulator as a correctness check (not a timed test): 200
//! simulated sites, each the real agent stack with its own certificate and
//! TLS session, against a real control plane process. Every site must
//! converge on both versions, five crashed sites must be restarted, three
//! sites failing their probes must be reported and recover, every
//! site must reconnect after the control plane restarts, and nothing may be
//! lost or restarted needlessly.

use std::process::Command;

use crate::common::BIN;

#[test]
fn two_hundred_sites_converge_survive_a_restart_and_lose_nothing() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "sim",
            "bench",
            "--sites",
            "200",
            "--idle",
            "1s",
            "--start-delay",
            "50ms",
        ])
        .args([
            "--crash-sites",
            "5",
            "--unhealthy-sites",
            "3",
            "--timeout",
            "5m",
            "-o",
            "json",
            "--work-dir",
        ])
        .arg(work.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the simulation failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["sites"], 200, "{report}");
    assert_eq!(report["sites_lost"], 0, "{report}");
    assert_eq!(report["needless_restarts"], 0, "{report}");
    assert_eq!(report["crashed_sites_restarted"], 5, "{report}");
    assert_eq!(report["unhealthy_sites_reported"], 3, "{report}");
    let reconnect = report["reconnect_seconds"].as_f64().unwrap();
    let after_listening = report["reconnect_after_listening_seconds"].as_f64().unwrap();
    assert!(0.0 < after_listening && after_listening < reconnect, "{report}");
    assert!(stderr.contains("all 200 sites reconnected"), "{stderr}");
    // The control plane's log (both processes, appended) shows 200
    // enrollments, sessions from 200 distinct certificates, and after the
    // restart a new session from every one of them: the restart really cut
    // every session and every site came back.
    let log = std::fs::read_to_string(work.path().join("control.log")).unwrap();
    assert_eq!(log.matches("host enrolled").count(), 200);
    let connected = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| l.contains("agent connected"))
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("site=")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(connected(&log).len(), 200);
    let second_start = log
        .rfind("control plane listening")
        .expect("the restarted control plane logged that it listens");
    assert!(
        log[..second_start].contains("control plane listening"),
        "one restart"
    );
    assert_eq!(connected(&log[second_start..]).len(), 200);
}
