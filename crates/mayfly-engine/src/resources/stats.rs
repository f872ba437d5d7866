//! Usage figures (`mayfly stats`): two samples of each running instance's cgroup 250 ms
//! apart (every instance's first sample, one shared wait, every second sample; a bounded
//! number of readings at a time), CPU use over that gap,
//! memory and pids against the effective limits, the disk use of the writable layer from its
//! quota (instances with a disk limit), and network bytes from the host ends of its interfaces.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mayfly_api::{InstanceState, InstanceStats};
use mayfly_driver::Usage;
use mayfly_store::InstanceRecord;

use crate::{Engine, EngineError, lock};

/// The gap between the two samples.
const SAMPLE_GAP: Duration = Duration::from_millis(250);
/// Instances whose cgroups are read at the same time.
const PARALLEL_SAMPLES: usize = 32;
/// How long one sample may take.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(5);

/// CPU use in percent of one CPU from two readings of used nanoseconds `gap` apart.
pub(crate) fn cpu_percent(before_ns: u64, after_ns: u64, gap: Duration) -> f64 {
    let gap_ns = gap.as_nanos();
    if gap_ns == 0 {
        return 0.0;
    }
    let used = after_ns.saturating_sub(before_ns);
    (used as f64 / gap_ns as f64) * 100.0
}

/// Bytes received and sent by an instance, from the counters of its interfaces' host ends
/// (`rx`, `tx` of the host end): what the host end received, the instance sent.
fn net_bytes(host_ends: &[String]) -> (u64, u64) {
    let read = |name: &str, what: &str| -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/{what}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let (mut rx, mut tx) = (0u64, 0u64);
    for h in host_ends {
        rx = rx.saturating_add(read(h, "tx_bytes"));
        tx = tx.saturating_add(read(h, "rx_bytes"));
    }
    (rx, tx)
}

impl Engine {
    /// Usage of the named instances (every running one when `names` is empty). Unknown names
    /// are refused; stopped instances named explicitly get zeros.
    pub async fn stats(&self, names: Vec<String>) -> Result<Vec<InstanceStats>, EngineError> {
        self.stats_sampled(names, true).await
    }

    /// One reading of every running instance's counters, without the CPU percentage (which
    /// needs two readings and a wait) and the disk use (a quota call each): what a metrics
    /// scrape needs, cheaply.
    pub async fn usage_now(&self) -> Result<Vec<InstanceStats>, EngineError> {
        self.stats_sampled(Vec::new(), false).await
    }

    /// [`Self::stats`]; with `full` false, one sample and no disk use.
    async fn stats_sampled(
        &self,
        names: Vec<String>,
        full: bool,
    ) -> Result<Vec<InstanceStats>, EngineError> {
        let (records, ifaces) = self
            .db(|s| Ok((s.instances()?, s.all_interfaces()?)))
            .await?;
        let chosen: Vec<InstanceRecord> = if names.is_empty() {
            records
                .into_iter()
                .filter(|r| {
                    matches!(
                        self.shown_state(&r.name),
                        InstanceState::Running | InstanceState::Paused
                    )
                })
                .collect()
        } else {
            let mut out = Vec::new();
            for n in &names {
                match records.iter().find(|r| &r.name == n) {
                    Some(r) => out.push(r.clone()),
                    None => return Err(super::not_found_instance(n)),
                }
            }
            out
        };
        let mut stats: Vec<InstanceStats> = chosen.iter().map(|r| self.blank_stats(r)).collect();
        // Disk use of the writable layers that have a limit (counted by their quota), off
        // the async runtime.
        let dirs: Vec<_> = chosen
            .iter()
            .zip(&stats)
            .map(|(r, s)| {
                s.disk_limit
                    .filter(|_| full)
                    .map(|_| self.layout.instance_dir(&r.id))
            })
            .collect();
        let driver = self.driver.clone();
        let disk = tokio::task::spawn_blocking(move || {
            dirs.iter()
                .map(|d| d.as_ref().and_then(|d| driver.disk_usage(d).ok().flatten()))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?;
        for (s, d) in stats.iter_mut().zip(disk) {
            s.disk_bytes = d;
        }
        // Two samples of every running one, the same gap apart for all.
        let live: Vec<usize> = (0..stats.len())
            .filter(|&i| {
                matches!(
                    stats[i].state,
                    InstanceState::Running | InstanceState::Paused
                )
            })
            .collect();
        if live.is_empty() {
            return Ok(stats);
        }
        let ids: Vec<String> = live.iter().map(|&i| stats[i].id.clone()).collect();
        let first = self.sample_all(&ids).await;
        let second = if full {
            tokio::time::sleep(SAMPLE_GAP).await;
            self.sample_all(&ids).await
        } else {
            vec![None; ids.len()]
        };
        for ((&i, before), after) in live.iter().zip(first).zip(second) {
            let (usage, percent) = match (before, after) {
                (Some((u0, t0)), Some((u1, t1))) => {
                    (u1, cpu_percent(u0.cpu_usage_ns, u1.cpu_usage_ns, t1 - t0))
                }
                (Some((u, _)), None) | (None, Some((u, _))) => (u, 0.0),
                (None, None) => continue,
            };
            let host_ends: Vec<String> = ifaces
                .iter()
                .filter(|f| f.owner == stats[i].id)
                .map(|f| crate::network::host_name(&f.owner, f.idx))
                .collect();
            let (rx, tx) = net_bytes(&host_ends);
            let s = &mut stats[i];
            s.cpu_percent = percent;
            s.cpu_usage_ns = usage.cpu_usage_ns;
            s.memory_bytes = usage.memory_bytes;
            s.pids = usage.pids;
            s.io_read_bytes = usage.io_read_bytes;
            s.io_write_bytes = usage.io_write_bytes;
            s.net_rx_bytes = rx;
            s.net_tx_bytes = tx;
            s.oom_kills = usage.oom_kills;
        }
        Ok(stats)
    }

    /// The state `list` shows of instance `name` (`paused` for a paused running one).
    fn shown_state(&self, name: &str) -> InstanceState {
        lock(&self.slots)
            .get(name)
            .map_or(InstanceState::Stopped, |s| lock(&s.rt).shown_state())
    }

    /// One reading of each instance's usage, with when it was taken (`None`: it could not
    /// be read in time, e.g. the run just ended); [`PARALLEL_SAMPLES`] at a time.
    async fn sample_all(&self, ids: &[String]) -> Vec<Option<(Usage, Instant)>> {
        let limiter = Arc::new(tokio::sync::Semaphore::new(PARALLEL_SAMPLES));
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (driver, id, limiter) = (self.driver.clone(), id.clone(), limiter.clone());
                tokio::spawn(async move {
                    let _permit = limiter.acquire_owned().await.ok()?;
                    let at = Instant::now();
                    match tokio::time::timeout(SAMPLE_DEADLINE, driver.usage(&id)).await {
                        Ok(Ok(u)) => Some((u, at)),
                        _ => None,
                    }
                })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.ok().flatten());
        }
        out
    }

    /// Zeros, with the limits and the state filled in.
    fn blank_stats(&self, rec: &InstanceRecord) -> InstanceStats {
        let limits = self.effective_limits(rec);
        InstanceStats {
            name: rec.name.clone(),
            id: rec.id.clone(),
            state: self.shown_state(&rec.name),
            cpu_percent: 0.0,
            cpu_usage_ns: 0,
            memory_bytes: 0,
            memory_limit: limits.memory,
            pids: 0,
            pids_limit: limits.pids,
            disk_bytes: None,
            disk_limit: limits.disk,
            io_read_bytes: 0,
            io_write_bytes: 0,
            net_rx_bytes: 0,
            net_tx_bytes: 0,
            oom_kills: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_of_one_cpu_over_the_gap() {
        let gap = Duration::from_millis(250);
        assert_eq!(cpu_percent(0, 250_000_000, gap), 100.0);
        assert_eq!(cpu_percent(1_000, 500_001_000, gap), 200.0);
        assert_eq!(
            cpu_percent(10, 5, gap),
            0.0,
            "a counter that went back reads as idle"
        );
        assert_eq!(cpu_percent(0, 10, Duration::ZERO), 0.0);
    }

    #[test]
    fn unknown_host_ends_count_nothing() {
        assert_eq!(net_bytes(&["mvnonexistent0".to_owned()]), (0, 0));
    }
}
