//! Statistics shared by the suites: samples, percentiles, JSON.

use std::time::Duration;

use serde_json::json;

/// Linear interpolation between closest ranks (numpy's default), on sorted `v`.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = p * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Samples of one measured quantity, in milliseconds (or any unit: `push_value`).
#[derive(Debug, Default, Clone)]
pub struct Series {
    pub ms: Vec<f64>,
}

impl Series {
    pub fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
    }
    pub fn push_value(&mut self, v: f64) {
        self.ms.push(v);
    }
    pub fn is_empty(&self) -> bool {
        self.ms.is_empty()
    }
    pub fn sorted(&self) -> Vec<f64> {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    pub fn median(&self) -> f64 {
        percentile(&self.sorted(), 0.5)
    }
    pub fn p90(&self) -> f64 {
        percentile(&self.sorted(), 0.9)
    }
    pub fn json(&self) -> serde_json::Value {
        let s = self.sorted();
        let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
        json!({
            "n": s.len(),
            "median_ms": round3(percentile(&s, 0.5)),
            "p90_ms": round3(percentile(&s, 0.9)),
            "min_ms": round3(s.first().copied().unwrap_or(f64::NAN)),
            "max_ms": round3(s.last().copied().unwrap_or(f64::NAN)),
            "mean_ms": round3(mean),
            "samples_ms": self.ms.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
        })
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A duration in ms for tables: `12.3 ms`, `1.23 s` from 10 s up.
pub fn fmt_ms(ms: f64) -> String {
    if ms.is_nan() {
        "-".into()
    } else if ms >= 10_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// Bytes for tables, binary units.
pub fn fmt_bytes(b: f64) -> String {
    const K: f64 = 1024.0;
    if b.is_nan() {
        "-".into()
    } else if b.abs() >= K * K * K {
        format!("{:.2} GiB", b / K / K / K)
    } else if b.abs() >= K * K {
        format!("{:.1} MiB", b / K / K)
    } else if b.abs() >= K {
        format!("{:.1} KiB", b / K)
    } else {
        format!("{b:.0} B")
    }
}
