//! When the uplink may carry an up topic: its priority, and its window in
//! the site's time zone. Pure: every question takes the time.

use jiff::tz::TimeZone;
use outpost_api::manifest::Window;
use outpost_api::stream::Priority;

#[derive(Debug, Clone, Default)]
pub struct Schedule {
    pub priority: Priority,
    window: Option<Window>,
    zone: Zone,
}

#[derive(Debug, Clone, Default)]
enum Zone {
    #[default]
    Utc,
    Named(String, TimeZone),
    /// A name the time zone database does not know: read as UTC, and said.
    Unknown(String),
}

impl Schedule {
    /// A schedule in the time zone `zone` (an IANA name; none: UTC).
    pub fn new(priority: Priority, window: Option<Window>, zone: Option<&str>) -> Schedule {
        let zone = match zone {
            None => Zone::Utc,
            Some(name) => match TimeZone::get(name) {
                Ok(tz) => Zone::Named(name.to_string(), tz),
                Err(_) => Zone::Unknown(name.to_string()),
            },
        };
        Schedule {
            priority,
            // An urgent topic is never held back.
            window: window.filter(|_| priority != Priority::Urgent),
            zone,
        }
    }

    /// The minute of the local day at `now_ms`.
    fn minute(&self, now_ms: u64) -> u16 {
        let Ok(at) = jiff::Timestamp::from_millisecond(now_ms.min(i64::MAX as u64) as i64) else {
            return 0;
        };
        let time = match &self.zone {
            Zone::Named(_, tz) => at.to_zoned(tz.clone()).time(),
            Zone::Utc | Zone::Unknown(_) => at.to_zoned(TimeZone::UTC).time(),
        };
        time.hour() as u16 * 60 + time.minute() as u16
    }

    pub fn is_open(&self, now_ms: u64) -> bool {
        self.window
            .as_ref()
            .is_none_or(|window| window.is_open(self.minute(now_ms)))
    }

    /// Why a topic with a backlog waits at `now_ms`, if it does.
    pub fn note(&self, now_ms: u64) -> String {
        let unknown = match &self.zone {
            Zone::Unknown(name) => format!(" (time zone {name:?} is unknown here; read as UTC)"),
            _ => String::new(),
        };
        match &self.window {
            Some(window) if !self.is_open(now_ms) => {
                let wait = window.opens_in(self.minute(now_ms));
                let zone = match &self.zone {
                    Zone::Named(name, _) => name.as_str(),
                    _ => "UTC",
                };
                format!(
                    "held until its window {window} ({zone}) opens in {}h{:02}m{unknown}",
                    wait / 60,
                    wait % 60
                )
            }
            _ => unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02 at `hh:mm` UTC, in UNIX ms.
    fn at(hh: u64, mm: u64) -> u64 {
        1_796_169_600_000 + (hh * 60 + mm) * 60_000
    }

    #[test]
    fn a_window_holds_its_topic_outside_it_in_the_sites_time_zone() {
        let night = || Some("01:00-05:00".parse::<Window>().unwrap());
        let utc = Schedule::new(Priority::Bulk, night(), None);
        assert!(!utc.is_open(at(0, 59)));
        assert!(utc.is_open(at(1, 0)));
        assert!(!utc.is_open(at(5, 0)));
        assert_eq!(
            utc.note(at(0, 30)),
            "held until its window 01:00-05:00 (UTC) opens in 0h30m"
        );
        assert_eq!(utc.note(at(2, 0)), "");

        // Oslo is UTC+1 in December: 01:00 there is 00:00 UTC.
        let oslo = Schedule::new(Priority::Bulk, night(), Some("Europe/Oslo"));
        assert!(oslo.is_open(at(0, 0)));
        assert!(!oslo.is_open(at(4, 0)));

        let unknown = Schedule::new(Priority::Normal, night(), Some("Mars/Olympus"));
        assert!(unknown.is_open(at(1, 0)));
        assert!(
            unknown
                .note(at(0, 0))
                .contains("\"Mars/Olympus\" is unknown here")
        );
    }

    #[test]
    fn urgent_topics_and_topics_without_a_window_are_always_open() {
        let night = Some("01:00-05:00".parse::<Window>().unwrap());
        assert!(Schedule::new(Priority::Urgent, night, None).is_open(at(12, 0)));
        assert!(Schedule::new(Priority::Bulk, None, None).is_open(at(12, 0)));
    }
}
