//! The web page's assets and its terminal's WebSocket (`GET /v1/instances/{name}/terminal`),
//! driven without a browser: what the page is served with, the terminal's bytes, its resize
//! and exit messages, its refusals (plain HTTP errors before any upgrade), and the hang-up of
//! a process whose page went away.

mod common;

use std::time::Duration;

use common::websocket::{WsClient, WsMessage};
use common::*;

const WAIT: Duration = Duration::from_secs(15);

fn terminal(d: &TestDaemon, query: &str) -> WsClient {
    WsClient::connect(&d.socket, &format!("/v1/instances/web1/terminal{query}"))
        .unwrap_or_else(|r| panic!("the terminal was refused: {} {:?}", r.status, r.json()))
}

/// Waits for the `{"exit":N}` message (output before it is skipped) and the close after it.
fn exit_status(ws: &mut WsClient) -> i64 {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match ws.recv(left) {
            Some(WsMessage::Binary(_)) => {}
            Some(WsMessage::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("JSON control");
                if let Some(code) = v["exit"].as_i64() {
                    assert_eq!(
                        ws.recv(WAIT),
                        Some(WsMessage::Close),
                        "no close after the exit"
                    );
                    return code;
                }
                panic!("unexpected message {t}");
            }
            other => panic!("the terminal ended without an exit message: {other:?}"),
        }
    }
}

#[test]
fn page_and_assets_are_served_embedded_with_their_types() {
    let d = TestDaemon::start();
    let page = d.api_raw("GET", "/", "text/plain", b"");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&page.body).contains("/ui/app.js"));
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/api.js", "text/javascript"),
        ("/ui/views.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/xterm.css", "text/css"),
    ] {
        let r = d.api_raw("GET", path, "text/plain", b"");
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type")
                .unwrap_or_default()
                .starts_with(kind),
            "{path}: {:?}",
            r.header("content-type")
        );
    }
    // Every module the page imports is served (from the entry point, transitively).
    let mut todo = vec!["app.js".to_owned()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(module) = todo.pop() {
        if !seen.insert(module.clone()) {
            continue;
        }
        let r = d.api_raw("GET", &format!("/ui/{module}"), "text/plain", b"");
        assert_eq!(
            r.status, 200,
            "/ui/{module}, imported by the page, is not served"
        );
        let text = String::from_utf8_lossy(&r.body).into_owned();
        for part in text.split("from './").skip(1) {
            if let Some(name) = part.split('\'').next() {
                todo.push(name.to_owned());
            }
        }
        for part in text.split("import('./").skip(1) {
            if let Some(name) = part.split('\'').next() {
                todo.push(name.to_owned());
            }
        }
    }
    assert!(seen.len() >= 10, "{seen:?}");
    // xterm.js is the whole terminal, not Debian's stub.
    let xterm = d.api_raw("GET", "/ui/xterm.js", "text/plain", b"");
    assert!(xterm.body.len() > 100_000, "{} bytes", xterm.body.len());
    // The page's paths come from the action table, every action of it.
    let actions = d.api_raw("GET", "/ui/actions.js", "text/plain", b"");
    let actions = String::from_utf8_lossy(&actions.body).into_owned();
    for spec in mayfly_api::actions::ACTIONS {
        let entry = format!(
            "\"{}\":[\"{}\",\"{}\"]",
            spec.id,
            spec.method.as_str(),
            spec.path
        );
        assert!(actions.contains(&entry), "{entry} missing from {actions}");
    }
    // What is not a page file is the API's 404.
    let (status, body) = d.api("GET", "/ui/nothing.js", None);
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    d.finish();
}

#[test]
fn terminal_relays_bytes_resizes_and_ends_with_the_exit_status() {
    let d = TestDaemon::start();
    launch(&d, "web1", &[], Some("sleep 3600"));
    wait_state(&d, "web1", "running");

    let mut ws = terminal(&d, "?cols=90&rows=30");
    let mut texts = Vec::new();
    ws.send_binary(b"stty size; echo size-$((1+1))\n");
    let out = ws.output_until("size-2", WAIT, &mut texts);
    assert!(out.contains("30 90"), "{out:?}");
    // The page resizes the terminal with a text message.
    ws.send_text(r#"{"resize":{"cols":100,"rows":40}}"#);
    ws.send_binary(b"stty size; echo size-$((2+1))\n");
    let out = ws.output_until("size-3", WAIT, &mut texts);
    assert!(out.contains("40 100"), "{out:?}");
    // A control message it does not know is answered with an error, and the terminal goes on.
    ws.send_text("hello");
    ws.send_binary(b"echo still-$((3+1))\n");
    ws.output_until("still-4", WAIT, &mut texts);
    assert!(
        texts.iter().any(|t| t.contains("bad control message")),
        "{texts:?}"
    );
    ws.send_binary(b"exit 7\n");
    assert_eq!(exit_status(&mut ws), 7);

    // A command line of the page's choice instead of the login shell (run by `sh -c`).
    let mut ws = terminal(&d, "?command=echo%20%22one%20%20two%22%3B%20exit%205");
    ws.output_until("one  two", WAIT, &mut Vec::new());
    assert_eq!(exit_status(&mut ws), 5);

    // As `exec -t --user --workdir --env`: the user, the directory and the environment asked
    // (`TERM` stays the page's).
    let mut ws = terminal(
        &d,
        "?user=1234%3A1234&workdir=%2Ftmp&env=%5B%22GREETING%3Dhi%20there%22%5D&command=echo%20%22as-%24%28id%20-u%29%3A%24%28id%20-g%29-in-%24%28pwd%29-%24GREETING-%24TERM%22%3B%20exit%200",
    );
    ws.output_until(
        "as-1234:1234-in-/tmp-hi there-xterm-256color",
        WAIT,
        &mut Vec::new(),
    );
    assert_eq!(exit_status(&mut ws), 0);

    d.finish();
}

#[test]
fn terminal_refusals_are_api_errors_before_any_upgrade() {
    let d = TestDaemon::start();
    launch(&d, "web1", &[], Some("sleep 3600"));
    wait_state(&d, "web1", "running");
    launch(&d, "off", &["--no-start"], Some("sleep 3600"));

    let refused = |path: &str, status: u16, code: &str| {
        let r = match WsClient::connect(&d.socket, path) {
            Ok(_) => panic!("{path} was upgraded"),
            Err(r) => r,
        };
        let body = r.json();
        assert_eq!(r.status, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    };
    refused("/v1/instances/nope/terminal", 404, "not_found");
    refused("/v1/instances/off/terminal", 409, "wrong_state");
    refused(
        "/v1/instances/web1/terminal?cols=0",
        400,
        "invalid_argument",
    );
    refused(
        "/v1/instances/web1/terminal?rows=5000",
        400,
        "invalid_argument",
    );
    refused(
        "/v1/instances/web1/terminal?cols=wide",
        400,
        "invalid_argument",
    );
    refused(
        "/v1/instances/web1/terminal?shell=bash",
        400,
        "invalid_argument",
    );
    // An environment that is not a JSON array of KEY=VALUE strings.
    refused(
        "/v1/instances/web1/terminal?env=LANG%3DC",
        400,
        "invalid_argument",
    );
    refused(
        "/v1/instances/web1/terminal?env=%5B%22not%20a%20pair%22%5D",
        400,
        "invalid_argument",
    );
    // Not a WebSocket: the API's error, saying what to do.
    let (status, body) = d.api("GET", "/v1/instances/web1/terminal", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("WebSocket")),
        "{body}"
    );
    // None of them left a process in the instance.
    let ps = d.sh("web1", "ps -o args");
    assert_eq!(
        ps.lines().filter(|l| !l.contains("ps -o")).count(),
        2,
        "{ps}"
    );
    d.finish();
}

#[test]
fn a_page_that_goes_away_hangs_up_its_process() {
    let d = TestDaemon::start();
    launch(&d, "web1", &[], Some("sleep 3600"));
    wait_state(&d, "web1", "running");
    let running = |what: &str| d.sh("web1", "ps -o args").contains(what);

    // A process that dies of SIGHUP.
    let ws = terminal(&d, "?command=sleep%20777");
    wait_until(WAIT, "sleep 777 to run", || running("sleep 777"));
    ws.drop_connection();
    wait_until(WAIT, "sleep 777 to be hung up", || !running("sleep 777"));

    // One that ignores it is killed after the grace period.
    d.sh(
        "web1",
        "printf 'trap \"\" HUP\\nsleep 778\\n' > /stubborn.sh",
    );
    let ws = terminal(&d, "?command=exec%20sh%20/stubborn.sh");
    wait_until(WAIT, "sleep 778 to run", || running("sleep 778"));
    ws.drop_connection();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(running("sh /stubborn.sh"), "SIGHUP was not ignored?");
    wait_until(WAIT, "the stubborn process to be killed", || {
        !running("sh /stubborn.sh")
    });
    d.finish();
}

#[test]
fn over_tcp_the_terminal_needs_the_session_and_the_page_s_own_origin() {
    use common::tls::{DEFAULT_ADDR, create_token, https};
    let d = TestDaemon::start();
    launch(&d, "web1", &[], Some("sleep 3600"));
    wait_state(&d, "web1", "running");
    let ws = [
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "bWF5Zmx5LXRlcm1pbmFsIQ=="),
    ];
    let path = "/v1/instances/web1/terminal";

    // No session: refused before anything runs.
    let r = https(d.netns(), DEFAULT_ADDR, "GET", path, &ws, b"");
    assert_eq!(r.status, 401, "{:?}", r.json());

    // The page's session (the login's cookie) from another site's page: refused.
    let secret = create_token(&d, "web");
    let body = serde_json::json!({ "token": secret }).to_string();
    let login = https(
        d.netns(),
        DEFAULT_ADDR,
        "POST",
        "/v1/login",
        &[],
        body.as_bytes(),
    );
    assert_eq!(login.status, 204, "{:?}", login.json());
    let cookie = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let mut headers = ws.to_vec();
    headers.push(("Cookie", &cookie));
    headers.push(("Origin", "https://evil.example"));
    let r = https(d.netns(), DEFAULT_ADDR, "GET", path, &headers, b"");
    assert_eq!(r.status, 403, "{:?}", r.json());
    assert_eq!(r.json()["error"]["code"], "forbidden", "{:?}", r.json());

    // From the page's own origin it passes authentication (and this client, which does not
    // upgrade, gets the endpoint's own answer).
    headers.pop();
    headers.push(("Origin", "https://localhost:8443"));
    let r = https(d.netns(), DEFAULT_ADDR, "GET", path, &headers, b"");
    assert_eq!(r.status, 400, "{:?}", r.json());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("WebSocket")),
        "{:?}",
        r.json()
    );
    // Nothing ran in the instance.
    let ps = d.sh("web1", "ps -o args");
    assert_eq!(
        ps.lines().filter(|l| !l.contains("ps -o")).count(),
        2,
        "{ps}"
    );
    d.finish();
}

#[test]
fn a_terminal_whose_daemon_is_killed_does_not_outlive_it() {
    let mut d = TestDaemon::start();
    launch(&d, "web1", &[], Some("sleep 3600"));
    wait_state(&d, "web1", "running");
    let mut ws = terminal(&d, "?command=exec%20sleep%20779");
    wait_until(WAIT, "sleep 779 to run", || {
        d.sh("web1", "ps -o args").contains("sleep 779")
    });
    d.kill_daemon();
    // The page sees its terminal end.
    let deadline = std::time::Instant::now() + WAIT;
    while let Some(WsMessage::Binary(_)) =
        ws.recv(deadline.saturating_duration_since(std::time::Instant::now()))
    {}
    d.restart();
    wait_state(&d, "web1", "running");
    // Nobody follows it any more: the terminal's process is gone with the daemon's end of it.
    wait_until(WAIT, "sleep 779 to end", || {
        !d.sh("web1", "ps -o args").contains("sleep 779")
    });
    d.finish();
}
