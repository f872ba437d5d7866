//! Schedules: `schedule add|list|rm` and their API, refusals, `launch --reset-at`, due
//! reset/restart/snapshot actions run when the (test) clock passes them, `--keep` pruning,
//! and a run missed while the daemon was down run once at start-up.
//!
//! The daemons take their "now" from a test clock file (`MAYFLY_TEST_CLOCK`) that the tests
//! move forward; nothing waits for real time to pass. `TZ=UTC`: local time is UTC.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{IDLE, SETTLE, TestDaemon, exists_in, launch, wait_until};
use serde_json::{Value, json};

/// A daemon on a test clock set to `start` (Unix seconds); the clock file's directory.
fn daemon(start: i64) -> (TestDaemon, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a directory for the clock");
    let clock = dir.path().join("clock");
    set_clock(&clock, start);
    let d = TestDaemon::start_with_env(
        &[],
        &[
            ("MAYFLY_TEST_CLOCK", clock.to_str().unwrap()),
            ("TZ", "UTC"),
        ],
    );
    (d, dir, clock)
}

fn set_clock(clock: &Path, secs: i64) {
    std::fs::write(clock, secs.to_string()).expect("write the test clock");
}

fn secs(rfc3339: &str) -> i64 {
    let t = humantime::parse_rfc3339(rfc3339).expect("an RFC 3339 time");
    i64::try_from(t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// 2030-01-01 00:10:00 UTC.
const T0: i64 = 1_893_456_600;

fn schedule(d: &TestDaemon, id: u64) -> Value {
    let all = d.json(&["schedule", "list", "--json"]);
    all.as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no schedule {id} in {all}"))
}

fn add(d: &TestDaemon, args: &[&str]) -> u64 {
    let mut all = vec!["schedule", "add"];
    all.extend_from_slice(args);
    all.push("--json");
    d.json(&all)["id"].as_u64().expect("an id")
}

/// Moves the clock to schedule `id`'s next run (plus `late` seconds) and waits for the run.
fn run_next(d: &TestDaemon, clock: &Path, id: u64, late: i64) -> i64 {
    let s = schedule(d, id);
    let next = secs(s["next_run"].as_str().expect("a next run"));
    set_clock(clock, next + late);
    wait_until(SETTLE, "the schedule to run", || {
        schedule(d, id)["last_run"]
            .as_str()
            .is_some_and(|t| secs(t) == next + late)
    });
    let s = schedule(d, id);
    assert!(s.get("last_error").is_none(), "{s}");
    next + late
}

fn sched_snapshots(d: &TestDaemon, name: &str, id: u64) -> Vec<String> {
    let prefix = format!("sched-{id}-");
    let mut v: Vec<String> = d
        .json(&["snapshot", "list", name, "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

#[test]
fn schedules_are_added_listed_and_removed_from_the_cli_and_the_api() {
    let (d, _dir, _clock) = daemon(T0);
    launch(&d, "sc-web", &[], Some(IDLE));
    launch(&d, "sc-eph", &["--ephemeral"], Some(IDLE));

    let out = d.ok(&["schedule", "add", "sc-web", "reset", "0 3 * * *"]);
    assert!(out.contains("added: reset sc-web at `0 3 * * *`"), "{out}");
    assert!(out.contains("next run 2030-01-01T03:00:00Z"), "{out}");
    let daily = add(&d, &["sc-web", "restart", "04:30"]);
    assert_eq!(schedule(&d, daily)["cron"], "30 4 * * *");
    assert_eq!(schedule(&d, daily)["next_run"], "2030-01-01T04:30:00Z");
    let snap = add(&d, &["sc-web", "snapshot", "0 * * * *", "--keep", "2"]);
    assert_eq!(schedule(&d, snap)["keep"], 2);

    // Refusals, with the reason.
    for (args, needle) in [
        (
            vec!["sc-web", "reset", "0 3 * *"],
            "invalid cron expression `0 3 * *`",
        ),
        (
            vec!["sc-web", "reset", "0 0 3 * * *"],
            "invalid cron expression",
        ),
        (
            vec!["sc-web", "reset", "61 * * * *"],
            "invalid cron expression",
        ),
        (vec!["sc-web", "reset", "25:00"], "invalid time of day"),
        (vec!["sc-web", "reset", "0 0 30 2 *"], "never comes round"),
        (
            vec!["sc-web", "reset", "0 3 * * *", "--keep", "2"],
            "--keep applies to snapshot schedules only",
        ),
        (
            vec!["sc-web", "snapshot", "0 3 * * *", "--keep", "0"],
            "--keep 0 is out of range",
        ),
        (vec!["sc-eph", "reset", "0 3 * * *"], "is ephemeral"),
        (vec!["sc-none", "reset", "0 3 * * *"], "does not exist"),
    ] {
        let mut all = vec!["schedule", "add"];
        all.extend_from_slice(&args);
        let out = d.fails(&all);
        assert!(out.stderr.contains(needle), "{args:?}: {out}");
    }
    let out = d.fails(&["schedule", "add", "sc-web", "reboot", "0 3 * * *"]);
    assert!(
        out.stderr.contains("unknown scheduled action `reboot`"),
        "{out}"
    );

    // The API.
    let (status, body) = d.api(
        "POST",
        "/v1/instances/sc-web/schedules",
        Some(&json!({"action": "snapshot", "cron": "*/15 * * * *"})),
    );
    assert_eq!(status, 201, "{body}");
    let api_id = body["id"].as_u64().unwrap();
    assert_eq!(body["instance"], "sc-web");
    assert_eq!(body["next_run"], "2030-01-01T00:15:00Z", "{body}");
    let (status, body) = d.api(
        "POST",
        "/v1/instances/sc-web/schedules",
        Some(&json!({"action": "reset", "cron": "every day"})),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_argument", "{body}");
    assert!(
        body["error"]["hint"].as_str().unwrap().contains("5 fields"),
        "{body}"
    );
    let (status, _) = d.api(
        "POST",
        "/v1/instances/sc-none/schedules",
        Some(&json!({"action": "reset", "cron": "0 3 * * *"})),
    );
    assert_eq!(status, 404);
    let (status, body) = d.api(
        "POST",
        "/v1/instances/sc-web/schedules",
        Some(&json!({"action": "reset", "cron": "0 3 * * *", "when": 1})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = d.api("GET", "/v1/schedules", None);
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 4, "{body}");
    let (status, body) = d.api("GET", "/v1/instances/sc-web/schedules", None);
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 4, "{body}");
    let (status, body) = d.api("DELETE", "/v1/instances/sc-web/schedules/x", None);
    assert_eq!(status, 400, "{body}");
    let (status, body) = d.api("DELETE", "/v1/instances/sc-eph/schedules/1", None);
    assert_eq!(status, 404, "only through its own instance: {body}");
    let (status, _) = d.api(
        "DELETE",
        &format!("/v1/instances/sc-web/schedules/{api_id}"),
        None,
    );
    assert_eq!(status, 204);

    // list and rm from the CLI.
    let text = d.ok(&["schedule", "list"]);
    assert!(
        text.contains("snapshot (keep 2)") && text.contains("30 4 * * *"),
        "{text}"
    );
    assert_eq!(d.json(&["schedule", "list", "sc-eph", "--json"]), json!([]));
    let out = d.ok(&["schedule", "rm", &daily.to_string()]);
    assert!(
        out.contains(&format!("removed schedule {daily} of sc-web")),
        "{out}"
    );
    let out = d.fails(&["schedule", "rm", &daily.to_string()]);
    assert!(out.stderr.contains("does not exist"), "{out}");
    assert_eq!(
        d.json(&["schedule", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // launch --reset-at makes a daily reset schedule; a bad time is refused before anything.
    launch(&d, "sc-nightly", &["--reset-at", "03:00"], Some(IDLE));
    let list = d.json(&["schedule", "list", "sc-nightly", "--json"]);
    assert_eq!(list[0]["action"], "reset", "{list}");
    assert_eq!(list[0]["cron"], "0 3 * * *", "{list}");
    let out = d.fails(&["launch", "busybox", "--name", "sc-bad", "--reset-at", "3pm"]);
    assert!(out.stderr.contains("invalid time of day `3pm`"), "{out}");
    assert!(common::is_gone(&d, "sc-bad"));
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "sc-bad",
        "--ephemeral",
        "--reset-at",
        "03:00",
    ]);
    assert!(out.stderr.contains("ephemeral"), "{out}");
    assert!(common::is_gone(&d, "sc-bad"));
    // rm of an instance takes its schedules.
    d.ok(&["rm", "--force", "sc-nightly"]);
    let out = d.fails(&["schedule", "list", "sc-nightly"]);
    assert!(out.stderr.contains("does not exist"), "{out}");
    assert_eq!(
        d.json(&["schedule", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    d.finish();
}

#[test]
fn due_resets_restarts_and_snapshots_run_when_the_clock_passes_them() {
    let (d, _dir, clock) = daemon(T0);
    launch(&d, "sc-reset", &[], Some(IDLE));
    launch(&d, "sc-restart", &["--persistent"], Some(IDLE));
    launch(&d, "sc-snap", &["--persistent"], Some(IDLE));
    d.sh("sc-reset", "echo x > /root/mark");
    d.sh("sc-restart", "echo x > /root/mark");
    let reset = add(&d, &["sc-reset", "reset", "0 1 * * *"]);
    let restart = add(&d, &["sc-restart", "restart", "0 2 * * *"]);
    let snap = add(&d, &["sc-snap", "snapshot", "0 * * * *", "--keep", "2"]);

    // Nothing runs before its time.
    set_clock(&clock, T0 + 600);
    std::thread::sleep(Duration::from_millis(500));
    assert!(schedule(&d, reset).get("last_run").is_none());
    assert!(sched_snapshots(&d, "sc-snap", snap).is_empty());

    let pid = d.pid_of("sc-reset");
    run_next(&d, &clock, reset, 5);
    assert_ne!(
        d.pid_of("sc-reset"),
        pid,
        "reset restarts a running instance"
    );
    assert!(
        !exists_in(&d, "sc-reset", "/root/mark"),
        "reset discarded the writable layer"
    );

    let pid = d.pid_of("sc-restart");
    run_next(&d, &clock, restart, 0);
    assert_ne!(d.pid_of("sc-restart"), pid);
    assert!(
        exists_in(&d, "sc-restart", "/root/mark"),
        "a persistent instance keeps its layer"
    );

    // The clock is now past 02:00: the hourly snapshot is due for 01:00 ... runs once.
    let mut made = Vec::new();
    for _ in 0..3 {
        let at = run_next(&d, &clock, snap, 60);
        made.push(at);
    }
    let names = sched_snapshots(&d, "sc-snap", snap);
    assert_eq!(names.len(), 2, "pruned to the newest two: {names:?}");
    let stamp = |t: i64| {
        let s = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap()),
        )
        .to_string();
        // 2030-01-01T03:01:00Z → 20300101-0301
        format!(
            "sched-{snap}-{}{}{}-{}{}",
            &s[0..4],
            &s[5..7],
            &s[8..10],
            &s[11..13],
            &s[14..16]
        )
    };
    assert_eq!(names, vec![stamp(made[1]), stamp(made[2])]);
    // A snapshot taken by hand is never pruned.
    d.ok(&["snapshot", "create", "sc-snap", "mine"]);
    run_next(&d, &clock, snap, 0);
    assert_eq!(sched_snapshots(&d, "sc-snap", snap).len(), 2);
    assert!(d.ok(&["snapshot", "list", "sc-snap"]).contains("mine"));

    // The `sched-` names are the schedules': a hand-made one is refused (it would be pruned).
    let next = secs(schedule(&d, snap)["next_run"].as_str().unwrap());
    let out = d.fails(&["snapshot", "create", "sc-snap", &stamp(next)]);
    assert!(
        out.stderr.contains("kept for the snapshots of schedules"),
        "{out}"
    );
    let (status, body) = d.api(
        "POST",
        "/v1/instances/sc-snap/snapshots",
        Some(&serde_json::json!({"name": "sched-99-x"})),
    );
    assert_eq!(status, 400, "{body}");
    d.finish();
}

#[test]
fn a_failing_action_is_recorded_and_the_schedule_goes_on() {
    let dir = tempfile::tempdir().expect("a directory for the clock");
    let clock = dir.path().join("clock");
    set_clock(&clock, T0);
    let d = TestDaemon::start_with_env(
        &[],
        &[
            ("MAYFLY_TEST_CLOCK", clock.to_str().unwrap()),
            ("TZ", "UTC"),
            ("MAYFLY_FAIL_AT", "schedule:action"),
        ],
    );
    launch(&d, "sc-fail", &[], Some(IDLE));
    let id = add(&d, &["sc-fail", "restart", "0 * * * *"]);
    for _ in 0..2 {
        let next = secs(schedule(&d, id)["next_run"].as_str().unwrap());
        set_clock(&clock, next);
        wait_until(SETTLE, "the failed run to be recorded", || {
            schedule(&d, id)["last_run"]
                .as_str()
                .is_some_and(|t| secs(t) == next)
        });
        let s = schedule(&d, id);
        assert!(
            s["last_error"]
                .as_str()
                .unwrap()
                .contains("injected failure"),
            "{s}"
        );
    }
    let text = d.ok(&["schedule", "list", "sc-fail"]);
    assert!(text.contains("injected failure"), "{text}");
    d.finish();
}

#[test]
fn launch_reset_at_counts_from_the_scheduler_clock() {
    let (d, _dir, _clock) = daemon(T0);
    launch(&d, "sc-at", &["--reset-at", "03:00"], Some(IDLE));
    let list = d.json(&["schedule", "list", "sc-at", "--json"]);
    // The test clock says 2030-01-01 00:10: the first reset is that night, not one counted
    // from the real time.
    assert_eq!(list[0]["next_run"], "2030-01-01T03:00:00Z", "{list}");
    assert_eq!(secs(list[0]["created_at"].as_str().unwrap()), T0, "{list}");
    d.finish();
}

#[test]
fn a_run_missed_while_the_daemon_was_down_runs_once_at_start_up() {
    let (mut d, _dir, clock) = daemon(T0);
    launch(&d, "sc-missed", &["--persistent"], Some(IDLE));
    let snap = add(&d, &["sc-missed", "snapshot", "0 * * * *"]);
    d.stop_daemon();
    // Five occurrences pass while no daemon runs.
    let later = T0 + 5 * 3600;
    set_clock(&clock, later);
    d.restart();
    wait_until(SETTLE, "the missed run", || {
        schedule(&d, snap)["last_run"].is_string()
    });
    std::thread::sleep(Duration::from_millis(1000));
    let names = sched_snapshots(&d, "sc-missed", snap);
    assert_eq!(
        names.len(),
        1,
        "once, not once per missed occurrence: {names:?}"
    );
    let s = schedule(&d, snap);
    assert_eq!(secs(s["last_run"].as_str().unwrap()), later);
    assert_eq!(s["next_run"], "2030-01-01T06:00:00Z", "{s}");
    // And it survived the restart: the next one runs too.
    run_next(&d, &clock, snap, 0);
    assert_eq!(sched_snapshots(&d, "sc-missed", snap).len(), 2);
    d.ok(&["rm", "--force", "sc-missed"]);
    d.finish();
}

#[test]
fn a_run_that_cannot_be_recorded_is_not_repeated_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock");
    set_clock(&clock, T0);
    let d = TestDaemon::start_with_env(
        &[],
        &[
            ("MAYFLY_TEST_CLOCK", clock.to_str().unwrap()),
            ("TZ", "UTC"),
            ("MAYFLY_FAIL_AT", "schedule:record"),
        ],
    );
    launch(&d, "sc-norec", &[], Some("echo run; exec sleep 1000"));
    let id = add(&d, &["sc-norec", "restart", "0 * * * *"]);
    let pid = d.pid_of("sc-norec");
    set_clock(&clock, T0 + 3600);
    wait_until(SETTLE, "the scheduled restart", || {
        d.state_of("sc-norec").as_deref() == Some("running") && d.pid_of("sc-norec") != pid
    });
    std::thread::sleep(Duration::from_millis(1500));
    let runs = common::logs(&d, "sc-norec")
        .lines()
        .filter(|l| *l == "run")
        .count();
    assert_eq!(runs, 2, "restarted once, not again and again");
    assert!(schedule(&d, id).get("last_run").is_none());
    d.finish();
}

#[test]
fn a_busy_instance_is_tried_again_not_skipped() {
    let (d, _dir, clock) = daemon(T0);
    // An init that ignores SIGTERM: `stop --timeout 5` holds the instance for 5 s.
    launch(
        &d,
        "sc-busy",
        &[],
        Some("trap 'echo term' TERM; echo run; while :; do sleep 0.1; done"),
    );
    let id = add(&d, &["sc-busy", "restart", "0 * * * *"]);
    std::thread::scope(|s| {
        let stopping = s.spawn(|| d.mayfly(&["stop", "--timeout", "5", "sc-busy"]));
        wait_until(SETTLE, "the stop to begin", || {
            d.state_of("sc-busy").as_deref() == Some("stopping")
        });
        set_clock(&clock, T0 + 3600);
        wait_until(SETTLE, "the schedule to find it busy", || {
            schedule(&d, id)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("busy with `stop`"))
        });
        assert!(schedule(&d, id).get("last_run").is_none());
        let out = stopping.join().unwrap();
        assert!(out.success(), "{out}");
    });
    // Tried again once the stop is over: it finds the instance stopped by its user, and a
    // scheduled restart does not undo a stop (it is skipped, and says so).
    wait_until(Duration::from_secs(20), "the retried run", || {
        schedule(&d, id)["last_run"].is_string()
    });
    let s = schedule(&d, id);
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("is stopped")),
        "{s}"
    );
    assert_eq!(d.state_of("sc-busy").as_deref(), Some("stopped"));
    // A paused instance is left alone too.
    d.ok(&["start", "sc-busy"]);
    d.ok(&["pause", "sc-busy"]);
    set_clock(&clock, T0 + 2 * 3600);
    wait_until(SETTLE, "the run on the paused instance", || {
        schedule(&d, id)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("is paused"))
    });
    assert_eq!(d.state_of("sc-busy").as_deref(), Some("paused"));
    d.ok(&["rm", "--force", "sc-busy"]);
    d.finish();
}
