//! Life-cycle verbs that scripts can rely on: `start` of a running and `stop` of a stopped
//! instance succeed with a note (CLI and API); a refusal's hint fits the action; every exit
//! code of the README's table is provoked; the API answers a wrong method with its JSON error
//! body and takes a trailing slash.

mod common;

use std::time::Duration;

use common::{IDLE, Spawned, TestDaemon, is_gone, launch, pid_alive, wait_state, wait_until};
use rustix::process::Signal;
use serde_json::Value;

#[test]
fn start_of_a_running_and_stop_of_a_stopped_instance_succeed_with_a_note() {
    let d = TestDaemon::start();
    launch(&d, "vb-a", &[], Some(IDLE));
    let pid = d.pid_of("vb-a");

    let out = d.mayfly(&["start", "vb-a"]);
    assert_eq!(out.code, 0, "start of a running instance: {out}");
    assert_eq!(out.stdout.trim(), "vb-a: already running", "{out}");
    assert_eq!(d.pid_of("vb-a"), pid, "a second start touched the run");

    let out = d.mayfly(&["stop", "vb-a"]);
    assert_eq!((out.code, out.stdout.trim()), (0, "stopped vb-a"), "{out}");
    let exit = d.info("vb-a")["last_exit"].clone();
    let out = d.mayfly(&["stop", "vb-a"]);
    assert_eq!(out.code, 0, "stop of a stopped instance: {out}");
    assert_eq!(out.stdout.trim(), "vb-a: already stopped", "{out}");
    assert_eq!(
        d.info("vb-a")["last_exit"],
        exit,
        "a second stop changed the record"
    );

    // Several names: the one that needs it is acted on, the others just noted.
    launch(&d, "vb-b", &["--no-start"], Some(IDLE));
    let out = d.mayfly(&["start", "vb-a", "vb-b"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("started vb-a") && out.stdout.contains("started vb-b"),
        "{out}"
    );
    let out = d.mayfly(&["start", "vb-a", "vb-ghost", "vb-b"]);
    assert_eq!(out.code, 1, "an unknown name still fails: {out}");
    assert!(out.stdout.contains("vb-a: already running"), "{out}");
    assert!(out.stdout.contains("vb-b: already running"), "{out}");
    assert!(out.stderr.contains("vb-ghost"), "{out}");

    // The API: 200 and the instance, with a note when there was nothing to do.
    let (s, body) = d.api("POST", "/v1/instances/vb-a/start", None);
    assert_eq!(
        (s, body["note"].as_str()),
        (200, Some("already running")),
        "{body}"
    );
    assert_eq!(body["state"], "running", "{body}");
    let (s, body) = d.api("POST", "/v1/instances/vb-a/stop", None);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["state"], "stopped", "{body}");
    assert!(
        body.get("note").is_none(),
        "a real stop has no note: {body}"
    );
    let (s, body) = d.api("POST", "/v1/instances/vb-a/stop", None);
    assert_eq!(
        (s, body["note"].as_str()),
        (200, Some("already stopped")),
        "{body}"
    );

    // An ephemeral instance is gone after its stop: the answer is how it was last.
    launch(&d, "vb-eph", &["--ephemeral"], Some(IDLE));
    let id = d.info("vb-eph")["id"].clone();
    let (s, body) = d.api("POST", "/v1/instances/vb-eph/stop", None);
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (&body["id"], &body["state"]),
        (&id, &Value::from("stopped"))
    );
    assert!(
        body["note"].as_str().is_some_and(|n| n.contains("removed")),
        "{body}"
    );
    assert!(is_gone(&d, "vb-eph"));
    launch(&d, "vb-eph2", &["--ephemeral"], Some(IDLE));
    let out = d.mayfly(&["stop", "vb-eph2"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("stopped vb-eph2 (removed"), "{out}");
    // Gone is gone: a stop of it fails, as of any unknown name.
    let out = d.mayfly(&["stop", "vb-eph2"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("does not exist"), "{out}");

    d.ok(&["rm", "--force", "vb-a", "vb-b"]);
    d.finish();
}

/// The hint of a refusal as the CLI prints it.
fn hint_of(err: &str) -> &str {
    err.split("hint:").nth(1).unwrap_or_default()
}

#[test]
fn a_refusal_hints_what_fits_the_action() {
    let d = TestDaemon::start();

    // exec into a stopped instance: start it (not "stop it").
    launch(&d, "hn-off", &["--no-start"], Some(IDLE));
    let out = d.mayfly(&["exec", "hn-off", "--", "true"]);
    assert_eq!(out.code, 125, "{out}");
    assert!(out.stderr.contains("is stopped: cannot exec"), "{out}");
    let hint = hint_of(&out.stderr);
    assert!(hint.contains("mayfly start hn-off"), "{out}");
    assert!(!hint.contains("stop"), "{out}");

    // exec into a stopping instance: wait for the stop, then start it again.
    launch(
        &d,
        "hn-slow",
        &[],
        Some("trap 'echo got-term' TERM; echo ready; while :; do sleep 0.1; done"),
    );
    let mut stopping = Spawned::start(&d, &["stop", "--timeout", "5", "hn-slow"]);
    wait_state(&d, "hn-slow", "stopping");
    let out = d.mayfly(&["exec", "hn-slow", "--", "true"]);
    assert!(out.stderr.contains("is stopping: cannot exec"), "{out}");
    let hint = hint_of(&out.stderr);
    assert!(
        hint.contains("once `mayfly info hn-slow` says stopped") && hint.contains("start"),
        "{out}"
    );
    assert_eq!(stopping.wait(Duration::from_secs(30)), Some(0));

    // rm of a running instance: stop it or force it.
    launch(&d, "hn-on", &[], Some(IDLE));
    let out = d.mayfly(&["rm", "hn-on"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        hint_of(&out.stderr).contains("mayfly rm --force hn-on"),
        "{out}"
    );

    // restart or reset of a running ephemeral instance: refused before anything happens,
    // since its stop would delete it.
    launch(&d, "hn-eph", &["--ephemeral"], Some(IDLE));
    let pid = d.pid_of("hn-eph");
    for verb in ["restart", "reset"] {
        let out = d.mayfly(&[verb, "hn-eph"]);
        assert_eq!(out.code, 1, "{verb}: {out}");
        assert!(
            out.stderr
                .contains(&format!("is ephemeral: a {verb} would delete it")),
            "{verb}: {out}"
        );
        assert!(
            hint_of(&out.stderr).contains("launch a new one"),
            "{verb}: {out}"
        );
        assert!(pid_alive(pid), "a refused {verb} touched the instance");
        assert_eq!(d.pid_of("hn-eph"), pid);
    }

    d.ok(&["rm", "--force", "hn-off", "hn-slow", "hn-on", "hn-eph"]);
    d.finish();
}

// ---- exit codes ------------------------------------------------------------------------------

/// The first cells of the rows of the README's table of exit codes.
fn documented_exit_codes() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## Exit codes")
        .nth(1)
        .expect("README.md has an `## Exit codes` section");
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| code"))
        .filter_map(|l| l.split('|').nth(1).map(|c| c.trim().to_owned()))
        .collect()
}

/// A daemon socket nobody listens on (a file, so that connecting fails at once).
fn dead_socket(d: &TestDaemon) -> std::path::PathBuf {
    let path = d.dir.join("no-daemon.sock");
    std::fs::write(&path, b"").expect("create the dead socket");
    path
}

/// Runs `mayfly ARGS` against `socket` and returns its output.
fn at_socket(d: &TestDaemon, socket: &std::path::Path, args: &[&str]) -> common::Output {
    let mut cmd = d.command(args);
    cmd.env("MAYFLY_SOCKET", socket);
    common::run_command(cmd, None, common::CLI_TIMEOUT)
}

#[test]
fn every_exit_code_in_the_readme_is_what_mayfly_does() {
    let d = TestDaemon::start();
    launch(&d, "ec-box", &[], Some(IDLE));
    let documented = documented_exit_codes();
    let mut provoked = Vec::new();
    for row in &documented {
        match row.as_str() {
            "0" => {
                for args in [
                    &["list"][..],
                    &["start", "ec-box"][..],
                    &["exec", "ec-box", "--", "true"][..],
                    &["run", "--rm", "busybox", "--", "true"][..],
                ] {
                    let out = d.mayfly(args);
                    assert_eq!(out.code, 0, "`mayfly {}`: {out}", args.join(" "));
                }
            }
            "1" => {
                for args in [&["info", "ec-ghost"][..], &["rm", "ec-box"][..]] {
                    let out = d.mayfly(args);
                    assert_eq!(out.code, 1, "`mayfly {}`: {out}", args.join(" "));
                    assert!(out.stderr.contains("hint:"), "{out}");
                }
            }
            "2" => {
                for args in [
                    &["frobnicate"][..],
                    &["start"][..],
                    &["list", "--bogus"][..],
                ] {
                    let out = d.mayfly(args);
                    assert_eq!(out.code, 2, "`mayfly {}`: {out}", args.join(" "));
                }
            }
            "3" => {
                let dead = dead_socket(&d);
                for args in [
                    &["list"][..],
                    &["info"][..],
                    &["start", "ec-box"][..],
                    &["logs", "ec-box"][..],
                    &["template", "list"][..],
                    &["exec", "ec-box", "--", "true"][..],
                    &["run", "--rm", "busybox", "--", "true"][..],
                ] {
                    let out = at_socket(&d, &dead, args);
                    assert_eq!(out.code, 3, "`mayfly {}`: {out}", args.join(" "));
                    assert!(
                        out.stderr.contains("cannot reach the mayfly daemon"),
                        "{out}"
                    );
                }
                // A daemon lost during the request: tests/attached.rs.
            }
            "the program's" => {
                let out = d.mayfly(&["run", "--rm", "busybox", "--", "sh", "-c", "exit 42"]);
                assert_eq!(out.code, 42, "{out}");
                let out = d.mayfly(&["exec", "ec-box", "--", "sh", "-c", "exit 7"]);
                assert_eq!(out.code, 7, "{out}");
                let out = d.mayfly(&["exec", "ec-box", "--", "sh", "-c", "kill -TERM $$"]);
                assert_eq!(out.code, 143, "{out}");
            }
            "125" => {
                let out = d.mayfly(&["exec", "ec-ghost", "--", "true"]);
                assert_eq!(out.code, 125, "{out}");
                let out = d.mayfly(&["run", "--rm", "ec-no-template", "--", "true"]);
                assert_eq!(out.code, 125, "{out}");
            }
            "126" => {
                let out = d.mayfly(&["run", "--rm", "busybox", "--", "/etc/passwd"]);
                assert_eq!(out.code, 126, "{out}");
                let out = d.mayfly(&["exec", "ec-box", "--", "/etc"]);
                assert_eq!(out.code, 126, "{out}");
            }
            "127" => {
                let out = d.mayfly(&["run", "--rm", "busybox", "--", "ec-no-such-program"]);
                assert_eq!(out.code, 127, "{out}");
                let out = d.mayfly(&["exec", "ec-box", "--", "/no/such/program"]);
                assert_eq!(out.code, 127, "{out}");
            }
            "128 + N" => {
                let script = "trap '' INT TERM; echo ready; while :; do sleep 0.1; done";
                for args in [
                    &["run", "--rm", "busybox", "--", "sh", "-c", script][..],
                    &["exec", "ec-box", "--", "sh", "-c", script][..],
                ] {
                    let mut client = Spawned::start(&d, args);
                    client.expect_line("ready", Duration::from_secs(30));
                    client.signal(Signal::INT);
                    std::thread::sleep(Duration::from_millis(300));
                    client.signal(Signal::INT);
                    let code = client.wait(Duration::from_secs(20));
                    assert_eq!(code, Some(130), "`mayfly {}`", args.join(" "));
                }
            }
            other => {
                panic!("README.md documents exit code `{other}`, which this test does not know")
            }
        }
        provoked.push(row.clone());
    }
    for expected in [
        "0",
        "1",
        "2",
        "3",
        "the program's",
        "125",
        "126",
        "127",
        "128 + N",
    ] {
        assert!(
            provoked.iter().any(|p| p == expected),
            "README.md's table of exit codes lacks `{expected}`: {documented:?}"
        );
    }
    wait_until(Duration::from_secs(10), "the runs' instances to go", || {
        d.instance_names() == ["ec-box"]
    });
    d.ok(&["rm", "--force", "ec-box"]);
    d.finish();
}

// ---- the API's edges -------------------------------------------------------------------------

/// Asserts the API's JSON error body with `code`, a message and a hint.
fn assert_error_body(what: &str, got: &common::HttpResponse, status: u16, code: &str) {
    let body = got.json();
    assert_eq!(got.status, status, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    for field in ["message", "hint"] {
        assert!(
            body["error"][field].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: no {field}: {body}"
        );
    }
}

#[test]
fn a_wrong_method_gets_the_json_error_body_and_a_trailing_slash_is_accepted() {
    let d = TestDaemon::start();
    launch(&d, "ap-box", &[], Some(IDLE));
    for (method, path, allowed) in [
        ("DELETE", "/v1/info", "GET"),
        ("PUT", "/v1/instances", "POST"),
        ("GET", "/v1/instances/ap-box/stop", "POST"),
        ("PATCH", "/v1/instances/ap-box", "DELETE"),
        ("POST", "/v1/templates/busybox", "GET"),
        ("DELETE", "/v1/run", "POST"),
    ] {
        let r = d.api_raw(method, path, "application/json", b"");
        let what = format!("{method} {path}");
        assert_error_body(&what, &r, 405, "method_not_allowed");
        let body = r.json();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(method) && message.contains(path),
            "{what}: {body}"
        );
        let hint = body["error"]["hint"].as_str().unwrap_or_default();
        assert!(
            hint.contains(allowed),
            "{what}: the hint names {allowed}: {body}"
        );
        assert!(
            r.header("allow").is_some_and(|a| a.contains(allowed)),
            "{what}: the Allow header stays: {:?}",
            r.headers
        );
    }
    assert_eq!(d.state_of("ap-box").as_deref(), Some("running"));

    // A trailing slash is the same path, query included.
    let (s, list) = d.api("GET", "/v1/instances/", None);
    assert_eq!(s, 200, "{list}");
    assert_eq!(list[0]["name"], "ap-box", "{list}");
    let (s, info) = d.api("GET", "/v1/instances/ap-box/", None);
    assert_eq!((s, &info["name"]), (200, &Value::from("ap-box")), "{info}");
    let r = d.api_raw(
        "GET",
        "/v1/instances/ap-box/logs/?tail=1",
        "application/json",
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (s, stopped) = d.api("POST", "/v1/instances/ap-box/stop/", None);
    assert_eq!(
        (s, &stopped["state"]),
        (200, &Value::from("stopped")),
        "{stopped}"
    );
    let (s, info) = d.api("GET", "/v1/info/", None);
    assert_eq!(s, 200, "{info}");

    // What does not exist, with or without the slash, is a 404 with the body.
    for path in [
        "/v1/nothing",
        "/v1/nothing/",
        "/v1/instances/ap-box/nothing/",
    ] {
        let r = d.api_raw("GET", path, "application/json", b"");
        assert_error_body(path, &r, 404, "not_found");
    }
    d.ok(&["rm", "--force", "ap-box"]);
    d.finish();
}

#[test]
fn a_command_whose_reader_left_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let d = TestDaemon::start();
    for n in 0..3 {
        launch(&d, &format!("quiet{n}"), &[], None);
    }
    // `mayfly list | head -0`: the reader is gone before the CLI writes a line.
    for args in [&["list"][..], &["template", "info", "busybox"][..]] {
        let mut cmd = d.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the CLI");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait for the CLI");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "`mayfly {}` with no reader: {stderr}",
            args.join(" ")
        );
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "`mayfly {}` ends as `ls | head` does: {:?} {stderr}",
            args.join(" "),
            out.status
        );
    }
    for n in 0..3 {
        d.ok(&["rm", "--force", &format!("quiet{n}")]);
    }
    d.finish();
}
