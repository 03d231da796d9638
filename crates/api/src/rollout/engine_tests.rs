//! The rollout engine on a controllable clock: every step is given `now`.

use std::collections::BTreeMap;

use super::*;

const S: u64 = 1000;

fn policy(json: serde_json::Value) -> Rollout {
    serde_json::from_value(json).unwrap()
}

/// Sites s1..sN, all running version "1" before.
fn start(rollout: &Rollout, n: usize) -> RolloutState {
    let from = (1..=n)
        .map(|i| (format!("s{i}"), Some("1".to_string())))
        .collect();
    RolloutState::start(Some(rollout), "2", from, 0)
}

fn health(pairs: &[(&str, SiteHealth)]) -> BTreeMap<String, SiteHealth> {
    pairs.iter().map(|(s, h)| (s.to_string(), h.clone())).collect()
}

/// The sites that run the new version now. Every test that asks also
/// checks that `assigned_to` agrees with `assigned` site by site.
fn on_new(state: &RolloutState) -> Vec<String> {
    for (site, version) in state.assigned() {
        assert_eq!(state.assigned_to(&site), Some(version), "{site}");
    }
    assert_eq!(state.assigned_to("not-in-the-rollout"), None);
    state
        .assigned()
        .into_iter()
        .filter(|(_, v)| v.as_deref() == Some("2"))
        .map(|(s, _)| s)
        .collect()
}

fn wave_of(state: &RolloutState) -> Option<usize> {
    match state.phase {
        Phase::Running { wave, .. } => Some(wave),
        _ => None,
    }
}

use SiteHealth::*;

#[test]
fn canary_waits_for_healthy_for_or_a_promote() {
    let rollout = policy(serde_json::json!({ "canary": 1, "waves": { "size": 2 }, "healthyFor": "2m" }));
    let state = start(&rollout, 5);
    assert_eq!(on_new(&state), ["s1"], "only the canary at first");

    let state = state.step(Some(&rollout), &health(&[("s1", Progressing)]), 5 * S);
    assert_eq!(wave_of(&state), Some(0));
    let state = state.step(Some(&rollout), &health(&[("s1", UpToDate)]), 10 * S);
    let state = state.step(Some(&rollout), &health(&[("s1", UpToDate)]), 60 * S);
    assert_eq!(wave_of(&state), Some(0), "healthy for 50 s of the 2 min asked");
    // Healthy long enough: the next wave starts by itself.
    let later = state.step(Some(&rollout), &health(&[("s1", UpToDate)]), 130 * S);
    assert_eq!(wave_of(&later), Some(1));
    assert_eq!(on_new(&later), ["s1", "s2", "s3"]);
    // Or an operator promotes before that.
    let promoted = state.command(Command::Promote, 61 * S).unwrap().step(
        Some(&rollout),
        &health(&[("s1", UpToDate)]),
        62 * S,
    );
    assert_eq!(wave_of(&promoted), Some(1));
    // A site that stops being up to date resets the clock.
    let reset = state.step(Some(&rollout), &health(&[("s1", Progressing)]), 100 * S);
    let reset = reset.step(Some(&rollout), &health(&[("s1", UpToDate)]), 130 * S);
    assert_eq!(wave_of(&reset), Some(0));
}

#[test]
fn fixed_waves_run_to_the_end() {
    let rollout = policy(serde_json::json!({ "waves": { "size": 2 } }));
    let mut state = start(&rollout, 5);
    let all_up = health(&[
        ("s1", UpToDate),
        ("s2", UpToDate),
        ("s3", UpToDate),
        ("s4", UpToDate),
        ("s5", UpToDate),
    ]);
    let mut seen = Vec::new();
    for t in 1..10 {
        seen.push(on_new(&state).len());
        state = state.step(Some(&rollout), &all_up, t * S);
        if state.is_finished() {
            break;
        }
    }
    assert_eq!(seen, [2, 4, 5]);
    assert_eq!(state.phase, Phase::Succeeded);
    assert_eq!(on_new(&state).len(), 5);
}

#[test]
fn exponential_waves_grow() {
    let rollout = policy(serde_json::json!({ "waves": { "exponential": 2, "start": 1 } }));
    let state = start(&rollout, 7);
    let sizes: Vec<usize> = state.waves.iter().map(|w| w.sites.len()).collect();
    assert_eq!(sizes, [1, 2, 4]);
}

#[test]
fn a_failure_pauses_and_resume_continues() {
    let rollout = policy(serde_json::json!({ "waves": { "size": 1 }, "onFailure": "pause" }));
    let state = start(&rollout, 3);
    let paused = state.step(
        Some(&rollout),
        &health(&[("s1", Failed("web-0: exited with 3".into()))]),
        S,
    );
    let Phase::Paused { wave: 0, reason } = &paused.phase else {
        panic!("{:?}", paused.phase)
    };
    assert_eq!(
        reason,
        "1 site(s) failed, more than the 0 allowed: s1: web-0: exited with 3"
    );
    assert_eq!(on_new(&paused), ["s1"], "a pause leaves the site where it is");
    assert_eq!(
        paused.step(Some(&rollout), &health(&[("s1", UpToDate)]), 2 * S),
        paused,
        "paused stays paused"
    );
    let resumed = paused.command(Command::Resume, 3 * S).unwrap();
    let resumed = resumed.step(Some(&rollout), &health(&[("s1", UpToDate)]), 4 * S);
    assert_eq!(wave_of(&resumed), Some(1));
}

#[test]
fn failures_beyond_the_budget_roll_back() {
    let rollout =
        policy(serde_json::json!({ "waves": { "size": 2 }, "maxFailures": 1, "onFailure": "rollback" }));
    let mut from: BTreeMap<String, Option<String>> = (1..=4)
        .map(|i| (format!("s{i}"), Some("1".to_string())))
        .collect();
    from.insert("s5".to_string(), None); // a site new to the deployment
    let state = RolloutState::start(Some(&rollout), "2", from, 0);
    // One failure is within the budget: the wave still completes.
    let state = state.step(
        Some(&rollout),
        &health(&[("s1", Failed("crash".into())), ("s2", UpToDate)]),
        S,
    );
    assert_eq!(wave_of(&state), Some(1));
    // A second one is not.
    let state = state.step(
        Some(&rollout),
        &health(&[("s3", Failed("unhealthy".into())), ("s4", Progressing)]),
        2 * S,
    );
    let Phase::RolledBack { reason } = &state.phase else {
        panic!("{:?}", state.phase)
    };
    assert!(
        reason.starts_with("2 site(s) failed, more than the 1 allowed"),
        "{reason}"
    );
    let assigned = state.assigned();
    assert!(
        assigned
            .iter()
            .filter(|(s, _)| *s != "s5")
            .all(|(_, v)| v.as_deref() == Some("1"))
    );
    assert_eq!(assigned["s5"], None, "a new site goes back to running nothing");
    // A percentage budget: 25% of 4 sites is 1.
    let rollout = policy(serde_json::json!({ "waves": { "size": 4 }, "maxFailures": "25%" }));
    let state = start(&rollout, 4).step(
        Some(&rollout),
        &health(&[
            ("s1", Failed("x".into())),
            ("s2", UpToDate),
            ("s3", UpToDate),
            ("s4", UpToDate),
        ]),
        S,
    );
    assert_eq!(state.phase, Phase::Succeeded);
}

#[test]
fn offline_sites_are_deferred_not_failed() {
    let rollout = policy(serde_json::json!({ "waves": { "size": 1 } }));
    let state = start(&rollout, 2);
    let state = state.step(Some(&rollout), &health(&[("s1", Offline)]), S);
    assert_eq!(wave_of(&state), Some(1), "an offline site does not block");
    assert!(state.failed.is_empty());
    assert_eq!(
        on_new(&state),
        ["s1", "s2"],
        "it is given the new version to converge to when back"
    );
}

#[test]
fn a_wave_that_times_out_fails_its_sites() {
    let rollout = policy(serde_json::json!({ "waves": { "size": 2 }, "timeout": "15m" }));
    let state = start(&rollout, 4);
    let slow = health(&[("s1", UpToDate), ("s2", Progressing)]);
    let state = state.step(Some(&rollout), &slow, 10 * 60 * S);
    assert_eq!(wave_of(&state), Some(0));
    let state = state.step(Some(&rollout), &slow, 15 * 60 * S);
    let Phase::RolledBack { reason } = &state.phase else {
        panic!("{:?}", state.phase)
    };
    assert!(
        reason.contains("s2: not up to date before the wave's timeout"),
        "{reason}"
    );
}

#[test]
fn commands_that_do_not_apply_say_why() {
    let rollout = policy(serde_json::json!({ "waves": { "size": 1 } }));
    let done = start(&rollout, 1).step(Some(&rollout), &health(&[("s1", UpToDate)]), S);
    assert_eq!(done.phase, Phase::Succeeded);
    assert_eq!(
        done.command(Command::Promote, 2 * S).unwrap_err(),
        "cannot promote a rollout that is finished"
    );
    let running = start(&rollout, 1);
    assert_eq!(
        running.command(Command::Resume, S).unwrap_err(),
        "cannot resume a rollout that is running"
    );
    let aborted = running.command(Command::Abort, S).unwrap();
    assert_eq!(aborted.phase, Phase::Aborted { wave: 0 });
    assert_eq!(on_new(&aborted), ["s1"], "an abort leaves sites as they are");
}

#[test]
fn without_a_policy_everything_goes_at_once() {
    let state = RolloutState::start(
        None,
        "2",
        [("a".to_string(), None), ("b".to_string(), Some("1".to_string()))].into(),
        0,
    );
    assert_eq!(on_new(&state), ["a", "b"]);
    let state = state.step(None, &health(&[("a", UpToDate), ("b", UpToDate)]), S);
    assert_eq!(state.phase, Phase::Succeeded);
}
