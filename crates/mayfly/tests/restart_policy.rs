//! Restart policies (`--restart no|on-failure[:N]|always`): failures are restarted with
//! back-off and `on-failure:N` gives up; `always` restarts clean exits too; an explicit stop
//! is never fought (not even a pending restart); a pending restart and the policy survive a
//! killed or stopped daemon, and a run that ended while no daemon ran is judged at start-up.
//!
//! The daemons run with a short back-off base (`MAYFLY_TEST_RESTART_BACKOFF_MS`).

mod common;

use std::time::Duration;

use common::{SETTLE, TestDaemon, launch, logs, poll_until, signal, wait_state, wait_until};
use rustix::process::Signal;
use serde_json::{Value, json};

/// How many runs of `name` printed `run` to its console.
fn runs(d: &TestDaemon, name: &str) -> usize {
    logs(d, name).lines().filter(|l| *l == "run").count()
}

fn restarts(d: &TestDaemon, name: &str) -> Value {
    d.info(name)["restarts"].clone()
}

fn daemon(backoff_ms: &str) -> TestDaemon {
    TestDaemon::start_with_env(&[], &[("MAYFLY_TEST_RESTART_BACKOFF_MS", backoff_ms)])
}

#[test]
fn on_failure_restarts_failures_with_back_off_and_gives_up_after_n() {
    let d = daemon("200");
    launch(
        &d,
        "rp-fail",
        &["--restart", "on-failure:2"],
        Some("echo run; exit 3"),
    );
    wait_until(SETTLE, "the policy to give up", || {
        restarts(&d, "rp-fail")["gave_up"].is_string()
    });
    let r = restarts(&d, "rp-fail");
    assert_eq!(r["restarts"], 2, "{r}");
    assert!(
        r["gave_up"].as_str().unwrap().contains("on-failure:2"),
        "{r}"
    );
    assert!(r.get("next_attempt").is_none(), "{r}");
    // The first run and two restarts, then no more.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(runs(&d, "rp-fail"), 3, "{}", logs(&d, "rp-fail"));
    assert_eq!(d.state_of("rp-fail").as_deref(), Some("stopped"));
    let info = d.info("rp-fail");
    assert_eq!(info["restart"], "on-failure:2");
    assert_eq!(info["last_exit"]["code"], 3, "{info}");
    let text = d.ok(&["info", "rp-fail"]);
    assert!(
        text.contains("restart:     on-failure:2, 2 restart(s) in a row, gave up:"),
        "{text}"
    );
    assert!(
        text.contains("last exit:   exit code 3: exited"),
        "info shows the last exit: {text}"
    );
    // An explicit start begins a new row.
    d.ok(&["start", "rp-fail"]);
    wait_until(SETTLE, "the policy to give up again", || {
        restarts(&d, "rp-fail")["gave_up"].is_string() && runs(&d, "rp-fail") == 6
    });

    // So does an explicit restart.
    d.ok(&["restart", "rp-fail"]);
    wait_until(SETTLE, "the policy to give up a third time", || {
        restarts(&d, "rp-fail")["gave_up"].is_string() && runs(&d, "rp-fail") == 9
    });

    // A clean exit is no failure.
    launch(
        &d,
        "rp-clean",
        &["--restart", "on-failure"],
        Some("echo run; exit 0"),
    );
    wait_state(&d, "rp-clean", "stopped");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(runs(&d, "rp-clean"), 1);
    assert_eq!(restarts(&d, "rp-clean")["restarts"], 0);

    // A signal mayfly did not send (as the OOM killer's) is one.
    launch(
        &d,
        "rp-sig",
        &["--restart", "on-failure"],
        Some("echo run; exec sleep 1000"),
    );
    let pid = d.pid_of("rp-sig");
    signal(pid, Signal::KILL);
    wait_until(SETTLE, "a new run after SIGKILL", || {
        d.state_of("rp-sig").as_deref() == Some("running") && d.pid_of("rp-sig") != pid
    });
    assert_eq!(restarts(&d, "rp-sig")["restarts"], 1);
    assert_eq!(d.info("rp-sig")["last_exit"]["ending"], "signalled");
    d.finish();
}

#[test]
fn always_restarts_clean_exits_and_never_fights_a_stop() {
    let d = daemon("100");
    launch(
        &d,
        "rp-always",
        &["--restart", "always"],
        Some("echo run; sleep 0.2"),
    );
    wait_until(SETTLE, "three runs", || runs(&d, "rp-always") >= 3);
    // A stop of a running or waiting instance: it stays stopped.
    d.ok(&["stop", "rp-always"]);
    let n = runs(&d, "rp-always");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.state_of("rp-always").as_deref(), Some("stopped"));
    assert_eq!(runs(&d, "rp-always"), n, "restarted after a stop");
    let r = restarts(&d, "rp-always");
    assert_eq!(r["restarts"], 0, "a stop ends the row: {r}");
    d.finish();
}

#[test]
fn a_stop_cancels_a_pending_restart() {
    let d = daemon("1500");
    launch(
        &d,
        "rp-wait",
        &["--restart", "always"],
        Some("echo run; exit 1"),
    );
    wait_until(SETTLE, "a pending restart", || {
        restarts(&d, "rp-wait")["next_attempt"].is_string()
    });
    let text = d.ok(&["info", "rp-wait"]);
    assert!(
        text.contains("1 restart(s) in a row, next attempt at "),
        "{text}"
    );
    let out = d.ok(&["stop", "rp-wait"]);
    assert!(out.contains("stopped"), "{out}");
    assert!(restarts(&d, "rp-wait").get("next_attempt").is_none());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        runs(&d, "rp-wait"),
        1,
        "the pending restart ran after a stop"
    );
    assert_eq!(d.state_of("rp-wait").as_deref(), Some("stopped"));
    d.finish();
}

#[test]
fn a_pending_restart_survives_a_killed_daemon() {
    let mut d = daemon("1500");
    launch(
        &d,
        "rp-kill",
        &["--restart", "always"],
        Some("echo run; exit 1"),
    );
    wait_until(SETTLE, "a pending restart", || {
        restarts(&d, "rp-kill")["next_attempt"].is_string()
    });
    d.kill_daemon();
    d.restart();
    wait_until(SETTLE, "the restart after the daemon's kill", || {
        runs(&d, "rp-kill") >= 2
    });
    let info = d.info("rp-kill");
    assert_eq!(info["restart"], "always");
    assert!(
        info["restarts"]["restarts"].as_u64().unwrap() >= 1,
        "{info}"
    );
    d.finish();
}

#[test]
fn a_run_that_ended_while_no_daemon_ran_is_judged_at_start_up() {
    let mut d = daemon("200");
    launch(
        &d,
        "rp-down",
        &["--restart", "on-failure:3"],
        Some("echo run; exec sleep 1000"),
    );
    launch(&d, "rp-none", &[], Some("echo run; exec sleep 1000"));
    let pid = d.pid_of("rp-down");
    let other = d.pid_of("rp-none");
    d.stop_daemon();
    signal(pid, Signal::KILL);
    signal(other, Signal::KILL);
    d.restart();
    wait_until(SETTLE, "rp-down to run again", || {
        d.state_of("rp-down").as_deref() == Some("running") && d.pid_of("rp-down") != pid
    });
    assert_eq!(restarts(&d, "rp-down")["restarts"], 1);
    // Without a policy: it stays stopped.
    wait_state(&d, "rp-none", "stopped");
    assert!(!poll_until(Duration::from_millis(1000), || d
        .state_of("rp-none")
        .as_deref()
        == Some("running")));
    d.finish();
}

#[test]
fn policies_are_checked_from_the_cli_and_the_api() {
    let d = daemon("200");
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "rp-bad",
        "--restart",
        "sometimes",
    ]);
    assert!(
        out.stderr.contains("unknown restart policy `sometimes`"),
        "{out}"
    );
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "rp-bad",
        "--restart",
        "on-failure:0",
    ]);
    assert!(out.stderr.contains("on-failure:N"), "{out}");
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "rp-eph",
        "--ephemeral",
        "--restart",
        "always",
    ]);
    assert!(out.stderr.contains("ephemeral"), "{out}");
    assert!(common::is_gone(&d, "rp-eph"));
    let (status, body) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "busybox", "name": "rp-api", "restart": "never"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("restart policy"),
        "{body}"
    );
    let (status, body) = d.api(
        "POST",
        "/v1/instances",
        Some(
            &json!({"template": "busybox", "name": "rp-api", "restart": "on-failure:4",
                     "command": ["sh", "-c", "exit 2"]}),
        ),
    );
    assert!(status == 201 || status == 200, "{status} {body}");
    let (_, info) = d.api("GET", "/v1/instances/rp-api", None);
    assert_eq!(info["restart"], "on-failure:4", "{info}");
    d.finish();
}

#[test]
fn a_start_by_the_policy_that_fails_for_a_passing_reason_is_tried_again() {
    let d = TestDaemon::start_with_env(
        &[],
        &[
            ("MAYFLY_TEST_RESTART_BACKOFF_MS", "100"),
            ("MAYFLY_FAIL_AT", "restart-policy:start"),
        ],
    );
    launch(
        &d,
        "rp-nostart",
        &["--restart", "always"],
        Some("echo run; exit 1"),
    );
    // An injected failure is no permanent one (like a refused admission): the policy keeps
    // backing off instead of giving up for good.
    wait_until(SETTLE, "the start to be tried again", || {
        d.logs().matches("the start failed").count() >= 2
    });
    let r = restarts(&d, "rp-nostart");
    assert!(r.get("gave_up").is_none(), "{r}");
    assert_eq!(d.state_of("rp-nostart").as_deref(), Some("stopped"));
    assert_eq!(runs(&d, "rp-nostart"), 1);
    // A stop ends the attempts.
    d.ok(&["stop", "rp-nostart"]);
    assert!(restarts(&d, "rp-nostart").get("next_attempt").is_none());
    d.finish();
}

#[test]
fn a_crash_loop_whose_init_died_while_no_daemon_ran_is_restarted() {
    let mut d = daemon("200");
    launch(
        &d,
        "rp-loop",
        &["--restart", "on-failure"],
        Some("echo run; exec sleep 1000"),
    );
    // A first restart by the policy: its state is recorded.
    let first = d.pid_of("rp-loop");
    signal(first, Signal::KILL);
    wait_until(SETTLE, "the first restart", || {
        d.state_of("rp-loop").as_deref() == Some("running") && d.pid_of("rp-loop") != first
    });
    assert_eq!(restarts(&d, "rp-loop")["restarts"], 1);
    let second = d.pid_of("rp-loop");
    d.kill_daemon();
    signal(second, Signal::KILL);
    d.restart();
    wait_until(
        SETTLE,
        "the restart of the run that ended while no daemon ran",
        || d.state_of("rp-loop").as_deref() == Some("running") && d.pid_of("rp-loop") != second,
    );
    assert_eq!(runs(&d, "rp-loop"), 3, "{}", logs(&d, "rp-loop"));
    d.finish();
}

#[test]
fn a_stop_interrupted_by_a_killed_daemon_is_not_fought_by_the_next() {
    let mut d = daemon("100");
    launch(
        &d,
        "rp-slow",
        &["--restart", "always"],
        Some("trap 'sleep 2; exit 0' TERM; echo run; while :; do sleep 0.1; done"),
    );
    wait_until(SETTLE, "the first run", || runs(&d, "rp-slow") == 1);
    let pid = d.pid_of("rp-slow");
    let mut stop = d
        .command(&["stop", "rp-slow", "--timeout", "30"])
        .spawn()
        .expect("run mayfly stop");
    // The stop signal arrived when the trap's `sleep 2` runs.
    wait_until(SETTLE, "the init's trap to run", || {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
        children.unwrap_or_default().split_whitespace().any(|c| {
            std::fs::read(format!("/proc/{c}/cmdline")).is_ok_and(|l| l == b"sleep\x002\x00")
        })
    });
    d.kill_daemon();
    let _ = stop.wait();
    // The init ends (its trap ran) while no daemon runs.
    wait_until(SETTLE, "the init to end", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    d.restart();
    wait_state(&d, "rp-slow", "stopped");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.state_of("rp-slow").as_deref(), Some("stopped"));
    assert_eq!(runs(&d, "rp-slow"), 1, "the policy fought the stop");
    d.finish();
}

#[test]
fn a_restart_recorded_by_a_daemon_that_crashed_before_arming_it_is_re_armed() {
    // Right after the end of the run was recorded (with the policy's decision, in one
    // transaction), and after the run was settled, before the timer was armed.
    for (n, point) in ["finish-run:recorded", "restart-policy:recorded"]
        .into_iter()
        .enumerate()
    {
        let mut d = daemon("300");
        d.stop_daemon();
        d.set_env(&[
            ("MAYFLY_TEST_RESTART_BACKOFF_MS", "300"),
            ("MAYFLY_CRASH_AT", point),
        ]);
        d.restart();
        let name = format!("rp-crash{n}");
        launch(
            &d,
            &name,
            &["--restart", "always"],
            Some("sleep 1; echo run; exit 1"),
        );
        wait_until(SETTLE, &format!("the daemon to crash at {point}"), || {
            !d.daemon_running()
        });
        d.kill_daemon();
        d.set_env(&[("MAYFLY_TEST_RESTART_BACKOFF_MS", "300")]);
        d.restart();
        wait_until(SETTLE, "the re-armed restart", || runs(&d, &name) >= 2);
        d.finish();
    }
}

#[test]
fn the_back_off_doubles_between_failures() {
    let d = daemon("300");
    launch(
        &d,
        "rp-backoff",
        &["--restart", "always"],
        Some("echo run; exit 1"),
    );
    // When each run was first seen (waits of 0.3, 0.6, 1.2 and 2.4 s between them).
    let mut seen = Vec::new();
    for n in 1..=5 {
        wait_until(Duration::from_secs(20), "the next run", || {
            runs(&d, "rp-backoff") >= n
        });
        seen.push(std::time::Instant::now());
    }
    let first = seen[1] - seen[0];
    let last = seen[4] - seen[3];
    assert!(
        last >= Duration::from_millis(2000),
        "the 4th restart came after {last:?}"
    );
    assert!(
        first < Duration::from_millis(2000),
        "the 1st restart came after {first:?}"
    );
    assert!(last > first * 2, "{first:?} then {last:?}");
    d.ok(&["stop", "rp-backoff"]);
    d.finish();
}

#[test]
fn after_a_restart_or_reset_the_policy_still_restarts_failures() {
    let d = daemon("100");
    launch(
        &d,
        "rp-again",
        &["--restart", "on-failure"],
        Some("echo run; exec sleep 1000"),
    );
    // Both stop the run and start a new one: the stop request was for the old run only.
    for verb in ["reset", "restart"] {
        let before = d.pid_of("rp-again");
        d.ok(&[verb, "rp-again"]);
        let pid = d.pid_of("rp-again");
        assert_ne!(pid, before);
        signal(pid, Signal::KILL);
        wait_until(SETTLE, "the policy's restart after the kill", || {
            d.state_of("rp-again").as_deref() == Some("running") && d.pid_of("rp-again") != pid
        });
    }
    d.finish();
}
