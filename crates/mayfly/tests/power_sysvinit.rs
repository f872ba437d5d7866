//! sysvinit (Debian's `sysvinit-core`) as an instance's init: it boots to its default
//! runlevel, `mayfly stop` halts it cleanly with its ctrl-alt-del request (SIGINT: Debian's
//! inittab runs `shutdown`), `poweroff` and `halt` inside stop the instance and `reboot` inside
//! starts it again with a clean layer. The template's stop signal is found by itself
//! (`/sbin/init` with `sysvinit-core` installed). Slow (a Debian build), so a file of its own.

mod common;

use std::time::{Duration, Instant};

use common::debian::{build_minbase, debian_daemon, long_ok};
use common::{TestDaemon, ask_init, init_pid, template_info, version, wait_until};

/// How long installing sysvinit-core may take (its scripts try to reach an init that is not
/// there, and wait for it).
const SYSVINIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Waits until sysvinit has reached runlevel 2 (Debian's default).
fn wait_booted(d: &TestDaemon, name: &str) {
    wait_until(
        Duration::from_secs(30),
        "sysvinit reaches runlevel 2",
        || {
            let out = d.mayfly(&["exec", name, "--", "runlevel"]);
            out.success() && out.stdout.trim().ends_with(" 2")
        },
    );
}

fn ending(d: &TestDaemon, name: &str) -> String {
    d.info(name)["last_exit"]["ending"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn sysvinit_boots_halts_on_stop_powers_off_and_reboots_from_inside() {
    let (_lock, d) = debian_daemon();
    build_minbase(&d, "deb");
    long_ok(
        &d,
        &[
            "template",
            "build",
            "sv",
            "--from",
            "deb",
            "--packages",
            "sysvinit-core",
            "--cmd",
            "/sbin/init",
        ],
        SYSVINIT_TIMEOUT,
    );
    // No --stop-signal: /sbin/init with sysvinit-core installed is sysvinit, whose halt
    // request mayfly knows.
    let t = template_info(&d, "sv");
    assert_eq!(version(&t, 1)["config"]["stop_signal"], "SIGINT", "{t}");

    d.ok(&["launch", "sv", "--name", "s1"]);
    wait_booted(&d, "s1");
    let cmdline = d.sh("s1", "tr '\\0' ' ' < /proc/1/cmdline");
    assert!(
        cmdline.starts_with("init [2]"),
        "PID 1 is sysvinit: {cmdline}"
    );

    // `mayfly stop`: sysvinit's own shutdown (rc scripts, then reboot(2)), not a kill.
    let t0 = Instant::now();
    d.ok(&["stop", "--timeout", "30", "s1"]);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "the halt took {took:?}");
    assert_eq!(ending(&d, "s1"), "halted", "{}", d.info("s1"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.state_of("s1").as_deref(), Some("stopped"));

    // `reboot` inside: a new run on a clean layer.
    d.ok(&["start", "s1"]);
    wait_booted(&d, "s1");
    d.sh("s1", "echo dirty > /root/marker");
    let before = init_pid(&d, "s1");
    ask_init(&d, "s1", &["reboot"]);
    wait_until(Duration::from_secs(30), "s1 runs again", || {
        init_pid(&d, "s1").is_some_and(|p| Some(p) != before)
    });
    assert_eq!(ending(&d, "s1"), "rebooted", "{}", d.info("s1"));
    wait_booted(&d, "s1");
    let marker = d.mayfly(&["exec", "s1", "--", "cat", "/root/marker"]);
    assert!(!marker.success(), "the layer was not discarded: {marker}");

    // `poweroff` and `halt` inside: stopped, and it stays so.
    for verb in ["poweroff", "halt"] {
        d.ok(&["exec", "s1", "--", verb]);
        wait_until(Duration::from_secs(30), "s1 stops", || {
            d.state_of("s1").as_deref() == Some("stopped")
        });
        assert_eq!(ending(&d, "s1"), "halted", "{verb}: {}", d.info("s1"));
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(d.state_of("s1").as_deref(), Some("stopped"), "{verb}");
        if verb == "poweroff" {
            d.ok(&["start", "s1"]);
            wait_booted(&d, "s1");
        }
    }

    // With the default stop signal (SIGTERM, which sysvinit ignores) the stop has to kill:
    // what the per-template stop signal is for.
    d.ok(&["start", "s1"]);
    wait_booted(&d, "s1");
    d.ok(&["stop", "--signal", "SIGTERM", "--timeout", "2", "s1"]);
    assert_eq!(ending(&d, "s1"), "killed", "{}", d.info("s1"));

    d.ok(&["rm", "s1"]);
    d.finish();
}
