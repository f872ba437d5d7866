//! Template versions through the CLI: patches (followers move at their next start, pinned
//! instances stay, persistent followers' shadowed paths reported), history, rollback
//! (rollouts are in `rollout.rs`), and bad input that leaves nothing half-created.

mod common;

use std::time::Duration;

use common::{
    TestDaemon, digests, layer_dirs, running_version, strings, template_exists, template_info,
    top_layer, version, wait_until, write_tree,
};
use serde_json::Value;

// ---- helpers -----------------------------------------------------------------------------------

/// The current version number of a template.
fn current(d: &TestDaemon, name: &str) -> u64 {
    template_info(d, name)["current_version"]
        .as_u64()
        .expect("current_version")
}

/// Waits until `<state>/tmp` is empty (staging trees go to the trash synchronously, but the
/// check must not race a background step).
fn wait_tmp_empty(d: &TestDaemon) {
    wait_until(Duration::from_secs(10), "an empty <state>/tmp", || {
        d.state_entries("tmp").is_empty()
    });
}

// ---- patch, history -----------------------------------------------------------------------------

#[test]
fn patch_adds_one_layer_followers_move_at_next_start_pinned_stay_and_history_shows_it() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "fol"]);
    d.ok(&["launch", "busybox@1", "--name", "pin"]);
    d.ok(&["launch", "busybox", "--name", "per", "--persistent"]);
    d.sh("per", "echo mine > /etc/motd");

    let out = d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo v2 > /etc/motd",
        "--message",
        "motd v2",
    ]);
    assert!(out.contains("version 2"), "{out}");
    assert!(
        out.contains("per") && out.contains("etc/motd"),
        "the patch says what the persistent follower hides: {out}"
    );
    let t = template_info(&d, "busybox");
    assert_eq!(t["current_version"], 2);
    let (v1, v2) = (version(&t, 1), version(&t, 2));
    let (l1, l2) = (digests(&v1), digests(&v2));
    assert_eq!(l2.len(), l1.len() + 1, "N+1 = N + one layer: {t}");
    assert_eq!(l2[..l1.len()], l1[..], "N's layers are reused: {t}");
    assert_eq!(v2["message"], "motd v2");
    let shadowed = t["shadowed"].as_array().cloned().unwrap_or_default();
    assert_eq!(shadowed.len(), 1, "{t}");
    assert_eq!(shadowed[0]["instance"], "per");
    assert_eq!(shadowed[0]["since_version"], 1);
    assert_eq!(strings(&shadowed[0]["paths"]), vec!["etc/motd".to_owned()]);
    let text = d.ok(&["template", "info", "busybox"]);
    assert!(
        text.lines()
            .any(|l| l.contains("per") && l.contains("etc/motd") && l.starts_with("note:")),
        "info says what `per` hides:\n{text}"
    );

    let history = d.ok(&["template", "history", "busybox"]);
    assert!(
        history
            .lines()
            .any(|l| l.starts_with("note:") && l.contains("per") && l.contains("etc/motd")),
        "history says what `per` hides:\n{history}"
    );

    // Running instances keep their version until their next start.
    for name in ["fol", "pin", "per"] {
        assert_eq!(running_version(&d, name), Some(1), "{name}");
    }
    d.ok(&["restart", "fol", "pin"]);
    assert_eq!(running_version(&d, "fol"), Some(2));
    assert_eq!(d.sh("fol", "cat /etc/motd"), "v2\n");
    assert_eq!(
        running_version(&d, "pin"),
        Some(1),
        "pinned keeps version 1"
    );
    let pinned = d.mayfly(&["exec", "pin", "--", "cat", "/etc/motd"]);
    assert!(!pinned.success(), "version 1 has no /etc/motd: {pinned}");

    // A rollout does not reset the persistent follower; it reports what it hides.
    let per_pid = d.pid_of("per");
    let rollout = d.ok(&["template", "rollout", "busybox"]);
    assert!(
        rollout
            .lines()
            .any(|l| l.contains("per") && l.contains("not reset") && l.contains("etc/motd")),
        "{rollout}"
    );
    assert_eq!(
        d.pid_of("per"),
        per_pid,
        "the persistent follower was not reset"
    );
    d.ok(&["restart", "per"]);
    assert_eq!(running_version(&d, "per"), Some(2));
    assert_eq!(
        d.sh("per", "cat /etc/motd"),
        "mine\n",
        "a persistent follower's own change wins"
    );

    // History, as text and as JSON.
    let src = d.dir.join("patch3");
    write_tree(&src, &[("opt/three", "3\n")]);
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--from",
        src.to_str().expect("utf-8"),
        "-m",
        "third from a dir",
    ]);
    let t = template_info(&d, "busybox");
    let v3 = version(&t, 3);
    assert_eq!(digests(&v3).len(), l2.len() + 1);
    let history = d.ok(&["template", "history", "busybox"]);
    let lines: Vec<&str> = history.lines().collect();
    let row = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(prefix))
            .unwrap_or_else(|| panic!("no row {prefix} in the history:\n{history}"))
            .to_string()
    };
    let (r1, r2, r3) = (row("1"), row("2"), row("3*"));
    assert!(
        r2.contains("motd v2") && r3.contains("third from a dir"),
        "{history}"
    );
    let short = |v: &Value| {
        top_layer(v)["digest"]
            .as_str()
            .expect("digest")
            .chars()
            .take(19)
            .collect::<String>()
    };
    assert!(r1.contains(&short(&v1)), "v1's digest: {history}");
    assert!(r2.contains(&short(&v2)), "v2's digest: {history}");
    assert!(r3.contains(&short(&v3)), "v3's digest: {history}");
    assert!(r1.contains("pin"), "v1 is used by pin: {history}");
    assert!(r2.contains("fol"), "v2 is used by fol: {history}");
    assert!(r1.contains(v1["created_at"].as_str().expect("time")));
    assert!(
        r1.contains("MiB") || r1.contains("KiB"),
        "a size: {history}"
    );
    let hj = d.json(&["template", "history", "busybox", "--json"]);
    let hv = hj.as_array().expect("an array of versions");
    assert_eq!(hv.len(), 3, "{hj}");
    for (i, v) in hv.iter().enumerate() {
        assert_eq!(v["version"].as_u64(), Some(i as u64 + 1), "{hj}");
        assert!(v["created_at"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(v["message"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(top_layer(v)["size"].is_u64() && top_layer(v)["digest"].is_string());
    }
    assert!(
        strings(&hv[0]["used_by"]).contains(&"pin".to_owned()),
        "{hj}"
    );
    assert!(
        strings(&hv[1]["used_by"]).contains(&"fol".to_owned()),
        "{hj}"
    );
    assert!(
        !strings(&hv[1]["used_by"]).contains(&"pin".to_owned()),
        "{hj}"
    );
    d.ok(&["restart", "fol"]);
    assert_eq!(d.sh("fol", "cat /opt/three /etc/motd"), "3\nv2\n");
    d.finish();
}

#[test]
fn shadowed_paths_are_still_reported_after_the_persistent_follower_restarts() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "per", "--persistent"]);
    d.sh("per", "echo mine > /etc/motd");
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo v2 > /etc/motd",
    ]);
    let before = template_info(&d, "busybox");
    assert_eq!(before["shadowed"][0]["instance"], "per", "{before}");
    // Restarted onto version 2, its own /etc/motd (made on version 1) still hides version 2's.
    d.ok(&["restart", "per"]);
    assert_eq!(running_version(&d, "per"), Some(2));
    assert_eq!(d.sh("per", "cat /etc/motd"), "mine\n");
    let after = template_info(&d, "busybox");
    let paths = after["shadowed"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["instance"] == "per"))
        .map(|s| strings(&s["paths"]))
        .unwrap_or_default();
    assert_eq!(
        paths,
        vec!["etc/motd".to_owned()],
        "`per` still hides version 2's etc/motd after a restart, but info no longer says so: {after}"
    );
    // A reset drops its changes: nothing is hidden any more, and it sees version 2.
    d.ok(&["reset", "per"]);
    assert_eq!(d.sh("per", "cat /etc/motd"), "v2\n");
    let reset = template_info(&d, "busybox");
    assert!(
        reset["shadowed"]
            .as_array()
            .is_none_or(|a| a.iter().all(|s| s["instance"] != "per")),
        "{reset}"
    );
    d.finish();
}

// ---- rollback -----------------------------------------------------------------------------------

#[test]
fn rollback_points_the_name_back_and_followers_take_it_at_next_start() {
    let d = TestDaemon::start();
    d.ok(&["template", "patch", "busybox", "--run", "echo 2 > /etc/v"]);
    d.ok(&["template", "patch", "busybox", "--run", "echo 3 > /etc/v"]);
    d.ok(&["launch", "busybox", "--name", "f"]);
    d.ok(&["launch", "busybox", "--name", "g", "--no-start"]);
    assert_eq!(d.sh("f", "cat /etc/v"), "3\n");

    let out = d.ok(&["template", "rollback", "busybox"]);
    assert!(out.contains("version 2"), "{out}");
    assert_eq!(current(&d, "busybox"), 2);
    assert_eq!(
        running_version(&d, "f"),
        Some(3),
        "a running follower keeps its version until its next start"
    );
    d.ok(&["restart", "f"]);
    d.ok(&["start", "g"]);
    for name in ["f", "g"] {
        assert_eq!(running_version(&d, name), Some(2));
        assert_eq!(d.sh(name, "cat /etc/v"), "2\n");
    }

    d.ok(&["template", "rollback", "busybox", "--to", "1"]);
    assert_eq!(current(&d, "busybox"), 1);
    d.ok(&["reset", "f"]);
    assert_eq!(running_version(&d, "f"), Some(1));
    assert!(!d.mayfly(&["exec", "f", "--", "cat", "/etc/v"]).success());

    // Forward again, to the newest.
    d.ok(&["template", "rollback", "busybox", "--to", "3"]);
    d.ok(&["restart", "f"]);
    assert_eq!(d.sh("f", "cat /etc/v"), "3\n");

    // Versions that do not exist, and nothing older.
    let bad = d.fails(&["template", "rollback", "busybox", "--to", "9"]);
    assert_eq!(bad.code, 1, "{bad}");
    assert!(bad.stderr.contains("busybox@9"), "{bad}");
    assert_eq!(
        current(&d, "busybox"),
        3,
        "a failed rollback changes nothing"
    );
    let src = d.dir.join("solo");
    common::make_rootfs(&src, "solo");
    d.ok(&["template", "import", "solo", src.to_str().expect("utf-8")]);
    let none = d.fails(&["template", "rollback", "solo"]);
    assert!(none.stderr.contains("no version older"), "{none}");
    let missing = d.fails(&["template", "rollback", "nosuch"]);
    assert!(missing.stderr.contains("nosuch"), "{missing}");
    d.finish();
}

// ---- bad input ----------------------------------------------------------------------------------

#[test]
fn bad_input_is_refused_clearly_and_leaves_nothing_half_created() {
    let d = TestDaemon::start();
    let templates = || -> Vec<String> {
        let all = d.json(&["template", "list", "--json"]);
        all.as_array()
            .expect("array")
            .iter()
            .map(|t| format!("{}@{}", t["name"], t["current_version"]))
            .collect()
    };
    let before_templates = templates();
    let before_layers = layer_dirs(&d);
    let history = || d.json(&["template", "history", "busybox", "--json"]);
    let before_history = history();
    let nothing_changed = |what: &str| {
        assert_eq!(templates(), before_templates, "{what}: templates changed");
        assert_eq!(layer_dirs(&d), before_layers, "{what}: a layer was left");
        assert_eq!(history(), before_history, "{what}: a version was added");
        wait_tmp_empty(&d);
    };

    // Unknown base.
    let out = d.fails(&[
        "template", "build", "app", "--from", "nosuch", "--run", "true",
    ]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("`nosuch` does not exist"), "{out}");
    nothing_changed("unknown base");
    let out = d.fails(&["template", "patch", "nosuch", "--run", "true"]);
    assert!(out.stderr.contains("nosuch"), "{out}");

    // A failing build script: its output is in the error, nothing is kept.
    let script = "echo marker-out; echo marker-err >&2; mkdir -p /junk; echo x > /junk/x; exit 7";
    let out = d.fails(&[
        "template", "build", "broken", "--from", "busybox", "--run", script,
    ]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("code 7")
            && out.stderr.contains("marker-out")
            && out.stderr.contains("marker-err"),
        "the error shows how the script ended and what it printed: {out}"
    );
    assert!(!template_exists(&d, "broken"));
    nothing_changed("failing build");
    let out = d.fails(&["template", "patch", "busybox", "--run", script, "-m", "x"]);
    assert!(out.stderr.contains("marker-out"), "{out}");
    nothing_changed("failing patch");
    // A failing debootstrap (an unknown suite): likewise.
    let out = d.fails(&["template", "build", "deb", "--debian", "nosuchsuite"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("nosuchsuite"), "{out}");
    assert!(!template_exists(&d, "deb"));
    nothing_changed("failing debootstrap");
    assert!(
        common::mounts_mentioning(&d.dir.display().to_string()).is_empty(),
        "no mount is left"
    );

    // Invalid names and arguments.
    for name in ["Bad", "a@b", "-x", "a b", "über", &"x".repeat(65)] {
        let out = d.fails(&[
            "template", "build", name, "--from", "busybox", "--run", "true",
        ]);
        assert!(
            out.stderr.contains("invalid template name") || out.code == 2,
            "{name}: {out}"
        );
    }
    let out = d.fails(&["launch", "busybox", "--name", "Bad_Name"]);
    assert!(out.stderr.contains("invalid instance name"), "{out}");
    let out = d.fails(&[
        "template",
        "build",
        "p",
        "--from",
        "busybox",
        "--packages",
        "a;rm",
    ]);
    assert!(out.stderr.contains("invalid package name"), "{out}");
    let out = d.fails(&["template", "build", "p", "--debian", "bookworm;rm"]);
    assert!(out.stderr.contains("invalid suite"), "{out}");
    let out = d.fails(&[
        "template", "build", "p", "--debian", "bookworm", "--run", "true",
    ]);
    assert!(out.stderr.contains("--run"), "{out}");
    let out = d.fails(&["template", "build", "p", "--from", "busybox"]);
    assert!(out.stderr.contains("nothing to build"), "{out}");
    let out = d.fails(&[
        "template", "build", "busybox", "--from", "busybox", "--run", "true",
    ]);
    assert!(out.stderr.contains("busybox"), "{out}");
    let out = d.fails(&["template", "patch", "busybox"]);
    assert!(out.stderr.contains("exactly one"), "{out}");
    let out = d.fails(&[
        "template", "patch", "busybox", "--run", "true", "--from", "/tmp",
    ]);
    assert!(out.stderr.contains("exactly one") || out.code == 2, "{out}");
    let out = d.fails(&["template", "patch", "busybox", "--from", "/nonexistent/dir"]);
    assert!(out.stderr.contains("/nonexistent/dir"), "{out}");
    let out = d.fails(&["launch", "nosuch", "--name", "x"]);
    assert!(out.stderr.contains("nosuch"), "{out}");
    let out = d.fails(&["launch", "busybox@7", "--name", "x"]);
    assert!(out.stderr.contains("no version 7"), "{out}");
    assert_eq!(d.instance_names(), Vec::<String>::new());
    nothing_changed("invalid arguments");

    // Rollback to a version that does not exist.
    let out = d.fails(&["template", "rollback", "busybox", "--to", "5"]);
    assert!(
        out.stderr.contains("busybox@5") && out.stderr.contains("template history"),
        "{out}"
    );
    assert_eq!(current(&d, "busybox"), 1);

    // Removing a version in use, the current version, or one that does not exist.
    d.ok(&["template", "patch", "busybox", "--run", "echo 2 > /etc/two"]);
    d.ok(&["launch", "busybox@1", "--name", "pin"]);
    let out = d.fails(&["template", "rm", "busybox@1"]);
    assert!(
        out.stderr.contains("pin"),
        "the refusal names the user: {out}"
    );
    let out = d.fails(&["template", "rm", "busybox@2"]);
    assert!(out.stderr.contains("current"), "{out}");
    let out = d.fails(&["template", "rm", "busybox@9"]);
    assert!(out.stderr.contains("busybox@9"), "{out}");
    let out = d.fails(&["template", "rm", "busybox"]);
    assert!(out.stderr.contains("pin"), "a template in use stays: {out}");
    let t = template_info(&d, "busybox");
    assert_eq!(t["versions"].as_array().map(Vec::len), Some(2), "{t}");
    d.ok(&["restart", "pin"]);
    assert_eq!(running_version(&d, "pin"), Some(1));
    d.finish();
}
