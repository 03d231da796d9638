//! The witness of 2-host sites: whether a host that lost its peer may
//! move the peer's `singleton` services to itself.
//!
//! A singleton must never run on both hosts, and the two hosts alone
//! cannot tell a dead peer from a cut link. The control plane, when both
//! can reach it, can: a peer that is alive asks too, or is heard. So the
//! witness grants a move only when
//! - the lost host has not been heard here (session, poll or question)
//!   for `hostLossAfter`,
//! - the asking host has been asking for `SETTLE` (time enough for a lost
//!   host that is alive to ask as well), and
//! - the asking host's session began before the lost host was last heard
//!   (if it did not, the lost host may have seen this host cut off from
//!   here too, and kept its singletons running; see the agent's
//!   `cluster` module).
//!
//! A host whose services were granted away learns so when it asks, and
//! stops them. Everything here is in memory: after a restart the witness
//! waits for fresh evidence.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a host must have been asking before it is granted anything.
pub const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The asker may move the lost host's singletons to itself.
    Granted,
    /// It may not, and why.
    Denied(String),
    /// The asker's own singletons were granted to this host: stop them.
    Yielded(String),
}

#[derive(Default)]
pub struct Witness {
    sites: Mutex<HashMap<String, Pair>>,
}

#[derive(Default)]
struct Pair {
    /// Since when each host has been asking, and when it last asked.
    asking: HashMap<String, (Instant, Instant)>,
    /// The host granted its peer's singletons, and that peer.
    granted: Option<(String, String)>,
}

/// What the control plane knows of the two hosts when one asks.
#[derive(Debug, Clone, Copy)]
pub struct Evidence {
    /// When the lost host was last heard here (none: not since start).
    pub lost_heard: Option<Instant>,
    /// When the asker's live session began (none: it has none).
    pub asker_session: Option<Instant>,
}

impl Witness {
    /// `asker`, which has not heard `lost` for `after`, asks at `now`.
    pub fn ask(
        &self,
        site: &str,
        asker: &str,
        lost: &str,
        after: Duration,
        evidence: Evidence,
        now: Instant,
    ) -> Verdict {
        let mut sites = self.sites.lock();
        let pair = sites.entry(site.to_string()).or_default();
        // A streak of questions breaks after a pause of more than `after`.
        pair.asking
            .retain(|_, (_, last)| now.saturating_duration_since(*last) <= after);
        let since = pair
            .asking
            .entry(asker.to_string())
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now))
            .0;
        // A grant lasts while its holder keeps asking.
        if let Some((to, _)) = &pair.granted
            && !pair.asking.contains_key(to)
        {
            pair.granted = None;
        }
        match &pair.granted {
            Some((to, from)) if to == asker && from == lost => return Verdict::Granted,
            Some((to, from)) if from == asker => {
                return Verdict::Yielded(format!("its singletons were granted to {to}"));
            }
            _ => {}
        }
        if pair.asking.contains_key(lost) {
            return Verdict::Denied(format!(
                "{lost} is alive and asks too: the link between the hosts is cut"
            ));
        }
        if let Some(heard) = evidence.lost_heard
            && now.saturating_duration_since(heard) < after
        {
            return Verdict::Denied(format!("the control plane heard {lost} within hostLossAfter"));
        }
        match evidence.asker_session {
            None => return Verdict::Denied("this host has no session with the control plane".into()),
            Some(began) if evidence.lost_heard.is_none_or(|heard| began > heard) => {
                return Verdict::Denied(format!(
                    "this host's session began after {lost} was last heard: {lost} may have kept its singletons"
                ));
            }
            Some(_) => {}
        }
        if now.saturating_duration_since(since) < SETTLE {
            return Verdict::Denied(format!("waiting {SETTLE:?} for {lost} to speak up"));
        }
        pair.granted = Some((asker.to_string(), lost.to_string()));
        Verdict::Granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(10);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_dead_peer_is_granted_after_the_settling_time_and_the_grant_holds() {
        let w = Witness::default();
        let t = Instant::now();
        // h2 asking for less than SETTLE is not granted either.
        let fresh = Witness::default();
        let long_quiet = Evidence {
            lost_heard: Some(t),
            asker_session: Some(t - Duration::from_secs(60)),
        };
        assert!(matches!(
            fresh.ask("s", "h2", "h1", AFTER, long_quiet, at(t, 30)),
            Verdict::Denied(_)
        ));
        assert_eq!(
            fresh.ask("s", "h2", "h1", AFTER, long_quiet, at(t, 35)),
            Verdict::Granted
        );
        let evidence = Evidence {
            lost_heard: Some(t),
            asker_session: Some(t - Duration::from_secs(60)),
        };
        assert!(matches!(
            w.ask("s", "h2", "h1", AFTER, evidence, at(t, 5)),
            Verdict::Denied(_)
        ));
        // h1 was heard within hostLossAfter.
        assert!(matches!(
            w.ask("s", "h2", "h1", AFTER, evidence, at(t, 9)),
            Verdict::Denied(_)
        ));
        assert_eq!(
            w.ask("s", "h2", "h1", AFTER, evidence, at(t, 10)),
            Verdict::Granted
        );
        assert_eq!(
            w.ask("s", "h2", "h1", AFTER, evidence, at(t, 14)),
            Verdict::Granted
        );
        // The lost host returns while still cut from its peer: it yields.
        assert!(matches!(
            w.ask(
                "s",
                "h1",
                "h2",
                AFTER,
                Evidence {
                    lost_heard: Some(at(t, 14)),
                    asker_session: Some(at(t, 15))
                },
                at(t, 15)
            ),
            Verdict::Yielded(_)
        ));
    }

    #[test]
    fn two_live_hosts_that_cannot_hear_each_other_are_both_denied() {
        let w = Witness::default();
        let t = Instant::now();
        let old = Some(t - Duration::from_secs(60));
        let quiet = Evidence {
            lost_heard: old,
            asker_session: old,
        };
        for s in 0..30 {
            for (asker, lost) in [("h1", "h2"), ("h2", "h1")] {
                let verdict = w.ask("s", asker, lost, AFTER, quiet, at(t, s));
                assert!(
                    matches!(verdict, Verdict::Denied(_)),
                    "{asker} at {s}s: {verdict:?}"
                );
            }
        }
    }

    #[test]
    fn a_host_whose_session_began_after_its_peer_went_quiet_is_denied() {
        let w = Witness::default();
        let t = Instant::now();
        let evidence = Evidence {
            lost_heard: Some(t),
            asker_session: Some(at(t, 1)),
        };
        for s in 0..30 {
            assert!(matches!(
                w.ask("s", "h2", "h1", AFTER, evidence, at(t, 20 + s)),
                Verdict::Denied(_)
            ));
        }
        let offline = Evidence {
            lost_heard: Some(t),
            asker_session: None,
        };
        assert!(matches!(
            w.ask("s", "h2", "h1", AFTER, offline, at(t, 60)),
            Verdict::Denied(_)
        ));
    }

    #[test]
    fn a_grant_lapses_when_its_holder_stops_asking() {
        let w = Witness::default();
        let t = Instant::now();
        let evidence = Evidence {
            lost_heard: Some(t),
            asker_session: Some(t - Duration::from_secs(60)),
        };
        for s in [10, 12, 16] {
            w.ask("s", "h2", "h1", AFTER, evidence, at(t, s));
        }
        assert_eq!(
            w.ask("s", "h2", "h1", AFTER, evidence, at(t, 17)),
            Verdict::Granted
        );
        // h2 heard h1 again and stopped asking; later h1 loses h2.
        let back = Evidence {
            lost_heard: Some(at(t, 100)),
            asker_session: Some(t),
        };
        assert!(matches!(
            w.ask("s", "h1", "h2", AFTER, back, at(t, 100)),
            Verdict::Denied(_)
        ));
    }
}
