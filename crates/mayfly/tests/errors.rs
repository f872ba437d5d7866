//! Names and errors: the instance-name rule, unknown instances for every verb, and the REST
//! API under the CLI with its error codes.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{TestDaemon, assert_refused_with, launch, pid_alive};
use serde_json::{Value, json};

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
        assert_refused_with(&out, &["invalid instance name", rule, "DNS label"]);
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
    assert_refused_with(&out, &["nm-dup", "already exists"]);
    let after = d.info("nm-dup");
    assert_eq!(before["id"], after["id"]);
    assert_eq!(before["pid"], after["pid"]);
    assert_eq!(after["state"], "running");

    // An unknown template: refused, nothing created.
    let out = d.mayfly(&["launch", "no-such-tpl", "--name", "nm-orphan"]);
    assert_refused_with(&out, &["no-such-tpl", "does not exist"]);
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

    // Nothing to do is no error: the instance, with a note.
    let (s, again) = d.api("POST", "/v1/instances/api-one/start", None);
    assert_eq!(s, 200, "start of a running instance: {again}");
    assert_eq!(again["note"], "already running", "{again}");
    assert_eq!(
        again["pid"], started["pid"],
        "a second start changed the run"
    );
    let del = d.api("DELETE", "/v1/instances/api-one", None);
    assert_api_error("delete of a running instance", &del, 409, "wrong_state");

    let (s, body) = d.api(
        "POST",
        "/v1/instances/api-one/stop",
        Some(&json!({"timeout": 5})),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["state"], "stopped", "{body}");
    assert!(
        body.get("note").is_none(),
        "a real stop has no note: {body}"
    );
    assert!(!pid_alive(pid), "stopped over the API, the init runs");
    let (_, info) = d.api("GET", "/v1/instances/api-one", None);
    assert_eq!(info["state"], "stopped");
    let (s, again) = d.api("POST", "/v1/instances/api-one/stop", None);
    assert_eq!(s, 200, "stop of a stopped instance: {again}");
    assert_eq!(again["note"], "already stopped", "{again}");

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
