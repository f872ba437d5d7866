//! Limits as part of an instance's configuration, read back from the kernel's cgroup files
//! after each step: they survive `restart`, `stop` + `start`, a daemon restart (SIGTERM and
//! SIGKILL); `clone` copies them, `publish` does not unless `--limits`; flavors give them and
//! flags go over a flavor's; `mayfly set` changes a running instance at once (and says so) and
//! a stopped one at its next start.

mod common;
mod limits_common;

use serde_json::Value;

use common::TestDaemon;
use limits_common::{
    Held, MIB, assert_clear_error, cg_read, cg_u64, group_of, has_v1, held, launch_idle,
    unlimited_memory,
};

/// What `--memory 96M --pids 64 --cpus 1.5` makes the kernel hold.
fn wanted() -> Held {
    Held {
        memory: 96 * MIB,
        memsw: 96 * MIB,
        pids: "64".into(),
        cfs_quota: "150000".into(),
        cfs_period: "100000".into(),
    }
}

/// What an instance without limits has.
fn unlimited() -> Held {
    let max = unlimited_memory();
    Held {
        memory: max,
        memsw: max,
        pids: "max".into(),
        cfs_quota: "-1".into(),
        cfs_period: "100000".into(),
    }
}

fn assert_limits(d: &TestDaemon, name: &str, want: &Held, when: &str) {
    assert_eq!(d.state_of(name).as_deref(), Some("running"), "{when}");
    assert_eq!(
        &held(d, name),
        want,
        "{when}: the kernel's limits of {name}"
    );
    let limits = d.info(name)["limits"].clone();
    if want.pids == "max" {
        assert!(
            limits.as_object().is_none_or(|o| o.is_empty()),
            "{when}: {name} has limits {limits}"
        );
    } else {
        assert_eq!(limits["memory"], want.memory, "{when}: {limits}");
        assert_eq!(limits["pids"].to_string(), want.pids, "{when}: {limits}");
    }
}

/// Launches `name` from `template` with `extra` flags and an idle init.
fn launch_from(d: &TestDaemon, template: &str, name: &str, extra: &[&str]) {
    let mut args = vec!["launch", template, "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", common::IDLE]);
    d.ok(&args);
}

fn all_v1() -> bool {
    ["memory", "pids", "cpu"].iter().all(|c| has_v1(c))
}

#[test]
fn limits_survive_restarts_and_daemon_restarts_clone_copies_them_publish_only_when_asked() {
    if !all_v1() {
        eprintln!("this host lacks a v1 memory, pids or cpu hierarchy: not tested here");
        return;
    }
    let mut d = TestDaemon::start();
    let want = wanted();
    launch_idle(
        &d,
        "keep",
        &["--memory", "96M", "--pids", "64", "--cpus", "1.5"],
    );
    assert_limits(&d, "keep", &want, "at launch");
    assert_eq!(d.info("keep")["limits"]["cpus"], 1.5);

    let pid = d.pid_of("keep");
    d.ok(&["restart", "--timeout", "1", "keep"]);
    assert_ne!(d.pid_of("keep"), pid, "a new run");
    assert_limits(&d, "keep", &want, "after restart");

    d.ok(&["stop", "--timeout", "1", "keep"]);
    d.ok(&["start", "keep"]);
    assert_limits(&d, "keep", &want, "after stop + start");

    d.stop_daemon();
    d.restart();
    assert_limits(&d, "keep", &want, "after a daemon restart");
    d.ok(&["stop", "--timeout", "1", "keep"]);
    d.ok(&["start", "keep"]);
    assert_limits(&d, "keep", &want, "stop + start after a daemon restart");

    d.kill_daemon();
    d.restart();
    assert_limits(&d, "keep", &want, "after the daemon was killed");
    d.ok(&["restart", "--timeout", "1", "keep"]);
    assert_limits(&d, "keep", &want, "restart after the daemon was killed");

    // Clone copies them.
    d.ok(&["clone", "keep", "copy", "--start"]);
    assert_limits(&d, "copy", &want, "a clone");

    // Publish does not, unless asked.
    d.ok(&["publish", "keep", "--as", "plain"]);
    launch_from(&d, "plain", "p1", &[]);
    assert_limits(
        &d,
        "p1",
        &unlimited(),
        "launched from a template published without --limits",
    );
    d.ok(&["publish", "keep", "--as", "limited", "--limits"]);
    launch_from(&d, "limited", "p2", &[]);
    assert_limits(
        &d,
        "p2",
        &want,
        "launched from a template published with --limits",
    );
    // The launch's own flags go over the template's.
    launch_from(&d, "limited", "p3", &["--memory", "80M"]);
    let mut over = want.clone();
    over.memory = 80 * MIB;
    over.memsw = 80 * MIB;
    assert_limits(
        &d,
        "p3",
        &over,
        "a template's limits with --memory over them",
    );
    d.finish();
}

#[test]
fn a_flavor_gives_its_limits_and_flags_go_over_them() {
    if !all_v1() {
        eprintln!("this host lacks a v1 memory, pids or cpu hierarchy: not tested here");
        return;
    }
    let d = TestDaemon::start();
    let flavors = d.json(&["flavor", "list", "--json"]);
    let tiny = flavors
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == "tiny").cloned())
        .unwrap_or_else(|| panic!("no built-in flavor tiny: {flavors}"));
    assert_eq!(tiny["builtin"], true, "{tiny}");

    launch_idle(&d, "t1", &["--flavor", "tiny"]);
    let tiny_held = Held {
        memory: 256 * MIB,
        memsw: 256 * MIB,
        pids: "256".into(),
        cfs_quota: "50000".into(),
        cfs_period: "100000".into(),
    };
    assert_limits(&d, "t1", &tiny_held, "--flavor tiny");
    let info = d.info("t1");
    assert_eq!(info["flavor"], "tiny", "{info}");
    let rel = group_of(&d, "t1");
    assert_eq!(
        cg_u64("memory", &rel, "memory.soft_limit_in_bytes"),
        64 * MIB,
        "the reservation (a quarter of tiny's memory) is the v1 soft limit"
    );

    // A clone keeps the flavor, not only its values.
    d.ok(&["clone", "t1", "t1-copy", "--start"]);
    assert_limits(&d, "t1-copy", &tiny_held, "a clone of a tiny instance");
    assert_eq!(d.info("t1-copy")["flavor"], "tiny");

    launch_idle(&d, "t2", &["--flavor", "tiny", "--memory", "512M"]);
    let mut over = tiny_held.clone();
    over.memory = 512 * MIB;
    over.memsw = 512 * MIB;
    assert_limits(&d, "t2", &over, "--flavor tiny --memory 512M");

    // A flavor of one's own, refused removal while used.
    d.ok(&[
        "flavor", "create", "mine", "--pids", "48", "--memory", "72M",
    ]);
    launch_idle(&d, "m1", &["--flavor", "mine"]);
    assert_eq!(cg_read("pids", &group_of(&d, "m1"), "pids.max"), "48");
    let out = d.mayfly(&["flavor", "rm", "mine"]);
    assert_clear_error(&out, "rm of a flavor in use", &["m1"]);
    d.ok(&["rm", "--force", "m1"]);
    d.ok(&["flavor", "rm", "mine"]);
    d.finish();
}

/// `set NAME ARGS --json` as a SetOutcome.
fn set_json(d: &TestDaemon, name: &str, args: &[&str]) -> Value {
    let mut all = vec!["set", name];
    all.extend_from_slice(args);
    all.push("--json");
    d.json(&all)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn set_changes_a_running_instance_at_once_and_a_stopped_one_at_its_next_start() {
    if !all_v1() {
        eprintln!("this host lacks a v1 memory, pids or cpu hierarchy: not tested here");
        return;
    }
    let d = TestDaemon::start();
    launch_idle(&d, "live", &["--memory", "64M"]);
    let rel = group_of(&d, "live");
    let pid = d.pid_of("live");

    let outcome = set_json(&d, "live", &["memory=128M", "pids=100"]);
    let applied = strings(&outcome["applied"]);
    assert!(
        applied.contains(&"memory".to_owned()) && applied.contains(&"pids".to_owned()),
        "{outcome}"
    );
    assert_eq!(outcome["next_start"], serde_json::json!([]), "{outcome}");
    assert_eq!(cg_u64("memory", &rel, "memory.limit_in_bytes"), 128 * MIB);
    assert_eq!(
        cg_u64("memory", &rel, "memory.memsw.limit_in_bytes"),
        128 * MIB
    );
    assert_eq!(cg_read("pids", &rel, "pids.max"), "100");
    assert_eq!(d.pid_of("live"), pid, "changed without a restart");
    assert_eq!(d.info("live")["limits"]["memory"], 128 * MIB);

    // The text output says it applied now.
    let out = d.ok(&["set", "live", "cpus=0.25"]);
    assert!(out.contains("cpus"), "{out}");
    assert!(
        out.to_lowercase().contains("appl"),
        "set says the change applied: {out}"
    );
    assert_eq!(cg_read("cpu", &rel, "cpu.cfs_quota_us"), "25000");

    // A bad value changes nothing, not even the good values beside it.
    let out = d.mayfly(&["set", "live", "pids=50", "memory=12XB"]);
    assert_clear_error(&out, "set memory=12XB", &["memory", "12XB"]);
    assert_eq!(cg_read("pids", &rel, "pids.max"), "100");
    assert_eq!(cg_u64("memory", &rel, "memory.limit_in_bytes"), 128 * MIB);
    assert_eq!(d.info("live")["limits"]["pids"], 100);

    // `none` lifts a limit.
    set_json(&d, "live", &["memory=none"]);
    assert_eq!(
        cg_u64("memory", &rel, "memory.limit_in_bytes"),
        unlimited_memory()
    );
    assert!(d.info("live")["limits"]["memory"].is_null());

    // Stopped: kept for the next start, and said so.
    d.ok(&["stop", "--timeout", "1", "live"]);
    let outcome = set_json(&d, "live", &["pids=50"]);
    assert_eq!(outcome["applied"], serde_json::json!([]), "{outcome}");
    let next = outcome["next_start"].to_string();
    assert!(
        next.contains("pids") && next.contains("stopped"),
        "{outcome}"
    );
    let out = d.ok(&["set", "live", "memory=200M"]);
    assert!(out.to_lowercase().contains("next start"), "{out}");
    d.ok(&["start", "live"]);
    let rel = group_of(&d, "live");
    assert_eq!(cg_read("pids", &rel, "pids.max"), "50");
    assert_eq!(cg_u64("memory", &rel, "memory.limit_in_bytes"), 200 * MIB);
    assert_eq!(cg_read("cpu", &rel, "cpu.cfs_quota_us"), "25000");
    d.finish();
}
