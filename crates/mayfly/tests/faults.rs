//! Faults that once wedged the host or left an instance stuck (issue 18): a daemon killed
//! while a copy holds an instance frozen, an instance frozen behind mayfly's back, a freeze,
//! an exec or a cgroup removal that never completes, and a run whose clean-up fails. In each
//! case the instance concerned ends in a settled, usable state, every other instance and the
//! daemon go on meanwhile, and nothing is left behind.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    TestDaemon, freeze_by_hand, freezer_file, freezer_thawed, is_gone, launch, wait_state,
    wait_until,
};

/// Whether instance `name`'s freezer says frozen right now.
fn frozen_now(d: &TestDaemon, name: &str) -> bool {
    freezer_file(d, name).is_some_and(|(file, _, frozen)| {
        std::fs::read_to_string(file).is_ok_and(|s| s.trim() == frozen)
    })
}

#[test]
fn a_daemon_killed_while_a_copy_holds_an_instance_frozen_thaws_it_at_its_next_start() {
    let mut d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "p0", "--persistent"]);
    d.sh("p0", "mkdir -p /root/d && echo data > /root/d/f");
    for args in [
        &["snapshot", "create", "p0", "s1"][..],
        &["clone", "p0", "c1"],
        &["publish", "p0", "--as", "pub"],
    ] {
        d.crash_at("capture:frozen", args);
        assert!(
            freezer_thawed(&d, "p0"),
            "p0 is still frozen after `{}` was interrupted",
            args.join(" ")
        );
        let started = Instant::now();
        assert_eq!(d.sh("p0", "cat /root/d/f").trim(), "data");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "exec answers at once"
        );
    }
    // The interrupted operations left nothing.
    let snaps = d.json(&["snapshot", "list", "p0", "--json"]);
    assert_eq!(snaps.as_array().map(Vec::len), Some(0), "{snaps}");
    assert!(is_gone(&d, "c1"));
    assert!(!d.mayfly(&["template", "info", "pub"]).success());
    // And the host is usable: launches are not held up.
    d.ok(&["launch", "busybox", "--name", "other"]);
    d.ok(&["rm", "--force", "p0", "other"]);
    d.finish();
}

#[test]
fn a_daemon_killed_during_a_long_clone_copy_leaves_the_source_running_and_the_host_usable() {
    let mut d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "p0", "--persistent"]);
    d.sh(
        "p0",
        "mkdir /root/many && cd /root/many && i=0; while [ $i -lt 5000 ]; do echo $i > f$i; i=$((i+1)); done; \
         head -c 200000000 /dev/urandom > /root/big && sha256sum /root/big > /root/big.sum",
    );
    let (freezer, _, frozen_value) = freezer_file(&d, "p0").expect("p0's freezer");
    let frozen = || std::fs::read_to_string(&freezer).is_ok_and(|s| s.trim() == frozen_value);
    let mut clone = d
        .command(&["clone", "p0", "c1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the clone");
    // Kill the daemon while the copy runs, that is while p0 is frozen for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !frozen() {
        assert!(Instant::now() < deadline, "the clone never froze p0");
        std::thread::sleep(Duration::from_millis(1));
    }
    d.kill_daemon();
    let _ = clone.wait();
    assert!(frozen(), "the kill landed inside the frozen window");

    d.restart();
    assert!(
        freezer_thawed(&d, "p0"),
        "p0 thawed by the restarted daemon"
    );
    let started = Instant::now();
    assert_eq!(
        d.sh(
            "p0",
            "sha256sum -c /root/big.sum >/dev/null && ls /root/many | wc -l"
        )
        .trim(),
        "5000",
        "p0's data is intact"
    );
    d.ok(&["launch", "busybox", "--name", "after"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exec and launch are not held up"
    );
    assert!(is_gone(&d, "c1"), "the interrupted clone left no instance");
    assert!(d.state_entries("tmp").is_empty());
    d.ok(&["rm", "--force", "p0", "after"]);
    d.finish();
}

/// An instance frozen behind mayfly's back: exec fails at once (it used to hang the forker
/// and, through it, every later launch), others go on, and `rm --force` still works.
fn exec_into_a_frozen_instance(extra: &[&str]) {
    let d = TestDaemon::start_with(extra);
    launch(&d, "a", &[], None);
    launch(&d, "b", &[], None);
    freeze_by_hand(&d, "a", true);
    wait_until(Duration::from_secs(5), "a to be frozen", || {
        frozen_now(&d, "a")
    });

    let started = Instant::now();
    let out = d.mayfly(&["exec", "a", "--", "true"]);
    assert!(!out.success(), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exec into a frozen instance answers at once"
    );
    assert!(out.stderr.contains("frozen"), "{out}");
    // The others are not held up.
    let started = Instant::now();
    d.ok(&["exec", "b", "--", "true"]);
    launch(&d, "c", &[], None);
    assert!(started.elapsed() < Duration::from_secs(10));

    freeze_by_hand(&d, "a", false);
    d.ok(&["exec", "a", "--", "true"]);

    // A frozen instance can still be removed by force.
    freeze_by_hand(&d, "a", true);
    wait_until(Duration::from_secs(5), "a to be frozen", || {
        frozen_now(&d, "a")
    });
    d.ok(&["rm", "--force", "a"]);
    d.ok(&["rm", "--force", "b", "c"]);
    d.finish();
}

#[test]
fn exec_into_a_frozen_instance_fails_at_once_and_others_go_on() {
    exec_into_a_frozen_instance(&[]);
}

#[test]
fn exec_into_a_frozen_instance_fails_at_once_and_others_go_on_v2() {
    exec_into_a_frozen_instance(&["--cgroup-layout", "v2"]);
}

#[test]
fn a_freeze_that_never_completes_stalls_nobody_and_is_undone() {
    let d = TestDaemon::start_with_env(&[], &[("MAYFLY_FORKER_FAULTS", "freeze-stall")]);
    d.ok(&["launch", "busybox", "--name", "a", "--persistent"]);
    d.sh("a", "echo mine > /root/f");
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "b",
        "--",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.1; done",
    ]);
    let mut snap = d
        .command(&["snapshot", "create", "a", "s1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the snapshot");
    std::thread::sleep(Duration::from_secs(1));

    // While a's freeze hangs: launches, execs and log pumping of the others go on.
    let started = Instant::now();
    launch(&d, "c", &[], None);
    d.ok(&["exec", "b", "--", "true"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "launch and exec are not held up by a freeze in progress ({:?})",
        started.elapsed()
    );
    let ticks = |d: &TestDaemon| d.ok(&["logs", "b"]).lines().count();
    let before = ticks(&d);
    std::thread::sleep(Duration::from_millis(800));
    assert!(ticks(&d) > before, "b's console log keeps flowing");

    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(st) = snap.try_wait().expect("wait for the snapshot") {
            break st;
        }
        assert!(Instant::now() < deadline, "the snapshot never gave up");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = snap.wait_with_output().expect("snapshot output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("could not be frozen"), "{stderr}");
    assert!(freezer_thawed(&d, "a"), "a is thawed again");
    assert_eq!(d.sh("a", "cat /root/f").trim(), "mine");
    let snaps = d.json(&["snapshot", "list", "a", "--json"]);
    assert_eq!(snaps.as_array().map(Vec::len), Some(0), "{snaps}");
    d.ok(&["rm", "--force", "a", "b", "c"]);
    d.finish();
}

#[test]
fn an_exec_whose_helper_never_gets_on_fails_alone_and_leaves_nothing() {
    let d = TestDaemon::start_with_env(&[], &[("MAYFLY_FORKER_FAULTS", "exec-stall")]);
    launch(&d, "a", &[], None);
    let mut stuck = d
        .command(&["exec", "a", "--env", "MAYFLY_FAULT_STALL=1", "--", "true"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the stuck exec");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    assert_eq!(d.sh("a", "echo fine").trim(), "fine");
    launch(&d, "b", &[], None);
    assert!(started.elapsed() < Duration::from_secs(5));

    let deadline = Instant::now() + Duration::from_secs(40);
    while stuck.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the stuck exec never gave up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = stuck.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("did not start within"), "{stderr}");
    d.ok(&["rm", "--force", "a", "b"]);
    // finish() fails if the helper or anything it made was left running or unreaped.
    d.finish();
}

#[test]
fn a_cgroup_that_does_not_empty_in_time_is_reported_and_removed_later() {
    let d = TestDaemon::start_with_env(&[], &[("MAYFLY_FORKER_FAULTS", "remove-busy")]);
    launch(&d, "t", &[], None);
    launch(&d, "other", &[], None);
    let id = d.info("t")["id"].as_str().unwrap_or_default().to_owned();
    let mut stop = d
        .command(&["stop", "t"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the stop");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    d.ok(&["exec", "other", "--", "true"]);
    launch(&d, "third", &[], None);
    assert!(started.elapsed() < Duration::from_secs(4));
    let deadline = Instant::now() + Duration::from_secs(40);
    while stop.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the stop never returned");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_state(&d, "t", "stopped");
    let info = d.info("t");
    let error = info["error"].as_str().unwrap_or_default();
    assert!(error.contains("still holds processes"), "{info}");
    // The forker keeps trying, and the group goes once it empties.
    let rel = format!("{}/{id}", d.cgroup_parent());
    wait_until(Duration::from_secs(10), "the group to go", || {
        common::cgroup_present(&rel).is_empty()
    });
    d.ok(&["start", "t"]);
    assert!(d.info("t")["error"].is_null(), "a good start clears it");
    d.ok(&["rm", "--force", "t", "other", "third"]);
    d.finish();
}

#[test]
fn a_run_whose_clean_up_cannot_read_the_catalogue_still_ends_and_settles() {
    let mut d = TestDaemon::start_with_env(&[], &[("MAYFLY_FAIL_AT", "finish-run:read")]);
    // An attached one-shot run returns its code (it used to wait forever).
    let out = d.mayfly(&["run", "--rm", "busybox", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3, "{out}");
    launch(&d, "t", &[], None);
    d.ok(&["stop", "t"]);
    wait_state(&d, "t", "stopped");
    let info = d.info("t");
    assert!(
        info["error"]
            .as_str()
            .is_some_and(|e| e.contains("injected failure")),
        "{info}"
    );
    // The ephemeral instance of the run could not be removed; the next start removes it.
    assert_eq!(d.instance_names().len(), 2, "{:?}", d.instance_names());
    d.stop_daemon();
    d.set_env(&[]);
    d.restart();
    // Settled in the background after the start-up (as every run found ended then).
    wait_until(
        Duration::from_secs(10),
        "the ephemeral instance removed",
        || d.instance_names() == ["t"],
    );
    d.ok(&["start", "t"]);
    d.ok(&["rm", "--force", "t"]);
    d.finish();
}

/// Undoes `chattr +i` whatever happens.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: &std::path::Path) -> Immutable {
        std::fs::create_dir_all(path).expect("create the trash");
        let st = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .expect("run chattr");
        assert!(st.success(), "chattr +i {}", path.display());
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_transient_run_whose_layer_cannot_be_discarded_stops_and_never_restarts_dirty() {
    let d = TestDaemon::start();
    launch(&d, "t", &[], None);
    d.sh("t", "echo dirty > /root/x");
    let trash = Immutable::set(&d.state.join("trash"));
    d.ok(&["stop", "t"]);
    wait_state(&d, "t", "stopped");
    let info = d.info("t");
    let error = info["error"].as_str().unwrap_or_default();
    assert!(error.contains("discard the writable layer"), "{info}");
    // It refuses to start on its old layer rather than run dirty.
    let out = d.mayfly(&["start", "t"]);
    assert!(!out.success(), "{out}");
    wait_state(&d, "t", "stopped");
    drop(trash);
    d.ok(&["start", "t"]);
    assert_eq!(
        d.sh("t", "test -e /root/x && echo dirty || echo clean")
            .trim(),
        "clean"
    );
    d.ok(&["rm", "--force", "t"]);
    d.finish();
}

/// A daemon with a persistent instance `slow` whose init takes `seconds` to obey SIGTERM,
/// and whose `restart` was cut by the end of the daemon right after the stop signal was sent;
/// with the init's pid before.
fn restart_cut_after_its_stop_signal(seconds: u32) -> (TestDaemon, i32) {
    let mut d = TestDaemon::start();
    let init = format!("trap 'sleep {seconds}; exit 0' TERM; while true; do sleep 0.1; done");
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "slow",
        "--persistent",
        "--",
        "sh",
        "-c",
        &init,
    ]);
    let before = d.pid_of("slow");
    d.crash_at("stop:signalled", &["restart", "slow"]);
    (d, before)
}

#[test]
fn a_restart_interrupted_after_its_stop_signal_still_ends_with_the_instance_running() {
    // It takes a moment to obey SIGTERM: it is still running when the new daemon
    // reconciles, and ends just after.
    let (d, before) = restart_cut_after_its_stop_signal(1);
    wait_until(Duration::from_secs(20), "slow to run again", || {
        let info = d.info("slow");
        info["state"] == "running" && info["pid"].as_i64().is_some_and(|p| p != i64::from(before))
    });
    d.ok(&["rm", "--force", "slow"]);
    d.finish();
}

/// User plus system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn an_init_that_closes_its_output_costs_the_forker_nothing() {
    let d = TestDaemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "quiet",
        "--",
        "sh",
        "-c",
        "exec >/dev/null 2>&1; sleep 1000",
    ]);
    let forker = d.forker_pid().expect("the forker's pid");
    // Let the forker see the pipe's end, then measure it idle.
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(forker);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(forker) - before;
    assert!(used < 20, "the forker used {used} ticks in 2 s: it spins");
    d.ok(&["rm", "--force", "quiet"]);
    d.finish();
}

#[test]
fn a_stop_asked_after_an_interrupted_restart_wins() {
    // Slow to obey SIGTERM: still running when the new daemon looks, so the interrupted
    // restart would start it again when it ends...
    let (d, _) = restart_cut_after_its_stop_signal(2);
    // ...but the user stops it meanwhile: it stays stopped.
    d.ok(&["stop", "slow"]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(d.state_of("slow").as_deref(), Some("stopped"));
    d.ok(&["rm", "--force", "slow"]);
    d.finish();
}
