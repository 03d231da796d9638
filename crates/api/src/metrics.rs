//! The Prometheus text exposition format (version 0.0.4), which the control
//! plane and the agent serve at `/metrics`.

use std::fmt::Write as _;

/// The media type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metric families written one after another.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    /// Starts a family: `kind` is `counter` or `gauge`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(
            self.0,
            "# HELP {name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the family started last.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{key}=\"{escaped}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
        self
    }

    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_escaped_labels() {
        let mut out = Exposition::default();
        out.family("outpost_hosts", "gauge", "Enrolled hosts")
            .sample("outpost_hosts", &[("state", "online")], 3.0)
            .sample("outpost_hosts", &[("site", "a\"b\\c")], 1.5);
        assert_eq!(
            out.finish(),
            "# HELP outpost_hosts Enrolled hosts\n# TYPE outpost_hosts gauge\n\
             outpost_hosts{state=\"online\"} 3\noutpost_hosts{site=\"a\\\"b\\\\c\"} 1.5\n"
        );
    }
}
