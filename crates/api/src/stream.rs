//! Application event streams as the contract sees them: the topics an
//! Application declares (`spec.streams`), the uplink window, and the
//! bodies of `/api/v1/streams` and of the agent's endpoint. Records are
//! UTF-8 text (a JSON document, typically), at most `MAX_RECORD_BYTES`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::{Name, Window};
use crate::quantity::Size;

/// The most one record may hold, in bytes.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// The most topics one application may declare.
pub const MAX_TOPICS: usize = 64;
/// The smallest and largest `retention` of a topic.
pub const MIN_RETENTION: u64 = 64 << 10;
pub const MAX_RETENTION: u64 = 1 << 40;
/// The site variable, or else the site label, that names a site's time
/// zone (an IANA name such as `Europe/Oslo`); UTC without either.
pub const TIME_ZONE_KEY: &str = "timezone";

/// One topic of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topic {
    pub name: Name,
    /// `up` (sites to the centre), `down` (centre to sites) or `local`
    /// (between the containers of one site).
    pub direction: Direction,
    /// The bytes the topic may take on a host's disk; past it the oldest
    /// records are dropped, and counted.
    pub retention: Size,
    /// Which topics the uplink carries first: `urgent`, `normal` (the
    /// default) or `bulk`. Up topics only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// When the uplink may carry the topic, in the site's local time
    /// (`"01:00-05:00"`); up topics that are not urgent only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

impl Topic {
    pub fn priority(&self) -> Priority {
        self.priority.unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
    Local,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Local => "local",
        }
    }

    /// `an up`, `a down`, `a local`.
    pub fn with_article(self) -> &'static str {
        match self {
            Direction::Up => "an up",
            Direction::Down => "a down",
            Direction::Local => "a local",
        }
    }
}

/// Ordered as the uplink serves them: urgent first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Urgent,
    #[default]
    Normal,
    Bulk,
}

/// `HH:MM-HH:MM`, start included and end excluded; a window whose end is
/// before its start runs past midnight (`22:00-04:00`).
pub fn check_window(text: &str) -> Result<(), String> {
    parse_window(text).map(drop)
}

fn parse_window(text: &str) -> Result<(u16, u16), String> {
    let bad = |why: &str| {
        Err(format!(
            "{text:?} is not a window: {why} (such as \"01:00-05:00\")"
        ))
    };
    let Some((start, end)) = text.split_once('-') else {
        return bad("two times joined by '-'");
    };
    let minute = |time: &str| -> Option<u16> {
        let (h, m) = time.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    match (minute(start), minute(end)) {
        (Some(start), Some(end)) if start == end => bad("it opens and closes at the same time"),
        (Some(start), Some(end)) => Ok((start, end)),
        _ => bad("each time is HH:MM, from 00:00 to 23:59"),
    }
}

impl Window {
    /// Whether the window is open at `minute` of the local day (0‥1439).
    pub fn is_open(&self, minute: u16) -> bool {
        let Ok((start, end)) = parse_window(self.as_str()) else {
            return true;
        };
        if start < end {
            (start..end).contains(&minute)
        } else {
            minute >= start || minute < end
        }
    }

    /// Minutes from `minute` of the local day until the window opens (0 if open).
    pub fn opens_in(&self, minute: u16) -> u16 {
        match parse_window(self.as_str()) {
            Ok((start, _)) if !self.is_open(minute) => (start + 1440 - minute) % 1440,
            _ => 0,
        }
    }
}

/// Why a body holds no usable records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body holds no record")]
    Empty,
    #[error("{which} has {bytes} bytes; a record holds at most {MAX_RECORD_BYTES}")]
    TooLarge { which: String, bytes: usize },
    #[error("{which} is not UTF-8 text (byte {at}); records are text, such as JSON")]
    NotText { which: String, at: usize },
}

/// The records of a request body: the whole body, or with `ndjson` each
/// non-empty line (a trailing `\r` cut). Each must be UTF-8 and fit
/// `MAX_RECORD_BYTES`.
pub fn split_records(body: &[u8], ndjson: bool) -> Result<Vec<String>, BodyError> {
    let pieces: Vec<&[u8]> = if ndjson {
        body.split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty())
            .collect()
    } else if body.is_empty() {
        Vec::new()
    } else {
        vec![body]
    };
    if pieces.is_empty() {
        return Err(BodyError::Empty);
    }
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let which = || {
                if ndjson {
                    format!("record {}", i + 1)
                } else {
                    "the record".to_string()
                }
            };
            if piece.len() > MAX_RECORD_BYTES {
                return Err(BodyError::TooLarge {
                    which: which(),
                    bytes: piece.len(),
                });
            }
            String::from_utf8(piece.to_vec()).map_err(|err| BodyError::NotText {
                which: which(),
                at: err.utf8_error().valid_up_to(),
            })
        })
        .collect()
}

/// One record as the uplink and the downlink carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// When it was produced (or published), UNIX milliseconds.
    pub at: u64,
    pub data: String,
}

/// An up-record as the control plane stores it (`GET /api/v1/streams/…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredRecord {
    /// Increases with every record stored; `after=ID` reads on from it.
    pub id: i64,
    pub application: String,
    pub topic: String,
    pub site: String,
    pub host: String,
    /// The record's number on its host's topic: consecutive, in order.
    pub seq: u64,
    /// When it was produced at the site, and stored here (RFC 3339, UTC).
    pub produced_at: String,
    pub stored_at: String,
    pub data: String,
}

/// `GET /api/v1/streams/{application}/{topic}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredRecords {
    pub records: Vec<StoredRecord>,
    /// Pass as `after` to read on (the last record's id, or `after` itself).
    pub next: i64,
}

/// `POST /api/v1/streams/{application}/{topic}`: what was published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    pub records: u64,
    /// The topic's numbers the records got.
    pub first_seq: u64,
    pub last_seq: u64,
    /// The sites that will receive them, now or when they return.
    pub sites: Vec<String>,
}

/// One topic's queue on one host, as the host last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    pub host: String,
    pub application: String,
    pub topic: String,
    pub direction: Direction,
    /// Records and bytes on the host's disk (for up topics: not yet stored centrally).
    pub backlog_records: u64,
    pub backlog_bytes: u64,
    /// When the oldest unsent record was produced (UNIX ms), for up topics
    /// with a backlog: the lag is its age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unsent_ms: Option<u64>,
    /// Records, and their bytes, dropped because the topic was full (since
    /// the host first held the topic).
    pub dropped_records: u64,
    pub dropped_bytes: u64,
    /// Why the topic waits, if it does (a closed window).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl TopicStatus {
    /// The lag: the age of the oldest unsent record at `now_ms`.
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        self.oldest_unsent_ms
            .map_or(0, |oldest| now_ms.saturating_sub(oldest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(text: &str) -> Window {
        text.parse().unwrap()
    }

    #[test]
    fn windows_parse_and_refuse_with_the_reason() {
        assert!(check_window("01:00-05:00").is_ok());
        assert!(check_window("22:00-04:00").is_ok());
        for (text, why) in [
            ("01:00", "two times"),
            ("1:00-05:00", "HH:MM"),
            ("01:00-24:00", "HH:MM"),
            ("01:60-05:00", "HH:MM"),
            ("03:00-03:00", "same time"),
        ] {
            let err = check_window(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn a_window_is_open_from_its_start_to_its_end() {
        let night = window("01:00-05:00");
        assert!(!night.is_open(59));
        assert!(night.is_open(60));
        assert!(night.is_open(299));
        assert!(!night.is_open(300));
        assert_eq!(night.opens_in(0), 60);
        assert_eq!(night.opens_in(300), 1200);
        assert_eq!(night.opens_in(120), 0);

        let wrapping = window("22:00-04:00");
        assert!(wrapping.is_open(23 * 60));
        assert!(wrapping.is_open(0));
        assert!(!wrapping.is_open(4 * 60));
        assert!(!wrapping.is_open(12 * 60));
        assert_eq!(wrapping.opens_in(21 * 60), 60);
    }

    #[test]
    fn bodies_split_into_records_and_bad_ones_say_which() {
        assert_eq!(split_records(b"a\nb", false).unwrap(), ["a\nb"]);
        assert_eq!(split_records(b"a\r\n\nb\n", true).unwrap(), ["a", "b"]);
        assert_eq!(split_records(b"\n\n", true), Err(BodyError::Empty));
        assert_eq!(split_records(b"", false), Err(BodyError::Empty));
        assert_eq!(
            split_records(b"ok\n\xff\xfe", true).unwrap_err().to_string(),
            "record 2 is not UTF-8 text (byte 0); records are text, such as JSON"
        );
        let large = vec![b'x'; MAX_RECORD_BYTES + 1];
        assert!(matches!(
            split_records(&large, false),
            Err(BodyError::TooLarge { .. })
        ));
    }

    #[test]
    fn urgent_goes_first() {
        let mut order = vec![Priority::Bulk, Priority::Urgent, Priority::Normal];
        order.sort();
        assert_eq!(order, [Priority::Urgent, Priority::Normal, Priority::Bulk]);
    }
}
