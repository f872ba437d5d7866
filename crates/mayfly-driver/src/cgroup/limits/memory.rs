//! Memory: the limit, the reservation (a soft guarantee) and swap.

use mayfly_api::Limits;

use super::{
    At, Controller, Refusal, keyed, put, read, read_u64, refuse_set, v1_missing, v2_available,
    v2_missing,
};
use crate::Usage;

const KEYS: &[&str] = &["memory", "memory-reserve", "swap"];

/// `memory.max`, `memory.low`, `memory.swap.max`; usage from `memory.current`,
/// `memory.stat` and `memory.events`.
pub(super) struct MemoryV2;

impl Controller for MemoryV2 {
    fn check(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v2() else { return };
        if !v2_available(&dir).iter().any(|c| c == "memory") {
            refuse_set(limits, KEYS, &v2_missing(at, "memory"), out);
            return;
        }
        // The root group has no memory.swap.max: only a group below it tells.
        let base = super::existing(&dir);
        if limits.swap.is_some_and(|s| s > 0)
            && at.mount_of(&base) != Some(base.as_path())
            && !base.join("memory.swap.max").exists()
        {
            out.push((
                "swap".to_owned(),
                "the kernel accounts no swap for cgroups here (no memory.swap.max: boot with swapaccount=1), so swap can only be off: drop --swap".to_owned(),
            ));
        }
    }

    fn apply(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v2() else { return };
        if !dir.join("memory.max").exists() {
            refuse_set(limits, KEYS, &v2_missing(at, "memory"), out);
            return;
        }
        let max = limits.memory.map_or("max".to_owned(), |m| m.to_string());
        put(out, "memory", &dir.join("memory.max"), &max);
        let low = limits.memory_reserve.unwrap_or(0).to_string();
        put(out, "memory-reserve", &dir.join("memory.low"), &low);
        let swap_file = dir.join("memory.swap.max");
        if swap_file.exists() {
            put(
                out,
                "swap",
                &swap_file,
                &limits.swap.unwrap_or(0).to_string(),
            );
        } else if limits.swap.is_some_and(|s| s > 0) {
            out.push((
                "swap".to_owned(),
                "the kernel accounts no swap for cgroups here (no memory.swap.max: boot with swapaccount=1 or a kernel with CONFIG_MEMCG_SWAP)".to_owned(),
            ));
        }
    }

    fn usage(&self, at: &At<'_>, usage: &mut Usage) {
        let Some(dir) = at.v2() else { return };
        let current = read_u64(&dir.join("memory.current")).unwrap_or(0);
        let inactive = read(&dir.join("memory.stat"))
            .and_then(|s| keyed(&s, "inactive_file"))
            .unwrap_or(0);
        usage.memory_bytes = current.saturating_sub(inactive);
        usage.oom_kills = read(&dir.join("memory.events"))
            .and_then(|s| keyed(&s, "oom_kill"))
            .unwrap_or(0);
    }
}

/// Whether a v1 memory limit going from `old` to `new` must write memsw before memory:
/// `memory.memsw.limit_in_bytes` may never be below `memory.limit_in_bytes`, so a raise
/// writes memsw first and a lowering writes memory first.
fn memsw_first(old: u64, new: u64) -> bool {
    new > old
}

/// `memory.limit_in_bytes`, `memory.soft_limit_in_bytes`, `memory.memsw.limit_in_bytes`
/// (memory plus swap) and `memory.swappiness`; usage from `memory.usage_in_bytes`,
/// `memory.stat` and `memory.oom_control`.
pub(super) struct MemoryV1;

/// v1 writes "no limit" as -1 and reads it back as a huge number.
fn v1_limit(v: Option<u64>) -> String {
    v.map_or("-1".to_owned(), |v| v.to_string())
}

impl Controller for MemoryV1 {
    fn check(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v1("memory") else {
            refuse_set(limits, KEYS, &v1_missing("memory"), out);
            return;
        };
        if limits.swap.is_some_and(|s| s > 0) {
            if !super::existing(&dir)
                .join("memory.memsw.limit_in_bytes")
                .exists()
            {
                out.push((
                    "swap".to_owned(),
                    "the kernel accounts no swap for cgroups here (no memory.memsw.limit_in_bytes: boot with swapaccount=1), so swap can only be off: drop --swap".to_owned(),
                ));
            } else if limits.memory.is_none() {
                out.push((
                    "swap".to_owned(),
                    "cgroup v1 limits swap only together with memory (memory.memsw counts both): set --memory as well".to_owned(),
                ));
            }
        }
    }

    fn apply(&self, at: &At<'_>, limits: &Limits, out: &mut Vec<Refusal>) {
        let Some(dir) = at.v1("memory") else {
            refuse_set(limits, KEYS, &v1_missing("memory"), out);
            return;
        };
        let mem_file = dir.join("memory.limit_in_bytes");
        let memsw_file = dir.join("memory.memsw.limit_in_bytes");
        let swap = limits.swap.unwrap_or(0);
        // Memory plus swap, when both are bounded.
        let memsw = match (limits.memory, memsw_file.exists()) {
            (Some(m), true) => Some(Some(m.saturating_add(swap))),
            (None, true) => Some(None),
            (_, false) => None,
        };
        if limits.memory.is_none() && swap > 0 {
            out.push((
                "swap".to_owned(),
                "cgroup v1 limits swap only together with memory (memory.memsw counts both): set --memory as well".to_owned(),
            ));
        }
        if memsw.is_none() && swap > 0 {
            out.push((
                "swap".to_owned(),
                "the kernel accounts no swap for cgroups here (no memory.memsw.limit_in_bytes: boot with swapaccount=1)".to_owned(),
            ));
        }
        let old = read_u64(&mem_file).unwrap_or(u64::MAX);
        let new = limits.memory.unwrap_or(u64::MAX);
        let write_mem = |out: &mut Vec<Refusal>| {
            put(out, "memory", &mem_file, &v1_limit(limits.memory));
        };
        let write_memsw = |out: &mut Vec<Refusal>| {
            if let Some(memsw) = memsw {
                let key = if limits.swap.is_some() {
                    "swap"
                } else {
                    "memory"
                };
                put(out, key, &memsw_file, &v1_limit(memsw));
            }
        };
        if memsw_first(old, new) {
            write_memsw(out);
            write_mem(out);
        } else {
            write_mem(out);
            write_memsw(out);
        }
        // No swap: the kernel should not even try to swap the group's pages out (this is
        // what keeps swap off where memsw does not bound it: no memory limit, no memsw).
        let swappiness = if swap == 0 {
            Some("0".to_owned())
        } else {
            let parent = dir.parent().map(|p| p.join("memory.swappiness"));
            parent.and_then(|p| read(&p)).map(|s| s.trim().to_owned())
        };
        if let Some(value) = swappiness {
            let file = dir.join("memory.swappiness");
            if file.exists() {
                put(out, "swap", &file, &value);
            }
        }
        put(
            out,
            "memory-reserve",
            &dir.join("memory.soft_limit_in_bytes"),
            &v1_limit(limits.memory_reserve),
        );
    }

    fn usage(&self, at: &At<'_>, usage: &mut Usage) {
        let Some(dir) = at.v1("memory") else { return };
        let current = read_u64(&dir.join("memory.usage_in_bytes")).unwrap_or(0);
        let inactive = read(&dir.join("memory.stat"))
            .and_then(|s| keyed(&s, "total_inactive_file"))
            .unwrap_or(0);
        usage.memory_bytes = current.saturating_sub(inactive);
        usage.oom_kills = read(&dir.join("memory.oom_control"))
            .and_then(|s| keyed(&s, "oom_kill"))
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_raises_write_memsw_first_and_lowerings_memory_first() {
        assert!(memsw_first(1 << 20, 2 << 20));
        assert!(memsw_first(1 << 20, u64::MAX), "lifting is a raise");
        assert!(!memsw_first(2 << 20, 1 << 20));
        assert!(!memsw_first(u64::MAX, 1 << 20));
    }
}
