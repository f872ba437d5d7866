//! CPU: a quota (`cpus`, CPU time per period) and a relative weight (`cpu-weight`).

use mayfly_api::Limits;

use super::{
    At, Controller, Refusal, keyed, put, read, read_u64, refuse_set, v1_missing, v2_available,
    v2_missing,
};
use crate::Usage;

const KEYS: &[&str] = &["cpus", "cpu-weight"];

/// The period quotas are written against, microseconds.
const PERIOD_US: u64 = 100_000;

/// The kernel's default weight (v2 `cpu.weight`).
const DEFAULT_WEIGHT: u32 = 100;

/// Quota in microseconds per [`PERIOD_US`] for `millis` thousandths of a CPU.
fn quota_us(millis: u32) -> u64 {
    u64::from(millis) * PERIOD_US / 1000
}

/// `cpu.max` (`QUOTA PERIOD` or `max PERIOD`) and `cpu.weight`; usage from `cpu.stat`.
pub(super) struct CpuV2;

impl Controller for CpuV2 {
    fn check(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v2() else { return };
        if !v2_available(&dir).iter().any(|c| c == "cpu") {
            refuse_set(limits, KEYS, &v2_missing(at, "cpu"), out);
        }
    }

    fn apply(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v2() else { return };
        if !dir.join("cpu.max").exists() {
            refuse_set(limits, KEYS, &v2_missing(at, "cpu"), out);
            return;
        }
        let quota = limits
            .cpus
            .map_or("max".to_owned(), |c| quota_us(c.millis()).to_string());
        put(
            out,
            "cpus",
            &dir.join("cpu.max"),
            &format!("{quota} {PERIOD_US}"),
        );
        let weight = limits.cpu_weight.unwrap_or(DEFAULT_WEIGHT).to_string();
        put(out, "cpu-weight", &dir.join("cpu.weight"), &weight);
    }

    fn usage(&self, at: &At<'_>, usage: &mut Usage) {
        // cpu.stat is there even without the cpu controller (the core accounts it).
        let Some(dir) = at.v2() else { return };
        let usec = read(&dir.join("cpu.stat")).and_then(|s| keyed(&s, "usage_usec"));
        usage.cpu_usage_ns = usec.unwrap_or(0).saturating_mul(1000);
    }
}

/// `cpu.cfs_period_us` + `cpu.cfs_quota_us` and `cpu.shares` (weight × 1024 / 100, at least
/// 2); usage from `cpuacct.usage` (the cpuacct controller, which may be its own hierarchy).
pub(super) struct CpuV1;

/// v1 shares for a v2-style weight: 100 (the default) is 1024.
fn shares(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).max(2)
}

impl Controller for CpuV1 {
    fn check(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v1("cpu") else {
            refuse_set(limits, KEYS, &v1_missing("cpu"), out);
            return;
        };
        if limits.cpus.is_some() && !super::existing(&dir).join("cpu.cfs_quota_us").exists() {
            out.push((
                "cpus".to_owned(),
                "this kernel has no CPU bandwidth control (no cpu.cfs_quota_us: CONFIG_CFS_BANDWIDTH is off); use --cpu-weight or --cpuset instead".to_owned(),
            ));
        }
    }

    fn apply(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v1("cpu") else {
            refuse_set(limits, KEYS, &v1_missing("cpu"), out);
            return;
        };
        let quota_file = dir.join("cpu.cfs_quota_us");
        if quota_file.exists() {
            let ok = limits.cpus.is_none()
                || put(
                    out,
                    "cpus",
                    &dir.join("cpu.cfs_period_us"),
                    &PERIOD_US.to_string(),
                );
            if ok {
                let quota = limits
                    .cpus
                    .map_or("-1".to_owned(), |c| quota_us(c.millis()).to_string());
                put(out, "cpus", &quota_file, &quota);
            }
        } else if limits.cpus.is_some() {
            out.push((
                "cpus".to_owned(),
                "this kernel has no CPU bandwidth control (no cpu.cfs_quota_us)".to_owned(),
            ));
        }
        let weight = limits.cpu_weight.unwrap_or(DEFAULT_WEIGHT);
        put(
            out,
            "cpu-weight",
            &dir.join("cpu.shares"),
            &shares(weight).to_string(),
        );
    }

    fn usage(&self, at: &At<'_>, usage: &mut Usage) {
        let Some(dir) = at.v1("cpuacct") else { return };
        usage.cpu_usage_ns = read_u64(&dir.join("cpuacct.usage")).unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_map_to_shares_and_cpus_to_quotas() {
        assert_eq!(shares(100), 1024);
        assert_eq!(shares(1), 10);
        assert_eq!(shares(10000), 102_400);
        assert_eq!(quota_us(1500), 150_000);
        assert_eq!(quota_us(10), 1000);
    }
}
