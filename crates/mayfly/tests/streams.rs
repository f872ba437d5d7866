//! The streams of `exec` and `run` never deadlock: stdin and stdout flow independently (100 MB
//! each way at once, checksummed), control frames get through while the process does not read
//! its stdin, a client that goes away takes its process with it, and a client whose program
//! ignores SIGTERM still exits within its grace period.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestDaemon, signal, sleepers, wait_until};
use mayfly_api::stream::{Frame, FrameDecoder};
use rustix::process::Signal;

/// How long a 100 MB round trip may take on a slow, shared machine before it counts as a hang.
const BIG_TIMEOUT: Duration = Duration::from_secs(240);

/// The client's grace period after a forwarded SIGTERM/SIGINT (see `mayfly exec --help`).
const CLIENT_GRACE: Duration = Duration::from_secs(5);

/// `count` MiB of random bytes in a file of the test's directory.
fn random_file(d: &TestDaemon, name: &str, mib: usize) -> std::path::PathBuf {
    let path = d.dir.join(name);
    let mut urandom = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    let mut out = std::fs::File::create(&path).expect("create the input file");
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        urandom.read_exact(&mut buf).expect("read /dev/urandom");
        out.write_all(&buf).expect("write the input file");
    }
    path
}

fn sha256_of_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Waits for `child` at most `timeout`; kills it and returns `None` when it does not end.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(code_of(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid_of_child(child: &Child) -> i32 {
    i32::try_from(child.id()).expect("pid")
}

/// `mayfly ARGS < input | sha256sum`: the digest of what came out, and mayfly's exit code.
fn checksum_through(d: &TestDaemon, args: &[&str], input: &Path) -> (i32, String, String) {
    let mut cmd = d.command(args);
    cmd.stdin(std::fs::File::open(input).expect("open the input"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut client = cmd.spawn().expect("run mayfly");
    let stdout = client.stdout.take().expect("stdout pipe");
    let mut hasher = Command::new("sha256sum")
        .stdin(Stdio::from(stdout))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stderr = client.stderr.take().expect("stderr pipe");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let Some(code) = wait_child(&mut client, BIG_TIMEOUT) else {
        let _ = hasher.kill();
        let _ = hasher.wait();
        panic!(
            "`mayfly {}` with {} of input hung (killed after {BIG_TIMEOUT:?})\n{}",
            args.join(" "),
            input.display(),
            d.logs()
        );
    };
    eprintln!("`mayfly {}` took {:?}", args.join(" "), started.elapsed());
    let mut digest = String::new();
    hasher
        .stdout
        .take()
        .expect("sha256sum stdout")
        .read_to_string(&mut digest)
        .expect("read the digest");
    assert_eq!(
        wait_child(&mut hasher, Duration::from_secs(30)),
        Some(0),
        "sha256sum"
    );
    let stderr = err_reader.join().unwrap_or_default();
    let digest = digest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    (code, digest, stderr)
}

#[test]
fn hundred_megabytes_each_way_through_exec_and_run() {
    let d = TestDaemon::start();
    d.ok(&["launch", "--name", "pipe", "busybox"]);
    let input = random_file(&d, "input", 100);
    let expected = sha256_of_file(&input);

    let (code, digest, stderr) = checksum_through(&d, &["exec", "pipe", "--", "cat"], &input);
    assert_eq!(code, 0, "exec cat failed: {stderr}");
    assert_eq!(
        digest, expected,
        "exec cat changed the data; stderr: {stderr}"
    );

    let (code, digest, stderr) =
        checksum_through(&d, &["run", "--rm", "busybox", "--", "cat"], &input);
    assert_eq!(code, 0, "run cat failed: {stderr}");
    assert_eq!(
        digest, expected,
        "run cat changed the data; stderr: {stderr}"
    );

    std::fs::remove_file(&input).expect("remove the input");
    d.ok(&["rm", "-f", "pipe"]);
    d.finish();
}

/// Lines the child prints on stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout pipe");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line that satisfies `want`; fails the test after `timeout`.
fn expect_line(rx: &mpsc::Receiver<String>, timeout: Duration, want: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if want(&line) => return,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let tail = &seen[seen.len().saturating_sub(20)..];
    panic!("the expected line did not come within {timeout:?}; last lines: {tail:?}");
}

#[test]
fn a_process_that_never_reads_stdin_still_gets_signals_and_its_output_flows() {
    let d = TestDaemon::start();
    d.ok(&["launch", "--name", "deaf", "busybox"]);
    // The client reads an endless stdin (/dev/zero) that the process never reads.
    let mut cmd = d.command(&[
        "exec",
        "deaf",
        "--",
        "sh",
        "-c",
        "trap 'echo got-int; exit 7' INT; i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.05; done",
    ]);
    cmd.stdin(std::fs::File::open("/dev/zero").expect("open /dev/zero"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut client = cmd.spawn().expect("run mayfly");
    let lines = lines_of(&mut client);
    // Far more output than fits in the pipes while the client pushes stdin: it keeps flowing.
    expect_line(&lines, Duration::from_secs(30), |l| l == "tick-60");
    signal(pid_of_child(&client), Signal::INT);
    expect_line(&lines, Duration::from_secs(10), |l| l == "got-int");
    assert_eq!(
        wait_child(&mut client, Duration::from_secs(10)),
        Some(7),
        "the program's exit code after its INT trap"
    );
    d.ok(&["rm", "-f", "deaf"]);
    d.finish();
}

/// A `sleep` argument no other process on the host has (see [`common::unique_seconds`]).
fn unique_seconds(salt: u32) -> String {
    common::unique_seconds(100_000, salt)
}

#[test]
fn a_killed_client_takes_its_exec_and_its_run_with_it() {
    let d = TestDaemon::start();
    d.ok(&["launch", "--name", "host", "busybox"]);

    // `sleep` ends at the hang-up; the second ignores SIGHUP and needs the SIGKILL that
    // follows after a grace period.
    let plain = unique_seconds(1);
    let deaf = unique_seconds(2);
    let attached = unique_seconds(3);
    // A child the exec'd shell started: the hang-up goes to the whole process group, as a
    // closed terminal's would.
    let child = unique_seconds(4);
    let script = format!("trap '' HUP; exec sleep {deaf}");
    let with_child = format!("sleep {child} & wait");
    let mut clients = vec![
        d.command(&["exec", "host", "--", "sleep", &plain]),
        d.command(&["exec", "host", "--", "sh", "-c", &script]),
        d.command(&["run", "--rm", "busybox", "--", "sleep", &attached]),
        d.command(&["exec", "host", "--", "sh", "-c", &with_child]),
    ]
    .into_iter()
    .map(|mut c| {
        // An endless stdin the programs never read: the client must be seen leaving anyway.
        c.stdin(std::fs::File::open("/dev/zero").expect("open /dev/zero"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.spawn().expect("run mayfly")
    })
    .collect::<Vec<_>>();
    for arg in [&plain, &deaf, &attached, &child] {
        wait_until(Duration::from_secs(30), &format!("sleep {arg}"), || {
            sleepers(arg).len() == 1
        });
    }
    for c in &mut clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    for arg in [&plain, &deaf, &attached, &child] {
        wait_until(
            Duration::from_secs(10),
            &format!("sleep {arg} to end after its client was killed"),
            || sleepers(arg).is_empty(),
        );
    }
    // The attached run was removed (`--rm`): only the launched instance is left.
    wait_until(Duration::from_secs(10), "the run's instance to go", || {
        d.instance_names() == ["host"]
    });
    d.ok(&["rm", "-f", "host"]);
    d.finish();
}

#[test]
fn a_client_whose_program_ignores_sigterm_exits_after_the_grace_period() {
    let d = TestDaemon::start();
    // The help says what this test checks.
    for command in ["exec", "run"] {
        let help = d.ok(&[command, "--help"]);
        assert!(
            help.contains("5 seconds after the first signal") && help.contains("143 for SIGTERM"),
            "`mayfly {command} --help` explains signals: {help}"
        );
    }
    d.ok(&["launch", "--name", "stubborn", "busybox"]);
    let exec_arg = unique_seconds(4);
    let run_arg = unique_seconds(5);
    let twice_arg = unique_seconds(6);
    let spawn = |args: &[&str]| {
        let mut c = d.command(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("run mayfly");
        let lines = lines_of(&mut child);
        (child, lines)
    };
    let ignoring = |arg: &str| format!("trap '' TERM; echo ready; exec sleep {arg}");
    let exec_script = ignoring(&exec_arg);
    let run_script = ignoring(&run_arg);
    let twice_script = ignoring(&twice_arg);
    let mut exec = spawn(&["exec", "stubborn", "--", "sh", "-c", &exec_script]);
    let mut run = spawn(&["run", "--rm", "busybox", "--", "sh", "-c", &run_script]);
    let mut twice = spawn(&["exec", "stubborn", "--", "sh", "-c", &twice_script]);
    for (_, lines) in [&exec, &run, &twice] {
        expect_line(lines, Duration::from_secs(30), |l| l == "ready");
    }

    // One SIGTERM: forwarded, ignored; the client leaves after its grace period with 128+15.
    let sent = Instant::now();
    signal(pid_of_child(&exec.0), Signal::TERM);
    signal(pid_of_child(&run.0), Signal::TERM);
    let limit = CLIENT_GRACE + Duration::from_secs(10);
    for (child, what) in [(&mut exec.0, "exec"), (&mut run.0, "run")] {
        let code = wait_child(child, limit);
        assert_eq!(code, Some(143), "`{what}` after SIGTERM (within {limit:?})");
        assert!(
            sent.elapsed() >= CLIENT_GRACE - Duration::from_millis(500),
            "`{what}` left before its grace period: {:?}",
            sent.elapsed()
        );
        let mut err = String::new();
        let _ = child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err);
        assert!(err.contains("SIGTERM"), "`{what}` says why it left: {err}");
    }

    // A second signal: the client leaves at once.
    let sent = Instant::now();
    signal(pid_of_child(&twice.0), Signal::TERM);
    std::thread::sleep(Duration::from_millis(300));
    signal(pid_of_child(&twice.0), Signal::INT);
    let code = wait_child(&mut twice.0, Duration::from_secs(10));
    assert_eq!(code, Some(130), "exec after SIGTERM then SIGINT");
    assert!(
        sent.elapsed() < CLIENT_GRACE,
        "a second signal must not wait for the grace period: {:?}",
        sent.elapsed()
    );

    // The clients are gone, so are their programs (hung up, then killed) and the run's
    // instance.
    for arg in [&exec_arg, &run_arg, &twice_arg] {
        wait_until(
            Duration::from_secs(15),
            &format!("sleep {arg} to end after its client left"),
            || sleepers(arg).is_empty(),
        );
    }
    wait_until(Duration::from_secs(10), "the run's instance to go", || {
        d.instance_names() == ["stubborn"]
    });
    d.ok(&["rm", "-f", "stubborn"]);
    d.finish();
}

/// Opens an exec stream by hand (what `mayfly exec` does), for protocol tests.
fn open_exec(d: &TestDaemon, name: &str, command: &[&str]) -> UnixStream {
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let body = serde_json::json!({ "command": command }).to_string();
    let head = format!(
        "POST /v1/instances/{name}/exec HTTP/1.1\r\nHost: mayfly\r\nConnection: Upgrade\r\nUpgrade: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        mayfly_api::stream::UPGRADE_PROTOCOL,
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write the request");
    s.write_all(body.as_bytes()).expect("write the body");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read the answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Reads frames until `stop` says so or the stream ends; returns them.
fn read_frames(s: &mut UnixStream, stop: impl Fn(&Frame) -> bool) -> Vec<Frame> {
    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(f) = dec.next_frame().expect("a well-formed stream") {
            let done = stop(&f);
            frames.push(f);
            if done {
                return frames;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return frames,
            Ok(n) => dec.push(&buf[..n]),
        }
    }
}

#[test]
fn a_client_that_overruns_its_stdin_window_is_cut_off() {
    let d = TestDaemon::start();
    d.ok(&["launch", "--name", "strict", "busybox"]);
    let arg = unique_seconds(7);
    let mut s = open_exec(&d, "strict", &["sleep", &arg]);
    // The daemon opens with a grant; the process never reads, so no more comes.
    let first = read_frames(&mut s, |_| true);
    let Some(Frame::Credit(window)) = first.first() else {
        panic!("the stream does not open with a credit: {first:?}");
    };
    let window = usize::try_from(*window).expect("window");
    wait_until(Duration::from_secs(30), "the sleep to start", || {
        sleepers(&arg).len() == 1
    });
    // More than the window plus what the stdin pipe takes before it is full (for which the
    // daemon grants more). Once cut off, the daemon reads no more: stop at the first error.
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent <= window + (1 << 20) {
        if s.write_all(&Frame::Stdin(chunk.clone()).to_bytes())
            .is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let frames = read_frames(&mut s, |f| matches!(f, Frame::Error(_) | Frame::Exit(_)));
    match frames.last() {
        Some(Frame::Error(m)) => assert!(m.contains("window"), "{m}"),
        other => panic!("expected an error frame, got {other:?} ({frames:?})"),
    }
    wait_until(Duration::from_secs(10), "the overrun exec to end", || {
        sleepers(&arg).is_empty()
    });
    drop(s);
    d.ok(&["rm", "-f", "strict"]);
    d.finish();
}

#[test]
fn a_stream_request_without_the_upgrade_is_answered_with_an_error_not_a_reset() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "plain"]);
    for (path, body) in [
        (
            "/v1/instances/plain/exec",
            serde_json::json!({"command": ["true"]}),
        ),
        (
            "/v1/run",
            serde_json::json!({"template": "busybox", "command": ["true"]}),
        ),
    ] {
        let (status, answer) = d.api("POST", path, Some(&body));
        assert_eq!(status, 400, "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("Upgrade"), "{path}: {answer}");
    }
    d.ok(&["rm", "-f", "plain"]);
    d.finish();
}
