//! The clients of `run --rm` and `exec` without a terminal, as scripts and users drive them:
//! SIGINT and SIGTERM reach the program; a second Ctrl-C (or the grace period after the
//! first) ends the program and its instance before the client exits, even when PID 1 ignores
//! the signal, so that the same run started again is never confused with the old one; a
//! client that lost its daemon says so and exits 3; an attached run's output is in the
//! instance's log, and `logs -f` gets an ephemeral instance's last words.

mod common;

use std::time::{Duration, Instant};

use common::{IDLE, Spawned, TestDaemon, is_gone, launch, logs, sleepers, wait_log, wait_until};
use rustix::process::Signal;

/// A `sleep` argument no other process on the host has (see [`common::unique_seconds`]).
fn unique_seconds(salt: u32) -> String {
    common::unique_seconds(200_000, salt)
}

#[test]
fn sigint_and_sigterm_to_the_client_reach_the_program() {
    let d = TestDaemon::start();
    launch(&d, "sg-box", &[], Some(IDLE));
    let trap = |sig: &str, code: u8| {
        format!("trap 'echo got-{sig}; exit {code}' {sig}; echo ready; while :; do sleep 0.1; done")
    };
    for (sig, signal, code) in [("INT", Signal::INT, 5), ("TERM", Signal::TERM, 6)] {
        let script = trap(sig, code);
        for args in [
            &["run", "--rm", "busybox", "--", "sh", "-c", &script][..],
            &["exec", "sg-box", "--", "sh", "-c", &script][..],
        ] {
            let what = format!("`mayfly {}` and SIG{sig}", args[0]);
            let mut client = Spawned::start(&d, args);
            client.expect_line("ready", Duration::from_secs(30));
            client.signal(signal);
            client.expect_line(&format!("got-{sig}"), Duration::from_secs(10));
            assert_eq!(
                client.wait(Duration::from_secs(10)),
                Some(i32::from(code)),
                "{what}: {}",
                client.stderr()
            );
        }
    }
    wait_until(Duration::from_secs(10), "the runs' instances to go", || {
        d.instance_names() == ["sg-box"]
    });
    d.ok(&["rm", "--force", "sg-box"]);
    d.finish();
}

#[test]
fn a_second_ctrl_c_ends_a_program_that_ignores_it_before_the_client_exits() {
    let d = TestDaemon::start();
    launch(&d, "cc-box", &[], Some(IDLE));
    // PID 1 of the run ignores SIGINT and SIGTERM (and so do the exec'd shell and sleep).
    let run_arg = unique_seconds(1);
    let exec_arg = unique_seconds(2);
    let run_script = format!("trap '' INT TERM; echo ready; exec sleep {run_arg}");
    let exec_script = format!("trap '' INT TERM; echo ready; exec sleep {exec_arg}");
    let mut run = Spawned::start(
        &d,
        &[
            "run",
            "--rm",
            "--name",
            "cc-run",
            "busybox",
            "--",
            "sh",
            "-c",
            &run_script,
        ],
    );
    let mut exec = Spawned::start(&d, &["exec", "cc-box", "--", "sh", "-c", &exec_script]);
    for client in [&mut run, &mut exec] {
        client.expect_line("ready", Duration::from_secs(30));
    }
    let id = d.info("cc-run")["id"].clone();
    for (client, arg) in [(&mut run, &run_arg), (&mut exec, &exec_arg)] {
        client.signal(Signal::INT);
        // The first is forwarded and ignored: the client stays.
        assert_eq!(client.wait(Duration::from_millis(700)), None);
        assert_eq!(
            sleepers(arg).len(),
            1,
            "the program got killed at the first Ctrl-C"
        );
        let sent = Instant::now();
        client.signal(Signal::INT);
        let code = client.wait(Duration::from_secs(15));
        assert_eq!(
            code,
            Some(130),
            "after a second Ctrl-C: {}",
            client.stderr()
        );
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "{:?}",
            sent.elapsed()
        );
        assert!(
            client.stderr().contains("SIGINT after SIGINT") && client.stderr().contains("ended"),
            "it says why it left and what became of the program: {}",
            client.stderr()
        );
        // Gone by the time the client exited, not 3 s later.
        assert!(sleepers(arg).is_empty(), "the program outlived its client");
    }
    assert!(
        is_gone(&d, "cc-run"),
        "the run's instance outlived its client"
    );

    // The same run again, at once: a new instance, which the old one's end never touches
    // (the daemon follows the old one by id).
    let again_arg = unique_seconds(3);
    let again_script = format!("echo ready; exec sleep {again_arg}");
    let mut again = Spawned::start(
        &d,
        &[
            "run",
            "--rm",
            "--name",
            "cc-run",
            "busybox",
            "--",
            "sh",
            "-c",
            &again_script,
        ],
    );
    again.expect_line("ready", Duration::from_secs(30));
    assert_ne!(d.info("cc-run")["id"], id, "a new instance, a new id");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(sleepers(&again_arg).len(), 1, "the new run was ended");
    assert_eq!(again.wait(Duration::from_millis(10)), None);
    again.signal(Signal::TERM);
    again.signal(Signal::TERM);
    assert_eq!(again.wait(Duration::from_secs(15)), Some(143));
    assert!(is_gone(&d, "cc-run"));
    d.ok(&["rm", "--force", "cc-box"]);
    d.finish();
}

#[test]
fn the_grace_period_after_one_signal_ends_the_run_too() {
    let d = TestDaemon::start();
    let arg = unique_seconds(4);
    let script = format!("trap '' TERM; echo ready; exec sleep {arg}");
    let mut run = Spawned::start(
        &d,
        &[
            "run", "--rm", "--name", "gp-run", "busybox", "--", "sh", "-c", &script,
        ],
    );
    run.expect_line("ready", Duration::from_secs(30));
    let sent = Instant::now();
    run.signal(Signal::TERM);
    assert_eq!(
        run.wait(Duration::from_secs(20)),
        Some(143),
        "{}",
        run.stderr()
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(4500),
        "left before the grace period: {:?}",
        sent.elapsed()
    );
    assert!(
        run.stderr().contains("5 s after SIGTERM"),
        "{}",
        run.stderr()
    );
    assert!(sleepers(&arg).is_empty(), "the program outlived its client");
    assert!(is_gone(&d, "gp-run"));
    d.finish();
}

#[test]
fn a_client_that_lost_its_daemon_says_where_to_look_and_exits_3() {
    let mut d = TestDaemon::start();
    launch(&d, "ld-box", &[], Some(IDLE));
    let run_arg = unique_seconds(5);
    let script = format!("echo before-the-loss; exec sleep {run_arg}");
    let mut run = Spawned::start(&d, &["run", "--rm", "busybox", "--", "sh", "-c", &script]);
    run.expect_line("before-the-loss", Duration::from_secs(30));
    let mut exec = Spawned::start(
        &d,
        &["exec", "ld-box", "--", "sh", "-c", "echo in; sleep 300"],
    );
    exec.expect_line("in", Duration::from_secs(30));
    let name = d
        .instance_names()
        .into_iter()
        .find(|n| n != "ld-box")
        .expect("the run's instance");
    let id = d.info(&name)["id"].as_str().expect("an id").to_owned();

    d.kill_daemon();
    assert_eq!(
        run.wait(Duration::from_secs(15)),
        Some(3),
        "{}",
        run.stderr()
    );
    let err = run.stderr();
    for part in [
        "lost the mayfly daemon",
        &format!("instance {name} (id {id})"),
        &format!("mayfly info {name}"),
        &format!("mayfly logs {name}"),
    ] {
        assert!(err.contains(part), "a lost run says `{part}`: {err}");
    }
    assert_eq!(
        exec.wait(Duration::from_secs(15)),
        Some(3),
        "{}",
        exec.stderr()
    );
    let err = exec.stderr();
    assert!(
        err.contains("lost the mayfly daemon") && err.contains("instance ld-box"),
        "{err}"
    );

    // Back: the run's instance still runs (the forker kept it), and its log has what it
    // printed before the loss.
    d.restart();
    assert_eq!(d.info(&name)["id"], id);
    assert!(
        logs(&d, &name).contains("before-the-loss"),
        "{:?}",
        logs(&d, &name)
    );
    d.ok(&["rm", "--force", &name, "ld-box"]);
    assert!(sleepers(&run_arg).is_empty());
    d.finish();
}

#[test]
fn an_attached_runs_output_is_in_its_log_and_logs_f_gets_an_ephemeral_instances_last_words() {
    let d = TestDaemon::start();
    // While a `run --rm` runs, `mayfly logs` shows what it printed (stdout and stderr).
    let mut run = Spawned::start(
        &d,
        &[
            "run",
            "--rm",
            "--name",
            "lg-run",
            "busybox",
            "--",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; echo ready; exec sleep 300",
        ],
    );
    run.expect_line("ready", Duration::from_secs(30));
    wait_log(&d, "lg-run", "to-stderr");
    assert!(logs(&d, "lg-run").contains("to-stdout"));
    run.signal(Signal::INT);
    run.signal(Signal::INT);
    assert_eq!(run.wait(Duration::from_secs(15)), Some(130));

    // A `run` without --rm leaves a stopped instance whose log has the run's output.
    let out = d.mayfly(&[
        "run",
        "--name",
        "lg-kept",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo kept-output",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout.trim(), "kept-output");
    assert!(logs(&d, "lg-kept").contains("kept-output"));

    // `logs -f` of an ephemeral instance: its last line comes, then the stream ends with it.
    for round in 0..3 {
        let name = format!("lg-eph-{round}");
        d.ok(&[
            "launch",
            "busybox",
            "--ephemeral",
            "--name",
            &name,
            "--",
            "sh",
            "-c",
            "echo ready; sleep 1; echo last-words",
        ]);
        let mut follow = Spawned::start(&d, &["logs", "-f", &name]);
        follow.expect_line("ready", Duration::from_secs(10));
        follow.expect_line("last-words", Duration::from_secs(10));
        assert_eq!(
            follow.wait(Duration::from_secs(10)),
            Some(0),
            "logs -f ends with it"
        );
        assert!(is_gone(&d, &name));
    }
    d.ok(&["rm", "--force", "lg-kept"]);
    d.finish();
}
