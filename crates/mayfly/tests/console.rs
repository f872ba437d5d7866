//! The console: a launched instance's init gets a `/dev/console` (a pseudo-terminal whose
//! master side the forker holds); what is written there goes to `mayfly logs`, and
//! `mayfly console` attaches to it interactively (a getty login works on it), detaches with
//! Ctrl-a q, refuses a second client, and attaches again after a daemon restart. A client
//! that never reads holds up neither the log nor the forker.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{SETTLE, Spawned, TestDaemon, launch, logs, wait_log, wait_state, wait_until};

/// root's password in the login test, as `openssl passwd -1 -salt mayfly s3cret` makes it
/// (busybox's login reads it from /etc/passwd: the template's busybox has no shadow support).
const ROOT_HASH: &str = "$1$mayfly$dJO5BTOyYK3WB2wOPDztI1";

/// An init that sets root's password, says something on the console, and keeps a getty
/// (with login) on it once /tmp/go exists (getty flushes what the console holds: the test
/// first sees the banner in the log).
fn getty_init() -> String {
    format!(
        "sed -i 's|^root:[^:]*:|root:{ROOT_HASH}:|' /etc/passwd; \
         echo boot-banner-on-console > /dev/console; \
         while [ ! -e /tmp/go ]; do sleep 0.05; done; \
         while :; do getty -L 0 console vt100; sleep 0.2; done"
    )
}

/// `mayfly console NAME` on a pseudo-terminal of its own, as a user's terminal would run it.
struct ConsoleClient {
    child: Child,
    master: OwnedFd,
    seen: Arc<Mutex<Vec<u8>>>,
    /// How much of `seen` the last `expect` consumed.
    from: usize,
}

impl ConsoleClient {
    fn attach(d: &TestDaemon, name: &str) -> ConsoleClient {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .expect("open a pty");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        // The client gives its terminal's size to the console.
        rustix::termios::tcsetwinsize(
            &master,
            rustix::termios::Winsize {
                ws_row: 41,
                ws_col: 123,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .expect("set the window size");
        let path = ptsname(&master, Vec::new()).expect("ptsname");
        let slave: OwnedFd = rustix::fs::open(
            path.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .expect("open the pty's terminal");
        let mut cmd = d.command(&["console", name]);
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn().expect("run mayfly console");
        drop(cmd);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let reader = master.try_clone().expect("dup the master");
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(reader);
            let mut buf = [0u8; 4096];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        ConsoleClient {
            child,
            master,
            seen,
            from: 0,
        }
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("lock")).into_owned()
    }

    /// Waits until the terminal showed `needle` (after what earlier waits consumed).
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let seen = self.seen();
            if let Some(at) = seen.get(self.from..).and_then(|s| s.find(needle)) {
                self.from += at + needle.len();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the console never showed {needle:?}; it showed:\n{seen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resizes the client's terminal and tells it, as a terminal emulator would.
    fn resize(&self, rows: u16, cols: u16) {
        rustix::termios::tcsetwinsize(
            &self.master,
            rustix::termios::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .expect("set the window size");
        let pid = i32::try_from(self.child.id()).expect("a pid");
        common::signal(pid, rustix::process::Signal::WINCH);
    }

    fn type_keys(&self, keys: &[u8]) {
        rustix::io::write(&self.master, keys).expect("type");
    }

    /// Detaches with Ctrl-a q; the client must say so and exit 0.
    fn detach(mut self) {
        self.type_keys(b"\x01q");
        let deadline = Instant::now() + SETTLE;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "Ctrl-a q did not detach: {}",
                self.seen()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0), "{}", self.seen());
        self.expect("Detached from the console");
    }
}

/// Opens a console stream by hand (what `mayfly console` does) and returns the socket
/// after the `101` (or the whole answer when refused).
fn open_console(d: &TestDaemon, name: &str) -> Result<UnixStream, String> {
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let body = "{}";
    let head = format!(
        "POST /v1/instances/{name}/console HTTP/1.1\r\nHost: mayfly\r\nConnection: Upgrade\r\nUpgrade: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        mayfly_api::stream::UPGRADE_PROTOCOL,
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write the request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read the answer");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    if text.starts_with("HTTP/1.1 101") {
        return Ok(s);
    }
    let mut rest = vec![0u8; 4096];
    let n = s.read(&mut rest).unwrap_or(0);
    Err(format!("{text}{}", String::from_utf8_lossy(&rest[..n])))
}

#[test]
fn a_getty_login_works_on_the_console_and_it_survives_a_daemon_restart() {
    let mut d = TestDaemon::start();
    launch(&d, "con-login", &[], Some(&getty_init()));
    // Boot output on the console is in the log.
    wait_log(&d, "con-login", "boot-banner-on-console");
    d.sh("con-login", "touch /tmp/go");

    let mut c = ConsoleClient::attach(&d, "con-login");
    c.expect("Ctrl-a q to detach");
    c.type_keys(b"\r");
    c.expect("con-login login: ");
    c.type_keys(b"root\r");
    c.expect("Password: ");
    c.type_keys(b"s3cret\r");
    c.expect("# ");
    c.type_keys(b"echo $((6*7))-logged-in-on-$(tty)\r");
    c.expect("42-logged-in-on-/dev/console");
    c.type_keys(b"echo size-$(stty size | tr ' ' x)\r");
    c.expect("size-41x123");
    // A size change of the client's terminal (SIGWINCH) follows.
    c.resize(42, 124);
    c.type_keys(b"echo size-$(stty size | tr ' ' x)\r");
    c.expect("size-42x124");

    // A second client is refused while one is attached: the CLI says why, the API says 409.
    let second = d.mayfly(&["console", "con-login"]);
    assert_eq!(second.code, 1, "{second}");
    assert!(
        second
            .stderr
            .contains("another client is attached to the console of instance con-login"),
        "{second}"
    );
    let answer = open_console(&d, "con-login").expect_err("a second attach is refused");
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains("\"busy\""), "{answer}");

    c.detach();
    assert_eq!(d.state_of("con-login").as_deref(), Some("running"));
    // What the session showed is in the log too, as plain text.
    let log = logs(&d, "con-login");
    assert!(log.contains("42-logged-in-on-/dev/console"), "{log}");
    // (A lone carriage return stays: the shell's line editor redraws its line with one.)
    assert!(
        !log.contains("\r\n"),
        "the log has terminal line ends: {log:?}"
    );

    // The forker kept the console (and the logged-in shell) while the daemon restarted.
    let pid = d.pid_of("con-login");
    d.kill_daemon();
    d.restart();
    assert_eq!(d.pid_of("con-login"), pid);
    let mut c = ConsoleClient::attach(&d, "con-login");
    c.expect("Ctrl-a q to detach");
    c.type_keys(b"echo again-$((1+1))\r");
    c.expect("again-2");
    c.detach();
    assert_eq!(d.state_of("con-login").as_deref(), Some("running"));

    d.ok(&["rm", "-f", "con-login"]);
    d.finish();
}

#[test]
fn what_the_init_writes_to_the_console_is_in_the_log_even_when_it_dies() {
    let d = TestDaemon::start();
    // The init's stdout and stderr stay pipes into the log (not a terminal); its console is
    // a terminal, whose output reaches the log with plain line ends.
    launch(
        &d,
        "con-boot",
        &[],
        Some(
            "echo boot-to-console > /dev/console; echo to-stdout; \
             [ -t 1 ] || echo stdout-is-a-pipe; [ -t 0 ] || echo stdin-is-no-terminal; \
             [ -c /dev/console ] && echo console-is-a-device > /dev/console; exec sleep 1000",
        ),
    );
    for line in [
        "boot-to-console",
        "to-stdout",
        "stdout-is-a-pipe",
        "stdin-is-no-terminal",
        "console-is-a-device",
    ] {
        wait_log(&d, "con-boot", line);
    }
    let log = logs(&d, "con-boot");
    assert!(!log.contains('\r'), "{log:?}");

    // An init that writes to the console and dies: its last words are kept.
    launch(
        &d,
        "con-dies",
        &["--persistent"],
        Some("echo last-words-on-console > /dev/console; exit 3"),
    );
    wait_state(&d, "con-dies", "stopped");
    let log = logs(&d, "con-dies");
    assert!(log.contains("last-words-on-console"), "{log}");

    // An init that cannot start: `start` says why, and so does the log of the instance (a
    // `launch` that cannot start is undone, and says why itself).
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "con-noinit",
        "--no-start",
        "--",
        "/no/such/init",
    ]);
    let out = d.mayfly(&["start", "con-noinit"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("/no/such/init"), "{out}");
    let log = logs(&d, "con-noinit");
    assert!(log.contains("mayfly: the init did not start"), "{log}");
    assert!(log.contains("cannot exec /no/such/init"), "{log}");

    d.ok(&["rm", "-f", "con-boot", "con-dies", "con-noinit"]);
    d.finish();
}

#[test]
fn console_refusals_say_what_is_wrong() {
    let d = TestDaemon::start();
    let missing = d.mayfly(&["console", "con-nothing"]);
    assert_eq!(missing.code, 1, "{missing}");
    assert!(missing.stderr.contains("does not exist"), "{missing}");

    launch(&d, "con-stopped", &["--persistent"], Some("exit 0"));
    wait_state(&d, "con-stopped", "stopped");
    let stopped = d.mayfly(&["console", "con-stopped"]);
    assert_eq!(stopped.code, 1, "{stopped}");
    assert!(stopped.stderr.contains("is stopped"), "{stopped}");
    assert!(
        stopped.stderr.contains("mayfly start con-stopped"),
        "{stopped}"
    );

    // An attached run has the client's pipes, and no console of its own.
    let mut run = Spawned::start(
        &d,
        &[
            "run",
            "--name",
            "con-run",
            "busybox",
            "--",
            "sh",
            "-c",
            "[ -e /dev/console ] || echo no-console-here; exec sleep 60",
        ],
    );
    run.expect_line("no-console-here", SETTLE);
    let attached = d.mayfly(&["console", "con-run"]);
    assert_eq!(attached.code, 1, "{attached}");
    assert!(
        attached.stderr.contains("instance con-run has no console"),
        "{attached}"
    );
    run.signal(rustix::process::Signal::KILL);
    wait_until(SETTLE, "the run's instance to stop", || {
        d.state_of("con-run").as_deref() != Some("running")
    });

    d.ok(&["rm", "-f", "con-stopped"]);
    let _ = d.mayfly(&["rm", "-f", "con-run"]);
    d.finish();
}

#[test]
fn a_console_client_that_never_reads_holds_up_neither_the_log_nor_the_forker() {
    let d = TestDaemon::start();
    // Writes numbered lines to the console as fast as it can.
    launch(
        &d,
        "con-flood",
        &[],
        Some(
            "i=0; while :; do echo flood-line-$i-padding-padding-padding-padding; i=$((i+1)); done > /dev/console",
        ),
    );
    wait_log(&d, "con-flood", "flood-line-");
    // Attach and never read.
    let stuck = open_console(&d, "con-flood").expect("attach");
    let last = |d: &TestDaemon| -> u64 {
        logs(d, "con-flood")
            .lines()
            .filter_map(|l| l.strip_prefix("flood-line-"))
            .filter_map(|l| l.split('-').next())
            .filter_map(|n| n.parse().ok())
            .max()
            .unwrap_or(0)
    };
    std::thread::sleep(Duration::from_secs(2));
    let before = last(&d);
    // Far more than the client's socket and the forker's queue for it hold has gone by:
    // the log keeps growing, and the forker still serves others.
    wait_until(SETTLE, "the log to keep growing", || {
        last(&d) > before + 20_000
    });
    let out = d.ok(&["exec", "con-flood", "--", "echo", "forker-serves"]);
    assert!(out.contains("forker-serves"), "{out}");
    drop(stuck);
    d.ok(&["rm", "-f", "con-flood"]);
    d.finish();
}

#[test]
fn the_console_stream_of_the_api_types_sizes_and_detaches() {
    use mayfly_api::stream::{Frame, FrameDecoder};
    let d = TestDaemon::start();
    // A shell reading commands from the console, as a getty's login shell would.
    launch(
        &d,
        "con-api",
        &[],
        Some("while :; do sh < /dev/console > /dev/console 2>&1; done"),
    );
    let mut s = open_console(&d, "con-api").expect("attach");
    let mut dec = FrameDecoder::new();
    let mut shown = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut read_until = |s: &mut UnixStream, needle: &str, shown: &mut String| {
        let deadline = Instant::now() + SETTLE;
        while !shown.contains(needle) {
            assert!(Instant::now() < deadline, "never saw {needle:?}: {shown:?}");
            let n = s.read(&mut buf).expect("read the stream");
            assert!(n > 0, "the stream ended before {needle:?}: {shown:?}");
            dec.push(&buf[..n]);
            while let Some(f) = dec.next_frame().expect("a well-formed stream") {
                match f {
                    Frame::Stdout(b) => shown.push_str(&String::from_utf8_lossy(&b)),
                    Frame::Exit(c) => shown.push_str(&format!("<exit {c}>")),
                    _ => {}
                }
            }
        }
    };
    // The window size a client gives reaches the console; typed input reaches the shell.
    s.write_all(&Frame::Resize { rows: 33, cols: 99 }.to_bytes())
        .expect("resize");
    s.write_all(&Frame::Stdin(b"echo typed-$((2*21)); stty size\n".to_vec()).to_bytes())
        .expect("type");
    read_until(&mut s, "typed-42", &mut shown);
    read_until(&mut s, "33 99", &mut shown);
    // A Kill frame detaches (the stream ends with status 0); the instance runs on.
    s.write_all(&Frame::Kill.to_bytes()).expect("detach");
    read_until(&mut s, "<exit 0>", &mut shown);
    assert_eq!(d.state_of("con-api").as_deref(), Some("running"));
    // And the next client may attach.
    let mut again = open_console(&d, "con-api").expect("attach again");
    again
        .write_all(&Frame::Stdin(b"echo second-client\n".to_vec()).to_bytes())
        .expect("type");
    let mut shown = String::new();
    read_until(&mut again, "second-client", &mut shown);
    // A restart ends the stream (the console it showed is gone with the init), even though
    // the instance runs again at once.
    d.ok(&["restart", "con-api", "--timeout", "0"]);
    read_until(&mut again, "<exit 0>", &mut shown);
    drop(again);
    let log = logs(&d, "con-api");
    assert!(
        log.contains("typed-42") && log.contains("second-client"),
        "{log}"
    );
    d.ok(&["rm", "-f", "con-api"]);
    d.finish();
}

#[test]
fn busybox_init_boots_with_a_shell_on_the_console() {
    let d = TestDaemon::start();
    // busybox init runs `console::` entries on /dev/console (entries without a terminal use
    // its own stdio: the log pipe).
    launch(
        &d,
        "con-bbinit",
        &[],
        Some(
            "printf 'console::sysinit:/bin/echo sysinit-on-the-console\\nconsole::respawn:-/bin/sh\\n' > /etc/inittab; exec busybox init",
        ),
    );
    wait_log(&d, "con-bbinit", "sysinit-on-the-console");
    let mut c = ConsoleClient::attach(&d, "con-bbinit");
    c.expect("Ctrl-a q to detach");
    c.type_keys(b"echo pid-$$-on-$(tty)\r");
    c.expect("-on-/dev/console");
    c.detach();
    assert_eq!(d.state_of("con-bbinit").as_deref(), Some("running"));
    d.ok(&["rm", "-f", "con-bbinit"]);
    d.finish();
}

#[test]
fn a_killed_forker_takes_the_consoles_with_it_but_not_the_instances() {
    let d = TestDaemon::start();
    launch(
        &d,
        "con-orphan",
        &[],
        Some(
            "i=0; while :; do echo console-$i > /dev/console; echo pipe-$i; i=$((i+1)); sleep 0.1; done",
        ),
    );
    wait_log(&d, "con-orphan", "console-3");
    let pid = d.pid_of("con-orphan");
    let old = d.forker_pid().expect("a forker pid");
    common::signal(old, rustix::process::Signal::KILL);
    wait_until(SETTLE, "a new forker to adopt the instance", || {
        d.forker_pid().is_some_and(|p| p != old) && d.pid_of("con-orphan") == pid
    });
    // Writes to the hung-up console fail; the init goes on, and its pipe is pumped again.
    let last_pipe = |d: &TestDaemon| -> u64 {
        logs(d, "con-orphan")
            .lines()
            .filter_map(|l| l.strip_prefix("pipe-"))
            .filter_map(|n| n.parse().ok())
            .max()
            .unwrap_or(0)
    };
    let seen = last_pipe(&d);
    wait_until(SETTLE, "the log to keep flowing", || {
        last_pipe(&d) > seen + 5
    });
    assert_eq!(d.state_of("con-orphan").as_deref(), Some("running"));
    let refused = d.mayfly(&["console", "con-orphan"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused
            .stderr
            .contains("instance con-orphan has no console"),
        "{refused}"
    );
    d.ok(&["rm", "-f", "con-orphan"]);
    d.finish();
}
