//! Turns what the reconciler sees into events: a container that starts or
//! stops running, an instance that turns unhealthy, healthy or failed.
//! Pure bookkeeping; the reconciler queues what it returns.

use outpost_api::instance::InstanceState;
use std::collections::HashMap;

use outpost_api::telemetry::{Event, EventKind, now};
use outpost_proto::v1::InstanceStatus;

use crate::plan::Observed;

#[derive(Debug, Default)]
pub struct Journal {
    /// Whether each container was running when last seen.
    containers: HashMap<String, bool>,
    /// The state of each instance when last reported.
    instances: HashMap<String, InstanceState>,
    /// Whether `observe` ran before (the agent's first look at the host).
    looked: bool,
}

fn event(kind: EventKind, application: &str, service: &str, instance: &str, message: String) -> Event {
    Event {
        at: now(),
        kind,
        application: application.to_string(),
        service: service.to_string(),
        instance: instance.to_string(),
        message,
        exit_code: None,
    }
}

impl Journal {
    /// The containers that started or stopped since the last look. On the
    /// agent's first look, what runs is not news (it was started before the
    /// agent restarted), but a stopped container is: it stopped while the
    /// agent was not running.
    pub fn observe(&mut self, observed: &[Observed]) -> Vec<Event> {
        let first_look = !std::mem::replace(&mut self.looked, true);
        let mut events = Vec::new();
        for o in observed {
            let before = self.containers.insert(o.id.clone(), o.running);
            let name = o.name.trim_start_matches('/');
            match (before, o.running) {
                (None, true) if first_look => {}
                (None | Some(false), true) => events.push(event(
                    EventKind::Started,
                    &o.application,
                    &o.service,
                    &o.instance,
                    format!("{name} started"),
                )),
                (None | Some(true), false) => {
                    let code = o.exit_code.unwrap_or(-1) as i32;
                    let found = if first_look {
                        " (found when the agent started)"
                    } else {
                        ""
                    };
                    let mut exited = event(
                        EventKind::Exited,
                        &o.application,
                        &o.service,
                        &o.instance,
                        format!("{name} exited with {code}{found}"),
                    );
                    exited.exit_code = Some(code);
                    events.push(exited);
                }
                _ => {}
            }
        }
        self.containers
            .retain(|id, _| observed.iter().any(|o| &o.id == id));
        events
    }

    /// The instances that turned unhealthy, healthy again, or failed.
    pub fn statuses(&mut self, statuses: &[InstanceStatus]) -> Vec<Event> {
        let mut events = Vec::new();
        for status in statuses {
            // The reconciler writes only words this build knows.
            let Ok(state) = status.state.parse::<InstanceState>() else {
                continue;
            };
            let before = self.instances.insert(status.instance.clone(), state);
            let kind = match (before, state) {
                (before, InstanceState::Unhealthy) if before != Some(InstanceState::Unhealthy) => {
                    EventKind::Unhealthy
                }
                (Some(InstanceState::Unhealthy), InstanceState::Healthy) => EventKind::Healthy,
                (before, InstanceState::Failed) if before != Some(InstanceState::Failed) => EventKind::Failed,
                _ => continue,
            };
            let message = match kind {
                EventKind::Healthy => "passes its health check again".to_string(),
                _ => status.reason.clone(),
            };
            let mut e = event(
                kind,
                &status.application,
                &status.service,
                &status.instance,
                message,
            );
            if kind == EventKind::Failed && status.exit_code != 0 {
                e.exit_code = Some(status.exit_code);
            }
            events.push(e);
        }
        self.instances
            .retain(|instance, _| statuses.iter().any(|s| &s.instance == instance));
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, running: bool, exit_code: Option<i64>) -> Observed {
        Observed {
            id: id.into(),
            name: "/outpost.s.web-0.httpd".into(),
            instance: "web-0".into(),
            application: "pos".into(),
            service: "web".into(),
            spec_hash: "h".into(),
            running,
            exit_code,
        }
    }

    fn kinds(events: &[Event]) -> Vec<(EventKind, Option<i32>)> {
        events.iter().map(|e| (e.kind, e.exit_code)).collect()
    }

    #[test]
    fn a_crash_and_restart_is_one_exit_then_one_start() {
        let mut journal = Journal::default();
        // What already runs when the agent starts is not news.
        assert!(journal.observe(&[container("a", true, None)]).is_empty());
        assert!(journal.observe(&[container("a", true, None)]).is_empty());
        let exited = journal.observe(&[container("a", false, Some(3))]);
        assert_eq!(kinds(&exited), [(EventKind::Exited, Some(3))]);
        assert_eq!(exited[0].message, "outpost.s.web-0.httpd exited with 3");
        assert_eq!(exited[0].instance, "web-0");
        assert!(journal.observe(&[container("a", false, Some(3))]).is_empty());
        assert_eq!(
            kinds(&journal.observe(&[container("a", true, None)])),
            [(EventKind::Started, None)]
        );
        // Removed, then replaced by a new container: only the start counts.
        assert_eq!(
            kinds(&journal.observe(&[container("b", true, None)])),
            [(EventKind::Started, None)]
        );
        // Found stopped on the first look (it stopped while the agent was down).
        let mut fresh = Journal::default();
        let found = fresh.observe(&[container("b", false, Some(137))]);
        assert_eq!(kinds(&found), [(EventKind::Exited, Some(137))]);
        assert!(found[0].message.ends_with("(found when the agent started)"));
    }

    #[test]
    fn health_and_failure_changes_are_events_once() {
        let status = |state: &str, reason: &str| InstanceStatus {
            instance: "web-0".into(),
            application: "pos".into(),
            service: "web".into(),
            state: state.into(),
            reason: reason.into(),
            ..Default::default()
        };
        let mut journal = Journal::default();
        assert!(journal.statuses(&[status("starting", "")]).is_empty());
        assert!(journal.statuses(&[status("healthy", "")]).is_empty());
        let unhealthy = journal.statuses(&[status("unhealthy", "httpd: connection refused")]);
        assert_eq!(kinds(&unhealthy), [(EventKind::Unhealthy, None)]);
        assert_eq!(unhealthy[0].message, "httpd: connection refused");
        assert!(
            journal
                .statuses(&[status("unhealthy", "httpd: timed out")])
                .is_empty()
        );
        assert_eq!(
            kinds(&journal.statuses(&[status("healthy", "")])),
            [(EventKind::Healthy, None)]
        );
        assert_eq!(
            kinds(&journal.statuses(&[status("failed", "pulling x: no such image")])),
            [(EventKind::Failed, None)]
        );
        assert!(
            journal
                .statuses(&[status("failed", "pulling x: no such image")])
                .is_empty()
        );
    }
}
