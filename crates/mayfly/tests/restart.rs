//! Daemon restarts: instances outlive a stopped (SIGTERM) or killed (SIGKILL) daemon and are
//! re-attached by the next one; inits that ended while no daemon listened are settled at
//! start-up (transient layer discarded, ephemeral instance removed); a forker killed under
//! running instances is replaced and its instances adopted; persistent changes survive.

mod common;

use std::collections::BTreeMap;

use common::{
    SETTLE, TestDaemon, exists_in, is_gone, launch, pid_alive, poll_until, signal, wait_state,
    wait_until,
};
use rustix::process::Signal;
use serde_json::Value;

/// An init that prints `tick-N` about ten times a second.
const TICKER: &str = "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done";

/// An init that waits for /tmp/go, then exits 5.
const WAITS_FOR_GO: &str = "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 5";

/// `list --json` as name → entry.
fn listing(d: &TestDaemon) -> BTreeMap<String, Value> {
    d.json(&["list", "--json"])
        .as_array()
        .expect("an array")
        .iter()
        .map(|i| (i["name"].as_str().unwrap_or_default().to_owned(), i.clone()))
        .collect()
}

/// The highest `tick-N` in a log.
fn last_tick(log: &str) -> Option<u64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("tick-"))
        .filter_map(|n| n.parse().ok())
        .max()
}

/// Waits until the log of ticker `name` (through `mayfly logs`) passes tick `after`.
fn wait_new_ticks(d: &TestDaemon, name: &str, after: u64) {
    let ok = poll_until(SETTLE, || {
        last_tick(&d.ok(&["logs", name])).is_some_and(|t| t > after)
    });
    assert!(
        ok,
        "the log of {name} stopped at tick {after}: {:?}",
        last_tick(&d.ok(&["logs", name]))
    );
}

/// Size of an instance's current console log file, read on the host.
fn console_len(d: &TestDaemon, id: &str) -> u64 {
    std::fs::metadata(d.state.join("instances").join(id).join("console.log"))
        .map(|m| m.len())
        .unwrap_or(0)
}

fn id_of(d: &TestDaemon, name: &str) -> String {
    d.info(name)["id"].as_str().expect("an id").to_owned()
}

#[test]
fn instances_outlive_a_stopped_daemon_and_the_next_one_reattaches() {
    let mut d = TestDaemon::start();
    launch(&d, "ra-trans", &[], Some(TICKER));
    launch(&d, "ra-pers", &["--persistent"], None);
    launch(&d, "ra-eph", &["--ephemeral"], None);
    launch(&d, "ra-later", &[], Some(WAITS_FOR_GO));
    d.sh("ra-trans", "echo t > /root/mark");
    d.sh("ra-pers", "echo p > /root/mark");
    let names = ["ra-trans", "ra-pers", "ra-eph"];
    let pids: Vec<i32> = names.iter().map(|n| d.pid_of(n)).collect();
    let ticker_id = id_of(&d, "ra-trans");
    let forker = d.forker_pid().expect("a forker pid");

    d.stop_daemon();
    for (n, p) in names.iter().zip(&pids) {
        assert!(pid_alive(*p), "{n} (pid {p}) died with the daemon");
    }
    assert!(pid_alive(forker), "the forker died with the daemon");
    let out = d.mayfly(&["list"]);
    assert_eq!(out.code, 3, "no daemon: exit 3: {out}");
    assert!(out.stderr.contains("cannot reach"), "{out}");
    // The forker keeps pumping the console log while no daemon runs.
    let len = console_len(&d, &ticker_id);
    wait_until(SETTLE, "the console log to grow without a daemon", || {
        console_len(&d, &ticker_id) > len
    });

    d.restart();
    let list = listing(&d);
    assert_eq!(list.len(), 4, "{list:?}");
    for (n, p) in names.iter().zip(&pids) {
        assert_eq!(list[*n]["state"], "running", "{n}: {}", list[*n]);
        assert_eq!(list[*n]["pid"], *p, "{n} got another pid: {}", list[*n]);
    }
    assert_eq!(d.forker_pid(), Some(forker), "the same forker serves");
    assert_eq!(d.daemon_info()["running"], 4);
    let later = d.pid_of("ra-later");
    assert!(pid_alive(later));

    // exec works, and a running transient instance kept its changes across the restart.
    assert_eq!(d.sh("ra-trans", "cat /root/mark"), "t\n");
    assert_eq!(d.sh("ra-pers", "cat /root/mark"), "p\n");
    assert_eq!(d.sh("ra-eph", "hostname"), "ra-eph\n");
    // logs work, and show output printed after the restart.
    let seen = last_tick(&d.ok(&["logs", "ra-trans"])).expect("ticks logged");
    wait_new_ticks(&d, "ra-trans", seen);

    // stop works: the transient one comes back clean, the ephemeral one goes, the persistent
    // one keeps its change.
    d.ok(&["stop", "ra-trans"]);
    assert!(!pid_alive(pids[0]), "stop after re-attaching left the init");
    assert_eq!(d.state_of("ra-trans").as_deref(), Some("stopped"));
    d.ok(&["start", "ra-trans"]);
    assert!(!exists_in(&d, "ra-trans", "/root/mark"));
    d.ok(&["stop", "ra-eph"]);
    assert!(is_gone(&d, "ra-eph"));
    assert!(!pid_alive(pids[2]));
    d.ok(&["restart", "ra-pers"]);
    assert_ne!(d.pid_of("ra-pers"), pids[1]);
    assert_eq!(d.sh("ra-pers", "cat /root/mark"), "p\n");
    // An init that ends by itself after the restart is noticed and settled.
    std::fs::write(format!("/proc/{later}/root/tmp/go"), "").expect("poke the instance");
    wait_state(&d, "ra-later", "stopped");
    assert_eq!(d.info("ra-later")["last_exit"]["code"], 5);
    d.wait_instance_dirs(3);
    d.finish();
}

/// Runs the "inits ended while the daemon was away" scenario, the daemon stopped with
/// SIGTERM (`kill` false) or SIGKILL.
fn inits_that_ended_while_away_are_settled(kill: bool) {
    let mut d = TestDaemon::start();
    let p = if kill { "sk" } else { "st" };
    let (alive, trans, pers, eph) = (
        format!("{p}-alive"),
        format!("{p}-trans"),
        format!("{p}-pers"),
        format!("{p}-eph"),
    );
    launch(&d, &alive, &[], None);
    launch(&d, &trans, &[], Some(WAITS_FOR_GO));
    launch(&d, &pers, &["--persistent"], None);
    launch(&d, &eph, &["--ephemeral"], None);
    for n in [&alive, &trans, &pers] {
        d.sh(n, "echo changed > /root/mark");
    }
    let pid = |n: &str| d.pid_of(n);
    let (p_alive, p_trans, p_pers, p_eph) = (pid(&alive), pid(&trans), pid(&pers), pid(&eph));
    d.wait_instance_dirs(4);

    if kill {
        d.kill_daemon();
    } else {
        d.stop_daemon();
    }
    // While nobody listens: one init leaves by itself (exit 5), two are killed.
    std::fs::write(format!("/proc/{p_trans}/root/tmp/go"), "").expect("poke the instance");
    signal(p_pers, Signal::KILL);
    signal(p_eph, Signal::KILL);
    wait_until(SETTLE, "the three inits to end", || {
        !pid_alive(p_trans) && !pid_alive(p_pers) && !pid_alive(p_eph)
    });
    assert!(pid_alive(p_alive));

    d.restart();
    // The survivor is re-attached.
    let a = d.info(&alive);
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(a["pid"], p_alive, "{a}");
    assert_eq!(d.sh(&alive, "cat /root/mark"), "changed\n");

    // The ended ones are settled (in the background, just after the start): stopped with
    // their exit, or gone.
    wait_state(&d, &trans, "stopped");
    wait_state(&d, &pers, "stopped");
    wait_until(SETTLE, "the ephemeral instance to go", || is_gone(&d, &eph));
    let t = d.info(&trans);
    assert_eq!(t["state"], "stopped", "{t}");
    assert!(t["pid"].is_null(), "{t}");
    assert_eq!(t["last_exit"]["code"], 5, "the exit while away: {t}");
    let pe = d.info(&pers);
    assert_eq!(pe["state"], "stopped", "{pe}");
    assert_eq!(pe["last_exit"]["signal"], 9, "the kill while away: {pe}");
    assert!(is_gone(&d, &eph), "the ephemeral instance is still there");
    let mut names: Vec<String> = listing(&d).into_keys().collect();
    names.sort();
    let mut want = vec![alive.clone(), pers.clone(), trans.clone()];
    want.sort();
    assert_eq!(names, want);
    d.wait_instance_dirs(3);
    assert_eq!(d.daemon_info()["running"], 1);

    // The transient one's changes are gone, the persistent one's are kept.
    d.ok(&["start", &pers]);
    assert_eq!(d.sh(&pers, "cat /root/mark"), "changed\n");
    d.ok(&["start", &trans]);
    assert!(
        !exists_in(&d, &trans, "/root/mark"),
        "the transient layer survived its run"
    );
    // The survivor still stops normally.
    d.ok(&["stop", &alive]);
    assert!(!pid_alive(p_alive));
    d.finish();
}

#[test]
fn inits_that_ended_while_the_daemon_was_stopped_are_settled_at_restart() {
    inits_that_ended_while_away_are_settled(false);
}

#[test]
fn inits_that_ended_while_the_daemon_was_killed_are_settled_at_restart() {
    inits_that_ended_while_away_are_settled(true);
}

#[test]
fn persistent_changes_survive_daemon_restarts() {
    let mut d = TestDaemon::start();
    launch(&d, "pc-run", &["--persistent"], None);
    launch(&d, "pc-idle", &["--persistent"], None);
    d.sh("pc-run", "echo one > /root/data");
    d.sh("pc-idle", "echo two > /root/data");
    d.ok(&["stop", "pc-idle"]);

    d.stop_daemon();
    d.restart();
    assert_eq!(d.state_of("pc-idle").as_deref(), Some("stopped"));
    d.ok(&["start", "pc-idle"]);
    assert_eq!(d.sh("pc-idle", "cat /root/data"), "two\n");
    assert_eq!(d.sh("pc-run", "cat /root/data"), "one\n");

    d.kill_daemon();
    d.restart();
    d.ok(&["restart", "pc-run", "pc-idle"]);
    assert_eq!(d.sh("pc-run", "cat /root/data"), "one\n");
    assert_eq!(d.sh("pc-idle", "cat /root/data"), "two\n");
    // And reset still discards them afterwards.
    d.ok(&["reset", "pc-run"]);
    assert!(!exists_in(&d, "pc-run", "/root/data"));
    d.finish();
}

#[test]
fn a_killed_forker_is_replaced_and_its_instances_adopted() {
    let d = TestDaemon::start();
    launch(&d, "fk-tick", &[], Some(TICKER));
    launch(&d, "fk-pers", &["--persistent"], None);
    launch(&d, "fk-eph", &["--ephemeral"], None);
    launch(&d, "fk-later", &[], Some(WAITS_FOR_GO));
    launch(&d, "fk-eph-later", &["--ephemeral"], Some(WAITS_FOR_GO));
    d.sh("fk-pers", "echo p > /root/mark");
    let names = ["fk-tick", "fk-pers", "fk-eph", "fk-later", "fk-eph-later"];
    let pids: Vec<i32> = names.iter().map(|n| d.pid_of(n)).collect();
    let old = d.forker_pid().expect("a forker pid");
    assert!(
        d.forker_processes().iter().any(|(p, _)| *p == old),
        "info's forker pid {old} is not this daemon's forker: {:?}",
        d.forker_processes()
    );

    signal(old, Signal::KILL);
    wait_until(SETTLE, "a new forker", || {
        d.forker_pid().is_some_and(|p| p != old && pid_alive(p))
    });
    let new = d.forker_pid().expect("a forker pid");
    assert!(!pid_alive(old));
    assert_eq!(
        d.forker_processes().len(),
        1,
        "one forker: {:?}",
        d.forker_processes()
    );

    // The instances were not touched: same inits, still running, adopted.
    for (n, p) in names.iter().zip(&pids) {
        assert!(pid_alive(*p), "{n} died with the forker");
    }
    wait_until(SETTLE, "the instances to be adopted", || {
        let list = listing(&d);
        names.iter().zip(&pids).all(|(n, p)| {
            list.get(*n)
                .is_some_and(|i| i["state"] == "running" && i["pid"] == *p)
        })
    });
    // exec goes through the new forker.
    assert_eq!(d.sh("fk-pers", "cat /root/mark"), "p\n");
    assert_eq!(d.sh("fk-tick", "hostname"), "fk-tick\n");
    // The console log keeps flowing.
    let seen = last_tick(&d.ok(&["logs", "fk-tick"])).expect("ticks logged");
    wait_new_ticks(&d, "fk-tick", seen);

    // Adopted inits that end by themselves are noticed: settled as stopped, or removed.
    for p in &pids[3..] {
        std::fs::write(format!("/proc/{p}/root/tmp/go"), "").expect("poke the instance");
    }
    wait_state(&d, "fk-later", "stopped");
    wait_until(SETTLE, "the adopted ephemeral instance to go", || {
        is_gone(&d, "fk-eph-later")
    });
    assert!(!pid_alive(pids[3]) && !pid_alive(pids[4]));

    // stop works on adopted instances.
    d.ok(&["stop", "fk-tick"]);
    assert_eq!(d.state_of("fk-tick").as_deref(), Some("stopped"));
    assert!(!pid_alive(pids[0]), "stop left the adopted init");
    d.ok(&["stop", "fk-eph"]);
    assert!(is_gone(&d, "fk-eph"));
    assert!(!pid_alive(pids[2]));
    d.ok(&["restart", "fk-pers"]);
    assert_eq!(d.sh("fk-pers", "cat /root/mark"), "p\n");
    // New containers start under the new forker.
    d.ok(&["start", "fk-tick"]);
    launch(&d, "fk-new", &[], None);
    assert_eq!(d.sh("fk-new", "hostname"), "fk-new\n");
    assert_eq!(d.forker_pid(), Some(new));
    d.finish();
}

#[test]
fn a_forker_killed_while_the_daemon_is_away_is_replaced_at_restart() {
    let mut d = TestDaemon::start();
    launch(&d, "fa-box", &[], None);
    launch(&d, "fa-eph", &["--ephemeral"], None);
    d.sh("fa-box", "echo x > /root/mark");
    let pid = d.pid_of("fa-box");
    let eph = d.pid_of("fa-eph");
    let old = d.forker_pid().expect("a forker pid");
    d.stop_daemon();
    signal(old, Signal::KILL);
    wait_until(SETTLE, "the forker to die", || !pid_alive(old));
    // And one init ends while neither daemon nor forker is there.
    signal(eph, Signal::KILL);
    wait_until(SETTLE, "the ephemeral init to die", || !pid_alive(eph));

    d.restart();
    let new = d.forker_pid().expect("a forker pid");
    assert_ne!(new, old);
    let i = d.info("fa-box");
    assert_eq!(i["state"], "running", "{i}");
    assert_eq!(i["pid"], pid, "{i}");
    assert_eq!(d.sh("fa-box", "cat /root/mark"), "x\n");
    assert!(
        is_gone(&d, "fa-eph"),
        "the dead ephemeral instance was not settled"
    );
    d.wait_instance_dirs(1);
    d.ok(&["stop", "fa-box"]);
    assert!(!pid_alive(pid));
    d.ok(&["start", "fa-box"]);
    assert!(!exists_in(&d, "fa-box", "/root/mark"));
    d.finish();
}
