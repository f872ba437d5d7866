//! `--init`: mayfly's own tiny init as PID 1 of `run` and `launch` instances, in front of the
//! command. It reaps orphaned processes (no zombies pile up), forwards signals (the command
//! gets what PID 1 would have dropped), exits with the command's status, is kept with the
//! instance (every start, across daemon restarts), and gives the tenant nothing: confined like
//! the command, no descriptors, not traceable, no host path in its command line, little memory.

mod common;

use std::time::{Duration, Instant};

use common::{Spawned, TestDaemon, launch, proc_status_field, wait_log, wait_until};
use rustix::process::Signal;

/// Zombie processes inside instance `name` (from its own /proc).
fn zombies(d: &TestDaemon, name: &str) -> usize {
    let out = d.sh(
        name,
        "for s in /proc/[0-9]*/stat; do read -r line < $s 2>/dev/null && echo \"$line\"; done",
    );
    out.lines()
        .filter(|l| {
            l.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("Z")
        })
        .count()
}

/// Leaves three orphans in `name` that end a moment later.
fn orphan_three(d: &TestDaemon, name: &str) {
    d.sh(name, "sleep 0.2 & sleep 0.2 & (sleep 0.3 &) ; exit 0");
}

#[test]
fn the_init_reaps_orphans_that_a_plain_pid_1_leaves_as_zombies() {
    let d = TestDaemon::start();
    launch(&d, "zb-init", &["--init"], Some("exec sleep 1000"));
    launch(&d, "zb-plain", &[], Some("exec sleep 1000"));
    orphan_three(&d, "zb-init");
    orphan_three(&d, "zb-plain");
    // The plain one: `sleep` as PID 1 never waits, its orphans stay zombies.
    wait_until(
        Duration::from_secs(10),
        "zombies under a plain PID 1",
        || zombies(&d, "zb-plain") >= 3,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(zombies(&d, "zb-init"), 0, "the init left zombies");
    // Many more, quickly: every one is reaped.
    for _ in 0..5 {
        orphan_three(&d, "zb-init");
    }
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(zombies(&d, "zb-init"), 0, "the init left zombies");
    d.ok(&["rm", "--force", "zb-init", "zb-plain"]);
    d.finish();
}

#[test]
fn the_init_forwards_signals_and_exits_with_the_commands_status() {
    let d = TestDaemon::start();
    // Exit codes pass through: a plain exit, a signal (128 + N), a command not found.
    for (script, code) in [
        ("exit 42", 42),
        ("kill -TERM $$", 143),
        ("kill -USR1 $$", 138),
    ] {
        let out = d.mayfly(&["run", "--rm", "--init", "busybox", "--", "sh", "-c", script]);
        assert_eq!(out.code, code, "{script}: {out}");
    }
    let out = d.mayfly(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "--",
        "in-no-such-program",
    ]);
    assert_eq!(out.code, 127, "{out}");
    assert!(out.stderr.contains("in-no-such-program"), "{out}");

    // One Ctrl-C ends a command that has no handler for it: with the init it is not PID 1,
    // and the default action applies. Without the init the kernel drops it.
    for (init, ends) in [(true, true), (false, false)] {
        let mut args = vec!["run", "--rm"];
        if init {
            args.push("--init");
        }
        args.extend(["busybox", "--", "sh", "-c", "echo ready; exec sleep 300"]);
        let mut client = Spawned::start(&d, &args);
        client.expect_line("ready", Duration::from_secs(30));
        let sent = Instant::now();
        client.signal(Signal::INT);
        let code = client.wait(Duration::from_secs(3));
        if ends {
            assert_eq!(code, Some(130), "with --init: {}", client.stderr());
            assert!(sent.elapsed() < Duration::from_secs(2));
        } else {
            assert_eq!(
                code, None,
                "without --init the kernel drops SIGINT to PID 1"
            );
            client.signal(Signal::INT);
            assert_eq!(client.wait(Duration::from_secs(15)), Some(130));
        }
    }

    // `mayfly stop` (SIGTERM) ends it at once, not after the timeout with SIGKILL.
    launch(&d, "fw-stop", &["--init"], Some("exec sleep 1000"));
    let started = Instant::now();
    d.ok(&["stop", "--timeout", "20", "fw-stop"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let exit = d.info("fw-stop")["last_exit"].clone();
    assert_eq!(
        exit["code"], 143,
        "the command's status, killed by SIGTERM: {exit}"
    );
    assert!(exit["signal"].is_null(), "the init itself exited: {exit}");

    // Any signal sent to PID 1 reaches the command, from inside as from the host.
    launch(
        &d,
        "fw-usr",
        &["--init"],
        Some(
            "trap 'echo got-usr1' USR1; trap 'echo got-hup' HUP; echo ready; while :; do sleep 0.1; done",
        ),
    );
    wait_log(&d, "fw-usr", "ready");
    d.sh("fw-usr", "kill -USR1 1");
    wait_log(&d, "fw-usr", "got-usr1");
    let pid = d.pid_of("fw-usr");
    common::signal(pid, Signal::HUP);
    wait_log(&d, "fw-usr", "got-hup");
    assert_eq!(d.state_of("fw-usr").as_deref(), Some("running"));
    d.ok(&["rm", "--force", "fw-stop", "fw-usr"]);
    d.finish();
}

/// `/proc/1/comm` inside `name`.
fn pid1_name(d: &TestDaemon, name: &str) -> String {
    d.sh(name, "cat /proc/1/comm").trim().to_owned()
}

#[test]
fn init_is_kept_with_the_instance_across_starts_and_daemon_restarts() {
    let mut d = TestDaemon::start();
    launch(&d, "kp-init", &["--init"], Some("exec sleep 1000"));
    launch(&d, "kp-plain", &[], Some("exec sleep 1000"));
    assert_eq!(d.info("kp-init")["init"], true);
    assert!(d.info("kp-plain").get("init").is_none());
    assert!(d.ok(&["info", "kp-init"]).contains("mayfly-init"));
    assert_eq!(pid1_name(&d, "kp-init"), "mayfly-init");
    assert_eq!(pid1_name(&d, "kp-plain"), "sleep");
    assert_eq!(d.sh("kp-init", "cat /proc/2/comm").trim(), "sleep");

    d.ok(&["restart", "kp-init"]);
    assert_eq!(pid1_name(&d, "kp-init"), "mayfly-init");
    d.stop_daemon();
    d.restart();
    assert_eq!(d.info("kp-init")["init"], true);
    d.ok(&["stop", "kp-init"]);
    d.ok(&["start", "kp-init"]);
    assert_eq!(pid1_name(&d, "kp-init"), "mayfly-init");
    // A clone takes it along.
    d.ok(&["clone", "kp-init", "kp-clone", "--start"]);
    assert_eq!(pid1_name(&d, "kp-clone"), "mayfly-init");
    d.ok(&["rm", "--force", "kp-init", "kp-plain", "kp-clone"]);
    d.finish();
}

/// A line of `/proc/PID/status` inside `name`, by field.
fn status_inside(d: &TestDaemon, name: &str, pid: u32, field: &str) -> String {
    d.sh(name, &format!("grep '^{field}:' /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Resident kB of the mapping named `tail` (`[heap]`, `[stack]`) of host process `pid`.
fn resident_kb(pid: i32, tail: &str) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("read smaps");
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        if line.contains('-') && line.split_whitespace().count() >= 5 && !line.ends_with("kB") {
            inside = line.ends_with(tail);
        } else if inside && let Some(v) = line.strip_prefix("Rss:") {
            total += v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
    }
    total
}

fn init_gives_the_tenant_nothing(d: &TestDaemon, name: &str) {
    // Confined exactly like the command: identity, capabilities, seccomp.
    for field in [
        "Uid",
        "Gid",
        "CapEff",
        "CapPrm",
        "CapBnd",
        "Seccomp",
        "NoNewPrivs",
    ] {
        assert_eq!(
            status_inside(d, name, 1, field)
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>(),
            status_inside(d, name, 2, field)
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>(),
            "{name}: PID 1 and the command differ in {field}"
        );
    }
    // Nothing of the host in its command line; its memory, environment and descriptors are
    // closed to the instance (not dumpable).
    let cmdline = d.sh(name, "cat /proc/1/cmdline");
    assert_eq!(cmdline.trim_end_matches('\0'), "mayfly-init", "{name}");
    for probe in [
        "cat /proc/1/environ",
        "cat /proc/1/maps",
        "head -c 1 /proc/1/mem",
    ] {
        let out = d.mayfly(&["exec", name, "--", "sh", "-c", probe]);
        assert_ne!(out.code, 0, "{name}: `{probe}` worked: {out}");
    }
    // Its descriptor table is closed to the instance (with a user namespace) or empty.
    let fds = d.sh(name, "ls /proc/1/fd 2>/dev/null | wc -l");
    assert_eq!(fds.trim(), "0", "{name}: PID 1 shows descriptors");
    // No descriptor open, seen from the host.
    let pid = d.pid_of(name);
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the init's fds")
        .flatten()
        .collect();
    assert!(
        fds.is_empty(),
        "{name}: the init holds descriptors: {fds:?}"
    );
    // Not the forker's memory: no heap, a short stack.
    assert_eq!(
        resident_kb(pid, "[heap]"),
        0,
        "{name}: the init kept the heap"
    );
    assert!(
        resident_kb(pid, "[stack]") <= 128,
        "{name}: the init kept the stack"
    );
    assert_eq!(
        proc_status_field(pid, "Threads").as_deref(),
        Some("1"),
        "{name}"
    );
}

#[test]
fn the_init_is_confined_like_the_command_and_holds_nothing() {
    let d = TestDaemon::start();
    launch(&d, "sc-init", &["--init"], Some("exec sleep 1000"));
    init_gives_the_tenant_nothing(&d, "sc-init");
    d.ok(&["rm", "--force", "sc-init"]);
    d.finish();

    // Without a user namespace the init is the host's root: confined all the same.
    let d = TestDaemon::start_with(&["--user-namespaces", "off"]);
    launch(&d, "sc-root", &["--init"], Some("exec sleep 1000"));
    init_gives_the_tenant_nothing(&d, "sc-root");
    let out = d.mayfly(&[
        "run", "--rm", "--init", "busybox", "--", "sh", "-c", "exit 9",
    ]);
    assert_eq!(out.code, 9, "{out}");
    d.ok(&["rm", "--force", "sc-root"]);
    d.finish();
}

#[test]
fn the_command_starts_only_once_the_init_has_let_go_of_the_forkers_things() {
    // The init dawdles before it lets go of the descriptors and memory it inherited from
    // the forker: the command's very first look at PID 1 must find it shed all the same.
    for userns in ["auto", "off"] {
        let d = TestDaemon::start_with_env(
            &["--user-namespaces", userns],
            &[("MAYFLY_FORKER_FAULTS", "init-slow")],
        );
        let out = d.mayfly(&[
            "run",
            "--rm",
            "--init",
            "busybox",
            "--",
            "sh",
            "-c",
            "echo fds=$(ls /proc/1/fd 2>/dev/null | wc -l); \
             echo name=$(cat /proc/1/cmdline 2>/dev/null | tr '\\0' ' '); \
             cat /proc/1/environ >/dev/null 2>&1 && echo environ=readable; true",
        ]);
        assert_eq!(out.code, 0, "userns {userns}: {out}");
        assert!(out.stdout.contains("fds=0\n"), "userns {userns}: {out}");
        assert!(
            out.stdout.contains("name=mayfly-init\n"),
            "userns {userns}: {out}"
        );
        assert!(
            !out.stdout.contains("environ=readable"),
            "userns {userns}: {out}"
        );
        d.finish();
    }
}
