//! The command line and API of resources: flavors (built-in and own; removal refused while
//! used, naming the users), limit flags and `set` (bad values refused with the accepted forms,
//! before anything is made), pause and resume as `list` and `info` show them, `stats`, and the
//! status codes of the API.

mod common;

use common::{IDLE, TestDaemon, launch, wait_state};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// The names of `flavor list --json`.
fn flavor_names(d: &TestDaemon) -> Vec<String> {
    d.json(&["flavor", "list", "--json"])
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect()
}

/// Launches `name` (no network, an idle init) with `extra` flags.
fn idle(d: &TestDaemon, name: &str, extra: &[&str]) {
    let mut args = vec!["--network", "none"];
    args.extend_from_slice(extra);
    launch(d, name, &args, Some(IDLE));
}

#[test]
fn flavors_are_listed_created_shown_and_removed_only_when_unused() {
    let d = TestDaemon::start();
    // The built-in ones, first, with what they hold.
    let list = d.json(&["flavor", "list", "--json"]);
    let names = flavor_names(&d);
    assert_eq!(names[..4], ["tiny", "small", "medium", "large"], "{list}");
    assert!(list[0]["builtin"].as_bool().unwrap(), "{list}");
    assert_eq!(list[0]["limits"]["memory"], json!(256 * MIB), "{list}");
    let text = d.ok(&["flavor", "list"]);
    assert!(text.starts_with("NAME"), "{text}");
    let tiny = text.lines().find(|l| l.starts_with("tiny")).expect("tiny");
    assert!(
        tiny.contains("built-in") && tiny.contains("cpus=0.5") && tiny.contains("memory=256M"),
        "{tiny}"
    );

    let out = d.ok(&[
        "flavor",
        "create",
        "web-small",
        "--description",
        "front ends",
        "--cpus",
        "0.5",
        "--memory",
        "64M",
        "--pids",
        "64",
    ]);
    assert_eq!(
        out.trim(),
        "created flavor web-small: cpus=0.5 memory=64M pids=64"
    );
    let info = d.json(&["flavor", "info", "web-small", "--json"]);
    assert_eq!(info["builtin"], json!(false), "{info}");
    assert_eq!(info["description"], json!("front ends"), "{info}");
    assert_eq!(info["limits"]["memory"], json!(64 * MIB), "{info}");
    assert_eq!(info["limits"]["cpus"], json!(0.5), "{info}");
    assert!(flavor_names(&d).contains(&"web-small".to_owned()));

    // Taken names: its own, and the built-in ones.
    let out = d.fails(&["flavor", "create", "web-small", "--cpus", "1"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("web-small"), "{out}");
    let out = d.fails(&["flavor", "create", "tiny", "--cpus", "1"]);
    assert!(out.stderr.contains("`tiny` is built in"), "{out}");
    let out = d.fails(&["flavor", "rm", "small"]);
    assert!(out.stderr.contains("`small` is built in"), "{out}");
    let out = d.fails(&["flavor", "create", "nothing"]);
    assert!(out.stderr.contains("holds no limit"), "{out}");

    // An instance from it, one limit over it.
    idle(
        &d,
        "user-one",
        &["--flavor", "web-small", "--memory", "128M"],
    );
    let i = d.info("user-one");
    assert_eq!(i["flavor"], json!("web-small"), "{i}");
    assert_eq!(i["limits"]["memory"], json!(128 * MIB), "{i}");
    assert_eq!(i["limits"]["cpus"], json!(0.5), "{i}");
    assert_eq!(i["limits"]["pids"], json!(64), "{i}");
    let text = d.ok(&["info", "user-one"]);
    assert!(text.contains("flavor:      web-small"), "{text}");
    assert!(
        text.contains("limits:      cpus=0.5 memory=128M pids=64"),
        "{text}"
    );
    assert!(text.contains("oom kills:   0 (this run)"), "{text}");

    // Used: refused, naming the user.
    let out = d.fails(&["flavor", "rm", "web-small"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("user-one"), "{out}");
    let info = d.json(&["flavor", "info", "web-small", "--json"]);
    assert_eq!(info["used_by"], json!(["user-one"]), "{info}");
    let text = d.ok(&["flavor", "info", "web-small"]);
    assert!(text.contains("used by:     user-one"), "{text}");

    d.ok(&["rm", "--force", "user-one"]);
    assert_eq!(
        d.ok(&["flavor", "rm", "web-small"]).trim(),
        "removed flavor web-small"
    );
    let out = d.fails(&["flavor", "info", "web-small"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(!flavor_names(&d).contains(&"web-small".to_owned()));

    // An unknown flavor at launch: nothing is made.
    let out = d.fails(&["launch", "busybox", "--network", "none", "--flavor", "gold"]);
    assert!(
        out.stderr.contains("gold") && out.stderr.contains("mayfly flavor list"),
        "{out}"
    );
    assert!(d.instance_names().is_empty());
    d.finish();
}

#[test]
fn bad_values_are_refused_before_anything_is_made() {
    let d = TestDaemon::start();
    let cases: &[(&str, &str, &str)] = &[
        (
            "--memory",
            "12XB",
            "error: invalid --memory `12XB`: unknown unit (e.g. 512M, 2GiB, 1.5G; K/M/G/T are \
             powers of 1024)",
        ),
        (
            "--memory",
            "-1",
            "invalid --memory `-1`: negative values are not limits",
        ),
        ("--memory", "0", "invalid --memory `0`: zero is not a limit"),
        ("--memory", "1M", "below the minimum of 6 MiB"),
        ("--cpus", "0", "invalid --cpus `0`: zero is not a limit"),
        ("--cpus", "-2", "negative"),
        (
            "--cpus",
            "1.2345",
            "more than 3 decimals (e.g. 2, 0.5, 1.25",
        ),
        ("--pids", "3", "below the minimum of 8"),
        ("--disk", "1K", "below the minimum of 16 MiB"),
        ("--net-rate", "1kbit", "below the minimum of 8kbit"),
        ("--io-max", "rbps=1M,bogus=2", "unknown field `bogus`"),
        ("--cpuset", "3-1", "runs backwards"),
        ("--pids", "none", "leave --pids out"),
    ];
    for (flag, value, says) in cases {
        for verb in [
            &["launch", "busybox", "--network", "none"][..],
            &["run", "--rm", "busybox", "--network", "none"][..],
            &["flavor", "create", "bad"][..],
        ] {
            let arg = format!("{flag}={value}");
            let args: Vec<&str> = verb.iter().copied().chain([arg.as_str()]).collect();
            let out = d.mayfly(&args);
            assert_eq!(out.code, 2, "`{}` is bad usage: {out}", args.join(" "));
            assert!(out.stderr.contains(says), "`{}`: {out}", args.join(" "));
        }
    }
    // A negative value after a space is a value, not a flag.
    for (flag, value) in [("--memory", "-1"), ("--cpus", "-0.5"), ("--pids", "-8")] {
        let out = d.mayfly(&["launch", "busybox", "--network", "none", flag, value]);
        assert_eq!(out.code, 2, "{out}");
        assert!(
            out.stderr.contains(&format!(
                "invalid {flag} `{value}`: negative values are not limits"
            )),
            "{out}"
        );
    }
    // Above the host: the daemon's refusals, nothing made either.
    for (flag, value, says) in [
        ("--memory", "100T", "more than this host's memory"),
        ("--memory-reserve", "100T", "more than this host's memory"),
        ("--cpus", "1024", "online CPU"),
    ] {
        let out = d.fails(&["launch", "busybox", "--network", "none", flag, value]);
        assert_eq!(out.code, 1, "{out}");
        assert!(out.stderr.contains(says), "{flag} {value}: {out}");
        let out = d.fails(&["flavor", "create", "huge", flag, value]);
        assert!(out.stderr.contains(says), "{flag} {value}: {out}");
    }
    let out = d.fails(&[
        "launch",
        "busybox",
        "--network",
        "none",
        "--memory",
        "64M",
        "--memory-reserve",
        "128M",
    ]);
    assert!(
        out.stderr
            .contains("--memory-reserve (128 MiB) is above --memory (64 MiB)"),
        "{out}"
    );
    assert!(d.instance_names().is_empty(), "nothing was made");
    assert_eq!(d.state_entries("instances").len(), 0);
    assert_eq!(flavor_names(&d).len(), 4, "no flavor was made");

    // `set` reads values the same way.
    idle(&d, "victim", &["--no-start", "--memory", "64M"]);
    for (change, says) in [
        (
            "memory=12XB",
            "error: invalid --memory `12XB`: unknown unit",
        ),
        ("memory=0", "zero is not a limit"),
        ("pids=-4", "negative"),
        ("ram=1G", "unknown limit `ram`"),
        ("memory", "is not KEY=VALUE"),
    ] {
        let out = d.mayfly(&["set", "victim", change]);
        assert_eq!(out.code, 2, "{out}");
        assert!(out.stderr.contains(says), "{change}: {out}");
    }
    let out = d.fails(&["set", "victim", "memory=100T"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("more than this host's memory"), "{out}");
    let out = d.fails(&["set", "victim", "memory-reserve=1G"]);
    assert!(out.stderr.contains("is above --memory"), "{out}");
    assert_eq!(
        d.info("victim")["limits"],
        json!({"memory": 64 * MIB}),
        "refused changes changed nothing"
    );
    d.ok(&["rm", "victim"]);
    d.finish();
}

#[test]
fn set_changes_a_stopped_instance_at_its_next_start_and_a_running_one_now() {
    let d = TestDaemon::start();
    idle(&d, "s1", &["--no-start", "--memory", "64M"]);
    let out = d.ok(&["set", "s1", "memory=96M", "pids=100"]);
    assert!(
        out.contains("s1: at the next start: memory=96M (stopped)")
            && out.contains("s1: at the next start: pids=100 (stopped)"),
        "{out}"
    );
    let i = d.info("s1");
    assert_eq!(i["limits"]["memory"], json!(96 * MIB), "{i}");
    assert_eq!(i["limits"]["pids"], json!(100), "{i}");

    d.ok(&["start", "s1"]);
    wait_state(&d, "s1", "running");
    let out = d.ok(&["set", "s1", "memory=128M"]);
    assert!(out.contains("s1: applied now: memory=128M"), "{out}");
    let v = d.json(&["set", "s1", "pids=none", "--json"]);
    assert_eq!(v["applied"], json!(["pids"]), "{v}");
    assert_eq!(v["next_start"], json!([]), "{v}");
    assert_eq!(v["instance"]["limits"], json!({"memory": 128 * MIB}), "{v}");
    // A flavor under the own limits, then none again.
    let v = d.json(&["set", "s1", "--flavor", "tiny", "--json"]);
    assert_eq!(v["instance"]["flavor"], json!("tiny"), "{v}");
    assert_eq!(v["instance"]["limits"]["memory"], json!(128 * MIB), "{v}");
    assert_eq!(v["instance"]["limits"]["pids"], json!(256), "{v}");
    let v = d.json(&["set", "s1", "--flavor", "none", "--json"]);
    assert_eq!(v["instance"].get("flavor"), None, "{v}");
    // Unknown instance and flavor.
    let out = d.fails(&["set", "nosuch", "memory=1G"]);
    assert!(out.stderr.contains("nosuch"), "{out}");
    let out = d.fails(&["set", "s1", "--flavor", "gold"]);
    assert!(out.stderr.contains("mayfly flavor list"), "{out}");
    d.ok(&["rm", "--force", "s1"]);
    d.finish();
}

#[test]
fn publish_copies_flavor_and_limits_only_with_limits() {
    let d = TestDaemon::start();
    idle(&d, "src", &["--flavor", "tiny", "--memory", "64M"]);
    d.sh("src", "echo x > /root/mark");
    d.ok(&["publish", "src", "--as", "plain"]);
    d.ok(&["publish", "src", "--as", "sized", "--limits"]);
    let from = |template: &str, name: &str, extra: &[&str]| {
        let mut args = vec![
            "launch",
            template,
            "--name",
            name,
            "--network",
            "none",
            "--no-start",
        ];
        args.extend_from_slice(extra);
        d.ok(&args);
    };
    from("plain", "from-plain", &[]);
    let i = d.info("from-plain");
    assert_eq!(i.get("flavor"), None, "{i}");
    assert_eq!(i.get("limits"), None, "{i}");
    from("sized", "from-sized", &[]);
    let i = d.info("from-sized");
    assert_eq!(i["flavor"], json!("tiny"), "{i}");
    assert_eq!(i["limits"]["memory"], json!(64 * MIB), "{i}");
    assert_eq!(i["limits"]["pids"], json!(256), "the flavor's: {i}");
    // Flags go over the template's defaults.
    from("sized", "over", &["--memory", "96M"]);
    assert_eq!(d.info("over")["limits"]["memory"], json!(96 * MIB));
    d.ok(&["rm", "--force", "src", "from-plain", "from-sized", "over"]);
    d.ok(&["template", "rm", "plain"]);
    d.ok(&["template", "rm", "sized"]);
    d.finish();
}

#[test]
fn pause_and_resume_show_in_list_and_info() {
    let d = TestDaemon::start();
    idle(&d, "p1", &[]);
    assert_eq!(d.ok(&["pause", "p1"]).trim(), "paused p1");
    assert_eq!(d.state_of("p1").as_deref(), Some("paused"));
    let list = d.ok(&["list"]);
    let row = list
        .lines()
        .find(|l| l.starts_with("p1"))
        .expect("p1 listed");
    assert!(row.contains("paused"), "{list}");
    let text = d.ok(&["info", "p1"]);
    assert!(text.contains("state:       paused"), "{text}");
    assert_eq!(d.ok(&["pause", "p1"]).trim(), "p1: already paused");
    let out = d.fails(&["exec", "p1", "--", "true"]);
    assert!(out.stderr.contains("mayfly resume p1"), "{out}");

    assert_eq!(d.ok(&["resume", "p1"]).trim(), "resumed p1");
    assert_eq!(d.state_of("p1").as_deref(), Some("running"));
    assert_eq!(d.ok(&["resume", "p1"]).trim(), "p1: not paused");

    // A stopped instance cannot be paused; a paused one can be removed.
    idle(&d, "p2", &["--no-start"]);
    let out = d.fails(&["pause", "p2"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("stopped"), "{out}");
    d.ok(&["pause", "p1"]);
    d.ok(&["rm", "--force", "p1", "p2"]);
    assert!(d.instance_names().is_empty());
    d.finish();
}

#[test]
fn stats_gives_one_sample_without_a_terminal_and_every_field_in_json() {
    let d = TestDaemon::start();
    idle(&d, "st1", &["--memory", "64M", "--pids", "50"]);
    idle(&d, "st2", &["--no-start"]);
    let v = d.json(&["stats", "--json"]);
    let all = v.as_array().expect("an array");
    assert_eq!(all.len(), 1, "only the running one by default: {v}");
    let s = &all[0];
    assert_eq!(s["name"], json!("st1"), "{v}");
    assert_eq!(s["state"], json!("running"), "{v}");
    assert_eq!(s["memory_limit"], json!(64 * MIB), "{v}");
    assert_eq!(s["pids_limit"], json!(50), "{v}");
    assert!(s["pids"].as_u64().unwrap() >= 1, "{v}");
    assert!(s["memory_bytes"].as_u64().unwrap() > 0, "{v}");
    for field in [
        "id",
        "cpu_percent",
        "cpu_usage_ns",
        "io_read_bytes",
        "io_write_bytes",
        "net_rx_bytes",
        "net_tx_bytes",
        "oom_kills",
    ] {
        assert!(s.get(field).is_some(), "{field} in {v}");
    }
    // Named: a stopped one shows zeros.
    let v = d.json(&["stats", "st1", "st2", "--json"]);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let st2 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == json!("st2"))
        .expect("st2");
    assert_eq!(st2["state"], json!("stopped"), "{v}");
    assert_eq!(st2["pids"], json!(0), "{v}");
    // Not a terminal: one table and exit (the test's pipe is not a terminal).
    let text = d.ok(&["stats"]);
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("NAME"), "{text}");
    let row = lines.next().expect("a row");
    assert!(
        row.starts_with("st1") && row.contains("/ 64.0 MiB"),
        "{text}"
    );
    assert!(lines.next().is_none(), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no screen control off a terminal: {text:?}"
    );
    let out = d.fails(&["stats", "nosuch"]);
    assert!(out.stderr.contains("nosuch"), "{out}");
    d.ok(&["rm", "--force", "st1", "st2"]);
    d.finish();
}

#[test]
fn stats_on_a_terminal_redraws_every_second_until_ctrl_c() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let d = TestDaemon::start();
    idle(&d, "tty1", &["--memory", "64M"]);
    // `script` gives the CLI a terminal; a Ctrl-C typed on it is a SIGINT to the CLI. `script`
    // runs the command through $SHELL (sh when unset, as in CI); `exec` leaves the CLI alone in
    // the terminal's process group, or the shell would take the SIGINT too and exit with 130.
    let mut child = Command::new("script")
        .args([
            "-qfec",
            &format!("exec {} stats", common::bin()),
            "/dev/null",
        ])
        .env_remove("SHELL")
        .env("MAYFLY_SOCKET", &d.socket)
        .env_remove("MAYFLY_STATE_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    const CLEAR: &str = "\x1b[H\x1b[2J";
    let mut seen = Vec::new();
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(15) {
        if let Ok(bytes) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.extend(bytes);
        }
        if String::from_utf8_lossy(&seen).matches(CLEAR).count() >= 3 {
            break;
        }
    }
    let frames = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        frames.matches(CLEAR).count() >= 3,
        "three frames within 15 s: {frames:?}"
    );
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "frames come about a second apart, not at once ({waited:?})"
    );
    let last = frames.rsplit(CLEAR).next().unwrap_or_default();
    assert!(last.contains("NAME") && last.contains("tty1"), "{last:?}");

    child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"\x03")
        .expect("type Ctrl-C");
    let ok = common::poll_until(Duration::from_secs(5), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !ok {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    assert!(ok, "stats left within 5 s of Ctrl-C");
    assert_eq!(status.code(), Some(0), "Ctrl-C is a clean exit");
    d.ok(&["rm", "--force", "tty1"]);
    d.finish();
}

#[test]
fn the_api_answers_resources_with_the_right_status_codes() {
    let d = TestDaemon::start();
    let (status, list) = d.api("GET", "/v1/flavors", None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");

    let flavor = json!({"name": "api-one", "description": "d", "limits": {"memory": 64 * MIB}});
    let (status, body) = d.api("POST", "/v1/flavors", Some(&flavor));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["limits"]["memory"], json!(64 * MIB), "{body}");
    let code = |body: &Value| {
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let (status, body) = d.api("POST", "/v1/flavors", Some(&flavor));
    assert_eq!(
        (status, code(&body)),
        (409, "already_exists".into()),
        "{body}"
    );
    let (status, body) = d.api(
        "POST",
        "/v1/flavors",
        Some(&json!({"name": "small", "limits": {"pids": 64}})),
    );
    assert_eq!(status, 409, "{body}");
    for (bad, says) in [
        (
            json!({"name": "x", "limits": {"memory": 0}}),
            "invalid --memory `0`",
        ),
        (json!({"name": "x", "limits": {}}), "holds no limit"),
        (json!({"name": "x", "limits": {"ram": 1}}), "unknown field"),
        (
            json!({"name": "Bad_Name", "limits": {"pids": 64}}),
            "invalid flavor name",
        ),
        (
            json!({"name": "none", "limits": {"pids": 64}}),
            "`none` cannot be",
        ),
        (
            json!({"name": "x", "limits": {"memory": 64 * MIB, "memory_reserve": 128 * MIB}}),
            "is above --memory",
        ),
    ] {
        let (status, body) = d.api("POST", "/v1/flavors", Some(&bad));
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_argument".into()),
            "{bad}: {body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    let (status, body) = d.api("GET", "/v1/flavors/api-one", None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = d.api("GET", "/v1/flavors/nosuch", None);
    assert_eq!((status, code(&body)), (404, "not_found".into()), "{body}");
    let (status, body) = d.api("DELETE", "/v1/flavors/tiny", None);
    assert_eq!(status, 409, "{body}");
    let (status, body) = d.api("PUT", "/v1/flavors", None);
    assert_eq!(status, 405, "{body}");

    idle(&d, "a1", &["--no-start", "--flavor", "api-one"]);
    let (status, body) = d.api("DELETE", "/v1/flavors/api-one", None);
    assert_eq!((status, code(&body)), (409, "in_use".into()), "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("a1"),
        "{body}"
    );

    let patch = |b: Value| d.api("PATCH", "/v1/instances/a1/limits", Some(&b));
    let (status, body) = patch(json!({"changes": [["memory", "12XB"]]}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        json!(
            "invalid --memory `12XB`: unknown unit (e.g. 512M, 2GiB, 1.5G; K/M/G/T are powers of 1024)"
        ),
        "the CLI's message: {body}"
    );
    let (status, body) = patch(json!({}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = patch(json!({"flavor": "gold"}));
    assert_eq!(status, 404, "{body}");
    let (status, body) = patch(json!({"changes": [["pids", "64"]]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["next_start"], json!([["pids", "stopped"]]), "{body}");
    let (status, body) = d.api(
        "PATCH",
        "/v1/instances/nosuch/limits",
        Some(&json!({"changes": [["pids", "64"]]})),
    );
    assert_eq!(status, 404, "{body}");

    let (status, body) = d.api("POST", "/v1/instances/a1/pause", None);
    assert_eq!((status, code(&body)), (409, "wrong_state".into()), "{body}");
    let (status, body) = d.api("POST", "/v1/instances/nosuch/resume", None);
    assert_eq!(status, 404, "{body}");

    let (status, body) = d.api("GET", "/v1/stats", None);
    assert_eq!((status, body.clone()), (200, json!([])), "{body}");
    let (status, body) = d.api("GET", "/v1/stats?instances=a1", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["state"], json!("stopped"), "{body}");
    let (status, body) = d.api("GET", "/v1/stats?instances=Bad_Name", None);
    assert_eq!(status, 400, "{body}");
    let (status, body) = d.api("GET", "/v1/stats?instances=nosuch", None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = d.api("GET", "/v1/stats?bogus=1", None);
    assert_eq!(status, 400, "{body}");

    d.ok(&["rm", "a1"]);
    let (status, _) = d.api("DELETE", "/v1/flavors/api-one", None);
    assert_eq!(status, 204);
    d.finish();
}
