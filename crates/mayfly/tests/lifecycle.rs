//! Instances through their lives: the three modes (transient, persistent, ephemeral), the
//! verbs (`launch`, `list`, `info`, `start`, `stop`, `restart`, `reset`, `rm`, `exec`, `logs`),
//! what an instance sees inside (hostname, pid and net namespaces, file descriptors), bounded
//! console logs, name rules and errors, and the REST API under the CLI.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::{
    Output, SETTLE, TestDaemon, exists_in, is_gone, launch, pid_alive, poll_until, signal,
    wait_state, wait_until,
};
use serde_json::{Value, json};

/// An init that idles and never prints (`sh -c`, so that it holds no script file open).
const IDLE: &str = "while :; do sleep 1; done";

/// The console log of `name` (`mayfly logs`).
fn logs(d: &TestDaemon, name: &str) -> String {
    d.ok(&["logs", name])
}

/// Waits until the console log of `name` contains `needle`.
fn wait_log(d: &TestDaemon, name: &str, needle: &str) {
    let ok = poll_until(SETTLE, || logs(d, name).contains(needle));
    assert!(
        ok,
        "the log of {name} never showed `{needle}`: {:?}",
        logs(d, name)
    );
}

/// `exec NAME -- sh -c SCRIPT`, whatever its exit code.
fn exec_sh(d: &TestDaemon, name: &str, script: &str) -> Output {
    d.mayfly(&["exec", name, "--", "sh", "-c", script])
}

/// The identity of an instance: id, and the host id range its ids map to.
fn identity(d: &TestDaemon, name: &str) -> (String, Value, Value) {
    let info = d.info(name);
    (
        info["id"].as_str().expect("an id").to_owned(),
        info["isolation"]["host_id_base"].clone(),
        info["isolation"]["host_id_count"].clone(),
    )
}

/// Asserts that `out` is a refusal (exit 1) whose message contains every one of `parts`.
fn assert_refused(out: &Output, parts: &[&str]) {
    assert_eq!(out.code, 1, "expected a refusal (exit 1): {out}");
    for p in parts {
        assert!(
            out.stderr.contains(p),
            "the error should mention `{p}`: {out}"
        );
    }
}

/// The lines `r` yields, through a channel (read by a thread).
fn line_reader(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

// ---- modes ----------------------------------------------------------------------------------

#[test]
fn transient_instance_forgets_changes_at_stop_and_restart_but_keeps_its_identity() {
    let d = TestDaemon::start();
    let out = d.ok(&["launch", "busybox", "--name", "tr-web"]);
    assert!(out.contains("tr-web"), "{out}");
    let info = d.info("tr-web");
    assert_eq!(
        info["mode"], "transient",
        "transient is the default: {info}"
    );
    assert_eq!(info["state"], "running", "{info}");
    let id = identity(&d, "tr-web");
    assert!(id.1.is_u64() && id.2.is_u64(), "an id range: {info}");

    d.sh("tr-web", "echo hi > /root/note");
    assert_eq!(d.sh("tr-web", "cat /root/note"), "hi\n");

    d.ok(&["stop", "tr-web"]);
    assert_eq!(d.state_of("tr-web").as_deref(), Some("stopped"));
    d.ok(&["start", "tr-web"]);
    assert_eq!(d.state_of("tr-web").as_deref(), Some("running"));
    assert!(
        !exists_in(&d, "tr-web", "/root/note"),
        "stop + start keeps a transient instance's change"
    );
    assert_eq!(
        identity(&d, "tr-web"),
        id,
        "stop + start changed the identity"
    );

    d.sh("tr-web", "echo again > /root/note");
    let pid = d.pid_of("tr-web");
    d.ok(&["restart", "tr-web"]);
    assert_eq!(d.state_of("tr-web").as_deref(), Some("running"));
    assert_ne!(d.pid_of("tr-web"), pid, "restart runs a new init");
    assert!(!pid_alive(pid), "the old init is gone after restart");
    assert!(
        !exists_in(&d, "tr-web", "/root/note"),
        "restart keeps a transient instance's change"
    );
    assert_eq!(identity(&d, "tr-web"), id, "restart changed the identity");
    assert_eq!(d.instance_names(), vec!["tr-web".to_owned()]);
    d.finish();
}

#[test]
fn persistent_instance_keeps_changes_until_reset() {
    let d = TestDaemon::start();
    launch(&d, "pe-db", &["--persistent"], None);
    assert_eq!(d.info("pe-db")["mode"], "persistent");
    let id = identity(&d, "pe-db");
    d.sh("pe-db", "echo kept > /root/data");

    d.ok(&["stop", "pe-db"]);
    d.ok(&["start", "pe-db"]);
    assert_eq!(
        d.sh("pe-db", "cat /root/data"),
        "kept\n",
        "lost at stop/start"
    );
    d.ok(&["restart", "pe-db"]);
    assert_eq!(d.sh("pe-db", "cat /root/data"), "kept\n", "lost at restart");
    assert_eq!(identity(&d, "pe-db"), id);

    // Reset of a running instance: clean again, and running.
    let pid = d.pid_of("pe-db");
    d.ok(&["reset", "pe-db"]);
    assert_eq!(d.state_of("pe-db").as_deref(), Some("running"));
    assert_ne!(
        d.pid_of("pe-db"),
        pid,
        "a running instance is restarted by reset"
    );
    assert!(
        !exists_in(&d, "pe-db", "/root/data"),
        "reset kept the change"
    );

    // Reset of a stopped instance: it stays stopped, and starts clean.
    d.sh("pe-db", "echo second > /root/data");
    d.ok(&["stop", "pe-db"]);
    d.ok(&["reset", "pe-db"]);
    assert_eq!(d.state_of("pe-db").as_deref(), Some("stopped"));
    d.ok(&["start", "pe-db"]);
    assert!(
        !exists_in(&d, "pe-db", "/root/data"),
        "reset of a stopped instance kept the change"
    );
    // And its changes persist again afterwards.
    d.sh("pe-db", "echo third > /root/data");
    d.ok(&["restart", "pe-db"]);
    assert_eq!(d.sh("pe-db", "cat /root/data"), "third\n");
    assert_eq!(identity(&d, "pe-db"), id);
    d.finish();
}

#[test]
fn ephemeral_instance_is_deleted_when_stopped_and_when_its_init_exits() {
    let d = TestDaemon::start();
    launch(&d, "ep-job", &["--ephemeral"], None);
    assert_eq!(d.info("ep-job")["mode"], "ephemeral");
    d.wait_instance_dirs(1);
    d.ok(&["stop", "ep-job"]);
    assert!(is_gone(&d, "ep-job"), "stopped, it is still there");
    assert!(d.instance_names().is_empty(), "{:?}", d.instance_names());
    d.wait_instance_dirs(0);

    // An init that ends by itself takes the instance with it.
    launch(
        &d,
        "ep-oneshot",
        &["--ephemeral"],
        Some("while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 0"),
    );
    let pid = d.pid_of("ep-oneshot");
    std::fs::write(format!("/proc/{pid}/root/tmp/go"), "").expect("poke the instance");
    wait_until(SETTLE, "the ephemeral instance to go", || {
        is_gone(&d, "ep-oneshot")
    });
    assert!(d.instance_names().is_empty(), "{:?}", d.instance_names());
    d.wait_instance_dirs(0);
    // Its name is free again.
    launch(&d, "ep-oneshot", &["--ephemeral"], None);
    d.ok(&["rm", "--force", "ep-oneshot"]);
    d.wait_instance_dirs(0);
    d.finish();
}

#[test]
fn launch_whose_command_exits_leaves_a_stopped_instance_with_its_exit() {
    let d = TestDaemon::start();
    // Each run marks its writable layer: a second run of the transient one does not find the
    // mark (exit 4 again), the persistent one does (exit 5).
    let script =
        |code: u8| format!("test -e /root/f && exit 5; touch /root/f; echo bye; exit {code}");
    launch(&d, "ex-trans", &[], Some(&script(4)));
    launch(&d, "ex-pers", &["--persistent"], Some(&script(9)));
    wait_state(&d, "ex-trans", "stopped");
    wait_state(&d, "ex-pers", "stopped");
    let t = d.info("ex-trans");
    assert_eq!(t["last_exit"]["code"], 4, "{t}");
    assert!(t["last_exit"]["signal"].is_null(), "{t}");
    assert!(t["pid"].is_null(), "a stopped instance has no pid: {t}");
    assert_eq!(d.info("ex-pers")["last_exit"]["code"], 9);
    let text = d.ok(&["info", "ex-trans"]);
    assert!(text.contains("last exit:   exit code 4"), "{text}");
    assert!(logs(&d, "ex-trans").contains("bye"), "the run's output");
    // Both are still listed, stopped.
    let mut names = d.instance_names();
    names.sort();
    assert_eq!(names, vec!["ex-pers".to_owned(), "ex-trans".to_owned()]);
    for n in ["ex-trans", "ex-pers"] {
        d.ok(&["start", n]);
        wait_state(&d, n, "stopped");
    }
    assert_eq!(
        d.info("ex-trans")["last_exit"]["code"],
        4,
        "the transient run kept its layer"
    );
    assert_eq!(
        d.info("ex-pers")["last_exit"]["code"],
        5,
        "the persistent run lost its layer"
    );

    // An init killed from the host: the signal is recorded.
    launch(&d, "ex-killed", &[], Some(IDLE));
    let pid = d.pid_of("ex-killed");
    signal(pid, rustix::process::Signal::KILL);
    wait_state(&d, "ex-killed", "stopped");
    let k = d.info("ex-killed");
    assert_eq!(k["last_exit"]["signal"], 9, "{k}");
    assert_eq!(k["last_exit"]["code"], 137, "{k}");
    let text = d.ok(&["info", "ex-killed"]);
    assert!(text.contains("killed by signal 9"), "{text}");
    // It can be started again.
    d.ok(&["start", "ex-killed"]);
    assert_eq!(d.state_of("ex-killed").as_deref(), Some("running"));
    d.finish();
}

// ---- list, info, start, stop, rm --------------------------------------------------------------

#[test]
fn list_and_info_show_instances_as_text_and_json() {
    let d = TestDaemon::start();
    launch(&d, "li-run", &[], None);
    launch(&d, "li-pers", &["--persistent", "--no-start"], None);

    let text = d.ok(&["list"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {text}");
    for col in ["NAME", "STATE", "MODE", "TEMPLATE", "PID", "CREATED"] {
        assert!(lines[0].contains(col), "header lacks {col}: {text}");
    }
    let row = |name: &str| -> Vec<String> {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let pid = d.pid_of("li-run");
    let r = row("li-run");
    assert_eq!(&r[1..3], ["running", "transient"], "{text}");
    assert!(r.contains(&pid.to_string()), "the pid shows: {text}");
    let p = row("li-pers");
    assert_eq!(&p[1..3], ["stopped", "persistent"], "{text}");
    assert!(
        p.contains(&"-".to_owned()),
        "no pid for a stopped one: {text}"
    );

    // JSON: the same facts.
    let all = d.json(&["list", "--json"]);
    let all = all.as_array().expect("an array");
    assert_eq!(all.len(), 2);
    let run = all
        .iter()
        .find(|i| i["name"] == "li-run")
        .expect("li-run listed");
    assert_eq!(run["state"], "running");
    assert_eq!(run["pid"], pid);
    assert_eq!(run["template"], "busybox");
    let info = d.info("li-run");
    assert_eq!(info["id"], run["id"]);
    assert!(
        info["id"]
            .as_str()
            .is_some_and(|s| s.len() == 16 && s.chars().all(|c| c.is_ascii_hexdigit())),
        "{info}"
    );
    let pers = d.info("li-pers");
    assert_eq!(pers["state"], "stopped");
    assert_eq!(pers["mode"], "persistent");
    assert!(pers["pid"].is_null());

    // Text info of a running instance.
    let text = d.ok(&["info", "li-run"]);
    for want in [
        "name:        li-run".to_owned(),
        format!("id:          {}", info["id"].as_str().unwrap_or_default()),
        "state:       running".to_owned(),
        "mode:        transient".to_owned(),
        format!("pid:         {pid}"),
        "template:    busybox".to_owned(),
        "isolation:   user namespace".to_owned(),
    ] {
        assert!(text.contains(&want), "info lacks `{want}`:\n{text}");
    }
    // The daemon's info counts them.
    let di = d.daemon_info();
    assert_eq!(di["instances"], 2, "{di}");
    assert_eq!(di["running"], 1, "{di}");

    // A launch without --name gets a valid DNS label, which is also its hostname.
    let generated = d.json(&["launch", "busybox", "--json"]);
    let name = generated["name"]
        .as_str()
        .expect("a generated name")
        .to_owned();
    assert!(
        mayfly_like_dns_label(&name),
        "the generated name `{name}` is no DNS label"
    );
    assert_eq!(d.sh(&name, "hostname").trim(), name);
    d.finish();
}

/// The instance-name rule, restated: 1–63 of a-z, 0-9, `-`, starting with a letter, not
/// ending with `-`.
fn mayfly_like_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[test]
fn stop_sends_the_stop_signal_then_kills_after_the_timeout() {
    let d = TestDaemon::start();
    // Catches TERM and carries on: gets TERM, then SIGKILL once the timeout passes.
    launch(
        &d,
        "st-stubborn",
        &[],
        Some("trap 'echo got-term' TERM; echo ready; while :; do sleep 0.1; done"),
    );
    // Ignores TERM outright.
    launch(
        &d,
        "st-deaf",
        &[],
        Some("trap '' TERM; echo ready; while :; do sleep 1; done"),
    );
    // Leaves on TERM: a clean exit, no SIGKILL.
    launch(
        &d,
        "st-polite",
        &[],
        Some("trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done"),
    );
    for n in ["st-stubborn", "st-deaf", "st-polite"] {
        wait_log(&d, n, "ready");
    }

    let stubborn = d.pid_of("st-stubborn");
    d.ok(&["stop", "--timeout", "1", "st-stubborn"]);
    assert_eq!(d.state_of("st-stubborn").as_deref(), Some("stopped"));
    assert!(!pid_alive(stubborn), "the init survived stop");
    let e = d.info("st-stubborn")["last_exit"].clone();
    assert_eq!(e["signal"], 9, "killed once the timeout passed: {e}");
    assert!(
        logs(&d, "st-stubborn").contains("got-term"),
        "TERM came first: {:?}",
        logs(&d, "st-stubborn")
    );

    let deaf = d.pid_of("st-deaf");
    d.ok(&["stop", "--timeout", "1", "st-deaf"]);
    assert_eq!(d.state_of("st-deaf").as_deref(), Some("stopped"));
    assert!(!pid_alive(deaf), "the init survived stop");
    assert_eq!(d.info("st-deaf")["last_exit"]["signal"], 9);

    d.ok(&["stop", "--timeout", "10", "st-polite"]);
    let e = d.info("st-polite")["last_exit"].clone();
    assert_eq!(e["code"], 0, "it left by itself on TERM: {e}");
    assert!(e["signal"].is_null(), "{e}");
    assert!(logs(&d, "st-polite").contains("bye"));

    // --force kills at once, even one that would leave politely.
    d.ok(&["start", "st-polite"]);
    wait_until(SETTLE, "the second run to say ready", || {
        logs(&d, "st-polite").matches("ready").count() >= 2
    });
    d.ok(&["stop", "--force", "st-polite"]);
    assert_eq!(d.info("st-polite")["last_exit"]["signal"], 9);

    // Stopping a stopped instance is refused, saying so.
    let out = d.fails(&["stop", "st-polite"]);
    assert_refused(&out, &["st-polite", "stopped"]);
    // Starting a running one too.
    d.ok(&["start", "st-deaf"]);
    let out = d.fails(&["start", "st-deaf"]);
    assert_refused(&out, &["st-deaf", "running"]);
    d.finish();
}

#[test]
fn rm_refuses_a_running_instance_unless_forced() {
    let d = TestDaemon::start();
    launch(&d, "rm-live", &[], None);
    let out = d.fails(&["rm", "rm-live"]);
    assert_refused(&out, &["rm-live", "running", "--force"]);
    assert_eq!(
        d.state_of("rm-live").as_deref(),
        Some("running"),
        "a refused rm changed the instance"
    );
    let pid = d.pid_of("rm-live");
    d.ok(&["rm", "--force", "rm-live"]);
    assert!(is_gone(&d, "rm-live"));
    assert!(!pid_alive(pid), "rm --force left the init running");
    d.wait_instance_dirs(0);

    // A stopped one goes without --force.
    launch(&d, "rm-idle", &["--no-start"], None);
    d.ok(&["rm", "rm-idle"]);
    assert!(is_gone(&d, "rm-idle"));
    d.wait_instance_dirs(0);
    d.finish();
}

#[test]
fn verbs_take_several_names_and_go_on_past_a_failure() {
    let d = TestDaemon::start();
    for n in ["mn-a", "mn-b", "mn-c"] {
        launch(&d, n, &[], None);
    }
    let out = d.ok(&["stop", "mn-a", "mn-b"]);
    assert!(
        out.contains("stopped mn-a") && out.contains("stopped mn-b"),
        "{out}"
    );
    assert_eq!(d.state_of("mn-a").as_deref(), Some("stopped"));
    assert_eq!(d.state_of("mn-b").as_deref(), Some("stopped"));
    assert_eq!(d.state_of("mn-c").as_deref(), Some("running"));

    d.ok(&["start", "mn-a", "mn-b"]);
    assert_eq!(d.state_of("mn-a").as_deref(), Some("running"));
    assert_eq!(d.state_of("mn-b").as_deref(), Some("running"));

    let (pa, pb) = (d.pid_of("mn-a"), d.pid_of("mn-b"));
    d.ok(&["restart", "mn-a", "mn-b"]);
    assert_ne!(d.pid_of("mn-a"), pa);
    assert_ne!(d.pid_of("mn-b"), pb);

    // One unknown name in the middle: the others are still acted on, the exit code says 1.
    let out = d.mayfly(&["stop", "mn-a", "mn-ghost", "mn-b"]);
    assert_refused(&out, &["mn-ghost", "does not exist"]);
    assert_eq!(d.state_of("mn-a").as_deref(), Some("stopped"), "{out}");
    assert_eq!(d.state_of("mn-b").as_deref(), Some("stopped"), "{out}");

    d.ok(&["rm", "--force", "mn-a", "mn-b", "mn-c"]);
    assert!(d.instance_names().is_empty(), "{:?}", d.instance_names());
    d.wait_instance_dirs(0);
    d.finish();
}

// ---- exec ------------------------------------------------------------------------------------

#[test]
fn exec_passes_codes_streams_stdin_env_and_workdir() {
    let d = TestDaemon::start();
    launch(&d, "xc-box", &[], None);

    assert_eq!(exec_sh(&d, "xc-box", "exit 7").code, 7);
    assert_eq!(exec_sh(&d, "xc-box", "true").code, 0);
    let out = exec_sh(&d, "xc-box", "echo to-out; echo to-err >&2; exit 3");
    assert_eq!(out.code, 3, "{out}");
    assert_eq!(out.stdout, "to-out\n", "{out}");
    assert_eq!(out.stderr, "to-err\n", "{out}");

    let out = d.mayfly_stdin(&["exec", "xc-box", "--", "cat"], b"line one\nline two\n");
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "line one\nline two\n", "{out}");
    // Streamed: what is written reaches the program before stdin ends, and its answer comes
    // back while the exec still runs.
    let mut child = d
        .command(&["exec", "xc-box", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn exec");
    let mut stdin = child.stdin.take().expect("stdin");
    let lines = line_reader(child.stdout.take().expect("stdout"));
    use std::io::Write as _;
    stdin.write_all(b"ping\n").expect("write");
    stdin.flush().expect("flush");
    let first = lines.recv_timeout(SETTLE);
    stdin.write_all(b"pong\n").expect("write");
    stdin.flush().expect("flush");
    let second = lines.recv_timeout(SETTLE);
    drop(stdin);
    let ended = poll_until(SETTLE, || matches!(child.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    assert_eq!(first.as_deref(), Ok("ping"), "stdin is not streamed");
    assert_eq!(second.as_deref(), Ok("pong"));
    assert!(
        ended && status.success(),
        "exec did not end at stdin EOF: {status}"
    );

    let big: Vec<u8> = (0..50_000u32)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let out = d.mayfly_stdin(&["exec", "xc-box", "--", "wc", "-c"], &big);
    assert_eq!(out.stdout.trim(), big.len().to_string(), "{out}");

    let out = d.mayfly(&[
        "exec",
        "xc-box",
        "--env",
        "GREETING=hello world",
        "--env",
        "B=2",
        "--workdir",
        "/tmp",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING/$B\"; pwd",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "hello world/2\n/tmp\n", "{out}");
    // Without --workdir: `/`.
    assert_eq!(d.sh("xc-box", "pwd"), "/\n");

    let missing = d.mayfly(&["exec", "xc-box", "--", "no-such-program"]);
    assert_eq!(missing.code, 127, "{missing}");
    assert!(missing.stderr.contains("no-such-program"), "{missing}");

    // A stopped instance: mayfly itself fails (125), and says why and what to do.
    d.ok(&["stop", "xc-box"]);
    let out = d.mayfly(&["exec", "xc-box", "--", "true"]);
    assert_eq!(out.code, 125, "{out}");
    assert!(out.stderr.contains("stopped"), "{out}");
    assert!(out.stderr.contains("mayfly start xc-box"), "{out}");
    d.finish();
}

#[test]
fn exec_never_loses_the_output_of_a_short_command() {
    // Many short execs at once: each must deliver what its program printed before exiting,
    // however the exit and the output race inside the daemon.
    let d = TestDaemon::start();
    launch(&d, "xo-box", &[], None);
    let lost: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let d = &d;
                s.spawn(move || {
                    let mut lost = Vec::new();
                    for i in 0..40 {
                        let token = format!("token-{t}-{i}");
                        let out = d.mayfly(&["exec", "xo-box", "--", "echo", &token]);
                        if out.code != 0 || out.stdout != format!("{token}\n") {
                            lost.push(format!("{token}: {out}"));
                        }
                    }
                    lost
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker"))
            .collect()
    });
    assert!(
        lost.is_empty(),
        "{} of 320 execs lost their output, e.g. {}",
        lost.len(),
        lost[0]
    );
    d.finish();
}

#[test]
fn instance_sees_its_own_hostname_pid_and_net_namespaces_and_no_stray_fds() {
    let d = TestDaemon::start();
    launch(&d, "ns-box", &[], Some(IDLE));

    assert_eq!(d.sh("ns-box", "hostname"), "ns-box\n");
    assert_eq!(d.sh("ns-box", "cat /proc/sys/kernel/hostname"), "ns-box\n");

    // Pid namespace: its init is pid 1, and is the command it was given.
    let cmdline = d.sh("ns-box", "tr '\\0' ' ' < /proc/1/cmdline");
    assert_eq!(cmdline.trim(), format!("sh -c {IDLE}"), "pid 1 is the init");
    let exec_pid: i32 = d.sh("ns-box", "echo $$").trim().parse().expect("a pid");
    assert!(exec_pid > 1, "exec's pid {exec_pid}");
    let host_pid = d.pid_of("ns-box");
    assert_ne!(host_pid, 1);
    // Few processes are visible: no host process shows.
    let pids = d.sh("ns-box", "for p in /proc/[0-9]*; do echo ${p#/proc/}; done");
    let pids: Vec<i32> = pids.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(pids.contains(&1), "{pids:?}");
    assert!(
        pids.len() < 10,
        "the instance sees host processes: {pids:?}"
    );

    // Net namespace: only the loopback.
    let dev = d.sh("ns-box", "cat /proc/net/dev");
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{dev}");

    // File descriptors: an exec'd shell has 0, 1, 2 only (`; true` keeps the shell from
    // exec'ing ls, so $$ is the shell); so has the init.
    let fds = d.sh("ns-box", "ls /proc/$$/fd; true");
    assert_eq!(fds.split_whitespace().collect::<Vec<_>>(), ["0", "1", "2"]);
    let fds = d.sh("ns-box", "ls /proc/1/fd");
    assert_eq!(
        fds.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2"],
        "the init inherited descriptors"
    );
    // From the host too (the init's own view cannot lie about it).
    let mut host_fds: Vec<String> = std::fs::read_dir(format!("/proc/{host_pid}/fd"))
        .expect("the init's fds")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    host_fds.sort();
    assert_eq!(host_fds, ["0", "1", "2"]);
    // And the exec'd process under a different stdin (a pipe).
    let out = d.mayfly_stdin(
        &["exec", "ns-box", "--", "sh", "-c", "ls /proc/$$/fd; true"],
        b"",
    );
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2"],
        "{out}"
    );
    d.finish();
}

// ---- logs ------------------------------------------------------------------------------------

#[test]
fn logs_show_the_init_output_and_follow_it() {
    let d = TestDaemon::start();
    launch(
        &d,
        "lg-box",
        &[],
        Some(
            "echo first-line; echo on-stderr >&2; \
             while :; do [ -e /tmp/say ] && { cat /tmp/say; rm /tmp/say; }; sleep 0.05; done",
        ),
    );
    wait_log(&d, "lg-box", "on-stderr");
    let all = logs(&d, "lg-box");
    assert_eq!(all, "first-line\non-stderr\n", "{all:?}");
    assert_eq!(d.ok(&["logs", "--tail", "1", "lg-box"]), "on-stderr\n");

    // Follow: the head arrives, then what the init prints later.
    let mut child = d
        .command(&["logs", "-f", "lg-box"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn logs -f");
    let rx = line_reader(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    let mut wait_line = |want: &str| -> bool {
        poll_until(SETTLE, || {
            while let Ok(l) = rx.try_recv() {
                seen.push(l);
            }
            seen.iter().any(|l| l == want)
        })
    };
    let head = wait_line("first-line");
    // The init prints what it finds in /tmp/say.
    d.sh("lg-box", "echo printed-later > /tmp/x; mv /tmp/x /tmp/say");
    let later = wait_line("printed-later");
    let still_running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    assert!(head, "logs -f did not print the head: {seen:?}");
    assert!(later, "logs -f did not follow: {seen:?}");
    assert!(still_running, "logs -f ended by itself");
    assert!(logs(&d, "lg-box").ends_with("printed-later\n"));

    // A stopped instance's log is still there.
    d.ok(&["stop", "lg-box"]);
    assert!(logs(&d, "lg-box").contains("first-line"));

    // A follower ends when its instance is removed.
    let mut child = d
        .command(&["logs", "-f", "lg-box"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn logs -f");
    let following = !poll_until(Duration::from_millis(300), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    d.ok(&["rm", "lg-box"]);
    let ended = poll_until(SETTLE, || matches!(child.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert!(following, "logs -f of a stopped instance ended at once");
    assert!(ended, "logs -f went on after its instance was removed");
    d.finish();
}

#[test]
fn logs_stay_bounded_by_log_max_size() {
    const MAX: u64 = 4096;
    let d = TestDaemon::start_with(&["--log-max-size", "4096"]);
    // About 120 kB of lines, then one 10 kB burst (a single write, like a dumped stack
    // trace), then a last line; then it idles.
    launch(
        &d,
        "lb-chatty",
        &[],
        Some(
            "i=0; while [ $i -lt 10000 ]; do echo line-$i; i=$((i+1)); done; \
             s=0123456789; for k in 1 2 3 4 5 6 7 8 9 10; do s=$s$s; done; echo \"burst-$s\"; \
             echo last-line; while :; do sleep 1; done",
        ),
    );
    wait_log(&d, "lb-chatty", "last-line");
    let id = d.info("lb-chatty")["id"].as_str().expect("id").to_owned();
    let dir = d.state.join("instances").join(&id);
    let mut total = 0;
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).expect("the instance dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("console.log") {
            let len = e.metadata().expect("stat").len();
            files.push((name, len));
            total += len;
        }
    }
    files.sort();
    assert!(
        files.iter().any(|(n, _)| n == "console.log"),
        "no console.log in {}: {files:?}",
        dir.display()
    );
    assert!(files.len() <= 2, "one previous file at most: {files:?}");
    for (name, len) in &files {
        assert!(
            *len <= MAX,
            "{name} is {len} bytes, over the {MAX} limit: {files:?}"
        );
    }
    assert!(total <= 2 * MAX, "{total} bytes of log: {files:?}");

    // `logs` shows the latest lines, not the first.
    let shown = logs(&d, "lb-chatty");
    assert!(
        shown.ends_with("\nlast-line\n"),
        "{:?}",
        &shown[shown.len().saturating_sub(200)..]
    );
    assert!(!shown.contains("line-0\n"), "the oldest output was kept");
    assert!(shown.len() as u64 <= 2 * MAX, "{} bytes shown", shown.len());
    d.finish();
}

// ---- names and errors ------------------------------------------------------------------------

#[test]
fn bad_instance_names_are_refused_with_the_rule() {
    let d = TestDaemon::start();
    let long = "a".repeat(64);
    let cases: Vec<(&str, &str)> = vec![
        ("Web", "must start with a lowercase letter"),
        ("web-Upper", "only lowercase letters, digits and `-`"),
        ("1abc", "must start with a lowercase letter"),
        ("-abc", "must start with a lowercase letter"),
        ("abc-", "must not end with `-`"),
        (&long, "longer than 63 characters"),
        ("a.b", "only lowercase letters, digits and `-`"),
        ("a_b", "only lowercase letters, digits and `-`"),
        ("", "it is empty"),
        ("é", "must start with a lowercase letter"),
        ("café", "only lowercase letters, digits and `-`"),
    ];
    for (name, rule) in &cases {
        let flag = format!("--name={name}");
        let out = d.mayfly(&["launch", "busybox", &flag]);
        assert_refused(&out, &["invalid instance name", rule, "DNS label"]);
    }
    // The longest legal name works.
    let longest = "a".repeat(63);
    d.ok(&["launch", "busybox", "--name", &longest, "--no-start"]);
    assert_eq!(
        d.instance_names(),
        vec![longest.clone()],
        "only the good one"
    );
    d.ok(&["rm", &longest]);
    assert!(d.instance_names().is_empty());
    d.wait_instance_dirs(0);

    // A duplicate: refused, the existing one untouched.
    launch(&d, "nm-dup", &[], None);
    let before = d.info("nm-dup");
    let out = d.mayfly(&["launch", "busybox", "--name", "nm-dup"]);
    assert_refused(&out, &["nm-dup", "already exists"]);
    let after = d.info("nm-dup");
    assert_eq!(before["id"], after["id"]);
    assert_eq!(before["pid"], after["pid"]);
    assert_eq!(after["state"], "running");

    // An unknown template: refused, nothing created.
    let out = d.mayfly(&["launch", "no-such-tpl", "--name", "nm-orphan"]);
    assert_refused(&out, &["no-such-tpl", "does not exist"]);
    assert_eq!(d.instance_names(), vec!["nm-dup".to_owned()]);
    d.wait_instance_dirs(1);
    d.finish();
}

#[test]
fn every_verb_reports_an_unknown_instance_clearly() {
    let d = TestDaemon::start();
    let verbs: &[&[&str]] = &[
        &["info", "ghost"],
        &["info", "ghost", "--json"],
        &["start", "ghost"],
        &["stop", "ghost"],
        &["restart", "ghost"],
        &["reset", "ghost"],
        &["rm", "ghost"],
        &["rm", "--force", "ghost"],
        &["logs", "ghost"],
        &["logs", "-f", "ghost"],
    ];
    for args in verbs {
        let out = d.mayfly(args);
        assert_eq!(out.code, 1, "`mayfly {}`: {out}", args.join(" "));
        assert!(
            out.stderr.contains("instance `ghost` does not exist"),
            "`mayfly {}`: {out}",
            args.join(" ")
        );
        assert!(
            out.stderr.contains("mayfly list"),
            "a hint: `mayfly {}`: {out}",
            args.join(" ")
        );
    }
    let out = d.mayfly(&["exec", "ghost", "--", "true"]);
    assert_eq!(out.code, 125, "{out}");
    assert!(
        out.stderr.contains("instance `ghost` does not exist"),
        "{out}"
    );
    assert!(d.instance_names().is_empty());
    d.finish();
}

// ---- the API ---------------------------------------------------------------------------------

/// Asserts an API error answer: `status`, the JSON error shape with `code`, and a message.
fn assert_api_error(what: &str, got: &(u16, Value), status: u16, code: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: no message: {body}"
    );
}

#[test]
fn api_drives_an_instance_and_answers_errors_with_codes() {
    let d = TestDaemon::start();
    let mode = std::fs::metadata(&d.socket)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // `POST /v1/instances` with `body`.
    let create = |body: Value| d.api("POST", "/v1/instances", Some(&body));

    // Create (stopped), start, stop, delete.
    let (s, created) = create(json!({"template": "busybox", "name": "api-one", "start": false}));
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["name"], "api-one");
    assert_eq!(created["state"], "stopped");
    assert_eq!(created["mode"], "transient");

    let (s, started) = d.api("POST", "/v1/instances/api-one/start", None);
    assert_eq!(s, 200, "{started}");
    assert_eq!(started["state"], "running");
    let pid = started["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .expect("a pid");
    assert!(pid_alive(pid));
    assert_eq!(d.state_of("api-one").as_deref(), Some("running"));

    let (s, info) = d.api("GET", "/v1/instances/api-one", None);
    assert_eq!(s, 200);
    assert_eq!(info["id"], created["id"]);

    let again = d.api("POST", "/v1/instances/api-one/start", None);
    assert_api_error("start of a running instance", &again, 409, "wrong_state");
    let del = d.api("DELETE", "/v1/instances/api-one", None);
    assert_api_error("delete of a running instance", &del, 409, "wrong_state");

    let (s, body) = d.api(
        "POST",
        "/v1/instances/api-one/stop",
        Some(&json!({"timeout": 5})),
    );
    assert_eq!(s, 204, "{body}");
    assert!(!pid_alive(pid), "stopped over the API, the init runs");
    let (_, info) = d.api("GET", "/v1/instances/api-one", None);
    assert_eq!(info["state"], "stopped");
    let again = d.api("POST", "/v1/instances/api-one/stop", None);
    assert_api_error("stop of a stopped instance", &again, 409, "wrong_state");

    let r = d.api_raw("DELETE", "/v1/instances/api-one", "application/json", b"");
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let gone = d.api("GET", "/v1/instances/api-one", None);
    assert_api_error("info of a deleted instance", &gone, 404, "not_found");
    d.wait_instance_dirs(0);

    // Unknown instance, for every instance endpoint.
    for (method, path) in [
        ("GET", "/v1/instances/api-ghost"),
        ("DELETE", "/v1/instances/api-ghost"),
        ("POST", "/v1/instances/api-ghost/start"),
        ("POST", "/v1/instances/api-ghost/stop"),
        ("POST", "/v1/instances/api-ghost/restart"),
        ("POST", "/v1/instances/api-ghost/reset"),
        ("GET", "/v1/instances/api-ghost/logs"),
    ] {
        let got = d.api(method, path, None);
        assert_api_error(&format!("{method} {path}"), &got, 404, "not_found");
        assert!(
            got.1["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("api-ghost")),
            "{method} {path}: {}",
            got.1
        );
    }

    // Create: a duplicate, a bad name, an unknown template, unknown fields, bad JSON.
    let (s, _) = create(json!({"template": "busybox", "name": "api-two"}));
    assert_eq!(s, 201);
    let dup = create(json!({"template": "busybox", "name": "api-two"}));
    assert_api_error("duplicate", &dup, 409, "already_exists");
    let bad = create(json!({"template": "busybox", "name": "Bad_Name"}));
    assert_api_error("bad name", &bad, 400, "invalid_argument");
    assert!(
        bad.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid instance name")),
        "{}",
        bad.1
    );
    let unknown_tpl = create(json!({"template": "api-nothing", "name": "api-three"}));
    assert_api_error("unknown template", &unknown_tpl, 404, "not_found");
    let extra = create(json!({"template": "busybox", "name": "api-four", "colour": "blue"}));
    assert_api_error("unknown field", &extra, 400, "invalid_argument");
    assert!(
        extra.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("colour")),
        "the unknown field is named: {}",
        extra.1
    );
    let bad_mode = create(json!({"template": "busybox", "name": "api-five", "mode": "forever"}));
    assert_api_error("unknown mode", &bad_mode, 400, "invalid_argument");
    let r = d.api_raw(
        "POST",
        "/v1/instances",
        "application/json",
        b"{\"template\": ",
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "invalid_argument");
    let r = d.api_raw(
        "POST",
        "/v1/instances/api-two/stop",
        "application/json",
        b"{\"timeout\": 1, \"bogus\": true}",
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "invalid_argument");
    assert_eq!(
        d.state_of("api-two").as_deref(),
        Some("running"),
        "a refused stop stopped it"
    );
    let r = d.api_raw("GET", "/v1/no-such-endpoint", "application/json", b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");

    // Nothing of the refused requests exists.
    assert_eq!(d.instance_names(), vec!["api-two".to_owned()]);
    d.wait_instance_dirs(1);

    // Forced delete of a running one.
    let r = d.api_raw(
        "DELETE",
        "/v1/instances/api-two?force=true",
        "application/json",
        b"",
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert!(d.instance_names().is_empty());
    d.wait_instance_dirs(0);
    d.finish();
}
