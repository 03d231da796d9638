//! The rollout engine on a controllable clock: every step is given `now`.

use std::collections::BTreeMap;

use super::*;

const S: u64 = 1000;

/// A policy without pre-staging unless it says so: these tests are about
/// waves, failures and commands.
fn policy(mut json: serde_json::Value) -> Rollout {
    let fields = json.as_object_mut().unwrap();
    fields.entry("prestage").or_insert(serde_json::Value::Bool(false));
    serde_json::from_value(json).unwrap()
}

fn no_images() -> std::collections::BTreeSet<String> {
    Default::default()
}

fn holding(sites: &[&str]) -> std::collections::BTreeSet<String> {
    sites.iter().map(|s| s.to_string()).collect()
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

    let state = state.step(
        Some(&rollout),
        &health(&[("s1", Progressing)]),
        &no_images(),
        5 * S,
    );
    assert_eq!(wave_of(&state), Some(0));
    let state = state.step(Some(&rollout), &health(&[("s1", UpToDate)]), &no_images(), 10 * S);
    let state = state.step(Some(&rollout), &health(&[("s1", UpToDate)]), &no_images(), 60 * S);
    assert_eq!(wave_of(&state), Some(0), "healthy for 50 s of the 2 min asked");
    // Healthy long enough: the next wave starts by itself.
    let later = state.step(
        Some(&rollout),
        &health(&[("s1", UpToDate)]),
        &no_images(),
        130 * S,
    );
    assert_eq!(wave_of(&later), Some(1));
    assert_eq!(on_new(&later), ["s1", "s2", "s3"]);
    // Or an operator promotes before that.
    let promoted = state.command(Command::Promote, 61 * S).unwrap().step(
        Some(&rollout),
        &health(&[("s1", UpToDate)]),
        &no_images(),
        62 * S,
    );
    assert_eq!(wave_of(&promoted), Some(1));
    // A site that stops being up to date resets the clock.
    let reset = state.step(
        Some(&rollout),
        &health(&[("s1", Progressing)]),
        &no_images(),
        100 * S,
    );
    let reset = reset.step(
        Some(&rollout),
        &health(&[("s1", UpToDate)]),
        &no_images(),
        130 * S,
    );
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
        state = state.step(Some(&rollout), &all_up, &no_images(), t * S);
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
        &no_images(),
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
        paused.step(Some(&rollout), &health(&[("s1", UpToDate)]), &no_images(), 2 * S),
        paused,
        "paused stays paused"
    );
    let resumed = paused.command(Command::Resume, 3 * S).unwrap();
    let resumed = resumed.step(Some(&rollout), &health(&[("s1", UpToDate)]), &no_images(), 4 * S);
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
        &no_images(),
        S,
    );
    assert_eq!(wave_of(&state), Some(1));
    // A second one is not.
    let state = state.step(
        Some(&rollout),
        &health(&[("s3", Failed("unhealthy".into())), ("s4", Progressing)]),
        &no_images(),
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
        &no_images(),
        S,
    );
    assert_eq!(state.phase, Phase::Succeeded);
}

#[test]
fn offline_sites_are_deferred_not_failed() {
    let rollout = policy(serde_json::json!({ "waves": { "size": 1 } }));
    let state = start(&rollout, 2);
    let state = state.step(Some(&rollout), &health(&[("s1", Offline)]), &no_images(), S);
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
    let state = state.step(Some(&rollout), &slow, &no_images(), 10 * 60 * S);
    assert_eq!(wave_of(&state), Some(0));
    let state = state.step(Some(&rollout), &slow, &no_images(), 15 * 60 * S);
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
    let done = start(&rollout, 1).step(Some(&rollout), &health(&[("s1", UpToDate)]), &no_images(), S);
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
fn without_a_policy_everything_goes_at_once_once_staged() {
    let state = RolloutState::start(
        None,
        "2",
        [("a".to_string(), None), ("b".to_string(), Some("1".to_string()))].into(),
        0,
    );
    assert!(state.prestage, "pre-staging is the default");
    assert!(
        on_new(&state).is_empty(),
        "nothing switches before its images are there"
    );
    assert!(state.stages("a") && state.stages("b"));
    let state = state.step(
        None,
        &health(&[("a", UpToDate), ("b", UpToDate)]),
        &holding(&["a", "b"]),
        S,
    );
    assert_eq!(on_new(&state), ["a", "b"]);
    assert!(!state.stages("a"), "a switched site fetches nothing more");
    let state = state.step(
        None,
        &health(&[("a", UpToDate), ("b", UpToDate)]),
        &no_images(),
        2 * S,
    );
    assert_eq!(state.phase, Phase::Succeeded);
    assert!(!state.is_active());
}

#[test]
fn a_wave_switches_each_site_once_it_holds_its_images() {
    let rollout = policy(serde_json::json!({ "prestage": true, "waves": { "size": 2 } }));
    let state = start(&rollout, 3);
    assert!(on_new(&state).is_empty());
    assert!(
        (1..=3).all(|i| state.stages(&format!("s{i}"))),
        "every covered site fetches at once"
    );
    // s3 (a later wave) is ready first: it waits for its wave.
    let state = state.step(
        Some(&rollout),
        &health(&[("s1", UpToDate), ("s2", UpToDate)]),
        &holding(&["s3"]),
        S,
    );
    assert!(on_new(&state).is_empty());
    // s1 holds its images: it switches, s2 does not yet.
    let state = state.step(
        Some(&rollout),
        &health(&[("s1", UpToDate), ("s2", UpToDate)]),
        &holding(&["s1", "s3"]),
        2 * S,
    );
    assert_eq!(on_new(&state), ["s1"]);
    // The old version being up on s2 is not the wave being done.
    let state = state.step(
        Some(&rollout),
        &health(&[("s1", UpToDate), ("s2", UpToDate)]),
        &holding(&["s1", "s3"]),
        3 * S,
    );
    assert_eq!(wave_of(&state), Some(0));
    let state = state.step(
        Some(&rollout),
        &health(&[("s1", UpToDate), ("s2", UpToDate)]),
        &holding(&["s2"]),
        4 * S,
    );
    assert_eq!(on_new(&state), ["s1", "s2"]);
    let state = state.step(
        Some(&rollout),
        &health(&[("s1", UpToDate), ("s2", UpToDate)]),
        &no_images(),
        5 * S,
    );
    assert_eq!(wave_of(&state), Some(1));
    let state = state.step(
        Some(&rollout),
        &health(&[("s3", UpToDate)]),
        &holding(&["s3"]),
        6 * S,
    );
    assert_eq!(on_new(&state), ["s1", "s2", "s3"]);
}

#[test]
fn an_offline_site_switches_when_it_returns_with_its_images() {
    let rollout = policy(serde_json::json!({ "prestage": true }));
    let state = start(&rollout, 2);
    let state = state.step(
        Some(&rollout),
        &health(&[("s1", UpToDate), ("s2", Offline)]),
        &holding(&["s1"]),
        S,
    );
    let state = state.step(
        Some(&rollout),
        &health(&[("s1", UpToDate), ("s2", Offline)]),
        &no_images(),
        2 * S,
    );
    assert_eq!(state.phase, Phase::Succeeded, "an offline site does not block");
    assert_eq!(on_new(&state), ["s1"], "and keeps its old version");
    assert!(state.is_active(), "the engine still waits for s2");
    assert!(state.stages("s2"));
    let state = state.step(
        Some(&rollout),
        &health(&[("s2", UpToDate)]),
        &holding(&["s2"]),
        3 * S,
    );
    assert_eq!(on_new(&state), ["s1", "s2"]);
    assert!(!state.is_active());
}

#[test]
fn a_site_that_cannot_fetch_its_images_fails_after_the_prestage_timeout() {
    let rollout =
        policy(serde_json::json!({ "prestage": true, "prestageTimeout": "10m", "onFailure": "pause" }));
    let state = start(&rollout, 2);
    let up = health(&[("s1", UpToDate), ("s2", Offline)]);
    let state = state.step(Some(&rollout), &up, &no_images(), 9 * 60 * S);
    assert_eq!(wave_of(&state), Some(0));
    let state = state.step(Some(&rollout), &up, &no_images(), 10 * 60 * S);
    let Phase::Paused { reason, .. } = &state.phase else {
        panic!("{:?}", state.phase)
    };
    assert!(
        reason.contains("s1: its images were not all fetched within the prestageTimeout (10m)"),
        "{reason}"
    );
    assert!(!state.failed.contains_key("s2"), "an offline site is never late");
    assert!(on_new(&state).is_empty());
    assert!(!state.is_active(), "a paused rollout switches nothing");
}
