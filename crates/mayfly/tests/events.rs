//! The event log: life-cycle events and audit records in order, with who and how; kept across
//! daemon restarts and kills; bounded; filtered by time and number; followed live.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{
    SETTLE, TestDaemon, events, in_order, kinds_about, launch, line_reader, ndjson, poll_until,
    wait_event,
};
use serde_json::{Value, json};

/// The local root's actor (the unix socket's caller).
const ROOT: &str = "unix:uid=0";

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn strictly_increasing(s: &[u64]) -> bool {
    s.windows(2).all(|w| w[0] < w[1])
}

#[test]
fn life_cycle_events_and_audit_records_arrive_in_order_with_caller_and_outcome() {
    let d = TestDaemon::start();
    launch(&d, "ev-box", &[], Some(common::imports::IDLE));
    d.ok(&["snapshot", "create", "ev-box", "s1"]);
    d.ok(&["reset", "ev-box"]);
    d.ok(&["stop", "ev-box"]);
    // Refused: no such instance; and a removal refused because of the snapshot.
    d.fails(&["start", "ev-nosuch"]);
    d.fails(&["rm", "ev-box"]);
    d.ok(&["snapshot", "rm", "ev-box", "s1"]);
    d.ok(&["rm", "ev-box"]);
    wait_event(&d, "api.instance.remove", "ev-box");

    let all = events(&d, "");
    assert!(strictly_increasing(&seqs(&all)), "{all:#?}");
    let kinds = kinds_about(&all, "ev-box");
    let expected = [
        "instance.create",
        "instance.start",
        "api.instance.create",
        "instance.exit",
        "instance.start",
        "instance.reset",
        "api.instance.reset",
        "instance.exit",
        "instance.stop",
        "api.instance.stop",
        "api.instance.remove",
        "instance.remove",
        "api.instance.remove",
    ];
    assert!(in_order(&kinds, &expected), "{kinds:#?}");
    // The snapshot's own events name it `instance/snapshot`.
    let snaps = kinds_about(&all, "ev-box/s1");
    assert_eq!(
        snaps,
        [
            "snapshot.create",
            "api.snapshot.create",
            "snapshot.remove",
            "api.snapshot.remove"
        ],
        "{all:#?}"
    );

    let find = |kind: &str, name: &str| -> Vec<&Value> {
        all.iter()
            .filter(|e| e["kind"] == kind && e["subject"]["name"] == name)
            .collect()
    };
    // Who and how: the caller of the unix socket; the audit of a success and of refusals.
    // A creation is named by its answer.
    let create = find("api.instance.create", "ev-box");
    assert_eq!(create.len(), 1, "{all:#?}");
    assert_eq!(create[0]["actor"], ROOT);
    assert_eq!(create[0]["details"]["status"], 201);
    let reset = find("api.instance.reset", "ev-box")[0];
    assert_eq!(reset["actor"], ROOT);
    assert_eq!(reset["outcome"], json!({"status": "ok"}));
    assert_eq!(reset["subject"]["kind"], "instance");
    assert_eq!(find("instance.create", "ev-box")[0]["actor"], ROOT);
    let refused_start = find("api.instance.start", "ev-nosuch");
    assert_eq!(refused_start.len(), 1, "{all:#?}");
    assert_eq!(refused_start[0]["outcome"]["status"], "failed");
    assert_eq!(refused_start[0]["outcome"]["code"], "not_found");
    assert!(
        refused_start[0]["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("ev-nosuch"),
        "{:?}",
        refused_start[0]
    );
    assert_eq!(refused_start[0]["details"]["status"], 404);
    let removals = find("api.instance.remove", "ev-box");
    assert_eq!(removals.len(), 2);
    assert_eq!(removals[0]["outcome"]["status"], "failed", "{removals:?}");
    assert_eq!(removals[0]["outcome"]["code"], "in_use");
    assert_eq!(removals[1]["outcome"]["status"], "ok");
    // Nothing that only reads is audited.
    assert!(
        all.iter()
            .all(|e| e["kind"] != "api.instance.list" && e["kind"] != "api.events"),
        "{all:#?}"
    );
    // An exit says how the run ended.
    let exit = find("instance.exit", "ev-box")[1];
    assert_eq!(exit["details"]["ending"], "stopped", "{exit}");
    assert!(exit["details"]["signal"].is_number() || exit["details"]["code"].is_number());
    // A time with milliseconds.
    let time = reset["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.contains('.'), "{time}");

    // The CLI's table: one line per event with its kind, subject, actor and outcome.
    let table = d.ok(&["events"]);
    let line = table
        .lines()
        .find(|l| l.contains("api.instance.start") && l.contains("ev-nosuch"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains(ROOT) && line.contains("failed (not_found"),
        "{line}"
    );
    let json_lines = ndjson(d.ok(&["events", "--json"]).as_bytes());
    assert_eq!(json_lines, all, "the events command reads, it adds nothing");
    d.finish();
}

#[test]
fn events_survive_a_restart_and_a_kill_and_numbers_are_never_reused() {
    let mut d = TestDaemon::start();
    d.ok(&["flavor", "create", "evf-0", "--pids", "40"]);
    let before = events(&d, "");
    // Stopped right after an action: its events (the audit record is emitted as the answer
    // goes out) are flushed into the log before the daemon ends.
    d.ok(&["flavor", "create", "evf-1", "--pids", "40"]);
    d.stop_daemon();
    d.restart();
    let after_restart = events(&d, "");
    assert_eq!(
        &after_restart[..before.len()],
        &before[..],
        "the log changed"
    );
    assert_eq!(
        kinds_about(&after_restart, "evf-1"),
        ["flavor.create", "api.flavor.create"],
        "{after_restart:#?}"
    );
    d.ok(&["flavor", "rm", "evf-0"]);
    d.ok(&["flavor", "create", "evf-2", "--pids", "40"]);
    wait_event(&d, "api.flavor.create", "evf-2");
    let with_2 = events(&d, "");
    assert!(strictly_increasing(&seqs(&with_2)));
    let last_before_kill = *seqs(&with_2).last().unwrap();
    // A kill -9 after an action: what the log held survives. (The log is written by its own
    // thread, after the answer: wait for the action's audit record to be in it.)
    d.ok(&["flavor", "rm", "evf-2"]);
    wait_event(&d, "api.flavor.remove", "evf-2");
    let logged = events(&d, "");
    let last_logged = *seqs(&logged).last().unwrap();
    assert!(last_logged > last_before_kill);
    d.kill_daemon();
    d.restart();
    let after_kill = events(&d, "");
    assert_eq!(
        &after_kill[..logged.len()],
        &logged[..],
        "events lost by a kill"
    );
    d.ok(&["flavor", "rm", "evf-1"]);
    let fresh = events(&d, &format!("after={last_logged}"));
    assert!(!fresh.is_empty());
    assert!(
        seqs(&fresh).iter().all(|s| *s > last_logged),
        "a number was reused: {fresh:#?}"
    );
    assert!(kinds_about(&fresh, "evf-1").contains(&"flavor.remove".to_owned()));
    d.finish();
}

#[test]
fn since_filters_by_time_and_bad_values_are_refused() {
    let d = TestDaemon::start();
    d.ok(&["flavor", "create", "evs-1", "--pids", "40"]);
    let first = events(&d, "");
    std::thread::sleep(Duration::from_millis(50));
    d.ok(&["flavor", "create", "evs-2", "--pids", "40"]);
    let all = events(&d, "");
    let second = all
        .iter()
        .find(|e| e["kind"] == "flavor.create" && e["subject"]["name"] == "evs-2")
        .unwrap();
    let t = second["time"].as_str().unwrap();
    let since = events(&d, &format!("since={}", t.replace(':', "%3A")));
    assert!(!since.is_empty());
    assert_eq!(since[0]["seq"], second["seq"], "{since:#?}");
    assert!(kinds_about(&since, "evs-1").is_empty(), "{since:#?}");
    // The CLI: a duration back, and a time.
    let recent = ndjson(d.ok(&["events", "--json", "--since", "1h"]).as_bytes());
    assert_eq!(recent.len(), all.len());
    let cli = ndjson(d.ok(&["events", "--json", "--since", t]).as_bytes());
    assert_eq!(cli.len(), all.len() - first.len(), "{cli:#?}");
    // The same instant with an offset, from the CLI and in a raw query.
    let t_plus = t.replace('Z', "+00:00");
    let cli_plus = ndjson(d.ok(&["events", "--json", "--since", &t_plus]).as_bytes());
    assert_eq!(cli_plus, cli);
    let raw = events(&d, &format!("since={}", t_plus.replace(':', "%3A")));
    assert_eq!(raw, since);
    // Refused with what to do.
    let out = d.fails(&["events", "--since", "yesterday"]);
    let err = &out.stderr;
    assert!(err.contains("since") && err.contains("10m"), "{err}");
    let (status, body) = d.api("GET", "/v1/events?after=x", None);
    assert_eq!(status, 400, "{body}");
    let (status, body) = d.api("GET", "/v1/events?bogus=1", None);
    assert_eq!(status, 400, "{body}");
    d.ok(&["flavor", "rm", "evs-1"]);
    d.ok(&["flavor", "rm", "evs-2"]);
    d.finish();
}

#[test]
fn a_long_error_reaches_the_client_whole_and_its_audit_record_is_bounded() {
    let d = TestDaemon::start();
    // An answer past what the audit reads (64 KiB): serde quotes the bad value.
    let mode = "m".repeat(100_000);
    let body = json!({"template": "evx-nosuch", "mode": mode});
    let r = d.api_raw(
        "POST",
        "/v1/instances",
        "application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 400);
    let answer: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("the client got no error body ({e}): {} bytes", r.body.len()));
    assert_eq!(answer["error"]["code"], "invalid_argument", "{answer}");
    // A shorter one is read for its code, and its message kept short in the log.
    let mode = "m".repeat(20_000);
    let body = json!({"template": "evx-nosuch", "mode": mode});
    let (status, _) = d.api("POST", "/v1/instances", Some(&body));
    assert_eq!(status, 400);
    let mut audits = Vec::new();
    let seen = poll_until(SETTLE, || {
        audits = events(&d, "")
            .into_iter()
            .filter(|e| e["kind"] == "api.instance.create")
            .collect();
        audits.len() == 2
    });
    assert!(seen, "{audits:#?}");
    assert_eq!(
        audits[1]["outcome"]["code"], "invalid_argument",
        "{audits:?}"
    );
    let message = audits[1]["outcome"]["message"].as_str().unwrap();
    assert!(message.len() <= 1100, "{} bytes kept", message.len());
    assert!(
        message.contains("mode") || message.contains("variant"),
        "{message}"
    );
    d.finish();
}

#[test]
fn values_a_refused_request_quotes_stay_out_of_the_audit_log() {
    let d = TestDaemon::start();
    // The JSON parser quotes a value of the wrong type in its error.
    let secret = "DB_PASSWORD=evq-hunter2";
    let body = json!({"template": "busybox", "env": secret});
    let (status, answer) = d.api("POST", "/v1/instances", Some(&body));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(secret),
        "the caller is told what was wrong: {answer}"
    );
    let mut audit = Vec::new();
    let seen = poll_until(SETTLE, || {
        audit = events(&d, "")
            .into_iter()
            .filter(|e| e["kind"] == "api.instance.create")
            .collect();
        !audit.is_empty()
    });
    assert!(seen, "no audit record");
    assert_eq!(audit[0]["outcome"]["code"], "invalid_argument", "{audit:?}");
    let all = serde_json::to_string(&events(&d, "")).unwrap();
    assert!(
        !all.contains("hunter2"),
        "a request's value is in the log: {all}"
    );
    d.finish();
}

#[test]
fn the_log_keeps_only_the_newest_events() {
    let d = TestDaemon::start_with_env(&[], &[("MAYFLY_EVENTS_KEPT", "20")]);
    for i in 0..12 {
        d.ok(&["flavor", "create", &format!("evb-{i}"), "--pids", "40"]);
    }
    let mut all = Vec::new();
    let settled = poll_until(SETTLE, || {
        all = events(&d, "");
        all.last().is_some_and(|e| e["kind"] == "api.flavor.create")
            && kinds_about(&all, "evb-11").len() == 1
    });
    assert!(settled || all.len() == 20, "{all:#?}");
    assert_eq!(all.len(), 20, "{all:#?}");
    let s = seqs(&all);
    assert!(strictly_increasing(&s));
    assert_eq!(s[19] - s[0], 19, "the newest 20 are kept: {s:?}");
    assert!(s[0] > 1, "the oldest are gone");
    // The newest: the last flavor's.
    assert!(kinds_about(&all, "evb-0").is_empty(), "{all:#?}");
    for i in 0..12 {
        d.ok(&["flavor", "rm", &format!("evb-{i}")]);
    }
    d.finish();
}

#[test]
fn follow_prints_the_log_then_live_events() {
    let d = TestDaemon::start();
    d.ok(&["flavor", "create", "evl-1", "--pids", "40"]);
    wait_event(&d, "api.flavor.create", "evl-1");
    let mut child = d
        .command(&["events", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn events --follow");
    let rx = line_reader(child.stdout.take().expect("stdout"));
    let mut seen: Vec<String> = Vec::new();
    let mut wait_line = |want: &[&str]| -> bool {
        poll_until(SETTLE, || {
            while let Ok(l) = rx.try_recv() {
                seen.push(l);
            }
            seen.iter().any(|l| want.iter().all(|w| l.contains(w)))
        })
    };
    let head = wait_line(&["flavor.create", "flavor evl-1"]);
    launch(&d, "evl-box", &[], Some(common::imports::IDLE));
    let live_start = wait_line(&["instance.start", "instance evl-box"]);
    d.ok(&["stop", "evl-box"]);
    let live_exit = wait_line(&[
        "instance.exit",
        "instance evl-box",
        "\"ending\":\"stopped\"",
    ]);
    let still_running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    assert!(head, "the log was not printed: {seen:#?}");
    assert!(live_start, "a live start was not printed: {seen:#?}");
    assert!(live_exit, "a live exit was not printed: {seen:#?}");
    assert!(still_running, "events --follow ended by itself");

    // Raw API: a follower resumes after a number and gets only what is newer, live.
    let all = events(&d, "");
    let last = all.last().unwrap()["seq"].as_u64().unwrap();
    let mut raw = d
        .command(&["events", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let rx = line_reader(raw.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    let got_all = poll_until(SETTLE, || {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        lines.len() >= all.len()
    });
    d.ok(&["rm", "evl-box"]);
    let got_rm = poll_until(SETTLE, || {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        lines.iter().any(|l| l.contains("\"api.instance.remove\""))
    });
    let _ = raw.kill();
    let _ = raw.wait();
    assert!(got_all && got_rm, "{lines:#?}");
    let parsed = ndjson(lines.join("\n").as_bytes());
    assert!(strictly_increasing(&seqs(&parsed)), "{parsed:#?}");
    assert!(seqs(&parsed).iter().filter(|s| **s > last).count() >= 2);
    d.ok(&["flavor", "rm", "evl-1"]);
    d.finish();
}

/// The daemon's inotify descriptors.
fn inotify_fds(d: &TestDaemon) -> usize {
    let pid = d.daemon_pid().expect("the daemon runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().contains("inotify"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_log_follower_that_leaves_a_quiet_instance_frees_its_watch() {
    let d = TestDaemon::start();
    launch(&d, "evw-box", &[], Some(common::imports::IDLE));
    let before = inotify_fds(&d);
    let mut child = d
        .command(&["logs", "--follow", "evw-box"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn logs --follow");
    let watching = poll_until(SETTLE, || inotify_fds(&d) > before);
    let _ = child.kill();
    let _ = child.wait();
    assert!(watching, "the follower set no watch");
    // The instance writes nothing more: only the client's leaving can end the stream.
    let freed = poll_until(SETTLE, || inotify_fds(&d) == before);
    assert!(freed, "{} inotify descriptors left", inotify_fds(&d));
    d.ok(&["rm", "--force", "evw-box"]);
    d.finish();
}

#[test]
fn a_failing_event_log_fails_no_action_and_counts_what_it_lost() {
    let d = TestDaemon::start_with_env(&[], &[("MAYFLY_FAIL_AT", "events:write")]);
    launch(&d, "evx-box", &[], Some(common::imports::IDLE));
    d.ok(&["stop", "evx-box"]);
    d.ok(&["rm", "evx-box"]);
    assert!(events(&d, "").is_empty());
    let r = d.api_raw("GET", "/metrics", "text/plain", b"");
    let text = String::from_utf8_lossy(&r.body);
    let dropped: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("mayfly_events_dropped_total "))
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    // At least the launch's, the stop's and the removal's events and audit records.
    assert!(dropped >= 6.0, "{dropped}");
    assert!(d.logs().contains("cannot write"), "the daemon says why");
    d.finish();
}
