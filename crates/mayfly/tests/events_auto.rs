//! Events of what the daemon does on its own: a restart policy's restarts and a schedule's
//! runs name their own actors (`restart-policy`, `schedule`), jobs a request leaves running
//! name its caller, exits carry their status, an OOM kill is an event.

mod common;
mod limits_common;

use std::path::Path;

use common::{SETTLE, TestDaemon, events, launch, poll_until, wait_event};
use serde_json::Value;

fn about<'a>(all: &'a [Value], kind: &str, name: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|e| e["kind"] == kind && e["subject"]["name"] == name)
        .collect()
}

#[test]
fn a_restart_policys_restarts_are_its_own_and_exits_carry_their_status() {
    let d = TestDaemon::start_with_env(&[], &[("MAYFLY_TEST_RESTART_BACKOFF_MS", "200")]);
    launch(
        &d,
        "eva-fail",
        &["--restart", "on-failure:1"],
        Some("echo run; exit 3"),
    );
    let mut all = Vec::new();
    let gave_up = poll_until(SETTLE, || {
        all = events(&d, "");
        about(&all, "instance.exit", "eva-fail").len() == 2
    });
    assert!(gave_up, "{all:#?}");
    let restarts = about(&all, "restart_policy.restart", "eva-fail");
    assert_eq!(restarts.len(), 1, "{all:#?}");
    assert_eq!(restarts[0]["actor"], "restart-policy");
    assert_eq!(restarts[0]["outcome"]["status"], "ok");
    let starts = about(&all, "instance.start", "eva-fail");
    assert_eq!(starts.len(), 2, "{all:#?}");
    assert_eq!(
        starts[0]["actor"], "unix:uid=0",
        "the launch is the caller's"
    );
    assert_eq!(
        starts[1]["actor"], "restart-policy",
        "the restart is the policy's"
    );
    for exit in about(&all, "instance.exit", "eva-fail") {
        assert_eq!(exit["details"]["code"], 3, "{exit}");
        assert_eq!(exit["details"]["ending"], "exited", "{exit}");
        assert_eq!(exit["outcome"]["status"], "ok");
    }
    d.finish();
}

fn set_clock(clock: &Path, secs: i64) {
    std::fs::write(clock, secs.to_string()).expect("write the test clock");
}

#[test]
fn a_schedules_runs_are_its_own() {
    // 2030-01-01 00:10:00 UTC on the daemon's test clock.
    const T0: i64 = 1_893_456_600;
    let dir = tempfile::tempdir().expect("a directory for the clock");
    let clock = dir.path().join("clock");
    set_clock(&clock, T0);
    let d = TestDaemon::start_with_env(
        &[],
        &[
            ("MAYFLY_TEST_CLOCK", clock.to_str().unwrap()),
            ("TZ", "UTC"),
        ],
    );
    launch(&d, "eva-snap", &[], Some(common::imports::IDLE));
    d.ok(&["schedule", "add", "eva-snap", "snapshot", "0 * * * *"]);
    let added = wait_event(&d, "schedule.add", "eva-snap");
    assert_eq!(added["actor"], "unix:uid=0");
    // The next hour: the schedule runs.
    set_clock(&clock, T0 + 3600);
    let run = wait_event(&d, "schedule.run", "eva-snap");
    assert_eq!(run["actor"], "schedule");
    assert_eq!(run["outcome"]["status"], "ok", "{run}");
    assert_eq!(run["details"]["action"], "snapshot");
    let all = events(&d, "");
    let snap = all
        .iter()
        .find(|e| {
            e["kind"] == "snapshot.create"
                && e["subject"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("eva-snap/sched-"))
        })
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(snap["actor"], "schedule");
    assert!(snap["seq"].as_u64() < run["seq"].as_u64());
    d.finish();
}

#[test]
fn background_jobs_of_a_request_are_the_callers() {
    let d = TestDaemon::start();
    // An attached run: its instance is made by a task of the request.
    d.ok(&["run", "--rm", "--name", "eva-run", "busybox", "--", "true"]);
    // A rollout: an NDJSON job that runs on after the answer's head.
    d.ok(&["template", "rollout", "busybox"]);
    wait_event(&d, "instance.remove", "eva-run");
    let done = wait_event(&d, "rollout.done", "busybox");
    let all = events(&d, "");
    for kind in ["instance.create", "instance.start"] {
        let e = about(&all, kind, "eva-run");
        assert_eq!(e.len(), 1, "{all:#?}");
        assert_eq!(e[0]["actor"], "unix:uid=0", "{kind}: {:?}", e[0]);
    }
    assert_eq!(done["actor"], "unix:uid=0", "{done}");
    assert_eq!(
        about(&all, "rollout.start", "busybox")[0]["actor"],
        "unix:uid=0"
    );
    // The run's exit: how it ended.
    let exit = about(&all, "instance.exit", "eva-run");
    assert_eq!(exit[0]["details"]["code"], 0, "{all:#?}");
    d.finish();
}

#[test]
fn an_oom_kill_is_an_event_and_the_exit_says_so() {
    if !limits_common::has_v1("memory") {
        eprintln!("this host has no v1 memory hierarchy: the OOM event is not tested here");
        return;
    }
    let d = TestDaemon::start();
    limits_common::install_alloc(&d);
    d.ok(&[
        "launch", "busybox", "--name", "eva-oom", "--memory", "32M", "--", "alloc", "mem", "512",
    ]);
    common::wait_stopped(&d, "eva-oom", std::time::Duration::from_secs(30));
    let oom = wait_event(&d, "instance.oom", "eva-oom");
    assert!(
        oom["details"]["oom_kills"].as_u64().unwrap_or(0) >= 1,
        "{oom}"
    );
    let all = events(&d, "");
    let exit = about(&all, "instance.exit", "eva-oom");
    assert_eq!(exit.len(), 1, "{all:#?}");
    assert_eq!(exit[0]["details"]["signal"], 9, "{}", exit[0]);
    assert!(exit[0]["details"]["oom_kills"].as_u64().unwrap_or(0) >= 1);
    assert!(oom["seq"].as_u64() < exit[0]["seq"].as_u64());
    d.finish();
}
