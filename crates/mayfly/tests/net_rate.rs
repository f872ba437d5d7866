//! The network rate limit (issue 22, points 1 to 3: `--net-rate`, bytes per second each way
//! per interface): TCP between instances on one network is slowed to the rate, whichever
//! way it goes through the limited instance, and runs free without it; the rate (`--net-rate`
//! at launch, or `limits.net_rate` in the API) changes on a running instance (`mayfly set`),
//! survives a restart of the daemon and of the instance, and nothing of it stays in nftables
//! after `rm`.
//!
//! The daemon runs in its own network namespace (the harness); the traffic is between its
//! instances, on its bridge. Timings have wide margins: 2 MiB at 512 KiB/s take about 3 s
//! (the bucket holds one second of the rate), without a limit some milliseconds.

mod common;

use serde_json::{Value, json};

use common::netns::*;
use common::*;

/// The rate under test, bytes per second (512 KiB/s).
const RATE: u64 = 512 << 10;
/// MiB per timed transfer.
const MIB: f64 = 2.0;
/// The usock sink each instance serves (its init).
const SERVE: &str = "exec usock serve tcp 5000";

/// Seconds `from` takes to stream 2 MiB to `to`'s sink (usock's own clock, from connect to
/// the sink's count).
fn stream_secs(d: &TestDaemon, from: &str, to: &str) -> f64 {
    let ip = eth0(d, to).ipv4;
    let out = d.mayfly(&[
        "exec", from, "--", "usock", "stream", "tcp", &ip, "5000", "2",
    ]);
    assert!(out.success(), "usock stream {from} -> {to}: {out}");
    let rate: f64 = out
        .stdout
        .trim()
        .strip_prefix("mib_per_s=")
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("usock printed no rate: {out}"));
    MIB / rate
}

/// Launches `name` running `script` (e.g. [`SERVE`], which needs `install_usock`), through
/// the API with `limits`.
fn launch_with(d: &TestDaemon, name: &str, script: &str, limits: Value) {
    let (status, body) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({
            "template": "busybox",
            "name": name,
            "command": ["sh", "-c", script],
            "limits": limits,
        })),
    );
    assert_eq!(status, 201, "launch {name}: {body}");
    wait_state(d, name, "running");
}

/// The bridge table as text (the limit objects and the maps naming them).
fn bridge_table(d: &TestDaemon) -> String {
    in_daemon_ns(d, &["nft", "list", "table", "bridge", "mayfly"]).stdout
}

/// Asserts that `host_end` is limited at `rate` both ways in the bridge table.
fn assert_limited(d: &TestDaemon, host_end: &str, rate: u64, when: &str) {
    let t = bridge_table(d);
    for dir in ["out", "in"] {
        assert!(
            t.contains(&format!("limit {host_end}-{dir}-{rate} {{"))
                && t.contains(&format!("\"{host_end}\" : \"{host_end}-{dir}-{rate}\"")),
            "{when}: {host_end} is not limited at {rate} B/s ({dir}):\n{t}"
        );
    }
}

/// `mayfly set NAME KEY=VALUE --json`: the outcome (`applied`, `next_start`).
fn set(d: &TestDaemon, name: &str, key: &str, value: &str) -> Value {
    d.json(&["set", name, &format!("{key}={value}"), "--json"])
}

#[test]
fn a_net_rate_slows_an_instance_both_ways_changes_live_and_leaves_nothing_behind() {
    let mut d = TestDaemon::start();
    install_usock(&d);
    launch(&d, "free", &[], Some(SERVE));
    launch(&d, "other", &[], Some(SERVE));
    launch(&d, "lim", &["--net-rate", "512K"], Some(SERVE));
    let lim = eth0(&d, "lim").host_name;
    assert_eq!(
        d.info("lim")["limits"]["net_rate"],
        json!(RATE),
        "info shows the rate"
    );
    assert_limited(&d, &lim, RATE, "at its start");

    // Free instances: well under a second (so that the times below mean something).
    let free = stream_secs(&d, "free", "other");
    assert!(
        free < 1.0,
        "2 MiB between unlimited instances took {free:.2} s"
    );

    // What lim sends and what it receives are each held to the rate: ~3 s.
    for (from, to, what) in [("lim", "free", "sending"), ("free", "lim", "receiving")] {
        let secs = stream_secs(&d, from, to);
        assert!(
            (1.5..30.0).contains(&secs),
            "2 MiB at 512 KiB/s ({what}) took {secs:.2} s (about 3 s expected; {free:.2} s \
             without a limit)\n{}",
            bridge_table(&d)
        );
    }
    // Others are not held by lim's rate.
    let secs = stream_secs(&d, "other", "free");
    assert!(secs < 1.0, "an unlimited pair took {secs:.2} s");

    // Raised on the running instance: fast at once.
    let out = set(&d, "lim", "net-rate", "64M");
    assert!(
        out["applied"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("net-rate"))),
        "a live change: {out}"
    );
    assert_limited(&d, &lim, 64 << 20, "after set net-rate=64M");
    assert!(
        !bridge_table(&d).contains(&format!("-{RATE}")),
        "the old limit is gone:\n{}",
        bridge_table(&d)
    );
    let secs = stream_secs(&d, "lim", "free");
    assert!(secs < 1.0, "at 64 MiB/s, 2 MiB took {secs:.2} s");

    // Back to 512 KiB/s: slow again, and so after a daemon restart and an instance restart.
    set(&d, "lim", "net-rate", &RATE.to_string());
    let secs = stream_secs(&d, "lim", "free");
    assert!(secs >= 1.5, "lowered again, 2 MiB took {secs:.2} s");
    d.stop_daemon();
    d.restart();
    wait_state(&d, "lim", "running");
    assert_limited(&d, &lim, RATE, "after a daemon restart");
    d.ok(&["restart", "lim"]);
    wait_state(&d, "lim", "running");
    assert_limited(&d, &lim, RATE, "after a restart of the instance");
    let secs = stream_secs(&d, "free", "lim");
    assert!(
        secs >= 1.5,
        "after the restarts, 2 MiB to lim took {secs:.2} s"
    );

    // Removed: no limit object, no map element.
    let out = set(&d, "lim", "net-rate", "none");
    assert!(
        out["applied"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("net-rate"))),
        "{out}"
    );
    let t = bridge_table(&d);
    assert!(
        !t.contains(&format!("{lim}-")) && !t.contains("limit mv"),
        "no limit object or map element left (its anti-spoofing elements stay):\n{t}"
    );
    let secs = stream_secs(&d, "lim", "free");
    assert!(secs < 1.0, "without its limit, 2 MiB took {secs:.2} s");

    // Set again, then rm: nothing of it stays.
    set(&d, "lim", "net-rate", "1M");
    assert_limited(&d, &lim, 1 << 20, "after set net-rate=1M");
    d.ok(&["rm", "--force", "lim"]);
    let t = bridge_table(&d);
    assert!(
        !t.contains(&lim) && !t.contains("limit mv"),
        "after rm:\n{t}"
    );
    d.ok(&["rm", "--force", "free", "other"]);
    d.finish();
}

#[test]
fn a_stopped_instance_gets_its_new_rate_at_its_next_start() {
    let d = TestDaemon::start();
    // In bits per second: 4 Mbit/s are 500000 bytes/s.
    launch(&d, "lim", &["--net-rate", "4mbit"], Some(IDLE));
    let lim = eth0(&d, "lim").host_name;
    assert_limited(&d, &lim, 500_000, "launched with 4mbit");
    d.ok(&["stop", "lim"]);
    let t = bridge_table(&d);
    assert!(!t.contains(&lim), "a stopped instance has no limit:\n{t}");
    let out = set(&d, "lim", "net-rate", "2M");
    assert!(
        out["next_start"].to_string().contains("net-rate"),
        "a stopped instance's rate applies at its next start: {out}"
    );
    d.ok(&["start", "lim"]);
    wait_state(&d, "lim", "running");
    assert_limited(&d, &lim, 2 << 20, "at the next start");
    d.ok(&["rm", "--force", "lim"]);
    assert!(!bridge_table(&d).contains("limit mv"));
    d.finish();
}

#[test]
fn a_rate_the_firewall_cannot_take_leaves_the_old_one_in_force_and_says_why() {
    let d = TestDaemon::start_with_env(&[], &[("MAYFLY_FAIL_AT", "net-rate:apply")]);
    launch_with(&d, "lim", IDLE, json!({"net_rate": RATE}));
    let lim = eth0(&d, "lim").host_name;
    assert_limited(
        &d,
        &lim,
        RATE,
        "at its start (the fault is only on live changes)",
    );
    let out = set(&d, "lim", "net-rate", "4M");
    let later = out["next_start"].to_string();
    assert!(
        later.contains("net-rate") && later.contains("firewall"),
        "the refused live change is reported with its reason: {out}"
    );
    assert!(!out["applied"].to_string().contains("net-rate"), "{out}");
    assert_limited(&d, &lim, RATE, "after the failed change");
    assert!(!bridge_table(&d).contains(&format!("-{}", 4u64 << 20)));
    d.ok(&["rm", "--force", "lim"]);
    assert!(!bridge_table(&d).contains("limit mv"));
    d.finish();
}

/// A rate for an instance without a network would limit nothing: refused, nothing made.
#[test]
fn a_net_rate_without_a_network_is_refused() {
    let d = TestDaemon::start();
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "lonely",
        "--network",
        "none",
        "--net-rate",
        "1M",
        "--",
        "sleep",
        "60",
    ]);
    assert!(
        out.stderr.contains("--net-rate") && out.stderr.contains("--network none"),
        "{out}"
    );
    assert!(d.instance_names().is_empty(), "{out}");
    d.finish();
}
