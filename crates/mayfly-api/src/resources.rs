//! Resources: an instance's limits and guarantees, the flavors (named presets) they come from,
//! live changes (`mayfly set`), and usage figures (`mayfly stats`).
//!
//! One parser ([`Limits::set_key`]) reads every limit as people write it, for the CLI's flags,
//! for `mayfly set NAME key=value` and for the API's `PATCH …/limits`, so that `--memory 2G` and
//! `set memory=2G` cannot disagree. Sizes use [`crate::size::parse_size`]. Host-dependent checks
//! (more memory than the host has, a CPU it lacks) are the daemon's: see the engine.

use serde::{Deserialize, Serialize};

mod parse;
#[cfg(test)]
mod tests;

use parse::{
    accepted, canonical_key, cpus_from, cpuset, integer, io_max, net_rate, parse_or_clear,
    show_io_max, show_rate, show_size, size, size_at_least, weight,
};

/// A number of CPUs' worth of CPU time, kept in thousandths (`1.5` is 1500), so that limits
/// compare exactly. On the wire: a JSON number (`1.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpus(pub u32);

impl Cpus {
    /// Thousandths of a CPU.
    pub fn millis(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for Cpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, frac) = (self.0 / 1000, self.0 % 1000);
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let s = format!("{frac:03}");
            write!(f, "{whole}.{}", s.trim_end_matches('0'))
        }
    }
}

impl Serialize for Cpus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(f64::from(self.0) / 1000.0)
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        parse_cpus(&v.to_string()).map_err(serde::de::Error::custom)
    }
}

/// On the wire a JSON number of CPUs (`1.5`), in thousandths at most.
impl utoipa::PartialSchema for Cpus {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::number_schema("CPUs' worth of CPU time, e.g. `1.5` (thousandths at most)")
    }
}

impl utoipa::ToSchema for Cpus {}

/// Bandwidth and operation limits on the block device that holds the state directory (where
/// writable layers live). Each absent field is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IoMax {
    /// Read bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbps: Option<u64>,
    /// Written bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wbps: Option<u64>,
    /// Read operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub riops: Option<u64>,
    /// Write operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiops: Option<u64>,
}

/// An instance's limits and guarantees. Every field is optional: absent means "no limit" (or
/// the kernel's default share), except `swap`, whose absence means no swap at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPU time per period, in CPUs (`cpu.max` on v2, `cpu.cfs_quota_us` on v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// Relative CPU share, 1 to 10000 (100 is the kernel's default; `cpu.weight` on v2,
    /// `cpu.shares` = weight × 1024 / 100 on v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
    /// The CPUs it may run on, in the kernel's list form (`0-3,6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Memory limit in bytes (`memory.max` / `memory.limit_in_bytes`): an allocation past it
    /// makes the kernel reclaim, then OOM-kill a process of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Guaranteed memory in bytes (`memory.low` / `memory.soft_limit_in_bytes`): counted by
    /// admission against the host's capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reserve: Option<u64>,
    /// Swap the instance may use, in bytes; absent is none (swap off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<u64>,
    /// Most processes and threads at once (`pids.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Relative IO share, 1 to 10000 (100 is the default; `io.weight` / `blkio.bfq.weight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u32>,
    /// IO bandwidth and operation limits on the state directory's device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_max: Option<IoMax>,
    /// Size of the writable layer in bytes (a project quota on the state filesystem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// Bandwidth of each network interface, each way, in bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rate: Option<u64>,
}

/// The kernel's most processes (`PID_MAX_LIMIT`): `pids.max` takes nothing above it.
const PIDS_MAX: u64 = 4 * 1024 * 1024;

/// The keys of [`Limits`] as flags and `set` write them, in display order.
pub const LIMIT_KEYS: &[&str] = &[
    "cpus",
    "cpu-weight",
    "cpuset",
    "memory",
    "memory-reserve",
    "swap",
    "pids",
    "io-weight",
    "io-max",
    "disk",
    "net-rate",
];

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Sets limit `key` (one of [`LIMIT_KEYS`]; `_` may stand for `-`) from `value` as people
    /// write it; `none` clears it. The error says what is wrong and what is accepted.
    pub fn set_key(&mut self, key: &str, value: &str) -> Result<(), String> {
        let key = canonical_key(key)?;
        let text = value.trim();
        let clear = text.eq_ignore_ascii_case("none");
        let bad = |why: &str| format!("invalid --{key} `{value}`: {why} ({})", accepted(key));
        if !clear && text.starts_with('-') {
            return Err(bad("negative values are not limits"));
        }
        match key {
            "cpus" => {
                self.cpus = if clear {
                    None
                } else {
                    Some(cpus_from(text).map_err(bad)?)
                }
            }
            "cpu-weight" => {
                self.cpu_weight = parse_or_clear(clear, || weight(text).map_err(|w| bad(&w)))?
            }
            "io-weight" => {
                self.io_weight = parse_or_clear(clear, || weight(text).map_err(|w| bad(&w)))?
            }
            "cpuset" => {
                self.cpuset = parse_or_clear(clear, || cpuset(text).map_err(|w| bad(&w)))?;
            }
            "memory" => {
                self.memory =
                    parse_or_clear(clear, || size_at_least(text, 6 << 20).map_err(|w| bad(&w)))?
            }
            "memory-reserve" => {
                self.memory_reserve =
                    parse_or_clear(clear, || size_at_least(text, 1).map_err(|w| bad(&w)))?
            }
            "swap" => self.swap = parse_or_clear(clear, || size(text).map_err(|w| bad(&w)))?,
            "pids" => {
                self.pids = parse_or_clear(clear, || {
                    let n = integer(text).map_err(|w| bad(&w))?;
                    if n < 8 {
                        return Err(bad("below the minimum of 8"));
                    }
                    if n > PIDS_MAX {
                        return Err(bad("above the kernel's most processes, 4194304"));
                    }
                    Ok(n)
                })?
            }
            "io-max" => self.io_max = parse_or_clear(clear, || io_max(text).map_err(|w| bad(&w)))?,
            "disk" => {
                self.disk =
                    parse_or_clear(clear, || size_at_least(text, 16 << 20).map_err(|w| bad(&w)))?
            }
            "net-rate" => {
                self.net_rate = parse_or_clear(clear, || net_rate(text).map_err(|w| bad(&w)))?
            }
            _ => unreachable!("canonical_key returns one of LIMIT_KEYS"),
        }
        Ok(())
    }

    /// The limit `key` as `set_key` reads it (`None` when unset).
    pub fn get_key(&self, key: &str) -> Option<String> {
        let key = canonical_key(key).ok()?;
        match key {
            "cpus" => self.cpus.map(|c| c.to_string()),
            "cpu-weight" => self.cpu_weight.map(|w| w.to_string()),
            "cpuset" => self.cpuset.clone(),
            "memory" => self.memory.map(show_size),
            "memory-reserve" => self.memory_reserve.map(show_size),
            "swap" => self.swap.map(show_size),
            "pids" => self.pids.map(|n| n.to_string()),
            "io-weight" => self.io_weight.map(|w| w.to_string()),
            "io-max" => self.io_max.and_then(|io| show_io_max(&io)),
            "disk" => self.disk.map(show_size),
            "net-rate" => self.net_rate.map(show_rate),
            _ => None,
        }
    }

    /// `self` with every limit `over` sets put over it (flavor, then the instance's own).
    pub fn overlaid(&self, over: &Limits) -> Limits {
        Limits {
            cpus: over.cpus.or(self.cpus),
            cpu_weight: over.cpu_weight.or(self.cpu_weight),
            cpuset: over.cpuset.clone().or_else(|| self.cpuset.clone()),
            memory: over.memory.or(self.memory),
            memory_reserve: over.memory_reserve.or(self.memory_reserve),
            swap: over.swap.or(self.swap),
            pids: over.pids.or(self.pids),
            io_weight: over.io_weight.or(self.io_weight),
            io_max: over.io_max.or(self.io_max),
            disk: over.disk.or(self.disk),
            net_rate: over.net_rate.or(self.net_rate),
        }
    }

    /// Checks the limits against each other (a reservation above the limit, …); host-dependent
    /// checks are the daemon's.
    pub fn check(&self) -> Result<(), String> {
        // Each value on its own, as `set_key` would take it (limits that came in as JSON did
        // not go through it).
        if self.io_max.is_some_and(|io| io == IoMax::default()) {
            return Err(format!(
                "invalid --io-max: no limit given ({})",
                accepted("io-max")
            ));
        }
        for key in LIMIT_KEYS {
            if let Some(value) = self.get_key(key) {
                Limits::default().set_key(key, &value)?;
            }
        }
        if let (Some(reserve), Some(memory)) = (self.memory_reserve, self.memory)
            && reserve > memory
        {
            return Err(format!(
                "--memory-reserve ({}) is above --memory ({}): a reservation cannot exceed the \
                 limit; lower --memory-reserve or raise --memory",
                crate::size::format_size(reserve),
                crate::size::format_size(memory)
            ));
        }
        Ok(())
    }

    /// The keys whose values differ between `self` and `other`, in [`LIMIT_KEYS`] order.
    pub fn changed_keys(&self, other: &Limits) -> Vec<&'static str> {
        LIMIT_KEYS
            .iter()
            .copied()
            .filter(|key| self.get_key(key) != other.get_key(key))
            .collect()
    }
}

/// Parses a CPU count (`2`, `0.5`, `1.25`; at least 0.01, at most three decimals).
pub fn parse_cpus(text: &str) -> Result<Cpus, String> {
    cpus_from(text.trim())
        .map_err(|why| format!("invalid CPU count `{text}`: {why} ({})", accepted("cpus")))
}

/// A named preset of limits (OpenStack's flavor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlavorInfo {
    /// Its name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Built into mayfly (cannot be removed or changed).
    pub builtin: bool,
    /// Its limits.
    pub limits: Limits,
    /// Instances that use it (by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

/// `POST /v1/flavors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFlavor {
    /// Its name (the rules of instance names).
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Its limits (at least one).
    pub limits: Limits,
}

/// The built-in flavors: (name, description, limits). Disk is left out on purpose: a disk
/// limit needs project quotas on the state filesystem, and a built-in flavor must launch on
/// every host (create a flavor of your own with `--disk` where quotas work).
pub fn builtin_flavors() -> Vec<FlavorInfo> {
    let gib = 1u64 << 30;
    let mib = 1u64 << 20;
    let make = |name: &str, description: &str, cpus: u32, memory: u64, pids: u64| FlavorInfo {
        name: name.to_owned(),
        description: description.to_owned(),
        builtin: true,
        limits: Limits {
            cpus: Some(Cpus(cpus)),
            memory: Some(memory),
            memory_reserve: Some(memory / 4),
            pids: Some(pids),
            ..Limits::default()
        },
        used_by: Vec::new(),
    };
    vec![
        make("tiny", "half a CPU, 256 MiB", 500, 256 * mib, 256),
        make("small", "1 CPU, 1 GiB", 1000, gib, 1024),
        make("medium", "2 CPUs, 4 GiB", 2000, 4 * gib, 4096),
        make("large", "4 CPUs, 8 GiB", 4000, 8 * gib, 8192),
    ]
}

/// `PATCH /v1/instances/{name}/limits`: changes of an instance's limits, as `mayfly set NAME
/// key=value…` writes them (values as [`Limits::set_key`] reads them; `none` clears).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLimits {
    /// A flavor to take the limits from (the instance's own limits stay over it); `""`
    /// drops the flavor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// `key` → `value` pairs, applied in order.
    #[serde(default)]
    pub changes: Vec<(String, String)>,
}

/// What `PATCH /v1/instances/{name}/limits` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetOutcome {
    /// The instance afterwards.
    pub instance: crate::InstanceInfo,
    /// Keys that changed and took effect on the running instance now.
    pub applied: Vec<String>,
    /// Keys that changed and take effect at the next start, each with why (`stopped`, or the
    /// kernel's refusal).
    pub next_start: Vec<(String, String)>,
}

/// One instance's usage, as `mayfly stats` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceStats {
    /// Instance name.
    pub name: String,
    /// Instance id.
    pub id: String,
    /// Its state.
    pub state: crate::InstanceState,
    /// CPU use over the sampling interval, in percent of one CPU (200 = two CPUs busy).
    pub cpu_percent: f64,
    /// CPU time used since the start, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use (bytes).
    pub memory_bytes: u64,
    /// Its memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// Processes and threads.
    pub pids: u64,
    /// Its pids limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
    /// Bytes used by the writable layer (from the quota when there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Its disk quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_limit: Option<u64>,
    /// Bytes read from block devices.
    pub io_read_bytes: u64,
    /// Bytes written to block devices.
    pub io_write_bytes: u64,
    /// Bytes received on its network interfaces.
    pub net_rx_bytes: u64,
    /// Bytes sent on its network interfaces.
    pub net_tx_bytes: u64,
    /// Processes the kernel's OOM killer ended in this run.
    pub oom_kills: u64,
}

/// `GET /v1/stats` query: which instances (comma-separated names; all running ones when
/// absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Comma-separated instance names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<String>,
}
