//! CPU and pids limits, from inside an instance and measured from the kernel: two busy
//! processes under `--cpus 0.1` get a tenth of a CPU (CPU time from the cgroup over wall
//! time) and the kernel throttles their group, while an unlimited instance on the same host
//! gets more (a quota well below what a loaded 2-core host still leaves the test, so that
//! contention cannot pass for the quota); `stats` agrees with the cgroup; a
//! fork bomb under `--pids` stops at the limit while the daemon answers promptly, another
//! instance still runs commands, and the bomb's instance can be stopped.

mod common;
mod limits_common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{TestDaemon, poll_until, wait_until};
use limits_common::{
    cg_key, cg_read, cg_u64, group_of, has_v1, install_alloc, launch_idle, stats_of,
};

/// CPU time (ns) the group of `name` used so far, from the v1 cpuacct controller.
fn cpu_ns(rel: &str) -> u64 {
    cg_u64("cpuacct", rel, "cpuacct.usage")
}

/// Runs two busy processes for 2 s in `name`; returns the CPUs' worth of time they got
/// (cgroup CPU time over wall time).
fn busy_share(d: &TestDaemon, name: &str) -> f64 {
    let rel = group_of(d, name);
    let before = cpu_ns(&rel);
    let t = Instant::now();
    d.sh(name, "alloc spin 2 2");
    let wall = t.elapsed().as_secs_f64();
    let used = (cpu_ns(&rel) - before) as f64 / 1e9;
    used / wall
}

/// [`busy_share`] of `name`, measured up to 8 times until it exceeds `floor` (a host busy
/// with other work leaves the whole of mayfly's cgroup tree too little for that); fails the
/// test, saying how busy the host was, when it never does.
fn share_beyond(d: &TestDaemon, name: &str, floor: f64) -> f64 {
    let mut seen = Vec::new();
    for _ in 0..8 {
        let share = busy_share(d, name);
        eprintln!("two busy processes for 2 s in {name} (no quota) got {share:.2} CPU");
        if share > floor {
            return share;
        }
        seen.push(format!("{share:.2}"));
        std::thread::sleep(Duration::from_secs(1));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    panic!(
        "two busy processes without a quota never got more than {floor} CPU ({}); the host is \
         too busy to tell a quota from contention (load average {})",
        seen.join(", "),
        load.trim()
    );
}

/// Spawns `mayfly exec NAME -- ARGS` in the background.
fn spawn_exec(d: &TestDaemon, name: &str, args: &[&str]) -> Child {
    let mut all = vec!["exec", name, "--"];
    all.extend_from_slice(args);
    d.command(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mayfly exec")
}

/// Waits (bounded) for a spawned client to end; kills it when it does not.
fn reap(mut child: Child, within: Duration) -> bool {
    let ended = poll_until(within, || matches!(child.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
    }
    ended
}

#[test]
fn a_cpu_quota_holds_busy_processes_to_a_tenth_of_a_cpu_measured_from_the_cgroup() {
    if !has_v1("cpu") || !has_v1("cpuacct") {
        eprintln!("this host has no v1 cpu/cpuacct hierarchies: the CPU quota is not tested here");
        return;
    }
    let d = TestDaemon::start();
    install_alloc(&d);
    launch_idle(&d, "slow", &["--cpus", "0.1"]);
    launch_idle(&d, "fast", &[]);
    let slow = group_of(&d, "slow");
    assert_eq!(cg_read("cpu", &slow, "cpu.cfs_period_us"), "100000");
    assert_eq!(cg_read("cpu", &slow, "cpu.cfs_quota_us"), "10000");
    assert_eq!(
        cg_read("cpu", &group_of(&d, "fast"), "cpu.cfs_quota_us"),
        "-1"
    );

    // The quota holds, however busy the host is (load only lowers what the group gets), and
    // the kernel throttled the group.
    let limited = busy_share(&d, "slow");
    eprintln!("two busy processes for 2 s under --cpus 0.1 got {limited:.2} CPU");
    assert!(
        limited <= 0.15,
        "under --cpus 0.1 two busy processes got {limited:.2} CPU"
    );
    assert!(limited >= 0.02, "the spinners under --cpus 0.1 got no CPU");
    let throttled: u64 = cg_read("cpu", &slow, "cpu.stat")
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        throttled > 0,
        "the kernel never throttled the group under --cpus 0.1"
    );
    // The control shows more than twice what the quota allows, unless the host is too busy
    // for it to: other processes compete with the whole of mayfly's cgroup tree, whatever its
    // weights, so it is measured again (a few times) until the host has room.
    let unlimited = share_beyond(&d, "fast", 0.2);
    assert!(
        unlimited > limited,
        "the unlimited control got {unlimited:.2} CPU against {limited:.2}"
    );

    // `stats` reads the same counter, and its CPU % over its sampling gap stays under the
    // quota while the processes spin.
    let rel = group_of(&d, "slow");
    let spinning = spawn_exec(&d, "slow", &["alloc", "spin", "4", "2"]);
    std::thread::sleep(Duration::from_millis(700));
    let before = cpu_ns(&rel);
    let stats = stats_of(&d, "slow");
    let after = cpu_ns(&rel);
    let reported = stats["cpu_usage_ns"].as_u64().unwrap_or(0);
    assert!(
        reported as f64 >= before as f64 * 0.99 && reported <= after,
        "stats cpu_usage_ns {reported} is not the cgroup's ({before}..{after}): {stats}"
    );
    let percent = stats["cpu_percent"].as_f64().unwrap_or(-1.0);
    assert!(
        (0.5..=15.0).contains(&percent),
        "stats cpu_percent {percent} of two spinners under --cpus 0.1: {stats}"
    );
    assert!(
        reap(spinning, Duration::from_secs(20)),
        "the spinners ended"
    );

    // Live: lifting the quota lets the same processes use more.
    let out = d.ok(&["set", "slow", "cpus=none"]);
    assert!(out.contains("cpus"), "{out}");
    assert_eq!(cg_read("cpu", &slow, "cpu.cfs_quota_us"), "-1");
    let lifted = share_beyond(&d, "slow", 0.2);
    assert!(
        lifted > limited,
        "with the quota lifted the spinners got {lifted:.2} CPU against {limited:.2}"
    );
    d.finish();
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit_and_the_rest_stays_responsive() {
    if !has_v1("pids") {
        eprintln!("this host has no v1 pids hierarchy: the pids limit is not tested here");
        return;
    }
    let d = TestDaemon::start();
    install_alloc(&d);
    // `--init`: the init forks nothing itself and forwards the stop signal.
    d.ok(&[
        "launch", "busybox", "--name", "bomb", "--pids", "32", "--init", "--", "sleep", "100000",
    ]);
    launch_idle(&d, "calm", &[]);
    let rel = group_of(&d, "bomb");
    assert_eq!(cg_read("pids", &rel, "pids.max"), "32");
    assert_eq!(cg_read("pids", &group_of(&d, "calm"), "pids.max"), "max");

    let bomb = spawn_exec(&d, "bomb", &["alloc", "bomb"]);
    wait_until(
        Duration::from_secs(20),
        "the bomb to reach the limit",
        || cg_key("pids", &rel, "pids.events", "max").unwrap_or(0) > 0,
    );
    // It stays at the limit: sampled for 2 s, while the daemon answers and another instance
    // runs commands.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut most = 0;
    let mut slowest = Duration::ZERO;
    while Instant::now() < deadline {
        most = most.max(cg_u64("pids", &rel, "pids.current"));
        let t = Instant::now();
        let list = d.json(&["list", "--json"]);
        slowest = slowest.max(t.elapsed());
        assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
        assert_eq!(d.sh("calm", "echo alive").trim(), "alive");
    }
    eprintln!("fork bomb under --pids 32: at most {most} pids, slowest `mayfly list` {slowest:?}");
    assert!(most <= 32, "pids.current reached {most} under --pids 32");
    // The kernel's own high-water mark, where it keeps one (pids.peak, Linux 6.1+).
    if limits_common::v1_dir("pids", &rel)
        .join("pids.peak")
        .exists()
    {
        let peak = cg_u64("pids", &rel, "pids.peak");
        assert!(peak <= 32, "pids.peak is {peak} under --pids 32");
    }
    assert!(most >= 24, "the bomb held only {most} pids: did it run?");
    assert!(
        slowest < Duration::from_secs(2),
        "`mayfly list` took {slowest:?} during the fork bomb"
    );
    let stats = stats_of(&d, "bomb");
    assert_eq!(stats["pids_limit"], 32, "{stats}");
    assert!(stats["pids"].as_u64().unwrap_or(0) <= 32, "{stats}");

    // The bomb's instance can be stopped (every process of it), and its group goes.
    let t = Instant::now();
    d.ok(&["stop", "--timeout", "2", "bomb"]);
    eprintln!("stopping the bomb's instance took {:?}", t.elapsed());
    assert_eq!(d.state_of("bomb").as_deref(), Some("stopped"));
    assert!(
        !limits_common::v1_dir("pids", &rel).exists(),
        "the bomb's pids group is removed"
    );
    assert!(reap(bomb, Duration::from_secs(10)), "the exec client ended");
    assert_eq!(d.sh("calm", "echo still").trim(), "still");
    d.finish();
}
