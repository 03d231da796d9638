//! Printing: aligned tables, JSON, YAML and ages.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::Serialize;

/// Writes to standard output and flushes. When the reader has gone away
/// (`outpost get sites | head -1`) this fails with `BrokenPipe`, which the
/// binary treats as a quiet end rather than a panic.
pub fn print(text: &str) -> std::io::Result<()> {
    print_bytes(text.as_bytes())
}

/// Prints bytes as they are (a revealed secret need not be text).
pub fn print_bytes(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

/// A table whose columns are padded to their widest cell.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}   ", width = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

pub fn json<T: Serialize>(value: &T) -> Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("formatting JSON")?;
    text.push('\n');
    Ok(text)
}

pub fn yaml<T: Serialize>(value: &T) -> Result<String> {
    serde_saphyr::to_string(value).context("formatting YAML")
}

/// How long ago an RFC 3339 time was, the way `kubectl get` shows it: `42s`, `5m`, `3h`, `12d`.
pub fn age(timestamp: &str) -> String {
    let Ok(then) = time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
    else {
        return "?".to_string();
    };
    let seconds = (time::OffsetDateTime::now_utc() - then).whole_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut table = Table::new(&["NAME", "VERSION", "AGE"]);
        table.row(vec!["pos-gateway".into(), "1.4.2".into(), "5m".into()]);
        table.row(vec!["cam".into(), "2.0.0".into(), "12d".into()]);
        assert_eq!(
            table.render(),
            "NAME          VERSION   AGE\npos-gateway   1.4.2     5m\ncam           2.0.0     12d\n"
        );
    }

    #[test]
    fn ages() {
        let now = time::OffsetDateTime::now_utc();
        let format = |d: time::Duration| {
            (now - d)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        assert_eq!(age(&format(time::Duration::seconds(5))), "5s");
        assert_eq!(age(&format(time::Duration::minutes(5))), "5m");
        assert_eq!(age(&format(time::Duration::hours(5))), "5h");
        assert_eq!(age(&format(time::Duration::days(5))), "5d");
        assert_eq!(age("yesterday"), "?");
    }
}
