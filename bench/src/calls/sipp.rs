//! What SIPp leaves behind: its statistics file (`-trace_stat -stf FILE -fd 1`: a header line,
//! then one line a second and a last one at exit, `;`-separated) and its response times
//! (`-trace_rtt -rtt_freq 1`: `<scenario>_<pid>_rtt.csv`, one line per measured response,
//! whole milliseconds).

use std::path::Path;

use anyhow::{anyhow, Context, Result};

/// The lines of a statistics file, by column name.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Stats {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading SIPp's statistics {}", path.display()))?;
        Self::parse(&text).ok_or_else(|| anyhow!("{}: no statistics in it", path.display()))
    }

    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines
            .next()?
            .split(';')
            .map(|s| s.trim().to_owned())
            .collect();
        let rows: Vec<Vec<String>> = lines
            .map(|l| l.split(';').map(|s| s.trim().to_owned()).collect())
            .collect();
        if rows.is_empty() {
            return None;
        }
        Some(Self { header, rows })
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// `name` in the last line (the totals at exit).
    pub fn last(&self, name: &str) -> Option<u64> {
        let i = self.column(name)?;
        self.rows.last()?.get(i)?.parse().ok()
    }

    /// Seconds from the start until SIPp had created its last call: the first line whose
    /// `TotalCallCreated` is the final count, by its `ElapsedTime(C)` (whole seconds, one line a
    /// second with `-fd 1`).
    pub fn seconds_to_create_all(&self) -> Option<f64> {
        let created = self.column("TotalCallCreated")?;
        let elapsed = self.column("ElapsedTime(C)")?;
        let total = self.rows.last()?.get(created)?.clone();
        let row = self
            .rows
            .iter()
            .find(|r| r.get(created).is_some_and(|c| *c == total))?;
        parse_elapsed(row.get(elapsed)?)
    }
}

/// `HH:MM:SS` or `HH:MM:SS:uuuuuu` in seconds.
fn parse_elapsed(text: &str) -> Option<f64> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() < 3 {
        return None;
    }
    let h: f64 = parts[0].parse().ok()?;
    let m: f64 = parts[1].parse().ok()?;
    let s: f64 = parts[2].parse().ok()?;
    let us: f64 = parts.get(3).map_or(Some(0.0), |u| u.parse().ok())?;
    Some(h * 3600.0 + m * 60.0 + s + us / 1e6)
}

/// Every response time (ms) in the `*_rtt.csv` files of `dir`.
pub fn response_times_ms(dir: &Path) -> Vec<f64> {
    let mut times = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return times;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().ends_with("_rtt.csv") {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            times.extend(parse_rtt(&text));
        }
    }
    times
}

fn parse_rtt(text: &str) -> impl Iterator<Item = f64> + '_ {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split(';').nth(1)?.trim().parse().ok())
}

/// The `q` quantile (0..=1) of `values` (nearest rank), sorting them.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str =
        "StartTime;ElapsedTime(C);TotalCallCreated;SuccessfulCall(C);Retransmissions(C)\n\
        t0;00:00:00;0;0;0\n\
        t1;00:00:01;10;9;0\n\
        t2;00:00:02;20;18;1\n\
        t3;00:00:03;20;20;2\n";

    #[test]
    fn reads_the_totals_and_when_the_last_call_was_created() {
        let stats = Stats::parse(STAT).expect("stats");
        assert_eq!(stats.last("SuccessfulCall(C)"), Some(20));
        assert_eq!(stats.last("Retransmissions(C)"), Some(2));
        assert_eq!(stats.last("NoSuchColumn"), None);
        assert_eq!(stats.seconds_to_create_all(), Some(2.0));
        assert!(Stats::parse("only;a;header\n").is_none());
        assert_eq!(parse_elapsed("00:01:02:500000"), Some(62.5));
        assert_eq!(parse_elapsed("garbage"), None);
    }

    #[test]
    fn response_time_quantiles() {
        let rtt = "Date_ms;response_time_ms;rtd_no\n1;8;1\n2;4;1\n3;0;1\nbad line\n";
        let mut v: Vec<f64> = parse_rtt(rtt).collect();
        assert_eq!(v, [8.0, 4.0, 0.0]);
        assert_eq!(quantile(&mut v, 0.5), Some(4.0));
        assert_eq!(quantile(&mut v, 0.99), Some(8.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
