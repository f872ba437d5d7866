//! Pause and resume: a counter in the instance stops advancing while it is paused (read from
//! the host through /proc/PID/root, which needs nothing of the frozen instance) and goes on
//! after `resume`; `list`/`info`/`stats` say paused; exec is refused with a clear error;
//! snapshot and clone are allowed and leave it paused; the pause survives daemon restarts
//! (SIGTERM and SIGKILL), a daemon freezes a paused instance found thawed, and recovery after
//! a crash in a snapshot does not undo it; stop, restart, reset and rm of a
//! paused instance work and end the pause.

mod common;
mod limits_common;

use std::time::{Duration, Instant};

use common::{TestDaemon, freezer_file, freezer_thawed, wait_until};
use limits_common::{install_alloc, launch_idle, stats_of};

/// Launches `name` whose init (behind mayfly's tiny init, which forwards the stop signal)
/// writes 1, 2, 3, … to /tmp/count every 20 ms.
fn launch_counter(d: &TestDaemon, name: &str) {
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        name,
        "--init",
        "--",
        "alloc",
        "count",
        "/tmp/count",
    ]);
}

/// The counter of `name`, read from the host (works while the instance is frozen).
fn counter(d: &TestDaemon, name: &str) -> u64 {
    let pid = d.pid_of(name);
    let path = format!("/proc/{pid}/root/tmp/count");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Absent only before the first write (alloc renames each value into place).
        if let Some(n) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return n;
        }
        assert!(Instant::now() < deadline, "cannot read {path}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fails unless the counter of `name` advances within 5 s.
fn assert_advances(d: &TestDaemon, name: &str, why: &str) {
    let start = counter(d, name);
    wait_until(Duration::from_secs(5), why, || counter(d, name) > start + 5);
}

/// Fails unless the counter of `name` stays put for 1.5 s.
fn assert_stopped_counting(d: &TestDaemon, name: &str, why: &str) {
    let before = counter(d, name);
    std::thread::sleep(Duration::from_millis(1500));
    let after = counter(d, name);
    assert_eq!(before, after, "{why}: the counter moved while paused");
}

/// Fails unless `name` is paused as the daemon and the kernel see it.
fn assert_paused(d: &TestDaemon, name: &str, why: &str) {
    assert_eq!(d.state_of(name).as_deref(), Some("paused"), "{why}: info");
    let list = d.json(&["list", "--json"]);
    let entry = list
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name).cloned())
        .unwrap_or_else(|| panic!("{why}: {name} is not listed: {list}"));
    assert_eq!(entry["state"], "paused", "{why}: list --json: {entry}");
    let (file, _, frozen) = freezer_file(d, name).expect("a freezer");
    let value = std::fs::read_to_string(&file).expect("read the freezer");
    assert_eq!(value.trim(), frozen, "{why}: {}", file.display());
}

fn assert_running_unpaused(d: &TestDaemon, name: &str, why: &str) {
    assert_eq!(d.state_of(name).as_deref(), Some("running"), "{why}");
    assert!(freezer_thawed(d, name), "{why}: still frozen");
    assert_advances(d, name, why);
}

#[test]
fn a_paused_instance_stops_counting_refuses_exec_snapshots_and_resumes() {
    let d = TestDaemon::start();
    install_alloc(&d);
    launch_counter(&d, "ctr");
    launch_idle(&d, "other", &[]);
    assert_advances(&d, "ctr", "the counter runs");

    let out = d.ok(&["pause", "ctr"]);
    assert!(!out.contains("already"), "{out}");
    assert_paused(&d, "ctr", "after pause");
    assert_stopped_counting(&d, "ctr", "paused");
    let text = d.ok(&["list"]);
    assert!(text.contains("paused"), "list shows paused: {text}");
    let text = d.ok(&["info", "ctr"]);
    assert!(text.contains("paused"), "info shows paused: {text}");
    assert_eq!(stats_of(&d, "ctr")["state"], "paused");

    // Pausing again is no error, and says there was nothing to do.
    let out = d.mayfly(&["pause", "ctr"]);
    assert!(out.success(), "{out}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("already paused"),
        "{out}"
    );

    // Exec is refused, saying how to go on.
    let out = d.mayfly(&["exec", "ctr", "--", "true"]);
    assert!(!out.success(), "exec into a paused instance: {out}");
    assert!(
        out.stderr.contains("paused") && out.stderr.contains("mayfly resume ctr"),
        "{out}"
    );
    // Another instance is not affected.
    assert_eq!(d.sh("other", "echo fine").trim(), "fine");

    // Snapshot and clone are allowed and leave it paused.
    let snap = d.mayfly(&["snapshot", "create", "ctr", "while-paused"]);
    assert!(snap.success(), "{snap}");
    assert_paused(&d, "ctr", "after a snapshot");
    d.ok(&["clone", "ctr", "ctr-copy"]);
    assert_paused(&d, "ctr", "after a clone");
    assert_stopped_counting(&d, "ctr", "after snapshot and clone");

    d.ok(&["resume", "ctr"]);
    assert_running_unpaused(&d, "ctr", "after resume");
    assert_eq!(d.sh("ctr", "echo back").trim(), "back");
    // Resuming a running instance is no error.
    let out = d.mayfly(&["resume", "ctr"]);
    assert!(out.success(), "{out}");

    // Only a running instance can be paused.
    d.ok(&["stop", "--timeout", "2", "other"]);
    let out = d.mayfly(&["pause", "other"]);
    assert!(!out.success(), "pause of a stopped instance: {out}");
    assert!(out.stderr.contains("other"), "{out}");
    let out = d.mayfly(&["pause", "nobody"]);
    assert!(!out.success() && out.stderr.contains("nobody"), "{out}");
    d.finish();
}

#[test]
fn a_pause_survives_daemon_restarts_and_recovery_does_not_undo_it() {
    let mut d = TestDaemon::start();
    install_alloc(&d);
    launch_counter(&d, "ctr");
    assert_advances(&d, "ctr", "the counter runs");
    d.ok(&["pause", "ctr"]);
    assert_paused(&d, "ctr", "after pause");

    d.stop_daemon();
    d.restart();
    assert_paused(&d, "ctr", "after a daemon restart");
    assert_stopped_counting(&d, "ctr", "after a daemon restart");

    d.kill_daemon();
    d.restart();
    assert_paused(&d, "ctr", "after the daemon was killed");
    assert_stopped_counting(&d, "ctr", "after the daemon was killed");

    // Thawed behind its back while no daemon runs: the next daemon freezes it again.
    let (file, thawed, _) = freezer_file(&d, "ctr").expect("a freezer");
    d.kill_daemon();
    std::fs::write(&file, thawed).expect("thaw by hand");
    d.restart();
    assert_paused(&d, "ctr", "thawed by hand while the daemon was down");
    assert_stopped_counting(&d, "ctr", "frozen again by the next daemon");

    // A daemon killed in the middle of a snapshot of the paused instance: recovery thaws
    // only what an interrupted operation froze, not a pause.
    d.crash_at("snapshot:copied", &["snapshot", "create", "ctr", "s1"]);
    assert_paused(&d, "ctr", "after a crash during a snapshot");
    assert_stopped_counting(&d, "ctr", "after a crash during a snapshot");

    d.ok(&["resume", "ctr"]);
    assert_running_unpaused(&d, "ctr", "resumed after the restarts");

    // A resumed instance stays running across a daemon restart too.
    d.kill_daemon();
    d.restart();
    assert_running_unpaused(&d, "ctr", "a resumed instance after the daemon was killed");
    d.finish();
}

#[test]
fn stop_restart_reset_and_rm_of_a_paused_instance_work_and_end_the_pause() {
    let d = TestDaemon::start();
    install_alloc(&d);
    launch_counter(&d, "ctr");

    d.ok(&["pause", "ctr"]);
    let t = Instant::now();
    d.ok(&["stop", "--timeout", "5", "ctr"]);
    eprintln!("stop of a paused instance took {:?}", t.elapsed());
    assert_eq!(d.state_of("ctr").as_deref(), Some("stopped"));
    d.ok(&["start", "ctr"]);
    assert_running_unpaused(&d, "ctr", "started after a paused stop");

    d.ok(&["pause", "ctr"]);
    let pid = d.pid_of("ctr");
    d.ok(&["restart", "--timeout", "5", "ctr"]);
    assert_ne!(d.pid_of("ctr"), pid, "a new run");
    assert_running_unpaused(&d, "ctr", "restarted while paused");

    d.ok(&["pause", "ctr"]);
    d.ok(&["reset", "ctr"]);
    assert_running_unpaused(&d, "ctr", "reset while paused");

    d.ok(&["pause", "ctr"]);
    assert_paused(&d, "ctr", "paused before rm");
    d.ok(&["rm", "--force", "ctr"]);
    assert!(d.state_of("ctr").is_none(), "removed");
    d.wait_instance_dirs(0);
    d.finish();
}
