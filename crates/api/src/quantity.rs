//! Quantities in manifests: sizes (`256Mi`), CPU (`0.5`, `500m`), durations
//! (`10s`, `1h30m`) and failure budgets (`1`, `5%`).
//!
//! Each type parses from the text an operator writes, prints back in one
//! canonical form, and carries a JSON Schema `format` so the schema walker
//! (see `schema.rs`) can validate it with the same message as `FromStr`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A number of bytes, written as `256Mi`, `1G`, `1.5Gi` or a plain byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

/// CPU in thousandths of a core: `0.5` and `500m` are both 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cpu(pub u32);

/// A duration in milliseconds, written as `500ms`, `10s`, `2m`, `1h30m`, `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub u64);

/// How many failed sites a rollout tolerates: a count or a percentage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureBudget {
    Count(u32),
    Percent(u8),
}

const BINARY_SUFFIXES: [(&str, u64); 6] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
];
const DECIMAL_SUFFIXES: [(&str, u64); 6] = [
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// Splits `"1.5Gi"` into `("1.5", "Gi")`.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Parses a non-negative decimal number into an exact fraction
/// `(numerator, denominator)` so `1.5Gi` needs no floating point.
fn parse_decimal(digits: &str) -> Option<(u128, u128)> {
    if digits.is_empty() || digits.starts_with('.') || digits.ends_with('.') {
        return None;
    }
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let denominator = 10u128.pow(frac.len() as u32);
    let whole: u128 = whole.parse().ok()?;
    let frac: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    Some((whole.checked_mul(denominator)?.checked_add(frac)?, denominator))
}

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let (digits, suffix) = split_number(s);
        let hint = || {
            let number = if digits.is_empty() { "256" } else { digits };
            format!("{text:?} is not a size (use {number}Mi or {number}M)")
        };
        let multiplier = if suffix.is_empty() {
            1
        } else if let Some((_, m)) = BINARY_SUFFIXES.iter().find(|(name, _)| *name == suffix) {
            *m
        } else if let Some((_, m)) = DECIMAL_SUFFIXES.iter().find(|(name, _)| *name == suffix) {
            *m
        } else {
            return Err(hint());
        };
        let (numerator, denominator) = parse_decimal(digits).ok_or_else(hint)?;
        let bytes = numerator
            .checked_mul(u128::from(multiplier))
            .map(|b| b / denominator)
            .and_then(|b| u64::try_from(b).ok())
            .ok_or_else(|| format!("{text:?} is too large"))?;
        Ok(Size(bytes))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        if bytes == 0 {
            return f.write_str("0");
        }
        for table in [&BINARY_SUFFIXES, &DECIMAL_SUFFIXES] {
            if let Some((name, m)) = table.iter().rev().find(|(_, m)| bytes.is_multiple_of(*m)) {
                return write!(f, "{}{name}", bytes / m);
            }
        }
        write!(f, "{bytes}")
    }
}

/// A byte count for people, rounded: 512 B, 12.3 KiB, 4.0 MiB. (`Size`
/// prints exact quantities for manifests; this is for status lines.)
pub fn approximate_bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

impl FromStr for Cpu {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let bad = || format!("{text:?} is not a CPU amount (use 0.5 or 500m)");
        let millis: u128 = if let Some(m) = s.strip_suffix('m') {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            m.parse().map_err(|_| bad())?
        } else {
            let (numerator, denominator) = parse_decimal(s).ok_or_else(bad)?;
            if (numerator * 1000) % denominator != 0 {
                return Err(format!("{text:?} is finer than a thousandth of a core"));
            }
            numerator * 1000 / denominator
        };
        if millis == 0 {
            return Err(format!("{text:?} must be more than zero"));
        }
        u32::try_from(millis)
            .map(Cpu)
            .map_err(|_| format!("{text:?} is too large"))
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a duration (use 10s, 2m or 1h30m)");
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let digits_end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits_end == 0 {
                return Err(bad());
            }
            let (digits, tail) = rest.split_at(digits_end);
            let unit_end = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_end);
            let (_, factor) = DURATION_UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .ok_or_else(bad)?;
            let amount: u64 = digits.parse().map_err(|_| bad())?;
            total = amount
                .checked_mul(*factor)
                .and_then(|ms| total.checked_add(ms))
                .ok_or_else(|| format!("{text:?} is too long"))?;
            rest = tail;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (name, factor) in DURATION_UNITS {
            if rest >= factor {
                write!(f, "{}{name}", rest / factor)?;
                rest %= factor;
            }
        }
        Ok(())
    }
}

impl Duration {
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl FromStr for FailureBudget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let bad = || format!("{text:?} is not a failure budget (use a count like 1 or a percentage like 5%)");
        if let Some(p) = s.strip_suffix('%') {
            let p: u8 = p.trim().parse().map_err(|_| bad())?;
            if p > 100 {
                return Err(format!("{text:?} is more than 100%"));
            }
            Ok(FailureBudget::Percent(p))
        } else {
            s.parse().map(FailureBudget::Count).map_err(|_| bad())
        }
    }
}

impl fmt::Display for FailureBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureBudget::Count(n) => write!(f, "{n}"),
            FailureBudget::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Serde and schema glue shared by the quantity types: each accepts a string
/// or a number (a bare `0.5` or `1073741824` reads naturally in YAML), and
/// serializes in its canonical text form.
macro_rules! quantity_serde {
    ($ty:ty, $format:literal, $what:literal, $types:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                }
                deserializer.deserialize_any(V)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": $types, "format": $format, "description": $what })
            }
        }
    };
}

quantity_serde!(Size, "size", "a size such as 256Mi or 1G", ["string", "integer"]);
quantity_serde!(
    Cpu,
    "cpu",
    "a CPU amount such as 0.5 or 500m",
    ["string", "number"]
);
quantity_serde!(
    Duration,
    "duration",
    "a duration such as 10s, 2m or 1h30m",
    ["string"]
);
quantity_serde!(
    FailureBudget,
    "failure-budget",
    "a count such as 1 or a percentage such as 5%",
    ["string", "integer"]
);

/// Checks a value against one of the formats above; used by the schema walker.
pub(crate) fn check_format(format: &str, text: &str) -> Option<Result<(), String>> {
    Some(match format {
        "size" => text.parse::<Size>().map(drop),
        "cpu" => text.parse::<Cpu>().map(drop),
        "duration" => text.parse::<Duration>().map(drop),
        "failure-budget" => text.parse::<FailureBudget>().map(drop),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approximate_bytes_round_for_people() {
        assert_eq!(approximate_bytes(0), "0 B");
        assert_eq!(approximate_bytes(1023), "1023 B");
        assert_eq!(approximate_bytes(1536), "1.5 KiB");
        assert_eq!(approximate_bytes(5 << 20), "5.0 MiB");
    }

    #[test]
    fn sizes() {
        let table = [
            ("256Mi", Some(256 << 20)),
            ("1G", Some(1_000_000_000)),
            ("1.5Gi", Some(3 << 29)),
            ("512", Some(512)),
            ("2k", Some(2000)),
            ("0", Some(0)),
            ("256MB", None),
            ("256mb", None),
            ("Mi", None),
            ("1.Gi", None),
            ("-1Gi", None),
            ("", None),
            ("99999999Ei", None),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<Size>().ok().map(|s| s.0), want, "{text}");
        }
        assert_eq!(
            "256MB".parse::<Size>().unwrap_err(),
            r#""256MB" is not a size (use 256Mi or 256M)"#
        );
    }

    #[test]
    fn sizes_print_canonically() {
        for (bytes, text) in [
            (256 << 20, "256Mi"),
            (1_000_000_000, "1G"),
            (1500, "1500"),
            (0, "0"),
        ] {
            assert_eq!(Size(bytes).to_string(), text);
            assert_eq!(text.parse::<Size>().unwrap(), Size(bytes));
        }
    }

    #[test]
    fn cpus() {
        let table = [
            ("0.5", Some(500)),
            ("500m", Some(500)),
            ("2", Some(2000)),
            ("0.001", Some(1)),
            ("0.0005", None),
            ("0", None),
            ("half", None),
            ("m", None),
            ("1.5m", None),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<Cpu>().ok().map(|c| c.0), want, "{text}");
        }
        assert_eq!(Cpu(500).to_string(), "500m");
        assert_eq!(Cpu(2000).to_string(), "2");
    }

    #[test]
    fn durations() {
        let table = [
            ("10s", Some(10_000)),
            ("2m", Some(120_000)),
            ("1h30m", Some(5_400_000)),
            ("500ms", Some(500)),
            ("1d", Some(86_400_000)),
            ("10", None),
            ("s", None),
            ("10 s", None),
            ("1w", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<Duration>().ok().map(|d| d.0), want, "{text}");
        }
        assert_eq!(Duration(5_400_000).to_string(), "1h30m");
        assert_eq!(Duration(500).to_string(), "500ms");
    }

    #[test]
    fn failure_budgets() {
        assert_eq!("1".parse(), Ok(FailureBudget::Count(1)));
        assert_eq!("5%".parse(), Ok(FailureBudget::Percent(5)));
        assert!("101%".parse::<FailureBudget>().is_err());
        assert!("many".parse::<FailureBudget>().is_err());
    }
}
