//! On-demand benchmarks for issue 7 (see README.md): the runners are the binaries `host-bench`
//! and `lab-bench`; this library holds what they share (latency summaries, tables, machine
//! state). Nothing here runs under `cargo test` except the small unit tests below.

use std::time::Duration;

use serde::Serialize;

/// Latency summary of one QD1 run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Latencies {
    pub ops: u64,
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl Latencies {
    /// Summarises `lat` (sorted in place) measured over `total`.
    pub fn from(lat: &mut [Duration], total: Duration) -> Latencies {
        let mut us: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        let mean = if us.is_empty() {
            0.0
        } else {
            us.iter().sum::<f64>() / us.len() as f64
        };
        Latencies {
            ops: us.len() as u64,
            ops_per_s: us.len() as f64 / total.as_secs_f64().max(1e-9),
            p50_us: percentile_us(&mut us, 50.0),
            p99_us: percentile_us(&mut us, 99.0),
            mean_us: mean,
        }
    }
}

/// Nearest-rank percentile `p` (0..=100) of `us`, sorting it; 0 for an empty set.
pub fn percentile_us(us: &mut [f64], p: f64) -> f64 {
    if us.is_empty() {
        return 0.0;
    }
    us.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * us.len() as f64).ceil() as usize;
    us[rank.clamp(1, us.len()) - 1]
}

/// A markdown table.
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: &[String]) {
        self.rows.push(cells.to_vec());
    }

    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut s = line(&self.head);
        s += &line(&vec!["---".to_string(); self.head.len()]);
        for r in &self.rows {
            s += &line(r);
        }
        s
    }
}

/// `/proc/loadavg`'s three averages (empty if unreadable).
pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Now as `YYYY-MM-DD HH:MM:SS UTC` (no date crate for one line).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile_us(&mut v, 50.0), 50.0);
        assert_eq!(percentile_us(&mut v, 99.0), 99.0);
        assert_eq!(percentile_us(&mut v, 100.0), 100.0);
        assert_eq!(percentile_us(&mut [], 50.0), 0.0);
    }

    #[test]
    fn table_renders_markdown() {
        let mut t = Table::new(&["a", "b"]);
        t.row(&["1".into(), "2".into()]);
        assert_eq!(t.markdown(), "| a | b |\n| --- | --- |\n| 1 | 2 |\n");
    }

    #[test]
    fn utc_now_has_the_shape() {
        let s = utc_now();
        assert_eq!(s.len(), 23, "{s}");
        assert!(s.starts_with("20"), "{s}");
    }
}
