//! Stop, poweroff and reboot: `mayfly stop` sends the init's own halt request (the template's
//! stop signal, `template build/patch --stop-signal`, `stop --signal`), `poweroff` and `halt`
//! inside stop the instance, `reboot` inside starts it again (a transient one with a clean
//! layer), and `info` tells a halt, a reboot, a clean stop and a kill apart. With busybox init
//! (from the built-in template) and a plain shell that calls `reboot -f`; sysvinit, which needs
//! a Debian build, is in `power_sysvinit.rs`.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestDaemon, ask_init, init_pid, last_exit, template_info, version, wait_new_run, wait_stopped,
    wait_until,
};
use serde_json::json;

/// An inittab for busybox init: a line at boot, a service to keep, a line at shutdown.
const INITTAB: &str = "printf '::sysinit:/bin/echo booting\\n::respawn:/bin/sleep 100000\\n\
    ::shutdown:/bin/echo shutting down\\n' > /etc/inittab";

/// Waits until the init of `name` (a shell) has set its traps and says so with /tmp/ready
/// (in the run's own writable layer: transient instances start clean).
fn wait_ready(d: &TestDaemon, name: &str) {
    wait_until(Duration::from_secs(10), "the init's traps", || {
        d.mayfly(&["exec", name, "--", "test", "-e", "/tmp/ready"])
            .success()
    });
}

/// Waits until busybox init has started its respawned service (it has booted).
fn wait_booted(d: &TestDaemon, name: &str) {
    wait_until(Duration::from_secs(20), "busybox init boots", || {
        d.mayfly(&[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            "ps | grep -q '[s]leep 100000'",
        ])
        .success()
    });
}

/// Builds `bbi`: busybox init as PID 1, with an inittab, asked to stop with SIGUSR2 (its
/// power-off request; given in lower case and without `SIG`, as a user might).
fn busybox_init_template(d: &TestDaemon) {
    d.ok(&[
        "template",
        "build",
        "bbi",
        "--from",
        "busybox",
        "--run",
        INITTAB,
        "--cmd",
        "/bin/busybox init",
        "--stop-signal",
        "usr2",
    ]);
    let t = template_info(d, "bbi");
    assert_eq!(version(&t, 1)["config"]["stop_signal"], "SIGUSR2", "{t}");
}

#[test]
fn busybox_init_halts_on_stop_powers_off_and_reboots_from_inside() {
    let d = TestDaemon::start();
    busybox_init_template(&d);
    d.ok(&["launch", "bbi", "--name", "b1"]);
    wait_booted(&d, "b1");

    // `mayfly stop`: busybox init's own power-off (its shutdown actions, then reboot(2)),
    // reported as a halt, well within the timeout.
    let t0 = Instant::now();
    d.ok(&["stop", "--timeout", "20", "b1"]);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(8), "the halt took {took:?}");
    let exit = last_exit(&d, "b1");
    assert_eq!(exit["ending"], "halted", "{exit}");
    assert_eq!(exit["signal"], libc::SIGINT, "reboot(2)'s halt: {exit}");
    let logs = d.ok(&["logs", "b1"]);
    assert!(logs.contains("shutting down"), "{logs}");
    let text = d.ok(&["info", "b1"]);
    assert!(
        text.contains("last exit:   killed by signal 2 (code 130): halted at "),
        "{text}"
    );

    // `reboot` inside: a new run, on a clean layer (transient).
    d.ok(&["start", "b1"]);
    wait_booted(&d, "b1");
    d.sh("b1", "echo dirty > /marker");
    let before = init_pid(&d, "b1");
    ask_init(&d, "b1", &["reboot"]);
    wait_new_run(&d, "b1", before, Duration::from_secs(20));
    let exit = last_exit(&d, "b1");
    assert_eq!(exit["ending"], "rebooted", "{exit}");
    assert_eq!(exit["signal"], libc::SIGHUP, "{exit}");
    wait_booted(&d, "b1");
    let marker = d.mayfly(&["exec", "b1", "--", "cat", "/marker"]);
    assert!(!marker.success(), "the layer was not discarded: {marker}");

    // `poweroff` inside: the instance stops, and stays stopped.
    ask_init(&d, "b1", &["poweroff"]);
    wait_stopped(&d, "b1", Duration::from_secs(20));
    assert_eq!(last_exit(&d, "b1")["ending"], "halted");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.state_of("b1").as_deref(), Some("stopped"));

    // `halt` too.
    d.ok(&["start", "b1"]);
    wait_booted(&d, "b1");
    ask_init(&d, "b1", &["halt"]);
    wait_stopped(&d, "b1", Duration::from_secs(20));
    assert_eq!(last_exit(&d, "b1")["ending"], "halted");

    // Asked with SIGTERM (busybox init's reboot request), it reboots: still the end of a
    // stop, never a reboot that starts it again.
    d.ok(&["start", "b1"]);
    wait_booted(&d, "b1");
    d.ok(&["stop", "--signal", "SIGTERM", "b1"]);
    let exit = last_exit(&d, "b1");
    assert_eq!(
        exit["signal"],
        libc::SIGHUP,
        "busybox init rebooted: {exit}"
    );
    assert_eq!(exit["ending"], "halted", "{exit}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.state_of("b1").as_deref(), Some("stopped"));
    d.ok(&["rm", "b1"]);
    d.finish();
}

#[test]
fn reboot_from_any_process_restarts_transient_clean_and_persistent_as_it_was() {
    let d = TestDaemon::start();
    // No init system: a shell that idles; `reboot -f` calls reboot(2) at once.
    for (name, mode) in [("t1", "transient"), ("p1", "persistent")] {
        let mut args = vec!["launch", "busybox", "--name", name];
        if mode == "persistent" {
            args.push("--persistent");
        }
        args.extend(["--", "sh", "-c", "sleep 1000000"]);
        d.ok(&args);
        d.sh(name, "echo kept > /marker");
        let before = init_pid(&d, name);
        d.ok(&["exec", name, "--", "reboot", "-f"]);
        wait_new_run(&d, name, before, Duration::from_secs(20));
        assert_eq!(last_exit(&d, name)["ending"], "rebooted");
        let marker = d.mayfly(&["exec", name, "--", "cat", "/marker"]);
        if mode == "transient" {
            assert!(!marker.success(), "{name}: the layer was kept: {marker}");
        } else {
            assert_eq!(marker.stdout, "kept\n", "{name}: {marker}");
        }
        // `poweroff -f`: stopped for good.
        d.ok(&["exec", name, "--", "poweroff", "-f"]);
        wait_stopped(&d, name, Duration::from_secs(20));
        assert_eq!(last_exit(&d, name)["ending"], "halted");
        d.ok(&["rm", name]);
    }

    // An ephemeral instance ends at a reboot like at any end: it is deleted.
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "e1",
        "--ephemeral",
        "--",
        "sh",
        "-c",
        "sleep 1000000",
    ]);
    d.ok(&["exec", "e1", "--", "reboot", "-f"]);
    wait_until(
        Duration::from_secs(20),
        "the ephemeral instance goes",
        || d.state_of("e1").is_none(),
    );
    d.finish();
}

#[test]
fn an_init_that_reboots_at_every_boot_is_left_stopped() {
    let d = TestDaemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "loop",
        "--",
        "sh",
        "-c",
        "sleep 0.2; reboot -f",
    ]);
    wait_until(Duration::from_secs(40), "the reboot loop is cut", || {
        let info = d.info("loop");
        info["state"] == "stopped"
            && info["error"]
                .as_str()
                .is_some_and(|e| e.contains("rebooted 6 times"))
    });
    assert_eq!(last_exit(&d, "loop")["ending"], "rebooted");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.state_of("loop").as_deref(), Some("stopped"));
    // A start by hand is a fresh count.
    d.ok(&["rm", "--force", "loop"]);
    d.finish();
}

#[test]
fn stop_signals_are_chosen_per_template_or_per_stop_and_checked() {
    let d = TestDaemon::start();
    // An init that says which signal reached it and exits with its number.
    let init = "trap 'echo got 37; exit 37' 37; trap 'echo got USR1; exit 10' USR1; \
                trap 'echo got TERM; exit 15' TERM; \
                touch /tmp/ready; while :; do sleep 1000 & wait $!; done";
    d.ok(&["launch", "busybox", "--name", "s", "--", "sh", "-c", init]);
    let ready = || wait_ready(&d, "s");
    ready();

    // --signal, this once.
    d.ok(&["stop", "--signal", "SIGUSR1", "s"]);
    let exit = last_exit(&d, "s");
    assert_eq!(
        (exit["code"].as_i64(), exit["ending"].as_str()),
        (Some(10), Some("stopped")),
        "{exit}"
    );
    assert!(d.ok(&["logs", "s"]).contains("got USR1"));

    // Then the template's again (SIGTERM for busybox).
    d.ok(&["start", "s"]);
    ready();
    d.ok(&["stop", "s"]);
    assert_eq!(last_exit(&d, "s")["code"], 15);

    // A real-time signal by name is glibc's number (systemd's SIGRTMIN+3 is 37).
    d.ok(&["start", "s"]);
    ready();
    d.ok(&["restart", "--signal", "SIGRTMIN+3", "s"]);
    assert_eq!(last_exit(&d, "s")["code"], 37);
    ready();

    // The template's stop signal, set by a patch.
    d.ok(&[
        "template", "build", "rt", "--from", "busybox", "--run", "true",
    ]);
    d.ok(&[
        "template",
        "patch",
        "rt",
        "--run",
        "true",
        "--stop-signal",
        "RTMIN+3",
    ]);
    let t = template_info(&d, "rt");
    assert_eq!(version(&t, 1)["config"]["stop_signal"], "SIGTERM", "{t}");
    assert_eq!(version(&t, 2)["config"]["stop_signal"], "SIGRTMIN+3", "{t}");
    d.ok(&["launch", "rt", "--name", "r", "--", "sh", "-c", init]);
    wait_ready(&d, "r");
    d.ok(&["stop", "r"]);
    assert_eq!(last_exit(&d, "r")["code"], 37);
    // A rebuild of the application keeps its own stop signal.
    d.ok(&[
        "template", "build", "rt", "--from", "busybox", "--run", "true",
    ]);
    let t = template_info(&d, "rt");
    assert_eq!(version(&t, 3)["config"]["stop_signal"], "SIGRTMIN+3", "{t}");

    // Bad signals: clear errors, nothing done.
    let out = d.fails(&["stop", "--signal", "SIGNOPE", "s"]);
    assert!(out.stderr.contains("unknown signal"), "{out}");
    let out = d.fails(&["stop", "--signal", "SIGSTOP", "s"]);
    assert!(out.stderr.contains("cannot end a process"), "{out}");
    let (status, body) = d.api(
        "POST",
        "/v1/instances/s/stop",
        Some(&json!({"signal": "RTMIN+40"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("unknown signal"), "{body}");
    let (status, body) = d.api(
        "POST",
        "/v1/instances/s/stop",
        Some(&json!({"signal": "TERM", "force": true})),
    );
    assert_eq!(status, 400, "{body}");
    let out = d.fails(&[
        "template",
        "build",
        "bad",
        "--from",
        "busybox",
        "--run",
        "true",
        "--stop-signal",
        "SIGRTMIN+99",
    ]);
    assert!(out.stderr.contains("unknown signal"), "{out}");
    assert!(!d.mayfly(&["template", "info", "bad"]).success());
    let out = d.fails(&["template", "patch", "rt", "--stop-signal", "SIGPWR"]);
    assert!(
        out.stderr.contains("--stop-signal goes with one of them"),
        "{out}"
    );
    assert_eq!(template_info(&d, "rt")["current_version"], 3);

    d.ok(&["rm", "--force", "s", "r"]);
    d.finish();
}

#[test]
fn a_killed_init_shows_killed_and_a_hang_up_from_mayfly_is_no_reboot() {
    let d = TestDaemon::start();
    // No trap: the init cannot be asked, so the stop kills it.
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "k",
        "--",
        "sh",
        "-c",
        "sleep 1000000",
    ]);
    d.ok(&["stop", "--timeout", "1", "k"]);
    let exit = last_exit(&d, "k");
    assert_eq!(
        (exit["signal"].as_i64(), exit["ending"].as_str()),
        (Some(9), Some("killed")),
        "{exit}"
    );

    // An init that reboots when it gets SIGHUP ends by SIGHUP, as at any reboot; when that
    // SIGHUP came from mayfly (here a stop; an attached run's hang-up is the same), it is a
    // stop, and the instance is not started again.
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "h",
        "--",
        "sh",
        "-c",
        "trap 'reboot -f' HUP; touch /tmp/ready; while :; do sleep 1000 & wait $!; done",
    ]);
    wait_ready(&d, "h");
    d.ok(&["stop", "--signal", "HUP", "h"]);
    let exit = last_exit(&d, "h");
    assert_eq!(
        (exit["signal"].as_i64(), exit["ending"].as_str()),
        (Some(1), Some("stopped")),
        "{exit}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.state_of("h").as_deref(), Some("stopped"));
    // The same reboot unasked starts it again.
    d.ok(&["start", "h"]);
    wait_ready(&d, "h");
    let before = init_pid(&d, "h");
    d.ok(&["exec", "h", "--", "reboot", "-f"]);
    wait_new_run(&d, "h", before, Duration::from_secs(20));
    d.ok(&["rm", "--force", "k", "h"]);
    d.finish();
}

/// `reboot(2)` inside an instance without a user namespace (CAP_SYS_BOOT is then the host's):
/// it still ends only the instance's pid namespace. Checked first: the instance has a pid
/// namespace of its own (otherwise the test stops before it would reboot the host).
#[test]
fn reboot_without_a_user_namespace_stays_in_the_instance() {
    let d = TestDaemon::start_with(&["--user-namespaces", "off"]);
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "n",
        "--",
        "sh",
        "-c",
        "sleep 1000000",
    ]);
    let pid = d.pid_of("n");
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).expect("pid ns");
    assert_ne!(
        ns(&pid.to_string()),
        ns("self"),
        "the instance shares the host's pid namespace: not running reboot(2)"
    );
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot_id");
    let before = init_pid(&d, "n");
    d.ok(&["exec", "n", "--", "reboot", "-f"]);
    wait_new_run(&d, "n", before, Duration::from_secs(20));
    assert_eq!(last_exit(&d, "n")["ending"], "rebooted");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot_id"),
        boot_id
    );
    // The capability's other use, kexec (which would replace the host's kernel: without a
    // user namespace CAP_SYS_BOOT is the host's), stays refused by seccomp.
    let errors = d.mayfly_stdin(
        &[
            "exec",
            "n",
            "--",
            "sh",
            "-c",
            "cat > /kx && chmod 755 /kx && /kx",
        ],
        &kexec_probe(),
    );
    assert!(errors.success(), "{errors}");
    assert_eq!(
        errors.stdout.trim(),
        format!("{} {}", libc::EPERM, libc::EPERM),
        "kexec_load and kexec_file_load must fail with EPERM (seccomp): {errors}"
    );
    d.ok(&["rm", "--force", "n"]);
    d.finish();
}

/// A static program that calls kexec_load and kexec_file_load with harmless arguments and
/// prints the two errnos (EPERM from seccomp; without the filter the kernel would get as far
/// as the arguments, or say ENOSYS where kexec is not built in).
fn kexec_probe() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("mayfly-kexec-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("probe dir");
    let src = dir.join("kx.c");
    std::fs::write(
        &src,
        "#include <errno.h>\n#include <stdio.h>\n#include <unistd.h>\n#include <sys/syscall.h>\n\
         int main(void) {\n\
           long a = syscall(SYS_kexec_load, 0UL, 0UL, (void *)0, 0UL); int ea = a < 0 ? errno : 0;\n\
           long b = syscall(SYS_kexec_file_load, -1, -1, 0UL, \"\", 0UL); int eb = b < 0 ? errno : 0;\n\
           printf(\"%d %d\\n\", ea, eb); return 0;\n}\n",
    )
    .expect("write the probe");
    let bin = dir.join("kx");
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc (build-essential, scripts/install-deps)");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&bin).expect("read the probe");
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// A daemon that dies after a reboot was journalled, before the instance ran again: its next
/// start starts it.
#[test]
fn a_reboot_cut_by_the_end_of_the_daemon_still_starts_the_instance() {
    let mut d = TestDaemon::start();
    // The first run reboots once told to (/go); the next one, on a clean layer, waits again.
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "cut",
        "--",
        "sh",
        "-c",
        "while [ ! -e /go ]; do sleep 0.1; done; reboot -f",
    ]);
    let before = init_pid(&d, "cut");
    d.crash_at(
        "reboot:journalled",
        &["exec", "cut", "--", "sh", "-c", "touch /go; sleep 30"],
    );
    wait_new_run(&d, "cut", before, Duration::from_secs(20));
    // The forker went with the daemon: the end of the old run may be unknown now.
    let info = d.info("cut");
    assert!(
        info["last_exit"].is_null() || info["last_exit"]["ending"] == "rebooted",
        "{info}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.state_of("cut").as_deref(), Some("running"));
    d.ok(&["rm", "--force", "cut"]);
    d.finish();
}
