//! Volume sizes (issue 23, point 3): `volume create --size` uses the disk-limit mechanism of
//! `--disk` (here, without project quotas: an ext4 image loop-mounted over the volume's
//! directory). Writing past it gives ENOSPC; `volume info` shows the bytes used; the image is
//! mounted again after a lost mount (a reboot) at the daemon's start; `volume rm` leaves no
//! mount, loop device or image; a failure or a crash while one is made leaves nothing. And
//! `clone --copy-volumes` gives the clone copies of the source's volumes (same size limit,
//! same paths), while a plain clone gets none.

mod common;

use std::path::PathBuf;

use common::quota_fs::{assert_no_disk_left, is_mount};
use common::*;

const MIB: u64 = 1 << 20;

fn volume_dir(d: &TestDaemon, name: &str) -> (String, PathBuf) {
    let id = d.json(&["volume", "info", name, "--json"])["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let dir = d.state.join("volumes").join(&id);
    (id, dir)
}

fn assert_nothing_left(d: &TestDaemon) {
    assert_no_disk_left(d, &["volumes"]);
    assert!(
        d.state_entries("volumes").is_empty(),
        "{:?}",
        d.state_entries("volumes")
    );
}

/// Creates volume `name` of 16 MiB; false (and a NOT RUN line) where the host cannot limit
/// disk space at all.
fn create_sized(d: &TestDaemon, name: &str) -> bool {
    let out = d.mayfly(&["volume", "create", name, "--size", "16M"]);
    if out.stderr.contains("cannot be enforced on this host") {
        eprintln!("NOT RUN: {}", out.stderr);
        return false;
    }
    assert!(out.success(), "{out}");
    true
}

#[test]
fn a_volume_size_is_enforced_and_its_image_follows_the_volume() {
    let mut d = TestDaemon::start();
    if !create_sized(&d, "small") {
        d.finish();
        return;
    }
    let (id, dir) = volume_dir(&d, "small");
    assert!(
        is_mount(&dir),
        "the image is mounted over the volume's directory"
    );
    assert!(d.state.join("disks").join(format!("{id}.img")).is_file());
    let v = d.json(&["volume", "info", "small", "--json"]);
    assert_eq!(v["size"].as_u64(), Some(16 * MIB), "{v}");

    launch(&d, "w", &["--persistent", "-v", "small:/v"], Some(IDLE));
    let out = d.mayfly(&[
        "exec",
        "w",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/v/big bs=1M count=40 2>&1; sync",
    ]);
    assert!(out.stdout.contains("No space left"), "{out}");
    d.sh("w", "echo kept >/v/note");
    let used = d.json(&["volume", "info", "small", "--json"])["used"]
        .as_u64()
        .unwrap();
    // About the limit is usable: at least it, at most ext4's slack more (docs/quotas.md).
    assert!((16 * MIB..=25 * MIB).contains(&used), "used {used}");
    let shown = d.ok(&["volume", "info", "small"]);
    assert!(shown.contains("used:") && shown.contains("16"), "{shown}");

    // A lost mount (a reboot): the daemon's start mounts the image again.
    d.ok(&["stop", "w"]);
    d.kill_daemon();
    let out = std::process::Command::new("umount")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!is_mount(&dir));
    d.restart();
    assert!(
        is_mount(&dir),
        "the start-up mounted the volume's image again"
    );
    d.ok(&["start", "w"]);
    assert_eq!(d.sh("w", "cat /v/note"), "kept\n");
    // Lost while the daemon runs: the next start mounts it again.
    d.ok(&["stop", "w"]);
    let out = std::process::Command::new("umount")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    d.ok(&["start", "w"]);
    assert!(is_mount(&dir));
    assert_eq!(d.sh("w", "cat /v/note"), "kept\n");

    d.ok(&["rm", "--force", "w"]);
    d.ok(&["volume", "rm", "small"]);
    assert_nothing_left(&d);
    d.finish();
}

#[test]
fn a_failure_or_a_crash_while_a_sized_volume_is_made_leaves_nothing() {
    let mut d = TestDaemon::start_with_env(&[], &[("MAYFLY_FAIL_AT", "volume:made")]);
    let out = d.fails(&["volume", "create", "f", "--size", "16M"]);
    if out.stderr.contains("cannot be enforced on this host") {
        eprintln!("NOT RUN: {}", out.stderr);
        d.finish();
        return;
    }
    assert!(
        out.stderr.contains("injected failure at volume:made"),
        "{out}"
    );
    assert!(
        d.json(&["volume", "list", "--json"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_nothing_left(&d);
    d.set_env(&[]);
    d.crash_at("volume:made", &["volume", "create", "c", "--size", "16M"]);
    // The restarted daemon swept the uncatalogued volume: its image, mount and directory.
    assert!(
        d.json(&["volume", "list", "--json"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_nothing_left(&d);
    // A crash in the middle of a removal: the restart finishes it.
    d.ok(&["volume", "create", "r", "--size", "16M"]);
    let (_, dir) = volume_dir(&d, "r");
    assert!(is_mount(&dir));
    d.crash_at("volume:removed", &["volume", "rm", "r"]);
    assert!(
        d.json(&["volume", "list", "--json"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_nothing_left(&d);
    d.finish();
}

#[test]
fn a_clone_gets_no_volume_or_copies_of_them() {
    let d = TestDaemon::start();
    let sized = create_sized(&d, "db");
    if !sized {
        d.ok(&["volume", "create", "db"]);
    }
    d.ok(&["volume", "create", "conf"]);
    launch(
        &d,
        "src",
        &["--persistent", "-v", "db:/srv/db", "-v", "conf:/etc/app:ro"],
        Some(IDLE),
    );
    d.sh("src", "echo row >/srv/db/table");
    // The copy keeps the owner and mode of the volume's top directory.
    d.sh("src", "chown 1000:1000 /srv/db && chmod 0750 /srv/db");
    // Volumes are in the snapshot's metadata.
    d.ok(&["snapshot", "create", "src", "s1"]);
    let snap = d.json(&["snapshot", "info", "src", "s1", "--json"]);
    assert_eq!(snap["volumes"][0]["volume"], "db", "{snap}");
    // Copies are made of a stopped source only.
    let out = d.fails(&["clone", "src", "busy", "--copy-volumes"]);
    assert!(out.stderr.contains("stop it first"), "{out}");
    assert!(is_gone(&d, "busy"));
    d.ok(&["stop", "src"]);

    d.ok(&["clone", "src", "plain"]);
    assert!(
        d.info("plain")["volumes"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    d.ok(&["clone", "src", "copy", "--copy-volumes"]);
    {
        use std::os::unix::fs::MetadataExt;
        let top = |name: &str| {
            let m = std::fs::metadata(volume_dir(&d, name).1.join("data")).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        let (src_top, copy_top) = (top("db"), top("copy-db"));
        assert_eq!(src_top.2, 0o750, "{src_top:?}");
        assert_eq!(copy_top, src_top, "the copy's top directory");
    }
    let vols = d.info("copy")["volumes"].clone();
    assert_eq!(vols[0]["volume"], "copy-db", "{vols}");
    assert_eq!(vols[0]["path"], "/srv/db", "{vols}");
    assert_eq!(vols[1]["volume"], "copy-conf", "{vols}");
    assert_eq!(vols[1]["readonly"], true, "{vols}");
    let v = d.json(&["volume", "info", "copy-db", "--json"]);
    assert_eq!(v["attached"]["instance"], "copy", "{v}");
    if sized {
        assert_eq!(v["size"].as_u64(), Some(16 * MIB), "{v}");
    }
    // The copy is the clone's own: writes do not reach the source's volume.
    d.ok(&["start", "copy"]);
    assert_eq!(
        d.sh("copy", "stat -c '%u:%g %a' /srv/db"),
        "1000:1000 750\n"
    );
    assert_eq!(
        d.sh("copy", "cat /srv/db/table && echo more >>/srv/db/table"),
        "row\n"
    );
    d.ok(&["start", "src"]);
    assert_eq!(d.sh("src", "cat /srv/db/table"), "row\n");
    // A second copy under a taken name is refused and leaves nothing.
    d.ok(&["stop", "src"]);
    d.ok(&["volume", "create", "again-conf"]);
    let out = d.fails(&["clone", "src", "again", "--copy-volumes"]);
    assert!(out.stderr.contains("again-conf"), "{out}");
    assert!(is_gone(&d, "again"));
    let names: Vec<String> = d
        .json(&["volume", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["again-conf", "conf", "copy-conf", "copy-db", "db"]);

    // Restoring a snapshot that recorded a volume does not take it back from its new holder.
    d.ok(&["volume", "detach", "db", "src"]);
    d.ok(&["volume", "attach", "db", "plain:/srv/db"]);
    d.ok(&["snapshot", "restore", "src", "s1"]);
    let kept: Vec<_> = d.info("src")["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["volume"].clone())
        .collect();
    assert_eq!(kept, [serde_json::json!("conf")]);
    let v = d.json(&["volume", "info", "db", "--json"]);
    assert_eq!(v["attached"]["instance"], "plain", "{v}");

    for n in ["src", "plain", "copy"] {
        d.ok(&["rm", "--force", n]);
    }
    d.ok(&[
        "volume",
        "rm",
        "db",
        "conf",
        "copy-db",
        "copy-conf",
        "again-conf",
    ]);
    d.finish();
}
