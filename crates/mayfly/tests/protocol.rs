//! The daemon ↔ forker protocol under bad requests (issue 18, point 2): one request that is
//! too large, unreadable, or carries too many descriptors fails alone, and a daemon that
//! stops reading does not stall the forker. Neither the connection nor the exec sessions
//! running on it are lost.

mod common;

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestDaemon, wait_until};
use mayfly_driver::protocol::{
    self, Envelope, FailureKind, FromForker, PROTOCOL_VERSION, Reply, Request,
};
use rustix::net::{AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

#[test]
fn a_process_too_large_for_the_forker_is_refused_alone_and_nothing_else_is_lost() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "a"]);
    let forker = d.forker_pid();
    // An exec session running meanwhile must keep its exit status.
    let running = d
        .command(&["exec", "a", "--", "sh", "-c", "sleep 2; exit 7"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the running exec");
    std::thread::sleep(Duration::from_millis(300));

    let big = "x".repeat(100_000);
    let out = d.mayfly(&["exec", "a", "--", "echo", &big, &big, &big]);
    assert_eq!(out.code, 125, "{out}");
    assert!(out.stderr.contains("at most 262144"), "{out}");
    let out = d.mayfly(&["run", "--rm", "busybox", "--", "echo", &big, &big, &big]);
    assert!(!out.success());
    assert!(out.stderr.contains("at most 262144"), "{out}");
    let (status, body) = d.api(
        "POST",
        "/v1/instances",
        Some(&serde_json::json!({
            "template": "busybox", "name": "huge", "command": ["echo", big, big, big]
        })),
    );
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large", "{body}");
    // One entry past the kernel's own limit for a string (the CLI cannot even be started
    // with it, so through the API).
    let one = "y".repeat(130 * 1024);
    for (request, what) in [
        (
            serde_json::json!({"template": "busybox", "command": ["echo", one]}),
            "argument 1",
        ),
        (
            serde_json::json!({"template": "busybox", "command": ["true"], "env": [format!("BIG={one}")]}),
            "environment entry `BIG`",
        ),
    ] {
        let (status, body) = d.api("POST", "/v1/instances", Some(&request));
        assert_eq!(status, 413, "{}", body["error"]);
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(what), "{message}");
    }

    // Just inside the limits, and far above what the forker socket took before (~208 KiB).
    let large = "z".repeat(120 * 1024);
    let out = d.ok(&[
        "exec",
        "a",
        "--",
        "sh",
        "-c",
        "echo ${#0} ${#1}",
        &large,
        &large,
    ]);
    assert_eq!(out.trim(), "122880 122880");

    let status = running
        .wait_with_output()
        .expect("wait for the running exec");
    assert_eq!(status.status.code(), Some(7), "its exit status was kept");
    assert_eq!(d.forker_pid(), forker, "the forker was never lost");
    assert!(!d.logs().contains("went away"), "{}", d.logs());
    d.ok(&["rm", "--force", "a"]);
    d.finish();
}

/// A connection to a forker, speaking as its daemon.
struct FakeDaemon {
    sock: OwnedFd,
    seq: u64,
}

impl FakeDaemon {
    fn connect(d: &TestDaemon) -> FakeDaemon {
        let sock = rustix::net::socket_with(
            AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .expect("socket");
        let addr = rustix::net::SocketAddrUnix::new(d.state.join("run/forker.sock"))
            .expect("forker socket path");
        rustix::net::connect(&sock, &addr).expect("connect to the forker");
        rustix::net::sockopt::set_socket_send_buffer_size_force(&sock, 4 << 20)
            .expect("send buffer");
        rustix::net::sockopt::set_socket_timeout(
            &sock,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(10)),
        )
        .expect("receive timeout");
        FakeDaemon { sock, seq: 100 }
    }

    fn send_raw(&self, bytes: &[u8], fds: &[OwnedFd]) {
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(64))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
        }
        rustix::net::sendmsg(
            &self.sock,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .expect("send to the forker");
    }

    fn request(&mut self, request: Request, fds: &[OwnedFd]) -> u64 {
        self.seq += 1;
        let bytes = serde_json::to_vec(&Envelope {
            seq: self.seq,
            request,
        })
        .expect("encode");
        self.send_raw(&bytes, fds);
        self.seq
    }

    /// The next answer (events are skipped).
    fn answer(&self) -> (u64, Result<Reply, protocol::Failure>) {
        let mut buf = vec![0u8; protocol::MAX_MESSAGE];
        loop {
            let r = protocol::recv_message(self.sock.as_fd(), &mut buf).expect("receive");
            assert!(r.len > 0, "the forker closed the connection");
            match serde_json::from_slice::<FromForker>(&buf[..r.len]).expect("readable") {
                FromForker::Reply { seq, result } => return (seq, result),
                FromForker::Event(_) => {}
            }
        }
    }

    fn hello(&mut self) {
        let seq = self.request(
            Request::Hello {
                protocol: PROTOCOL_VERSION,
            },
            &[],
        );
        let (got, result) = self.answer();
        assert_eq!(got, seq);
        assert!(matches!(result, Ok(Reply::Hello { .. })), "{result:?}");
    }
}

fn log_len(d: &TestDaemon, id: &str) -> u64 {
    std::fs::metadata(d.state.join("instances").join(id).join("console.log"))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[test]
fn the_forker_survives_malformed_requests_descriptor_floods_and_a_daemon_that_stops_reading() {
    let mut d = TestDaemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "talk",
        "--",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.05; done",
    ]);
    let id = d.info("talk")["id"].as_str().unwrap_or_default().to_owned();
    let forker = d.forker_pid();
    // The forker outlives its daemon; speak to it as the daemon would.
    d.stop_daemon();
    let mut fake = FakeDaemon::connect(&d);
    fake.hello();

    // An unreadable request with a readable sequence number: refused, for itself only.
    fake.seq += 1;
    let seq = fake.seq;
    fake.send_raw(
        format!(r#"{{"seq": {seq}, "request": {{"no_such_request": 1}}}}"#).as_bytes(),
        &[],
    );
    let (got, result) = fake.answer();
    assert_eq!(got, seq);
    let failure = result.expect_err("a malformed request fails");
    assert_eq!(failure.kind, FailureKind::Malformed, "{failure:?}");
    fake.hello();

    // Without a sequence number nothing can be answered; the connection goes on.
    fake.send_raw(b"\xffnot json at all", &[]);
    fake.hello();

    // More descriptors than a request may carry.
    let fds: Vec<OwnedFd> = (0..40)
        .map(|_| {
            std::fs::File::open("/dev/null")
                .expect("open /dev/null")
                .into()
        })
        .collect();
    let seq = fake.request(
        Request::Hello {
            protocol: PROTOCOL_VERSION,
        },
        &fds,
    );
    let (got, result) = fake.answer();
    assert_eq!(got, seq);
    let failure = result.expect_err("too many descriptors");
    assert_eq!(failure.kind, FailureKind::Malformed, "{failure:?}");
    assert!(failure.message.contains("descriptors"), "{failure:?}");
    fake.hello();

    // A message larger than the forker reads: lost alone.
    fake.send_raw(&vec![b'{'; 2 << 20], &[]);
    fake.hello();

    // A daemon that sends and never reads: the forker keeps pumping the instance's log.
    let before = log_len(&d, &id);
    // Enough answers to fill the socket and queue more behind it, not so many that the queue's
    // bound (32 MiB) gives up on this connection.
    let flood_until = Instant::now() + Duration::from_secs(10);
    let hello = serde_json::to_vec(&Envelope {
        seq: 1,
        request: Request::Hello {
            protocol: PROTOCOL_VERSION,
        },
    })
    .expect("encode");
    rustix::io::ioctl_fionbio(&fake.sock, true).expect("non-blocking");
    let mut sent = 0u64;
    while Instant::now() < flood_until && sent < 50_000 {
        match protocol::send(fake.sock.as_fd(), &hello, &[]) {
            Ok(()) => sent += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            // The forker gave up on a daemon that does not read: allowed.
            Err(_) => break,
        }
    }
    assert!(sent > 1000, "only {sent} requests went out");
    wait_until(Duration::from_secs(5), "the log to keep growing", || {
        log_len(&d, &id) > before + 200
    });
    // Reading again, the daemon gets every answer the forker queued meanwhile, and then the
    // answer to a new request: what waited is sent once there is room.
    rustix::io::ioctl_fionbio(&fake.sock, false).expect("blocking");
    let mut answered = 0u64;
    while answered < sent {
        let (_, result) = fake.answer();
        assert!(matches!(result, Ok(Reply::Hello { .. })), "{result:?}");
        answered += 1;
    }
    fake.hello();
    drop(fake);

    // A real daemon takes over: nothing was lost.
    d.restart();
    assert_eq!(d.forker_pid(), forker, "the same forker serves on");
    assert_eq!(d.state_of("talk").as_deref(), Some("running"));
    assert_eq!(d.sh("talk", "echo fine").trim(), "fine");
    d.ok(&["rm", "--force", "talk"]);
    d.finish();
}
