//! What the host has, for the checks of limits against it: its memory (`MemTotal`) and its
//! online CPUs.

use mayfly_api::Limits;
use mayfly_api::size::format_size;

/// The host's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostFacts {
    /// `MemTotal` of `/proc/meminfo`, bytes.
    pub mem_total: u64,
    /// Online CPUs.
    pub cpus: u32,
}

impl HostFacts {
    /// Reads them now (cheap: two small files). What cannot be read counts as unlimited, so
    /// that an odd host does not refuse every limit.
    pub(crate) fn read() -> HostFacts {
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| mem_total(&s))
            .unwrap_or(u64::MAX);
        let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|s| count_cpu_list(&s))
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .and_then(|n| u32::try_from(n.get()).ok())
            })
            .unwrap_or(u32::MAX);
        HostFacts { mem_total, cpus }
    }
}

/// `MemTotal` in bytes, from the text of `/proc/meminfo`.
pub(crate) fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => n.checked_mul(1024),
        Some(_) => None,
    }
}

/// How many CPUs a kernel CPU list (`0-3,6`) names.
pub(crate) fn count_cpu_list(list: &str) -> Option<u32> {
    let list = list.trim();
    if list.is_empty() {
        return None;
    }
    let mut n: u32 = 0;
    for part in list.split(',') {
        let count = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                b.checked_sub(a)?.checked_add(1)?
            }
            None => {
                part.trim().parse::<u32>().ok()?;
                1
            }
        };
        n = n.checked_add(count)?;
    }
    Some(n)
}

/// Refuses limits above what the host has: the message names the flag, the value and the
/// host's figure; the second string is what to do.
pub(crate) fn check_against(limits: &Limits, host: &HostFacts) -> Result<(), (String, String)> {
    for (flag, value) in [
        ("--memory", limits.memory),
        ("--memory-reserve", limits.memory_reserve),
    ] {
        if let Some(v) = value
            && v > host.mem_total
        {
            return Err((
                format!(
                    "{flag} {} is more than this host's memory ({})",
                    format_size(v),
                    format_size(host.mem_total)
                ),
                // Whole MiB, rounded down: the example itself is accepted.
                format!("give at most `{flag} {}M`", host.mem_total >> 20),
            ));
        }
    }
    if let Some(c) = limits.cpus
        && u64::from(c.millis()) > u64::from(host.cpus) * 1000
    {
        return Err((
            format!(
                "--cpus {c} is more than this host's {} online CPU{}",
                host.cpus,
                if host.cpus == 1 { "" } else { "s" }
            ),
            format!("give at most `--cpus {}`", host.cpus),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mayfly_api::{Cpus, Limits};

    use super::*;

    const HOST: HostFacts = HostFacts {
        mem_total: 8 << 30,
        cpus: 2,
    };

    #[test]
    fn the_suggested_memory_is_never_above_the_host() {
        let host = HostFacts {
            mem_total: (23 << 30) + (600 << 20) + 5,
            cpus: 2,
        };
        let (_, hint) = check_against(
            &Limits {
                memory: Some(30 << 30),
                ..Limits::default()
            },
            &host,
        )
        .unwrap_err();
        assert!(
            hint.contains(&format!("--memory {}M", 23 * 1024 + 600)),
            "{hint}"
        );
    }

    #[test]
    fn meminfo_and_cpu_lists_are_read() {
        let meminfo = "MemTotal:        8012345 kB\nMemFree:  12 kB\n";
        assert_eq!(mem_total(meminfo), Some(8_012_345 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn limits_above_the_host_are_refused_naming_the_flag_and_the_host_figure() {
        let ok = Limits {
            memory: Some(8 << 30),
            memory_reserve: Some(1 << 30),
            cpus: Some(Cpus(2000)),
            ..Limits::default()
        };
        assert_eq!(check_against(&ok, &HOST), Ok(()));
        let (msg, hint) = check_against(
            &Limits {
                memory: Some(9 << 30),
                ..Limits::default()
            },
            &HOST,
        )
        .unwrap_err();
        assert!(
            msg.contains("--memory 9 GiB") && msg.contains("(8 GiB)"),
            "{msg}"
        );
        assert!(hint.contains("--memory 8192M"), "{hint}");
        let (msg, _) = check_against(
            &Limits {
                memory_reserve: Some(9 << 30),
                ..Limits::default()
            },
            &HOST,
        )
        .unwrap_err();
        assert!(msg.starts_with("--memory-reserve"), "{msg}");
        let (msg, hint) = check_against(
            &Limits {
                cpus: Some(Cpus(2001)),
                ..Limits::default()
            },
            &HOST,
        )
        .unwrap_err();
        assert!(
            msg.contains("--cpus 2.001") && msg.contains("2 online CPUs"),
            "{msg}"
        );
        assert!(hint.contains("--cpus 2"), "{hint}");
    }
}
