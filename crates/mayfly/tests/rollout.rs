//! Rollouts through the CLI: running transient followers reset in waves with health checks;
//! and a failure puts everything back where it was — the name points back at the version it
//! meant before the rolled-out one became current, every running follower on the rejected
//! version follows it back (also one that started on it after the patch), an instance whose
//! reset fails runs again on the version it ran, pinned instances are never touched. Followers
//! held back by their applications (`--app` not built on the new version) are reported, not
//! reset, keep running, and restart on the version their applications are built on until the
//! applications are rebuilt.
//!
//! Everything uses the built-in busybox template and application templates built from it.

mod common;

use std::collections::BTreeSet;

use common::{TestDaemon, template_info};
use serde_json::Value;

// ---- helpers -----------------------------------------------------------------------------------

/// The current version number of a template.
fn current(d: &TestDaemon, name: &str) -> u64 {
    template_info(d, name)["current_version"]
        .as_u64()
        .expect("current_version")
}

/// The template version instance `name` runs now.
fn running_version(d: &TestDaemon, name: &str) -> Option<u64> {
    d.info(name)["running_version"].as_u64()
}

/// The JSON events of a `--json` rollout's output.
fn events(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event ({e}): {l}")))
        .collect()
}

/// Running instances of template `template` that are not pinned, with the version they run.
fn running_followers(d: &TestDaemon, template: &str) -> Vec<(String, u64)> {
    d.json(&["list", "--json"])
        .as_array()
        .expect("list --json is an array")
        .iter()
        .filter(|i| {
            i["template"] == template && i["pinned_version"].is_null() && i["state"] == "running"
        })
        .map(|i| {
            (
                i["name"].as_str().expect("a name").to_owned(),
                i["running_version"].as_u64().expect("a running version"),
            )
        })
        .collect()
}

// ---- waves and health checks --------------------------------------------------------------------

#[test]
fn rollout_resets_running_transient_followers_in_waves_and_reports_each() {
    let d = TestDaemon::start();
    let followers = ["w1", "w2", "w3", "w4", "w5"];
    for f in followers {
        d.ok(&["launch", "busybox", "--name", f]);
    }
    d.ok(&["launch", "busybox@1", "--name", "pinned"]);
    d.ok(&["launch", "busybox", "--name", "keeps", "--persistent"]);
    d.ok(&["launch", "busybox", "--name", "idle", "--no-start"]);
    d.ok(&["template", "patch", "busybox", "--run", "echo ok > /etc/v2"]);
    let pinned_pid = d.pid_of("pinned");
    let keeps_pid = d.pid_of("keeps");

    let out = d.ok(&[
        "template",
        "rollout",
        "busybox",
        "--wave",
        "2",
        "--health",
        "test -e /etc/v2",
        "--timeout",
        "10",
    ]);
    let waves: Vec<Vec<String>> = out
        .lines()
        .filter_map(|l| l.strip_prefix("wave "))
        .map(|rest| {
            let (_, names) = rest.split_once(": ").expect("wave N: names");
            names.split(", ").map(str::to_owned).collect()
        })
        .collect();
    assert_eq!(
        waves.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1],
        "waves of 2:\n{out}"
    );
    let all: BTreeSet<String> = waves.into_iter().flatten().collect();
    let expected: BTreeSet<String> = followers.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        all, expected,
        "exactly the running transient followers:\n{out}"
    );
    for f in followers {
        assert!(
            out.contains(&format!("  {f}: reset (now on version 2)")),
            "{f}:\n{out}"
        );
        assert!(out.contains(&format!("  {f}: healthy")), "{f}:\n{out}");
        assert_eq!(running_version(&d, f), Some(2), "{f}");
        assert_eq!(d.sh(f, "cat /etc/v2"), "ok\n");
    }
    assert!(
        out.contains("rolled out version 2 to 5 instance(s)"),
        "{out}"
    );
    assert_eq!(running_version(&d, "pinned"), Some(1));
    assert_eq!(
        d.pid_of("pinned"),
        pinned_pid,
        "a pinned instance is not reset"
    );
    assert_eq!(
        d.pid_of("keeps"),
        keeps_pid,
        "a persistent one is not reset"
    );
    assert_eq!(d.state_of("idle").as_deref(), Some("stopped"));

    // Nothing left to do; the JSON events say so.
    let again = d.ok(&["template", "rollout", "busybox", "--json"]);
    let events: Vec<Value> = again
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON event"))
        .collect();
    let done = events
        .iter()
        .find(|e| e.get("done").is_some())
        .unwrap_or_else(|| panic!("no done event: {again}"));
    assert_eq!(done["done"]["version"], 2);
    assert_eq!(done["done"]["reset"], serde_json::json!([]));
    d.finish();
}

#[test]
fn failed_rollout_rolls_back_and_returns_reset_instances_to_the_previous_version() {
    let d = TestDaemon::start();
    d.ok(&["template", "patch", "busybox", "--run", "echo ok > /etc/hc"]);
    for f in ["r1", "r2", "r3"] {
        d.ok(&["launch", "busybox", "--name", f]);
    }
    // Version 3 deletes the file that the health check needs.
    d.ok(&["template", "patch", "busybox", "--run", "rm /etc/hc"]);
    let pids: Vec<i32> = ["r1", "r2", "r3"].iter().map(|f| d.pid_of(f)).collect();
    let out = d.fails(&[
        "template",
        "rollout",
        "busybox",
        "--wave",
        "2",
        "--health",
        "test -e /etc/hc",
        "--timeout",
        "10",
    ]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("health check failed") && out.stderr.contains("version 2"),
        "the error says what failed and where the template is: {out}"
    );
    assert!(out.stdout.contains(": unhealthy"), "{out}");
    assert!(
        out.stdout.contains("rolled the template back to version 2"),
        "{out}"
    );
    let reverted: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains(": reverted"))
        .collect();
    assert_eq!(
        reverted.len(),
        2,
        "the first wave returns to version 2:\n{out}"
    );
    assert!(
        !out.stdout.contains("wave 2"),
        "the rollout stops at the failing wave:\n{out}"
    );
    assert_eq!(current(&d, "busybox"), 2);
    let mut untouched = 0;
    for (f, pid) in ["r1", "r2", "r3"].iter().zip(&pids) {
        assert_eq!(running_version(&d, f), Some(2), "{f}");
        assert_eq!(d.sh(f, "cat /etc/hc"), "ok\n", "{f}");
        if d.pid_of(f) == *pid {
            untouched += 1;
        }
    }
    assert_eq!(
        untouched, 1,
        "the instance of the second wave was never reset"
    );

    // A fix (version 4, built on the current version 2) whose health check times out: the
    // template must go back to what the instances ran (2), not to the broken version 3.
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo fixed > /etc/fix",
    ]);
    assert_eq!(current(&d, "busybox"), 4);
    let slow = d.fails(&[
        "template",
        "rollout",
        "busybox",
        "--wave",
        "3",
        "--health",
        "sleep 30",
        "--timeout",
        "1",
    ]);
    assert!(slow.stdout.contains(": unhealthy"), "{slow}");
    assert_eq!(
        current(&d, "busybox"),
        2,
        "a failed rollout returns to the version that was current before it: {slow}"
    );
    for f in ["r1", "r2", "r3"] {
        assert_eq!(running_version(&d, f), Some(2), "{f}: {slow}");
        assert_eq!(d.sh(f, "cat /etc/hc"), "ok\n", "{f}");
    }
    d.finish();
}

// ---- a failure puts everything back -------------------------------------------------------------

/// Followers `names` on version 2 of busybox, version 3 made current, and a rollout of it
/// cut by the end of the daemon at crash point `at`; returns once the restarted daemon put it
/// back: the name on version 2 and every follower running it.
fn rollout_cut_at(at: &str, names: &[&str]) -> TestDaemon {
    let mut d = TestDaemon::start();
    d.ok(&["template", "patch", "busybox", "--run", "echo 2 > /etc/v"]);
    for f in names {
        d.ok(&["launch", "busybox", "--name", f]);
    }
    d.ok(&["template", "patch", "busybox", "--run", "echo 3 > /etc/v"]);
    d.crash_at(at, &["template", "rollout", "busybox"]);
    common::wait_until(
        std::time::Duration::from_secs(30),
        "the interrupted rollout to be put back with every follower running",
        || {
            current(&d, "busybox") == 2
                && names.iter().all(|f| {
                    d.state_of(f).as_deref() == Some("running") && running_version(&d, f) == Some(2)
                })
        },
    );
    for f in names {
        assert_eq!(
            d.sh(f, "cat /etc/v"),
            "2\n",
            "{f} runs version 2, not the rejected 3"
        );
    }
    d
}

#[test]
fn a_rollout_cut_between_a_followers_stop_and_its_start_is_put_back_with_it() {
    // The daemon dies after the first follower was told to stop for its reset: its restart
    // and the rollout are both interrupted.
    let d = rollout_cut_at("stop:signalled", &["m1", "m2"]);
    d.finish();
}

#[test]
fn a_rollout_interrupted_by_the_end_of_the_daemon_is_put_back_at_the_next_start() {
    // The daemon dies right after the first follower was reset onto version 3.
    let d = rollout_cut_at("rollout:reset", &["k1", "k2", "k3"]);
    assert!(
        d.logs()
            .contains("was interrupted by the end of the daemon"),
        "the daemon says what it did"
    );
    // Nothing is left half done: a new rollout goes through.
    d.ok(&["template", "rollback", "busybox", "--to", "3"]);
    d.ok(&["template", "rollout", "busybox"]);
    for f in ["k1", "k2", "k3"] {
        assert_eq!(running_version(&d, f), Some(3), "{f}");
    }
    d.finish();
}

#[test]
fn a_failed_rollout_points_the_name_back_where_it_was_and_every_follower_on_the_rejected_version_follows_it()
 {
    let d = TestDaemon::start();
    // Version 2, rolled back: three followers still run it.
    d.ok(&["template", "patch", "busybox", "--run", "echo 2 > /etc/v2"]);
    for f in ["r1-v2", "r3-v2", "r5-v2"] {
        d.ok(&["launch", "busybox", "--name", f]);
    }
    d.ok(&["template", "rollback", "busybox"]);
    for f in ["r2-v1", "r4-v1"] {
        d.ok(&["launch", "busybox", "--name", f]);
    }
    // Version 3 is made on version 1 (the current one) and is bad.
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo bad > /etc/bad",
    ]);
    assert_eq!(template_info(&d, "busybox")["previous_version"], 1);
    // One follower starts on it by following the name; one is pinned to it.
    d.ok(&["launch", "busybox", "--name", "late"]);
    d.ok(&["launch", "busybox@3", "--name", "pinned"]);
    assert_eq!(running_version(&d, "late"), Some(3));
    let before: Vec<(&str, i32)> = ["r3-v2", "r4-v1", "r5-v2", "pinned"]
        .into_iter()
        .map(|f| (f, d.pid_of(f)))
        .collect();

    let out = d.fails(&[
        "template",
        "rollout",
        "busybox",
        "--wave",
        "2",
        "--health",
        "test ! -e /etc/bad",
        "--timeout",
        "10",
    ]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("health check failed")
            && out.stderr.contains("rolled back to version 1"),
        "the error says what failed and where the name is: {out}"
    );
    assert!(
        out.stdout.contains("wave 1: r1-v2, r2-v1") && !out.stdout.contains("wave 2"),
        "the rollout stops at the failing wave:\n{out}"
    );
    assert!(
        out.stdout.contains("rolled the template back to version 1"),
        "back to what the name meant before version 3 was made, not to version 2 that most followers ran:\n{out}"
    );
    for f in ["r1-v2", "r2-v1"] {
        assert!(
            out.stdout
                .contains(&format!("  {f}: reverted (back on version 1)")),
            "{f}:\n{out}"
        );
    }
    assert!(
        out.stdout.contains(
            "  late: reverted (started on version 3 after it became current; back on version 1)"
        ),
        "the follower that took version 3 from the name is reset back too:\n{out}"
    );
    assert_eq!(current(&d, "busybox"), 1);
    assert!(
        template_info(&d, "busybox")["previous_version"].is_null(),
        "the rejected version 3 is nowhere to go back to, should a later rollout fail"
    );

    // The instances the rollout touched follow the name back, whatever they ran before.
    for f in ["r1-v2", "r2-v1", "late"] {
        assert_eq!(running_version(&d, f), Some(1), "{f}");
        assert_eq!(
            d.sh(f, "cat /etc/bad /etc/v2 2>/dev/null; true"),
            "",
            "{f} runs version 1's files"
        );
    }
    // The others were not touched: followers of 1 and 2 keep their run, the pinned one too.
    for (f, pid) in &before {
        assert_eq!(d.pid_of(f), *pid, "{f} was not restarted");
    }
    assert_eq!(running_version(&d, "r4-v1"), Some(1));
    assert_eq!(running_version(&d, "r3-v2"), Some(2));
    assert_eq!(running_version(&d, "r5-v2"), Some(2));
    assert_eq!(running_version(&d, "pinned"), Some(3));
    let on_rejected: Vec<(String, u64)> = running_followers(&d, "busybox")
        .into_iter()
        .filter(|(_, v)| *v == 3)
        .collect();
    assert_eq!(
        on_rejected,
        vec![],
        "no running follower is left on version 3"
    );
    d.finish();
}

#[test]
fn an_instance_whose_reset_fails_runs_again_on_the_version_it_ran() {
    let d = TestDaemon::start();
    for f in ["f1", "f2"] {
        d.ok(&["launch", "busybox", "--name", f]);
    }
    let f2 = d.pid_of("f2");
    // Version 2 cannot start: its init is gone.
    d.ok(&["template", "patch", "busybox", "--run", "rm /sbin/init"]);
    let out = d.fails(&["template", "rollout", "busybox", "--json"]);
    let events = events(&out.stdout);
    let about_f1: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| e.get("instance"))
        .filter(|i| i["name"] == "f1")
        .map(|i| {
            (
                i["status"].as_str().unwrap_or_default().to_owned(),
                i["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        about_f1.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        vec!["failed", "returned"],
        "the report names the instance that failed and says it runs again:\n{out}"
    );
    assert!(
        about_f1[0].1.contains("/sbin/init"),
        "why it failed: {about_f1:?}"
    );
    assert_eq!(about_f1[1].1, "running again on version 1", "{about_f1:?}");
    let error = events
        .iter()
        .find_map(|e| e.get("error"))
        .unwrap_or_else(|| panic!("no error event:\n{out}"));
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("resetting `f1` failed") && message.contains("rolled back to version 1"),
        "{error}"
    );
    assert!(events.iter().any(|e| e["rolled_back"]["to"] == 1), "{out}");
    assert_eq!(current(&d, "busybox"), 1);
    assert_eq!(d.state_of("f1").as_deref(), Some("running"));
    assert_eq!(running_version(&d, "f1"), Some(1));
    assert_eq!(d.sh("f1", "echo alive"), "alive\n");
    assert_eq!(d.pid_of("f2"), f2, "the rollout stopped before f2");
    // That one run was on version 1; afterwards it follows the name like any follower.
    d.ok(&["template", "patch", "busybox", "--run", "echo 3 > /etc/v3"]);
    d.ok(&["restart", "f1"]);
    assert_eq!(running_version(&d, "f1"), Some(3));
    d.finish();
}

// ---- followers held back by their applications ---------------------------------------------------

#[test]
fn a_follower_with_applications_is_held_back_until_they_are_rebuilt_and_never_stopped() {
    let d = TestDaemon::start();
    d.ok(&[
        "template",
        "build",
        "hb-app",
        "--from",
        "busybox",
        "--run",
        "echo a1 > /etc/app",
    ]);
    d.ok(&["launch", "busybox", "--app", "hb-app", "--name", "with-app"]);
    d.ok(&["launch", "busybox", "--name", "plain"]);
    let app_pid = d.pid_of("with-app");
    d.ok(&["template", "patch", "busybox", "--run", "echo 2 > /etc/v2"]);

    // `template info` says who is held back, where and why.
    let held = template_info(&d, "busybox")["held_back"].clone();
    assert_eq!(held[0]["instance"], "with-app", "{held}");
    assert_eq!(held[0]["version"], 1, "{held}");
    assert!(
        held[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("hb-app") && r.contains("busybox@2")),
        "{held}"
    );
    let history = d.ok(&["template", "history", "busybox"]);
    assert!(
        history.contains("note: with-app is held back on version 1"),
        "{history}"
    );

    // The rollout reports it instead of resetting it, and succeeds for the others.
    let out = d.ok(&[
        "template",
        "rollout",
        "busybox",
        "--health",
        "test -e /etc/v2",
        "--timeout",
        "10",
    ]);
    assert!(
        out.contains("  with-app (held back on version 1, not reset): application `hb-app`"),
        "{out}"
    );
    assert!(out.contains("  plain: reset (now on version 2)"), "{out}");
    assert!(
        out.contains(
            "rolled out version 2 to 1 instance(s); 1 held back by their applications: with-app"
        ),
        "{out}"
    );
    assert_eq!(running_version(&d, "plain"), Some(2));
    assert_eq!(
        d.pid_of("with-app"),
        app_pid,
        "a held-back follower keeps running"
    );
    assert_eq!(running_version(&d, "with-app"), Some(1));
    assert_eq!(d.sh("with-app", "cat /etc/app"), "a1\n");

    // It restarts, and a new one launches, on the version its application is built on.
    d.ok(&["restart", "with-app"]);
    assert_eq!(running_version(&d, "with-app"), Some(1));
    assert_eq!(
        d.sh("with-app", "cat /etc/app; test ! -e /etc/v2 && echo v1"),
        "a1\nv1\n"
    );
    d.ok(&[
        "launch",
        "busybox",
        "--app",
        "hb-app",
        "--name",
        "with-app-2",
    ]);
    assert_eq!(running_version(&d, "with-app-2"), Some(1));

    // The application rebuilt over version 2 releases them: the next rollout resets them.
    let rebuilt = d.ok(&[
        "template",
        "build",
        "hb-app",
        "--from",
        "busybox",
        "--run",
        "echo a2 > /etc/app",
    ]);
    assert!(rebuilt.contains("version 2"), "{rebuilt}");
    let app = template_info(&d, "hb-app");
    assert_eq!(app["current_version"], 2, "{app}");
    assert_eq!(app["versions"][1]["base"], "busybox@2", "{app}");
    assert!(
        template_info(&d, "busybox").get("held_back").is_none(),
        "nobody is held back any more"
    );
    let json = d.ok(&["template", "rollout", "busybox", "--json"]);
    let done = events(&json)
        .into_iter()
        .find_map(|e| e.get("done").cloned())
        .unwrap_or_else(|| panic!("no done event:\n{json}"));
    let reset: BTreeSet<&str> = done["reset"]
        .as_array()
        .expect("reset")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(reset, BTreeSet::from(["with-app", "with-app-2"]), "{json}");
    for f in ["with-app", "with-app-2"] {
        assert_eq!(running_version(&d, f), Some(2), "{f}");
        assert_eq!(d.sh(f, "cat /etc/app /etc/v2"), "a2\n2\n", "{f}");
    }

    // An instance pinned to version 1 gets the application's version built on version 1 (the
    // one built on 2 starts with version 1's layers, but stacking it would run version 2).
    d.ok(&[
        "launch",
        "busybox@1",
        "--app",
        "hb-app",
        "--name",
        "pinned-app",
    ]);
    assert_eq!(
        d.sh("pinned-app", "cat /etc/app; test ! -e /etc/v2 && echo v1"),
        "a1\nv1\n"
    );
    // A rollback of the base takes them back with it, onto the application's version there.
    d.ok(&["template", "rollback", "busybox"]);
    d.ok(&["restart", "with-app"]);
    assert_eq!(running_version(&d, "with-app"), Some(1));
    assert_eq!(
        d.sh("with-app", "cat /etc/app; test ! -e /etc/v2 && echo v1"),
        "a1\nv1\n"
    );
    d.finish();
}
