//! Snapshots, restore, clone and publish, through the CLI and the API: exactness (the tree an
//! instance sees is reproduced bit for bit), identity of clones, one-run restores of transient
//! instances, survival across daemon restarts, crash safety at every step, bad input, and a
//! full disk in the middle of a copy.

mod common;
mod view;

use std::process::Stdio;
use std::time::Duration;

use common::{TestDaemon, freezer_thawed, id_base, poll_until, wait_until};

/// Builds, inside running instance `name`, a tree with every kind of change: new files, dirs,
/// symlinks (relative and absolute), hard links, a FIFO, setuid and odd modes, owners other
/// than root, an mtime in the past, a renamed directory, a modified, a deleted and a
/// re-permissioned template file, and a template directory replaced by a new one; plus user
/// xattrs set from the host.
fn make_changes(d: &TestDaemon, name: &str) {
    d.sh(
        name,
        "set -e
         mkdir -p /data/sub
         echo hello > /data/a
         printf 'bin\\001\\002ary' > /data/bin
         ln /data/a /data/hard
         ln -s ../a /data/sub/rel
         ln -s /etc/passwd /data/abs
         chown 1234:5678 /data/a
         chmod 4750 /data/bin
         touch -d '2001-02-03 04:05:06' /data/bin
         mkfifo /data/fifo
         mv /data/sub /data/moved
         rm /etc/os-release
         echo extra >> /etc/passwd
         chmod 700 /home
         rm -rf /usr
         mkdir -p /usr/new
         echo fresh > /usr/new/file",
    );
    let pid = d.pid_of(name);
    for (path, key, value) in [
        ("data/a", "user.color", &b"blue"[..]),
        ("data/moved", "user.dir", &b"\x00\x01"[..]),
    ] {
        let p = format!("/proc/{pid}/root/{path}");
        rustix::fs::lsetxattr(p.as_str(), key, value, rustix::fs::XattrFlags::empty())
            .unwrap_or_else(|e| panic!("setxattr {p}: {e}"));
    }
}

#[test]
fn snapshot_restore_clone_and_publish_reproduce_the_tree_exactly() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "src", "--persistent"]);
    make_changes(&d, "src");
    let original = view::of_instance(&d, "src");
    assert!(
        original.contains_key("data/moved/rel"),
        "the changes were made"
    );
    assert!(
        !original.contains_key("etc/os-release"),
        "the deletion shows"
    );
    assert!(
        !original.contains_key("usr/bin"),
        "the replaced directory hides the template's"
    );

    let snap: serde_json::Value = d.json(&["snapshot", "create", "src", "s1", "--json"]);
    assert_eq!(snap["name"], "s1");
    assert!(
        snap["frozen_ms"].is_u64(),
        "a running instance reports its frozen time: {snap}"
    );
    assert_eq!(snap["template_version"], 1);

    // Change everything again, then rewind.
    d.sh(
        "src",
        "rm -rf /data; echo different > /etc/passwd; mkdir /later",
    );
    assert!(!view::of_instance(&d, "src").contains_key("data/a"));
    d.ok(&["snapshot", "restore", "src", "s1"]);
    assert_eq!(
        d.state_of("src").as_deref(),
        Some("running"),
        "a running instance runs again"
    );
    view::assert_same(
        "snapshot -> restore",
        &original,
        &view::of_instance(&d, "src"),
    );

    // A clone shows the same tree, under another id range.
    d.ok(&["clone", "src", "copy", "--start"]);
    assert_ne!(
        id_base(&d, "copy"),
        id_base(&d, "src"),
        "a clone gets its own id range"
    );
    view::assert_same("clone", &original, &view::of_instance(&d, "copy"));

    // Published and launched, the template shows the same tree too.
    d.ok(&["publish", "src", "--as", "golden", "-m", "known good"]);
    let t: serde_json::Value = d.json(&["template", "info", "golden", "--json"]);
    assert_eq!(t["versions"][0]["message"], "known good");
    assert_eq!(t["versions"][0]["layers"].as_array().map(Vec::len), Some(2));
    d.ok(&["launch", "golden", "--name", "fromgolden"]);
    view::assert_same(
        "publish -> launch",
        &original,
        &view::of_instance(&d, "fromgolden"),
    );

    // Publishing a snapshot into the same template adds a version; the old one is intact.
    d.ok(&["publish", "src/s1", "--as", "golden"]);
    let t: serde_json::Value = d.json(&["template", "info", "golden", "--json"]);
    assert_eq!(t["current_version"], 2);
    assert_eq!(t["versions"][0]["version"], 1);
    d.finish();
}

#[test]
fn clones_get_a_new_identity() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "orig", "--persistent"]);
    d.sh(
        "orig",
        "set -e
         echo 0123456789abcdef0123456789abcdef > /etc/machine-id
         echo orig > /etc/hostname
         mkdir -p /etc/ssh /var/lib/systemd
         echo key > /etc/ssh/ssh_host_ed25519_key
         echo pub > /etc/ssh/ssh_host_ed25519_key.pub
         head -c 512 /dev/urandom > /var/lib/systemd/random-seed
         echo mine > /root/data",
    );
    let seed_before = d.sh("orig", "md5sum /var/lib/systemd/random-seed");
    d.ok(&["clone", "orig", "twin", "--start"]);
    let id = d.sh("twin", "cat /etc/machine-id");
    assert_eq!(id.trim().len(), 32, "a machine id: {id}");
    assert_ne!(
        id.trim(),
        "0123456789abcdef0123456789abcdef",
        "the clone has its own machine id"
    );
    assert_eq!(d.sh("twin", "cat /etc/hostname").trim(), "twin");
    assert_eq!(d.sh("twin", "hostname").trim(), "twin");
    assert_eq!(
        d.sh("twin", "ls /etc/ssh").trim(),
        "",
        "the source's SSH host keys are gone"
    );
    assert_ne!(
        d.sh("twin", "md5sum /var/lib/systemd/random-seed"),
        seed_before
    );
    assert_eq!(
        d.sh("twin", "cat /root/data").trim(),
        "mine",
        "the data came along"
    );
    // The source is untouched.
    assert_eq!(
        d.sh("orig", "cat /etc/machine-id").trim(),
        "0123456789abcdef0123456789abcdef"
    );
    // A second start of the clone keeps its new identity.
    d.ok(&["restart", "twin"]);
    assert_eq!(d.sh("twin", "cat /etc/machine-id"), id);
    d.finish();
}

#[test]
fn transient_instances_run_one_run_from_a_restored_snapshot() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "t"]);
    d.sh("t", "echo snapped > /root/f");
    d.ok(&["snapshot", "create", "t", "s"]);
    d.ok(&["stop", "t"]);
    d.ok(&["start", "t"]);
    assert!(
        !d.mayfly(&["exec", "t", "--", "test", "-f", "/root/f"])
            .success(),
        "transient: gone after a stop"
    );
    d.ok(&["snapshot", "restore", "t", "s"]);
    assert_eq!(
        d.sh("t", "cat /root/f").trim(),
        "snapped",
        "the restored run runs from the snapshot"
    );
    d.ok(&["restart", "t"]);
    assert!(
        !d.mayfly(&["exec", "t", "--", "test", "-f", "/root/f"])
            .success(),
        "and only for that run"
    );
    // Restoring a stopped transient instance takes effect at its next start.
    d.ok(&["stop", "t"]);
    d.ok(&["snapshot", "restore", "t", "s"]);
    assert_eq!(d.state_of("t").as_deref(), Some("stopped"));
    d.ok(&["start", "t"]);
    assert_eq!(d.sh("t", "cat /root/f").trim(), "snapped");
    d.finish();
}

#[test]
fn snapshots_are_listed_survive_restarts_and_go_only_with_their_instance() {
    let mut d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "db", "--persistent"]);
    d.sh("db", "head -c 10000 /dev/zero > /root/blob");
    d.ok(&["snapshot", "create", "db"]);
    d.ok(&["stop", "db"]);
    let stopped: serde_json::Value = d.json(&["snapshot", "create", "db", "--json"]);
    assert_eq!(stopped["name"], "snap1", "default names count up");
    assert!(
        stopped.get("frozen_ms").is_none(),
        "a stopped instance is not frozen: {stopped}"
    );
    let list: serde_json::Value = d.json(&["snapshot", "list", "db", "--json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["snap0", "snap1"]);
    assert!(
        list[0]["size"].as_u64().unwrap() >= 10000,
        "the size counts the data: {list}"
    );
    let table = d.ok(&["snapshot", "list", "db"]);
    assert!(
        table.contains("snap0") && table.contains("busybox@1"),
        "{table}"
    );
    let info: serde_json::Value = d.json(&["snapshot", "info", "db", "snap0", "--json"]);
    assert_eq!(info["instance"], "db");

    d.stop_daemon();
    d.restart();
    let list: serde_json::Value = d.json(&["snapshot", "list", "db", "--json"]);
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(2),
        "snapshots survive a daemon restart"
    );

    d.ok(&["snapshot", "rm", "db", "snap1"]);
    assert_eq!(d.state_entries("snapshots").len(), 1);
    // A plain rm refuses to drop snapshots without asking (no terminal here: refused).
    let out = d.fails(&["rm", "db"]);
    assert!(
        out.stderr.contains("has snapshots") && out.stderr.contains("snap0"),
        "{out}"
    );
    assert!(d.state_of("db").is_some());
    let (status, body) = d.api("DELETE", "/v1/instances/db", None);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "in_use");
    d.ok(&["rm", "--force", "db"]);
    assert!(poll_until(Duration::from_secs(10), || d
        .state_entries("snapshots")
        .is_empty()));
    d.finish();
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "a", "--persistent"]);
    d.ok(&["snapshot", "create", "a", "one"]);
    let cases: &[(&[&str], &str)] = &[
        (&["snapshot", "create", "nope"], "does not exist"),
        (&["snapshot", "create", "a", "one"], "already exists"),
        (
            &["snapshot", "create", "a", "Bad Name"],
            "invalid snapshot name",
        ),
        (
            &["snapshot", "create", "a", "../x"],
            "invalid snapshot name",
        ),
        (&["snapshot", "restore", "a", "missing"], "does not exist"),
        (&["snapshot", "rm", "a", "missing"], "does not exist"),
        (&["clone", "a", "a"], "already exists"),
        (&["clone", "a", "Bad_Name"], "invalid instance name"),
        (&["clone", "nope", "b"], "does not exist"),
        (
            &["clone", "a", "b", "--snapshot", "missing"],
            "does not exist",
        ),
        (
            &["publish", "a", "--as", "Bad/Name"],
            "invalid template name",
        ),
        (&["publish", "a/missing", "--as", "t"], "does not exist"),
    ];
    for (args, expect) in cases {
        let out = d.fails(args);
        assert_eq!(out.code, 1, "`{}`: {out}", args.join(" "));
        assert!(
            out.stderr.contains(expect),
            "`{}` should say `{expect}`: {out}",
            args.join(" ")
        );
    }
    assert_eq!(d.instance_names(), ["a"]);
    assert_eq!(d.state_entries("snapshots").len(), 1);
    assert!(d.state_entries("tmp").is_empty());

    // Ephemeral instances have no snapshots to rewind to.
    d.ok(&["launch", "busybox", "--name", "e", "--ephemeral"]);
    let out = d.fails(&["snapshot", "create", "e"]);
    assert!(out.stderr.contains("ephemeral"), "{out}");

    // A transient stopped instance has nothing to publish.
    d.ok(&["launch", "busybox", "--name", "tr", "--no-start"]);
    let out = d.fails(&["publish", "tr", "--as", "x"]);
    assert!(out.stderr.contains("no writable layer"), "{out}");

    // Publishing over a template that instances pin makes a new version, never rewrites one.
    d.ok(&["launch", "busybox@1", "--name", "pinned"]);
    d.sh("a", "echo v2 > /root/v");
    d.ok(&["publish", "a", "--as", "busybox"]);
    let t: serde_json::Value = d.json(&["template", "info", "busybox", "--json"]);
    assert_eq!(t["current_version"], 2);
    assert_eq!(
        t["versions"][0]["layers"].as_array().map(Vec::len),
        Some(1),
        "version 1 unchanged"
    );
    d.ok(&["restart", "pinned"]);
    assert!(
        !d.mayfly(&["exec", "pinned", "--", "test", "-f", "/root/v"])
            .success()
    );
    d.finish();
}

#[test]
fn restore_while_another_action_holds_the_instance_is_busy() {
    let d = TestDaemon::start();
    // An init that catches SIGTERM and carries on: a graceful stop waits its whole timeout.
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "slow",
        "--persistent",
        "--",
        "sh",
        "-c",
        "trap 'echo not yet' TERM; while :; do sleep 1; done",
    ]);
    d.ok(&["snapshot", "create", "slow", "s"]);
    wait_until(
        Duration::from_secs(5),
        "the init to install its trap",
        || {
            let pid = d.pid_of("slow");
            common::proc_status_field(pid, "SigCgt")
                .and_then(|m| u64::from_str_radix(&m, 16).ok())
                .is_some_and(|m| m & (1 << (libc_sigterm() - 1)) != 0)
        },
    );
    let mut stop = d.command(&["stop", "--timeout", "8", "slow"]);
    let mut stopping = stop
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start stop");
    std::thread::sleep(Duration::from_millis(500));
    let out = d.fails(&["snapshot", "restore", "slow", "s"]);
    assert!(
        out.stderr.contains("busy") && out.stderr.contains("stop"),
        "{out}"
    );
    let (status, body) = d.api("POST", "/v1/instances/slow/snapshots/s/restore", None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("busy")),
        "{body}"
    );
    let status = stopping.wait().expect("wait for stop");
    assert!(status.success());
    assert_eq!(d.state_of("slow").as_deref(), Some("stopped"));
    d.finish();
}

fn libc_sigterm() -> u32 {
    15
}

#[test]
fn a_daemon_killed_in_the_middle_leaves_the_whole_result_or_nothing() {
    let mut d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "src", "--persistent"]);
    d.sh("src", "echo before > /root/f");
    d.ok(&["snapshot", "create", "src", "s0"]);
    d.sh("src", "echo after > /root/f");
    let layers = d.state_entries("layers");

    // Snapshot: no half snapshot, and the instance is not left frozen.
    d.crash_at("snapshot:copied", &["snapshot", "create", "src", "s1"]);
    let list: serde_json::Value = d.json(&["snapshot", "list", "src", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(d.state_entries("snapshots").len(), 1);
    assert!(freezer_thawed(&d, "src"), "thawed after the crash");
    assert_eq!(d.sh("src", "cat /root/f").trim(), "after");

    // Restore: the old writable layer stays, and the instance, stopped for the restore,
    // runs again.
    d.crash_at("restore:staged", &["snapshot", "restore", "src", "s0"]);
    // Started again in the background by the restarted daemon.
    common::wait_state(&d, "src", "running");
    assert_eq!(
        d.sh("src", "cat /root/f").trim(),
        "after",
        "nothing of the interrupted restore"
    );
    // Interrupted after its commit: the restored layer, running.
    d.crash_at("restore:committed", &["snapshot", "restore", "src", "s0"]);
    common::wait_state(&d, "src", "running");
    assert_eq!(d.sh("src", "cat /root/f").trim(), "before", "the restore");
    d.sh("src", "echo after > /root/f");

    // Clone, at both steps: no new instance.
    for point in ["clone:copied", "clone:shifted"] {
        d.crash_at(point, &["clone", "src", "copy"]);
        assert_eq!(d.instance_names(), ["src"], "after {point}");
    }

    // Publish: no template, no new layer.
    d.crash_at("publish:layer-built", &["publish", "src", "--as", "golden"]);
    assert!(
        d.fails(&["template", "info", "golden"])
            .stderr
            .contains("does not exist")
    );
    assert!(poll_until(Duration::from_secs(10), || d
        .state_entries("layers")
        == layers));

    assert!(poll_until(Duration::from_secs(10), || d
        .state_entries("tmp")
        .is_empty()));
    assert_eq!(d.state_entries("instances").len(), 1);

    // And each, done without a crash, completes.
    d.ok(&["snapshot", "create", "src", "s1"]);
    d.ok(&["snapshot", "restore", "src", "s0"]);
    assert_eq!(d.sh("src", "cat /root/f").trim(), "before");
    d.ok(&["clone", "src", "copy", "--start"]);
    assert_eq!(d.sh("copy", "cat /root/f").trim(), "before");
    d.ok(&["publish", "src", "--as", "golden"]);
    d.finish();
}

#[test]
fn a_full_disk_in_the_middle_of_a_snapshot_fails_cleanly() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "big", "--persistent"]);
    d.sh("big", "head -c 6000000 /dev/urandom > /root/big");
    // Put the snapshots on a 2 MB filesystem.
    let snapshots = d.state.join("snapshots");
    rustix::mount::mount(
        c"tmpfs",
        &snapshots,
        c"tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"size=2m,mode=700"),
    )
    .expect("mount a small tmpfs");
    let out = d.fails(&["snapshot", "create", "big", "s"]);
    let clean = poll_until(Duration::from_secs(10), || {
        std::fs::read_dir(&snapshots)
            .map(|r| r.count())
            .unwrap_or(1)
            == 0
    });
    let _ = rustix::mount::unmount(&snapshots, rustix::mount::UnmountFlags::DETACH);
    assert!(
        out.stderr.contains("No space left") || out.stderr.contains("space"),
        "{out}"
    );
    assert!(clean, "nothing partial is left in the snapshots directory");
    let list: serde_json::Value = d.json(&["snapshot", "list", "big", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(0));
    assert!(freezer_thawed(&d, "big"));
    assert_eq!(d.state_of("big").as_deref(), Some("running"));
    assert!(d.state_entries("tmp").is_empty());
    // With room again, it works.
    d.ok(&["snapshot", "create", "big", "s"]);
    d.finish();
}
