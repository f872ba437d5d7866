//! Remote access: the TCP listener serves the API over TLS and only to callers that
//! authenticate (a bearer token, or the web page's session cookie); the unix socket needs
//! nothing. Every client runs inside the daemon's network namespace.

mod common;

use common::TestDaemon;
use common::tls::{DEFAULT_ADDR, create_token, https, https_bearer};

fn code(r: &common::HttpResponse) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn tcp_needs_a_valid_token_and_the_unix_socket_needs_nothing() {
    let d = TestDaemon::start();
    let ns = d.netns().to_owned();

    // Without credentials: 401 with the API's error body and what to do.
    let r = https(&ns, DEFAULT_ADDR, "GET", "/v1/info", &[], b"");
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(code(&r), "unauthenticated");
    assert!(
        r.json()["error"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("mayfly token create")),
        "{}",
        r.json()
    );
    assert!(r.header("www-authenticate").is_some());
    // Metrics too; a wrong token and a header that is not a bearer token likewise.
    assert_eq!(
        https(&ns, DEFAULT_ADDR, "GET", "/metrics", &[], b"").status,
        401
    );
    assert_eq!(
        https_bearer(&d, "mayfly_not-a-token", "GET", "/v1/info").status,
        401
    );
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "GET",
        "/v1/instances",
        &[("Authorization", "Basic cm9vdDpyb290")],
        b"",
    );
    assert_eq!(r.status, 401);

    // The unix socket needs nothing.
    let (status, info) = d.api("GET", "/v1/info", None);
    assert_eq!(status, 200, "{info}");

    // With a token: served.
    let secret = create_token(&d, "ci");
    let r = https_bearer(&d, &secret, "GET", "/v1/info");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["version"], info["version"]);
    let listed = d.json(&["token", "list", "--json"]);
    assert_eq!(listed[0]["name"], "ci");
    assert!(listed[0]["last_used"].is_string(), "{listed}");
    assert!(
        !d.ok(&["token", "list", "--json"]).contains(&secret),
        "the secret is never listed"
    );

    // Tokens cannot be made or revoked over TCP, even with a valid token.
    let auth = format!("Bearer {secret}");
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "POST",
        "/v1/tokens",
        &[("Authorization", &auth)],
        br#"{"name":"more"}"#,
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(code(&r), "forbidden");
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "DELETE",
        "/v1/tokens/ci",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 403);

    // Revoked: refused at once.
    assert!(
        d.ok(&["token", "revoke", "ci"])
            .contains("revoked token ci")
    );
    let r = https_bearer(&d, &secret, "GET", "/v1/info");
    assert_eq!(r.status, 401);
    assert_eq!(code(&r), "unauthenticated");
    // Revoking again says what is wrong.
    let out = d.fails(&["token", "revoke", "ci"]);
    assert!(out.stderr.contains("token `ci` does not exist"), "{out}");
    d.finish();
}

#[test]
fn bad_token_names_are_refused_and_secrets_are_stored_hashed() {
    let d = TestDaemon::start();
    let out = d.fails(&["token", "create", "no/slash"]);
    assert!(out.stderr.contains("token name"), "{out}");
    let secret = create_token(&d, "web");
    let out = d.fails(&["token", "create", "web"]);
    assert!(out.stderr.contains("already exists"), "{out}");
    let db = std::fs::read(d.state.join("mayfly.db")).unwrap_or_default();
    let wal = std::fs::read(d.state.join("mayfly.db-wal")).unwrap_or_default();
    let needle = secret.as_bytes();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the secret is in the database"
        );
    }
    d.finish();
}

#[test]
fn the_login_cookie_needs_the_request_header_and_the_same_origin() {
    let d = TestDaemon::start();
    let ns = d.netns().to_owned();
    let secret = create_token(&d, "page");

    let r = https(
        &ns,
        DEFAULT_ADDR,
        "POST",
        "/v1/login",
        &[],
        br#"{"token":"wrong"}"#,
    );
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    let body = format!(r#"{{"token":"{secret}"}}"#);
    let r = https(&ns, DEFAULT_ADDR, "POST", "/v1/login", &[], body.as_bytes());
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let set = r.header("set-cookie").expect("a cookie").to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("mayfly_session="), "{cookie}");

    // GET with the cookie: served.
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "GET",
        "/v1/instances",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // A change without X-Mayfly-Request: refused (CSRF); with it: it reaches the handler.
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "POST",
        "/v1/instances/nothing/start",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Mayfly-Request")
    );
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "POST",
        "/v1/instances/nothing/start",
        &[("Cookie", &cookie), ("X-Mayfly-Request", "1")],
        b"",
    );
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));

    // A WebSocket from another origin: refused; from the page's own: let through.
    let ws = |origin: &str| {
        https(
            &ns,
            DEFAULT_ADDR,
            "GET",
            "/v1/instances/nothing/terminal?cols=80&rows=24",
            &[
                ("Cookie", &cookie),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Origin", origin),
            ],
            b"",
        )
    };
    assert_eq!(ws("https://evil.example").status, 403);
    let same = ws("https://localhost:8443");
    assert!(
        same.status != 403 && same.status != 401,
        "{} {}",
        same.status,
        String::from_utf8_lossy(&same.body)
    );

    // Logout ends the session.
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "POST",
        "/v1/logout",
        &[("Cookie", &cookie), ("X-Mayfly-Request", "1")],
        b"",
    );
    assert_eq!(r.status, 204);
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "GET",
        "/v1/instances",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(r.status, 401);

    // Revoking the token ends the sessions made from it.
    let r = https(&ns, DEFAULT_ADDR, "POST", "/v1/login", &[], body.as_bytes());
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "GET",
        "/v1/instances",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(r.status, 200);
    d.ok(&["token", "revoke", "page"]);
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "GET",
        "/v1/instances",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(r.status, 401);
    d.finish();
}

#[test]
fn a_broken_certificate_stops_the_start_and_says_what_to_do() {
    let mut d = TestDaemon::start();
    let tls = d.state.join("tls");
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&tls), 0o700);
    assert_eq!(mode(&tls.join("key.pem")), 0o600);
    let fp = d.daemon_info()["tls_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    // Restarts keep the certificate (clients pinned it).
    d.stop_daemon();
    d.restart();
    assert_eq!(d.daemon_info()["tls_fingerprint"], fp.as_str());

    d.stop_daemon();
    std::fs::write(tls.join("cert.pem"), "not a certificate").unwrap();
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", d.netns()))
        .arg("--")
        .arg(common::bin())
        .arg("daemon")
        .arg("--state-dir")
        .arg(&d.state)
        .arg("--socket")
        .arg(&d.socket);
    let out = common::run_command(cmd, None, common::CLI_TIMEOUT);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("cert.pem"), "{out}");
    assert!(out.stderr.contains("to make a new certificate"), "{out}");
    // Removing it, as told, gives a new one.
    std::fs::remove_dir_all(&tls).unwrap();
    d.restart();
    let new = d.daemon_info()["tls_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, fp);
    d.finish();
}

#[test]
fn the_listener_comes_back_after_a_kill_and_a_half_made_certificate_is_made_again() {
    let mut d = TestDaemon::start();
    let secret = create_token(&d, "k");
    let fp = d.daemon_info()["tls_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    // A client connected while the daemon is killed: the next daemon binds the port again
    // and serves the same certificate and tokens.
    let (held, seen) =
        common::tls::in_netns(d.netns(), || common::tls::connect(DEFAULT_ADDR).unwrap());
    assert_eq!(
        seen, fp,
        "the fingerprint the client sees is the one `info` shows"
    );
    d.kill_daemon();
    d.restart();
    drop(held);
    assert_eq!(https_bearer(&d, &secret, "GET", "/v1/info").status, 200);
    assert_eq!(d.daemon_info()["tls_fingerprint"], fp.as_str());

    // Killed between writing the key and the certificate: both are made again.
    d.kill_daemon();
    std::fs::remove_file(d.state.join("tls/cert.pem")).unwrap();
    d.restart();
    let new = d.daemon_info()["tls_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, fp);
    let (_, seen) =
        common::tls::in_netns(d.netns(), || common::tls::connect(DEFAULT_ADDR).unwrap());
    assert_eq!(seen, new);
    d.finish();
}

#[test]
fn an_ended_session_cookie_is_cleared_and_does_not_stop_a_new_login() {
    let d = TestDaemon::start();
    let ns = d.netns().to_owned();
    let secret = create_token(&d, "page");
    // What a browser keeps after the daemon restarted (sessions live in its memory), or after
    // the session's token was revoked.
    let stale = "mayfly_session=00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff";

    // The API refuses it, and tells the browser to forget it.
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "GET",
        "/v1/info",
        &[("Cookie", stale)],
        b"",
    );
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    let set = r
        .header("set-cookie")
        .expect("the cookie cleared")
        .to_owned();
    assert!(set.starts_with("mayfly_session=;"), "{set}");
    assert!(set.contains("Max-Age=0"), "{set}");

    // The login (public) still works with it: the browser can log in again.
    let body = format!(r#"{{"token":"{secret}"}}"#);
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "POST",
        "/v1/login",
        &[("Cookie", stale), ("X-Mayfly-Request", "1")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let fresh = r.header("set-cookie").expect("a cookie").to_owned();
    let fresh = fresh.split(';').next().unwrap().to_owned();
    let r = https(
        &ns,
        DEFAULT_ADDR,
        "GET",
        "/v1/info",
        &[("Cookie", &fresh)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    d.finish();
}

#[test]
fn a_stopping_daemon_answers_the_request_a_tcp_client_is_sending() {
    use std::io::{Read, Write};
    use std::time::Duration;

    let mut d = TestDaemon::start();
    let ns = d.netns().to_owned();
    let (sent, half_sent) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        common::tls::in_netns(&ns, || {
            let (mut s, _) = common::tls::connect(DEFAULT_ADDR).unwrap();
            let body = br#"{"token":"not-a-token"}"#;
            let head = format!(
                "POST /v1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&body[..5]).unwrap();
            s.flush().unwrap();
            // The daemon is told to stop while the request is on its way.
            sent.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            let _ = s.write_all(&body[5..]);
            let mut raw = Vec::new();
            let _ = s.read_to_end(&mut raw);
            raw
        })
    });
    half_sent.recv().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    d.stop_daemon();
    let raw = client.join().unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 401"),
        "the request was cut by the stop: {:?}",
        String::from_utf8_lossy(&raw)
    );
    d.restart();
    d.finish();
}

#[test]
fn failed_logins_are_limited_per_address_and_cannot_flood_the_audit_log() {
    let d = TestDaemon::start();
    let ns = d.netns().to_owned();
    let secret = create_token(&d, "page");
    let login = |token: &str| {
        let body = format!(r#"{{"token":"{token}"}}"#);
        https(&ns, DEFAULT_ADDR, "POST", "/v1/login", &[], body.as_bytes())
    };
    for _ in 0..10 {
        let r = login("mayfly_wrong");
        assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    }
    // Past ten failures a minute, the address's logins are not even tried (nor recorded).
    for token in ["mayfly_wrong", secret.as_str()] {
        let r = login(token);
        assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(code(&r), "too_many_requests");
        assert_eq!(r.header("retry-after"), Some("60"));
    }
    // A bearer token still works from there.
    assert_eq!(https_bearer(&d, &secret, "GET", "/v1/info").status, 200);

    let failed_logins = || {
        d.ok(&["events", "--json"])
            .lines()
            .filter(|l| l.contains("\"api.login\""))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while failed_logins() < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(failed_logins(), 10);
    d.finish();
}
