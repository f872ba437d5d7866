//! Memory limits, from inside an instance and read back from the kernel: an allocation past
//! `--memory` is OOM-killed inside the instance only (its init, another instance and the
//! daemon carry on), the kill is counted in `info` (live, then in `last_exit`) and `stats`;
//! swap is off unless asked for (v1: `memory.memsw.limit_in_bytes` = the memory limit); and
//! admission refuses a reservation that does not fit the host times `--memory-overcommit`,
//! naming who holds the rest.

mod common;
mod limits_common;

use common::{TestDaemon, last_exit, wait_stopped};
use limits_common::{
    MIB, assert_clear_error, cg_key, cg_u64, group_of, has_v1, install_alloc, launch_idle,
    stats_of, unlimited_memory,
};
use std::time::Duration;

#[test]
fn an_allocation_past_the_memory_limit_is_oom_killed_inside_the_instance_and_recorded() {
    if !has_v1("memory") {
        eprintln!("this host has no v1 memory hierarchy: the memory limit is not tested here");
        return;
    }
    let d = TestDaemon::start();
    install_alloc(&d);
    launch_idle(&d, "hog", &["--memory", "64M"]);
    launch_idle(&d, "calm", &[]);

    // What the kernel holds: the limit, and memory+swap equal to it (no swap by default).
    let hog = group_of(&d, "hog");
    assert_eq!(cg_u64("memory", &hog, "memory.limit_in_bytes"), 64 * MIB);
    assert_eq!(
        cg_u64("memory", &hog, "memory.memsw.limit_in_bytes"),
        64 * MIB,
        "swap is off by default: memory+swap = memory"
    );
    // Without a memory limit there is nothing to bound memsw by: swappiness 0 keeps it off.
    let calm = group_of(&d, "calm");
    assert_eq!(
        cg_u64("memory", &calm, "memory.limit_in_bytes"),
        unlimited_memory()
    );
    assert_eq!(cg_u64("memory", &calm, "memory.swappiness"), 0);
    assert_eq!(d.info("hog")["limits"]["memory"], 64 * MIB);

    let init = d.pid_of("hog");
    let out = d.mayfly(&["exec", "hog", "--", "alloc", "mem", "256"]);
    assert_eq!(
        out.code, 137,
        "the allocation is SIGKILLed by the OOM killer: {out}"
    );
    assert!(!out.stdout.contains("done"), "{out}");
    let killed = cg_key("memory", &hog, "memory.oom_control", "oom_kill").unwrap_or(0);
    assert!(killed >= 1, "the kernel counted no OOM kill in {hog}");

    // Only that process: the init runs on, the instance still serves exec within its limit.
    assert_eq!(d.state_of("hog").as_deref(), Some("running"));
    assert_eq!(d.pid_of("hog"), init, "the init was not killed");
    let small = d.sh("hog", "alloc mem 16");
    assert!(small.contains("done 16 MiB"), "{small}");
    // The other instance and the daemon are unaffected.
    let other = d.sh("calm", "alloc mem 128");
    assert!(other.contains("done 128 MiB"), "{other}");
    assert_eq!(d.state_of("calm").as_deref(), Some("running"));
    assert!(d.daemon_info()["forker_pid"].is_number());

    // Recorded: `info` of the running instance, `stats`, then the ended run.
    let info = d.info("hog");
    assert!(
        info["oom_kills"].as_u64().unwrap_or(0) >= 1,
        "info shows the OOM kill: {info}"
    );
    let text = d.ok(&["info", "hog"]);
    assert!(
        text.to_lowercase().contains("oom"),
        "info (text) shows OOM kills: {text}"
    );
    let stats = stats_of(&d, "hog");
    assert_eq!(stats["memory_limit"], 64 * MIB, "{stats}");
    assert!(stats["oom_kills"].as_u64().unwrap_or(0) >= 1, "{stats}");
    assert_eq!(
        d.info("calm")["oom_kills"].as_u64().unwrap_or(0),
        0,
        "the other instance had no OOM kill"
    );

    d.ok(&["stop", "--timeout", "1", "hog"]);
    let exit = last_exit(&d, "hog");
    assert!(
        exit["oom_kills"].as_u64().unwrap_or(0) >= 1,
        "last_exit keeps the OOM kills of the run: {exit}"
    );
    // A new run counts its own.
    d.ok(&["start", "hog"]);
    assert_eq!(d.info("hog")["oom_kills"].as_u64().unwrap_or(0), 0);
    d.finish();
}

#[test]
fn an_init_that_allocates_past_the_limit_ends_its_run_with_the_oom_kill_recorded() {
    if !has_v1("memory") {
        eprintln!("this host has no v1 memory hierarchy: the memory limit is not tested here");
        return;
    }
    let d = TestDaemon::start();
    install_alloc(&d);
    d.ok(&[
        "launch", "busybox", "--name", "greedy", "--memory", "32M", "--", "alloc", "mem", "512",
    ]);
    wait_stopped(&d, "greedy", Duration::from_secs(30));
    let exit = last_exit(&d, "greedy");
    assert_eq!(exit["signal"], 9, "{exit}");
    assert!(exit["oom_kills"].as_u64().unwrap_or(0) >= 1, "{exit}");
    let info = d.info("greedy");
    assert!(
        info["oom_kills"].as_u64().unwrap_or(0) >= 1,
        "a stopped instance shows its last run's OOM kills: {info}"
    );
    // Without the limit the same init runs to its end.
    d.ok(&[
        "launch", "busybox", "--name", "free", "--", "alloc", "mem", "64",
    ]);
    wait_stopped(&d, "free", Duration::from_secs(30));
    let exit = last_exit(&d, "free");
    assert_eq!(exit["code"], 0, "{exit}");
    assert_eq!(exit["oom_kills"].as_u64().unwrap_or(0), 0, "{exit}");
    d.finish();
}

/// The host's memory in bytes (MemTotal).
fn mem_total() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("MemTotal")
        * 1024
}

#[test]
fn a_reservation_past_the_overcommitted_capacity_is_refused_naming_the_holders() {
    // A ratio that makes the capacity about 300 MiB on this host.
    let ratio = format!("{:.6}", (300 * MIB) as f64 / mem_total() as f64);
    let d = TestDaemon::start_with(&["--memory-overcommit", &ratio]);
    launch_idle(&d, "resv-a", &["--memory-reserve", "200M"]);

    let out = d.mayfly(&[
        "launch",
        "busybox",
        "--name",
        "resv-b",
        "--memory-reserve",
        "200M",
    ]);
    assert_clear_error(&out, "a reservation past the capacity", &["resv-a"]);
    assert!(
        d.state_of("resv-b").is_none(),
        "a refused launch creates no instance"
    );
    assert_eq!(d.instance_names(), vec!["resv-a".to_owned()]);
    d.wait_instance_dirs(1);

    // What fits is admitted; a stopped instance's reservation counts no more.
    launch_idle(&d, "resv-c", &["--memory-reserve", "64M"]);
    d.ok(&["stop", "--timeout", "1", "resv-a"]);
    launch_idle(&d, "resv-b", &["--memory-reserve", "200M"]);
    // Starting the stopped one again would not fit: refused at start too, naming the holders.
    let out = d.mayfly(&["start", "resv-a"]);
    assert_clear_error(&out, "a start past the capacity", &["resv-b", "resv-c"]);
    assert_eq!(d.state_of("resv-a").as_deref(), Some("stopped"));
    d.finish();
}
