//! Limits at the edge, on both listeners: slow (slowloris) and oversized requests are cut off
//! while other clients are served, a client over its connection cap gets `429` with the API's
//! error body, and the TCP listener's address rules (default, explicit, `none`).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::TestDaemon;
use common::tls;
use common::tls::{
    DEFAULT_ADDR, TlsStream, connect, create_token, exchange, https_bearer, in_netns,
};

/// The daemon's header timeout (serve.rs) and a margin.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Trickles header lines into `s`, one a second, until the daemon closes the connection;
/// returns how long that took (`None`: still open after 30 s).
fn trickle(s: &mut (impl Read + Write), set_timeout: &dyn Fn(Duration)) -> Option<Duration> {
    let start = Instant::now();
    let _ = s.write_all(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n");
    set_timeout(Duration::from_secs(1));
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(30) {
        if s.write_all(b"X-Slow: yes\r\n").is_err() {
            return Some(start.elapsed());
        }
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            // The daemon may answer 408 before it closes: that is being cut off too.
            Ok(_) => return Some(start.elapsed()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

fn tls_trickle(mut s: TlsStream) -> Option<Duration> {
    let sock = s.sock.try_clone().unwrap();
    trickle(&mut s, &move |t| {
        let _ = sock.set_read_timeout(Some(t));
    })
}

fn unix_trickle(mut s: UnixStream) -> Option<Duration> {
    let sock = s.try_clone().unwrap();
    trickle(&mut s, &move |t| {
        let _ = sock.set_read_timeout(Some(t));
    })
}

#[test]
fn slowloris_clients_are_cut_off_while_others_are_served() {
    let d = TestDaemon::start();
    let ns = d.netns().to_owned();
    let secret = create_token(&d, "ok");

    // Five slow TLS clients, five slow unix ones, and one that never starts its handshake.
    let tls: Vec<TlsStream> = (0..5)
        .map(|_| in_netns(&ns, || connect(DEFAULT_ADDR).unwrap().0))
        .collect();
    let mut silent = in_netns(&ns, || std::net::TcpStream::connect(DEFAULT_ADDR).unwrap());
    let started = Instant::now();
    let mut slow: Vec<std::thread::JoinHandle<Option<Duration>>> = tls
        .into_iter()
        .map(|s| std::thread::spawn(move || tls_trickle(s)))
        .collect();
    for _ in 0..5 {
        let s = UnixStream::connect(&d.socket).unwrap();
        slow.push(std::thread::spawn(move || unix_trickle(s)));
    }

    // Meanwhile the others are served at once, on both listeners.
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..3 {
        let t = Instant::now();
        let r = https_bearer(&d, &secret, "GET", "/v1/info");
        assert_eq!(r.status, 200);
        let (status, _) = d.api("GET", "/v1/instances", None);
        assert_eq!(status, 200);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    for h in slow {
        let cut = h
            .join()
            .unwrap()
            .expect("a slowloris client was never cut off");
        assert!(
            cut >= HEADER_TIMEOUT - Duration::from_secs(1) && cut < HEADER_TIMEOUT * 2,
            "cut off after {cut:?}"
        );
    }
    // The client that never said anything was cut off too (TLS handshake timeout).
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(25));
    d.finish();
}

#[test]
fn oversized_requests_are_refused_and_slow_bodies_cut_off() {
    let d = TestDaemon::start();
    let ns = d.netns().to_owned();
    let secret = create_token(&d, "ok");
    let auth = format!("Bearer {secret}");

    // Headers over the cap: 431 (or, when the daemon closes while the client still writes,
    // a reset), on both listeners.
    let big = "x".repeat(64 << 10);
    let r = in_netns(&ns, || {
        let (mut s, _) = connect(DEFAULT_ADDR).unwrap();
        exchange(
            &mut s,
            "GET",
            "/v1/info",
            &[("Authorization", &auth), ("X-Big", &big)],
            b"",
        )
    });
    match r {
        Ok(r) => assert_eq!(r.status, 431),
        Err(e) => assert!(e.contains("reset") || e.contains("Broken pipe"), "{e}"),
    }
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!("GET /v1/info HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(head.as_bytes());
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => assert!(
            raw.starts_with(b"HTTP/1.1 431"),
            "{}",
            String::from_utf8_lossy(&raw)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }

    // A JSON body over the cap: 413 with the API's error body.
    let body = vec![b' '; 2 << 20];
    let r = in_netns(&ns, || {
        let (mut s, _) = connect(DEFAULT_ADDR).unwrap();
        exchange(
            &mut s,
            "POST",
            "/v1/instances",
            &[("Authorization", &auth)],
            &body,
        )
    });
    match r {
        Ok(r) => {
            assert_eq!(r.status, 413);
            assert_eq!(r.json()["error"]["code"], "too_large");
        }
        // The daemon may close before the whole body is written.
        Err(e) => assert!(e.contains("write") || e.contains("reset"), "{e}"),
    }

    // A body that stops halfway: the connection is closed within the body timeout (no
    // answer: the request never arrived whole).
    let t = Instant::now();
    let answer = in_netns(&ns, || {
        let (mut s, _) = connect(DEFAULT_ADDR).unwrap();
        let head = format!(
            "POST /v1/instances HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"tem"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.sock
            .set_read_timeout(Some(Duration::from_secs(40)))
            .unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        raw
    });
    let elapsed = t.elapsed();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        elapsed >= Duration::from_secs(14) && elapsed < Duration::from_secs(30),
        "{elapsed:?}"
    );

    // Others were served all along.
    assert_eq!(https_bearer(&d, &secret, "GET", "/v1/info").status, 200);
    d.finish();
}

#[test]
fn a_stalled_body_is_cut_off_whatever_type_it_claims_without_a_token() {
    let d = TestDaemon::start();
    let ns = d.netns().to_owned();
    // The login is public: a body that claims not to be JSON and stops halfway must not hold
    // its connection (and a place in the caps) for ever.
    let t = Instant::now();
    let answer = in_netns(&ns, || {
        let (mut s, _) = connect(DEFAULT_ADDR).unwrap();
        s.write_all(
            b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n{\"tok",
        )
        .unwrap();
        s.sock
            .set_read_timeout(Some(Duration::from_secs(40)))
            .unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        raw
    });
    let elapsed = t.elapsed();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        elapsed >= Duration::from_secs(14) && elapsed < Duration::from_secs(30),
        "{elapsed:?}"
    );
    d.finish();
}

#[test]
fn a_client_over_its_connection_cap_gets_429_and_others_are_not_affected() {
    let d = TestDaemon::start();
    let ns = d.netns().to_owned();
    let secret = create_token(&d, "ok");
    let auth = format!("Bearer {secret}");

    // 64 open connections of one client (TLS from 127.0.0.1): the 65th is refused.
    let held: Vec<TlsStream> = in_netns(&ns, || {
        (0..64).map(|_| connect(DEFAULT_ADDR).unwrap().0).collect()
    });
    let r = in_netns(&ns, || {
        let (mut s, _) = connect(DEFAULT_ADDR).unwrap();
        exchange(&mut s, "GET", "/v1/info", &[("Authorization", &auth)], b"")
    })
    .unwrap();
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "too_many_requests");
    assert!(r.json()["error"]["hint"].is_string());
    // Another client (the unix socket's root) is served meanwhile.
    assert_eq!(d.api("GET", "/v1/info", None).0, 200);
    // Once the client closes some, it is served again.
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(https_bearer(&d, &secret, "GET", "/v1/info").status, 200);

    // The same on the unix socket.
    let held: Vec<UnixStream> = (0..64)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = d.api("GET", "/v1/info", None);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_requests");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.api("GET", "/v1/info", None).0, 200);

    // An exec session is a stream of the client until it ends: with it and 63 connections
    // open, the next is refused.
    common::launch(&d, "cap-box", &[], None);
    let mut exec = d
        .command(&["exec", "cap-box", "--", "sh", "-c", "echo ready; sleep 60"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(exec.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    let held: Vec<UnixStream> = (0..63)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.api("GET", "/v1/info", None).0, 429);
    drop(held);
    let _ = exec.kill();
    let _ = exec.wait();
    d.finish();
}

#[test]
fn the_listener_serves_at_most_512_connections() {
    let d = TestDaemon::start();
    let ns = d.netns().to_owned();
    let secret = create_token(&d, "ok");
    let auth = format!("Bearer {secret}");
    let daemon: std::net::SocketAddrV4 = DEFAULT_ADDR.parse().unwrap();
    // 8 clients (loopback addresses) of 64 connections each: the listener is full.
    let (held, r) = in_netns(&ns, || {
        let held: Vec<std::net::TcpStream> = (2..10u8)
            .flat_map(|i| (0..64).map(move |_| i))
            .map(|i| tls::tcp_from(std::net::Ipv4Addr::new(127, 0, 0, i), daemon))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let tcp = tls::tcp_from(std::net::Ipv4Addr::new(127, 0, 0, 20), daemon);
        let (mut s, _) = tls::tls_over(tcp).unwrap();
        let r = exchange(&mut s, "GET", "/v1/info", &[("Authorization", &auth)], b"");
        (held, r)
    });
    let r = r.unwrap();
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("at most 512"), "{message}");
    // The unix socket is a listener of its own: served.
    assert_eq!(d.api("GET", "/v1/info", None).0, 200);
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(https_bearer(&d, &secret, "GET", "/v1/info").status, 200);
    d.finish();
}

#[test]
fn listener_addresses_default_explicit_and_none() {
    let mut d = TestDaemon::start();
    let ns = d.netns().to_owned();
    // The default address taken by someone else: the daemon warns and goes on.
    d.stop_daemon();
    let squatter = in_netns(&ns, || std::net::TcpListener::bind(DEFAULT_ADDR).unwrap());
    d.restart();
    assert!(
        d.logs().contains("cannot listen on 127.0.0.1:8443"),
        "{}",
        d.logs()
    );
    assert!(d.daemon_info()["tls_fingerprint"].is_null());
    drop(squatter);
    d.stop_daemon();
    d.restart();
    assert!(d.daemon_info()["tls_fingerprint"].is_string());

    // An explicit address that cannot be had, `none` with an address, a URL: refused at
    // start, before anything runs.
    let other = d.dir.join("other");
    for (listen, says) in [
        (
            vec!["--listen", "192.0.2.77:8443"],
            "cannot listen on 192.0.2.77:8443",
        ),
        (
            vec!["--listen", "none", "--listen", "127.0.0.1:9443"],
            "cannot be combined",
        ),
        (
            vec!["--listen", "http://127.0.0.1:9443"],
            "always serves TLS",
        ),
    ] {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(common::bin())
            .arg("daemon")
            .arg("--state-dir")
            .arg(other.join("state"))
            .arg("--socket")
            .arg(other.join("sock"))
            .args(&listen);
        let out = common::run_command(cmd, None, common::CLI_TIMEOUT);
        assert_ne!(out.code, 0, "{out}");
        assert!(out.stderr.contains(says), "{out}");
    }
    d.finish();
}
