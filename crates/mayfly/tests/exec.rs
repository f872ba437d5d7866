//! `exec` into running instances: exit codes, streams, stdin, environment and working
//! directory, output of short commands, and what an instance sees inside (hostname, pid and
//! net namespaces, file descriptors).

mod common;

use std::process::Stdio;

use common::{IDLE, Output, SETTLE, TestDaemon, launch, line_reader, poll_until};

/// `exec NAME -- sh -c SCRIPT`, whatever its exit code.
fn exec_sh(d: &TestDaemon, name: &str, script: &str) -> Output {
    d.mayfly(&["exec", name, "--", "sh", "-c", script])
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

    // Net namespace: the loopback and the default network's interface, nothing of the
    // host's.
    let dev = d.sh("ns-box", "cat /proc/net/dev");
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo", "eth0"], "{dev}");

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
