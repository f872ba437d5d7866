//! The host as the teardown sees it: processes, cgroups and mounts that mention a test.

use super::*;

/// Processes (pid, command line) whose command line contains `needle`, except this one.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if u32::try_from(pid).ok() == Some(me) || !pid_alive(pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            out.push((pid, cmdline.trim().to_owned()));
        }
    }
    out
}

/// A `sleep` argument no other process on the host has: unique to this test process, to
/// `base` (one per test file, so that files running at once differ) and to `salt`.
pub fn unique_seconds(base: u32, salt: u32) -> String {
    (base + (std::process::id() % 100_000) * 10 + salt).to_string()
}

/// The `sleep ARG` processes (inside instances; not the clients that mention it).
pub fn sleepers(arg: &str) -> Vec<(i32, String)> {
    let wanted = format!("sleep {arg}");
    processes_mentioning(&wanted)
        .into_iter()
        .filter(|(_, c)| *c == wanted)
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Sends `signal` to `pid` (ignoring a process that is already gone).
pub fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// A field of /proc/<pid>/status (e.g. `Uid`), trimmed.
pub fn proc_status_field(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

// ---- cgroups ---------------------------------------------------------------------------------

/// The cgroup parent of a daemon on `state_dir`, as `cgroup_parent()` in mayfly-engine
/// computes it (FNV-1a over the path, top 32 bits).
pub fn cgroup_parent(state_dir: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("mayfly-{:08x}", h >> 32)
}

/// Every cgroup hierarchy root under /sys/fs/cgroup (each v1 controller directory, the unified
/// tree, or /sys/fs/cgroup itself on a pure v2 host).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_owned()];
    }
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path();
            // Skip the symlinks of co-mounted controllers (cpu -> cpu,cpuacct).
            if p.is_dir() && !p.is_symlink() {
                out.push(p);
            }
        }
    }
    out
}

/// The hierarchies in which group `rel` exists.
pub fn cgroup_present(rel: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

// ---- mounts ----------------------------------------------------------------------------------

/// Lines of /proc/self/mountinfo that contain `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}
