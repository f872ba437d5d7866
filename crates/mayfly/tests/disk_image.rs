//! Disk limits where the state filesystem has no project quotas (as on this machine): a
//! filesystem image per instance, loop-mounted over its directory. Through the CLI: `dd` past
//! the limit gets ENOSPC while another instance and the host go on; `stats`/`info` show the use
//! against the limit; the data survives stop/start, a daemon restart and a lost mount (a
//! reboot); a transient instance's restart and reset work; the limit grows live, shrinks
//! while stopped, goes with `disk=none` keeping the data; `rm` leaves no mount, loop device or
//! image. A failure while the image is made leaves nothing of it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::TestDaemon;

const MIB: u64 = 1 << 20;

use common::quota_fs::{is_mount, loop_devices_under};

fn id_of(d: &TestDaemon, name: &str) -> String {
    d.info(name)["id"].as_str().expect("an id").to_owned()
}

fn image_of(d: &TestDaemon, id: &str) -> PathBuf {
    d.state.join("disks").join(format!("{id}.img"))
}

/// What the test leaves must be nothing: no image, no mount, no loop device of the state.
fn assert_nothing_left(d: &TestDaemon) {
    common::quota_fs::assert_no_disk_left(d, &["instances"]);
}

fn dd(d: &TestDaemon, name: &str, file: &str, mib: u64) -> common::Output {
    d.mayfly(&[
        "exec",
        name,
        "--",
        "dd",
        "if=/dev/zero",
        &format!("of={file}"),
        "bs=1M",
        &format!("count={mib}"),
    ])
}

fn set(d: &TestDaemon, name: &str, kv: &str) -> serde_json::Value {
    d.json(&["set", name, kv, "--json"])
}

#[test]
fn an_image_per_instance_limits_its_disk() {
    let mut d = TestDaemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "a",
        "--persistent",
        "--disk",
        "32M",
        "--",
        "sleep",
        "1000",
    ]);
    d.ok(&["launch", "busybox", "--name", "b", "--", "sleep", "1000"]);
    let id = id_of(&d, "a");
    let dir = d.state.join("instances").join(&id);
    let image = image_of(&d, &id);
    assert!(image.is_file(), "no image at {}", image.display());
    assert!(is_mount(&dir), "{} is not a mount", dir.display());
    assert_eq!(loop_devices_under(&d.state).len(), 1);

    // Past the limit: ENOSPC inside; the other instance and the host write on.
    let out = dd(&d, "a", "/big", 64);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("No space left on device"), "{out}");
    let out = dd(&d, "b", "/big", 64);
    assert!(out.success(), "{out}");
    let host_file = d.state.join("host-write");
    std::fs::write(&host_file, vec![1u8; 16 << 20]).expect("the host writes on");
    std::fs::remove_file(&host_file).unwrap();

    // Use against the limit.
    let stats = d.json(&["stats", "a", "--json", "--no-stream"]);
    let used = stats[0]["disk_bytes"].as_u64().expect("disk use");
    assert!((24 * MIB..=40 * MIB).contains(&used), "{stats}");
    assert_eq!(stats[0]["disk_limit"].as_u64(), Some(32 * MIB), "{stats}");
    let info = d.info("a");
    assert_eq!(info["limits"]["disk"].as_u64(), Some(32 * MIB), "{info}");

    // Grown: live where the daemon may resize a mounted filesystem (CAP_SYS_RESOURCE),
    // otherwise at the next start, saying why.
    let out = set(&d, "a", "disk=128M");
    if !out["applied"].to_string().contains("disk") {
        let why = out["next_start"].to_string();
        assert!(
            why.contains("cannot grow") && why.contains("next start"),
            "{out}"
        );
        d.ok(&["stop", "a"]);
        d.ok(&["start", "a"]);
    }
    d.ok(&["exec", "a", "--", "rm", "/big"]);
    let out = dd(&d, "a", "/big", 64);
    assert!(out.success(), "{out}");
    d.ok(&["exec", "a", "--", "sh", "-c", "echo kept > /keep"]);

    // Shrunk: only at the next start.
    let out = set(&d, "a", "disk=100M");
    assert!(out["next_start"].to_string().contains("disk"), "{out}");
    let before = std::fs::metadata(&image).unwrap().len();
    d.ok(&["stop", "a"]);
    d.ok(&["start", "a"]);
    let after = std::fs::metadata(&image).unwrap().len();
    assert!(
        after < before,
        "the image did not shrink: {before} -> {after}"
    );
    assert_eq!(d.sh("a", "cat /keep").trim(), "kept");
    let out = dd(&d, "a", "/big2", 64);
    assert!(
        !out.success() && out.stderr.contains("No space left on device"),
        "{out}"
    );
    d.ok(&["exec", "a", "--", "rm", "-f", "/big2"]);

    // A daemon restart: the image stays mounted, the data there.
    d.stop_daemon();
    d.restart();
    assert!(is_mount(&dir));
    d.ok(&["start", "a"]).to_string();
    assert_eq!(d.sh("a", "cat /keep").trim(), "kept");

    // A lost mount (as after a reboot): the daemon mounts the image again at start-up.
    d.ok(&["stop", "a"]);
    d.stop_daemon();
    let out = std::process::Command::new("umount")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!is_mount(&dir));
    d.restart();
    assert!(is_mount(&dir), "not mounted again at start-up");
    d.ok(&["start", "a"]);
    assert_eq!(d.sh("a", "cat /keep").trim(), "kept");

    // No limit: at the next start, the content is copied out and the image goes.
    let out = set(&d, "a", "disk=none");
    assert!(out["next_start"].to_string().contains("disk"), "{out}");
    d.ok(&["stop", "a"]);
    d.ok(&["start", "a"]);
    assert!(!image.exists() && !is_mount(&dir));
    assert_eq!(d.sh("a", "cat /keep").trim(), "kept");
    let stats = d.json(&["stats", "a", "--json", "--no-stream"]);
    assert!(stats[0]["disk_limit"].is_null(), "{stats}");

    d.ok(&["rm", "--force", "a"]);
    d.ok(&["rm", "--force", "b"]);
    assert_nothing_left(&d);
    d.finish();
}

/// Waits until instance `name` uses less than `bytes` of its disk (a discarded layer is
/// deleted by a thread).
fn wait_disk_below(d: &TestDaemon, name: &str, bytes: u64) {
    common::wait_until(
        Duration::from_secs(10),
        "the discarded layer's room back",
        || {
            let stats = d.json(&["stats", name, "--json", "--no-stream"]);
            stats[0]["disk_bytes"].as_u64().is_some_and(|b| b < bytes)
        },
    );
}

#[test]
fn a_transient_instance_with_an_image_restarts_resets_and_goes() {
    let d = TestDaemon::start();
    d.ok(&[
        "launch", "busybox", "--name", "t", "--disk", "32M", "--", "sleep", "1000",
    ]);
    let id = id_of(&d, "t");
    let dir = d.state.join("instances").join(&id);
    assert!(is_mount(&dir));
    let out = dd(&d, "t", "/big", 20);
    assert!(out.success(), "{out}");
    // The discarded writable layer is deleted inside the image: its room comes back.
    d.ok(&["restart", "t"]);
    wait_disk_below(&d, "t", 8 * MIB);
    let out = dd(&d, "t", "/big", 20);
    assert!(out.success(), "restart did not free the layer: {out}");
    d.ok(&["reset", "t"]);
    wait_disk_below(&d, "t", 8 * MIB);
    let out = dd(&d, "t", "/big", 20);
    assert!(out.success(), "reset did not free the layer: {out}");
    let out = dd(&d, "t", "/big2", 40);
    assert!(out.stderr.contains("No space left on device"), "{out}");
    d.ok(&["rm", "--force", "t"]);
    assert!(!dir.exists());
    assert_nothing_left(&d);
    d.finish();
}

/// A failure after the directory was copied into the new image: the launch (or start) fails
/// with the reason, and no mount, loop device, image or copy is left; the plain directory is
/// intact.
#[test]
fn a_failure_while_making_the_image_leaves_nothing() {
    let d = TestDaemon::start_with_env(&[], &[("MAYFLY_FAIL_AT", "disk-image:copied")]);
    let out = d.fails(&[
        "launch", "busybox", "--name", "f", "--disk", "32M", "--", "sleep", "1000",
    ]);
    assert!(
        out.stderr.contains("injected failure at disk-image:copied"),
        "{out}"
    );
    assert!(d.instance_names().is_empty());
    assert_nothing_left(&d);
    // A stopped instance: its start fails the same way and its directory stays as it was.
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "g",
        "--persistent",
        "--no-start",
        "--disk",
        "32M",
        "--",
        "sleep",
        "1000",
    ]);
    let id = id_of(&d, "g");
    let dir = d.state.join("instances").join(&id);
    std::fs::write(dir.join("marker"), b"here").unwrap();
    let out = d.fails(&["start", "g"]);
    assert!(
        out.stderr.contains("injected failure at disk-image:copied"),
        "{out}"
    );
    assert!(!is_mount(&dir));
    assert_eq!(std::fs::read(dir.join("marker")).unwrap(), b"here");
    assert_nothing_left(&d);
    // Without the limit it starts, from the same directory.
    d.ok(&["set", "g", "disk=none"]);
    d.ok(&["start", "g"]);
    assert_eq!(std::fs::read(dir.join("marker")).unwrap(), b"here");
    d.ok(&["rm", "--force", "g"]);
    assert_nothing_left(&d);
    d.finish();
}

/// A daemon that dies while the first image is put in place (after the directory was moved
/// aside; after the image was renamed into place) loses nothing: at the next start-up the
/// content is back (the plain directory, or the mounted image) and the start works.
#[test]
fn a_crash_while_the_image_is_put_in_place_loses_nothing() {
    let mut d = TestDaemon::start();
    for (name, point) in [("m", "disk-image:moved-aside"), ("p", "disk-image:placed")] {
        d.ok(&[
            "launch",
            "busybox",
            "--name",
            name,
            "--persistent",
            "--no-start",
            "--disk",
            "32M",
            "--",
            "sleep",
            "1000",
        ]);
        let id = id_of(&d, name);
        let dir = d.state.join("instances").join(&id);
        std::fs::write(dir.join("marker"), b"here").unwrap();
        d.crash_at(point, &["start", name]);
        assert_eq!(
            std::fs::read(dir.join("marker")).unwrap(),
            b"here",
            "after a crash at {point}"
        );
        let leftovers: Vec<String> = d
            .state_entries("disks")
            .into_iter()
            .filter(|e| !e.ends_with(".img"))
            .collect();
        assert!(leftovers.is_empty(), "{point}: {leftovers:?}");
        d.ok(&["start", name]);
        assert!(is_mount(&dir));
        assert_eq!(std::fs::read(dir.join("marker")).unwrap(), b"here");
        d.ok(&["rm", "--force", name]);
        assert_nothing_left(&d);
    }
    d.finish();
}

/// Snapshot, restore and clone of an instance whose directory is an image: the restore
/// stages the snapshot inside the image and discards the old layer there; the clone copies
/// out of it and gets an image of its own at its first start.
#[test]
fn snapshots_restores_and_clones_work_on_an_image() {
    let d = TestDaemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "s",
        "--persistent",
        "--disk",
        "32M",
        "--",
        "sleep",
        "1000",
    ]);
    d.ok(&["exec", "s", "--", "sh", "-c", "echo one > /v"]);
    d.ok(&["snapshot", "create", "s", "s1"]);
    d.ok(&["exec", "s", "--", "sh", "-c", "echo two > /v"]);
    d.ok(&["snapshot", "restore", "s", "s1"]);
    assert_eq!(d.sh("s", "cat /v").trim(), "one");
    let out = dd(&d, "s", "/big", 64);
    assert!(out.stderr.contains("No space left on device"), "{out}");
    d.ok(&["exec", "s", "--", "rm", "/big"]);
    d.ok(&["clone", "s", "c", "--start"]);
    assert_eq!(d.sh("c", "cat /v").trim(), "one");
    let cid = id_of(&d, "c");
    assert!(is_mount(&d.state.join("instances").join(&cid)));
    let out = dd(&d, "c", "/big", 64);
    assert!(out.stderr.contains("No space left on device"), "{out}");
    d.ok(&["rm", "--force", "c"]);
    d.ok(&["rm", "--force", "s"]);
    assert_nothing_left(&d);
    d.finish();
}

/// A limit below what a stopped instance holds: its start fails saying why, and the old image
/// with the data stays as it was (nothing of the new one is left).
#[test]
fn a_limit_below_the_content_fails_the_start_and_keeps_the_data() {
    let d = TestDaemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "k",
        "--persistent",
        "--disk",
        "64M",
        "--",
        "sleep",
        "1000",
    ]);
    let out = dd(&d, "k", "/big", 40);
    assert!(out.success(), "{out}");
    let id = id_of(&d, "k");
    let image = image_of(&d, &id);
    d.ok(&["stop", "k"]);
    let before = std::fs::metadata(&image).unwrap().len();
    d.ok(&["set", "k", "disk=16M"]);
    let out = d.fails(&["start", "k"]);
    assert!(out.stderr.contains("No space left on device"), "{out}");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), before);
    let left: Vec<String> = d
        .state_entries("disks")
        .into_iter()
        .filter(|e| !e.ends_with(".img"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(loop_devices_under(&d.state).len(), 1);
    d.ok(&["set", "k", "disk=64M"]);
    d.ok(&["start", "k"]);
    assert_eq!(d.sh("k", "wc -c < /big").trim(), (40 * MIB).to_string());
    d.ok(&["rm", "--force", "k"]);
    assert_nothing_left(&d);
    d.finish();
}

/// A failure while a dropped limit's image is copied out leaves the image (mounted, with the
/// data) and no copy; the next start without the failure copies it out.
#[test]
fn a_failure_while_copying_out_keeps_the_image() {
    let mut d = TestDaemon::start_with_env(&[], &[("MAYFLY_FAIL_AT", "disk-image:copied-out")]);
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "o",
        "--persistent",
        "--disk",
        "32M",
        "--",
        "sleep",
        "1000",
    ]);
    d.ok(&["exec", "o", "--", "sh", "-c", "echo kept > /keep"]);
    let id = id_of(&d, "o");
    let dir = d.state.join("instances").join(&id);
    let image = image_of(&d, &id);
    d.ok(&["stop", "o"]);
    d.ok(&["set", "o", "disk=none"]);
    assert!(image.is_file() && is_mount(&dir));
    assert!(
        !d.state
            .join("instances")
            .join(format!(".{id}.out"))
            .exists(),
        "the copy was left"
    );
    assert!(
        d.logs()
            .contains("injected failure at disk-image:copied-out")
    );
    d.stop_daemon();
    d.set_env(&[]);
    d.restart();
    d.ok(&["start", "o"]);
    assert!(!image.exists() && !is_mount(&dir));
    assert_eq!(d.sh("o", "cat /keep").trim(), "kept");
    d.ok(&["rm", "--force", "o"]);
    assert_nothing_left(&d);
    d.finish();
}
