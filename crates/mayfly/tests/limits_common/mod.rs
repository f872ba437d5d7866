//! What the resource-limit and pause tests share: the `alloc` load generator in the busybox
//! template, an instance's cgroup files as the kernel holds them (read from the host side),
//! and what a refused request must leave.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{IDLE, Output, TestDaemon, cgroup_present};

/// Lays `tests/fixtures/alloc.c`, built, over the busybox template as `/bin/alloc`.
pub fn install_alloc(d: &TestDaemon) {
    crate::common::install_fixture(d, "alloc");
}

/// Launches `name` from busybox with `extra` flags and an idle init.
pub fn launch_idle(d: &TestDaemon, name: &str, extra: &[&str]) {
    crate::common::launch(d, name, extra, Some(IDLE));
}

/// The group of instance `name` relative to a hierarchy's root (`mayfly-XXXX/ID`).
pub fn group_of(d: &TestDaemon, name: &str) -> String {
    let info = d.info(name);
    let id = info["id"].as_str().expect("an instance id");
    format!("{}/{id}", d.cgroup_parent())
}

/// The directory of group `rel` in v1 controller hierarchy `controller` (`memory`, `pids`,
/// `cpu`, `cpuacct`, `freezer`).
pub fn v1_dir(controller: &str, rel: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(controller).join(rel)
}

/// Whether this host has the v1 `controller` hierarchy (the limit tests drive v1, as the
/// daemon does by default on this hybrid machine).
pub fn has_v1(controller: &str) -> bool {
    v1_dir(controller, "").join("cgroup.procs").is_file()
}

/// A cgroup file of group `rel` in hierarchy `controller`, trimmed.
pub fn cg_read(controller: &str, rel: &str, file: &str) -> String {
    let p = v1_dir(controller, rel).join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_owned()
}

/// A numeric cgroup file.
pub fn cg_u64(controller: &str, rel: &str, file: &str) -> u64 {
    let text = cg_read(controller, rel, file);
    text.parse()
        .unwrap_or_else(|_| panic!("{controller}/{rel}/{file} is not a number: {text}"))
}

/// One `key value` line of a flat-keyed cgroup file (`memory.oom_control`, `pids.events`).
pub fn cg_key(controller: &str, rel: &str, file: &str, key: &str) -> Option<u64> {
    cg_read(controller, rel, file).lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The limit files of an instance, as the kernel holds them: memory, memory+swap, pids, CPU
/// quota and period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub memory: u64,
    pub memsw: u64,
    pub pids: String,
    pub cfs_quota: String,
    pub cfs_period: String,
}

/// What the kernel holds for instance `name` now.
pub fn held(d: &TestDaemon, name: &str) -> Held {
    let rel = group_of(d, name);
    Held {
        memory: cg_u64("memory", &rel, "memory.limit_in_bytes"),
        memsw: cg_u64("memory", &rel, "memory.memsw.limit_in_bytes"),
        pids: cg_read("pids", &rel, "pids.max"),
        cfs_quota: cg_read("cpu", &rel, "cpu.cfs_quota_us"),
        cfs_period: cg_read("cpu", &rel, "cpu.cfs_period_us"),
    }
}

/// v1's "no limit" in memory.limit_in_bytes (the largest page-aligned i64).
pub fn unlimited_memory() -> u64 {
    cg_u64("memory", "", "memory.limit_in_bytes")
}

pub const MIB: u64 = 1 << 20;

/// What a failed command must not contain: a Rust panic, an internal error, clap's usage dump.
pub fn assert_clear_error(out: &Output, what: &str, mentions: &[&str]) {
    assert!(!out.success(), "{what}: should have failed: {out}");
    let all = format!("{}{}", out.stderr, out.stdout);
    for m in mentions {
        assert!(
            all.contains(m),
            "{what}: the error does not mention `{m}`: {out}"
        );
    }
    for bad in ["panicked", "internal error"] {
        assert!(
            !out.stderr.contains(bad),
            "{what}: an unclear error (`{bad}`): {out}"
        );
    }
}

/// The instance's groups below the daemon's cgroup parent, in every hierarchy (what a refused
/// launch must not leave).
pub fn instance_groups(d: &TestDaemon) -> Vec<PathBuf> {
    let parent = d.cgroup_parent();
    cgroup_present(&parent)
        .into_iter()
        .flat_map(|p| {
            std::fs::read_dir(&p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// `stats NAME --json` (one sample) for one instance.
pub fn stats_of(d: &TestDaemon, name: &str) -> Value {
    let all = d.json(&["stats", name, "--json", "--no-stream"]);
    all.as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or_else(|| panic!("stats --json has no entry for {name}: {all}"))
}

/// A field of `info NAME --json`'s effective limits.
pub fn limit_of(d: &TestDaemon, name: &str, key: &str) -> Value {
    d.info(name)["limits"][key].clone()
}
