//! Devices: root inside an instance can neither make nor open a device node beyond what mayfly
//! gives it (null, zero, full, random, urandom, tty, console, ptmx and the terminals), with or
//! without a user namespace, on the v1 and the v2 cgroup layout; and what it is given works.
//!
//! Without a user namespace (`--user-namespaces off`) the instance's root is the host's root
//! with CAP_MKNOD: only the device rules (v1 `devices` controller, v2 BPF device program) and
//! `nodev` mounts stand between it and the host's disk. With one, the kernel already refuses
//! `mknod` of any device to a namespace root; the rules are there as well.

mod common;

use std::path::PathBuf;

use common::{Output, TestDaemon};

/// `major:minor` of a block device of the host that the host's root can open: the disk that
/// holds the root filesystem (what an escape would go for), else the first disk in /sys/block
/// that opens (some sandboxes refuse even the host's root its boot disk; a loop device then
/// shows the same thing).
fn host_block_device() -> (u32, u32) {
    let parse = |s: &str| -> Option<(u32, u32)> {
        let (maj, min) = s.trim().split_once(':')?;
        Some((maj.parse().ok()?, min.parse().ok()?))
    };
    let opens = |(maj, min): (u32, u32)| -> bool {
        let uevent = std::fs::read_to_string(format!("/sys/dev/block/{maj}:{min}/uevent"))
            .unwrap_or_default();
        uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .is_some_and(|name| std::fs::File::open(format!("/dev/{name}")).is_ok())
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&"/")).then(|| f.get(2).and_then(|d| parse(d)))?
    });
    let mut disks: Vec<PathBuf> = std::fs::read_dir("/sys/block")
        .expect("/sys/block")
        .flatten()
        .map(|e| e.path())
        .collect();
    disks.sort();
    root.into_iter()
        .chain(
            disks
                .iter()
                .filter_map(|p| parse(&std::fs::read_to_string(p.join("dev")).ok()?)),
        )
        .find(|dev| opens(*dev))
        .expect("a block device that the host's root can open")
}

fn exec(d: &TestDaemon, name: &str, script: &str) -> Output {
    d.mayfly(&["exec", name, "--", "sh", "-c", script])
}

/// Root inside cannot make a node for the host's disk or a kernel character device, in the
/// writable layer or in /dev; and a node that exists anyway (put there by the host, on a
/// mount that allows devices) cannot be opened.
fn assert_no_device_escape(d: &TestDaemon, name: &str) {
    let (maj, min) = host_block_device();
    // Every way in is tried before anything is asserted, so that a failure lists them all.
    let mut escapes = Vec::new();
    // The kernel log is opened write-only: it checks no syslog permission for writers.
    for (path, node, open) in [
        ("/tmp/disk", format!("b {maj} {min}"), "<"),
        ("/dev/disk", format!("b {maj} {min}"), "<"),
        ("/tmp/kmsg", "c 1 11".to_owned(), ">"),
        ("/dev/kmsg", "c 1 11".to_owned(), ">"),
    ] {
        let out = exec(
            d,
            name,
            &format!("mknod {path} {node} && (: {open} {path}) && echo OPENED"),
        );
        // The device rules refuse the node itself (and a user namespace refuses any device
        // node to its root): EPERM at mknod, before nodev would refuse the open (EACCES).
        let refused =
            out.stderr.contains("mknod") && out.stderr.contains("Operation not permitted");
        if out.stdout.contains("OPENED") || !refused {
            escapes.push(format!("`mknod {path} {node}` and open: {out}"));
        }
    }

    // Nodes that exist anyway: the host's root makes a tmpfs that allows devices inside the
    // instance's mount namespace, with the disk and /dev/kmsg open to everyone. Only the
    // device rules keep the instance out now (EPERM at open; nodev would say EACCES, and
    // file modes do not stop anyone: 0666).
    d.sh(name, "mkdir -p /mnt/devtest");
    let pid = d.pid_of(name).to_string();
    let host = |args: &[&str]| {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args(["-t", &pid, "-m", "/bin/busybox"]).args(args);
        let out = common::run_command(cmd, None, common::CLI_TIMEOUT);
        assert!(out.success(), "nsenter {args:?}: {out}");
    };
    host(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=64k",
        "devtest",
        "/mnt/devtest",
    ]);
    host(&[
        "mknod",
        "-m",
        "666",
        "/mnt/devtest/disk",
        "b",
        &maj.to_string(),
        &min.to_string(),
    ]);
    host(&["mknod", "-m", "666", "/mnt/devtest/kmsg", "c", "1", "11"]);
    for (what, script) in [
        ("read the host's disk", ": < /mnt/devtest/disk"),
        ("write to the kernel log", ": > /mnt/devtest/kmsg"),
    ] {
        let out = exec(d, name, &format!("({script}) && echo OPENED"));
        if out.stdout.contains("OPENED") || !out.stderr.contains("Operation not permitted") {
            escapes.push(format!(
                "opening a node to {what} must fail with EPERM (device rules): {out}"
            ));
        }
    }
    assert!(
        escapes.is_empty(),
        "device escapes:\n{}",
        escapes.join("\n")
    );
}

/// What mayfly gives an instance works: the harmless devices, the terminals, a deleted
/// template file (a whiteout is a 0:0 character device).
fn assert_usual_devices_work(d: &TestDaemon, name: &str) {
    let out = d.sh(
        name,
        "echo x > /dev/null && echo null-ok; \
         head -c 4 /dev/zero | od -An -tx1; \
         head -c 4 /dev/urandom | wc -c; head -c 4 /dev/random | wc -c; \
         echo x > /dev/full 2>/dev/null || echo full-refused",
    );
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        words,
        ["null-ok", "00", "00", "00", "00", "4", "4", "full-refused"],
        "{out}"
    );
    // /dev itself refuses devices (its own nodes are bind mounts, which keep their source's
    // flags).
    let dev = d.sh(name, "grep ' /dev tmpfs ' /proc/self/mounts");
    assert!(dev.contains("nodev"), "/dev is mounted nodev: {dev}");
    let full = exec(d, name, "echo x > /dev/full");
    assert!(
        full.stderr.contains("No space left on device"),
        "/dev/full gives ENOSPC: {full}"
    );

    // A terminal of the instance's own devpts (ptmx, pts/N) and /dev/tty.
    let term = d.mayfly(&[
        "exec",
        "-t",
        name,
        "--",
        "sh",
        "-c",
        "t=$(tty) && echo \"on $t\" > $t && echo via-tty > /dev/tty && echo term-ok",
    ]);
    assert_eq!(term.code, 0, "{term}");
    for want in ["on /dev/pts/", "via-tty", "term-ok"] {
        assert!(term.stdout.contains(want), "{want}: {term}");
    }

    // Deleting a template file makes a whiteout in the writable layer.
    let gone = d.sh(
        name,
        "rm /etc/profile && test ! -e /etc/profile && echo deleted",
    );
    assert_eq!(gone.trim(), "deleted");
}

/// `run -t`: the terminal the daemon made is the instance's /dev/console.
fn assert_console_works(d: &TestDaemon) {
    let out = d.mayfly(&[
        "run",
        "--rm",
        "-t",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo via-console > /dev/console && echo console-ok",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("via-console"), "{out}");
    assert!(out.stdout.contains("console-ok"), "{out}");
}

/// A build container is confined the same way, and its devices work.
fn assert_build_confined(d: &TestDaemon) {
    let (maj, min) = host_block_device();
    let out = d.fails(&[
        "template",
        "build",
        "devices-escape",
        "--from",
        "busybox",
        "--run",
        &format!("mknod /dev/node b {maj} {min} && : < /dev/node && echo OPENED"),
    ]);
    assert!(!out.stdout.contains("OPENED"), "{out}");
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
    d.ok(&[
        "template",
        "build",
        "devices-ok",
        "--from",
        "busybox",
        "--run",
        "head -c 4 /dev/urandom > /etc/seed && echo x > /dev/null",
    ]);
}

/// The v1 group of the instance lists exactly mayfly's devices.
fn assert_v1_rules(d: &TestDaemon, name: &str) {
    let id = d.info(name)["id"].as_str().expect("id").to_owned();
    let list = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/devices/{}/{id}/devices.list",
        d.cgroup_parent()
    ))
    .expect("devices.list of the instance's group");
    let mut rules: Vec<&str> = list.lines().collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        [
            "c 136:* rwm",
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:1 rwm",
            "c 5:2 rwm",
        ],
        "{list}"
    );
}

fn has_cgroup2() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" - cgroup2 "))
}

fn has_v1_devices() -> bool {
    std::path::Path::new("/sys/fs/cgroup/devices/devices.list").exists()
}

#[test]
fn without_user_namespaces_on_v1_devices_stay_confined() {
    let d = TestDaemon::start_with(&["--user-namespaces", "off"]);
    let info = d.daemon_info();
    assert_eq!(info["user_namespaces"], false, "{info}");
    let text = d.ok(&["info"]);
    assert!(
        text.contains("user namespaces:  no (disabled by --user-namespaces off)"),
        "{text}"
    );
    d.ok(&["launch", "busybox", "--name", "dev-v1-root"]);
    assert_eq!(d.info("dev-v1-root")["isolation"]["user_namespace"], false);
    assert_no_device_escape(&d, "dev-v1-root");
    assert_usual_devices_work(&d, "dev-v1-root");
    assert_console_works(&d);
    if has_v1_devices() && d.daemon_info()["cgroup_mode"] != "v2" {
        assert_v1_rules(&d, "dev-v1-root");
    }
    assert_build_confined(&d);
    d.ok(&["rm", "-f", "dev-v1-root"]);
    d.finish();
}

#[test]
fn without_user_namespaces_on_v2_devices_stay_confined() {
    if !has_cgroup2() {
        eprintln!("no cgroup2 mount on this host: nothing to drive with --cgroup-layout v2");
        return;
    }
    let d = TestDaemon::start_with(&["--user-namespaces", "off", "--cgroup-layout", "v2"]);
    assert_eq!(d.daemon_info()["user_namespaces"], false);
    d.ok(&["launch", "busybox", "--name", "dev-v2-root"]);
    assert_no_device_escape(&d, "dev-v2-root");
    assert_usual_devices_work(&d, "dev-v2-root");
    assert_console_works(&d);
    assert_build_confined(&d);
    d.ok(&["rm", "-f", "dev-v2-root"]);
    d.finish();
}

#[test]
fn with_user_namespaces_on_v1_devices_stay_confined() {
    let d = TestDaemon::start();
    if d.daemon_info()["user_namespaces"] != true {
        eprintln!("user namespaces are unavailable here: the other tests cover this host");
        d.finish();
        return;
    }
    d.ok(&["launch", "busybox", "--name", "dev-v1-ns"]);
    assert_no_device_escape(&d, "dev-v1-ns");
    assert_usual_devices_work(&d, "dev-v1-ns");
    assert_console_works(&d);
    if has_v1_devices() && d.daemon_info()["cgroup_mode"] != "v2" {
        assert_v1_rules(&d, "dev-v1-ns");
    }
    d.ok(&["rm", "-f", "dev-v1-ns"]);
    d.finish();
}

#[test]
fn with_user_namespaces_on_v2_devices_stay_confined() {
    if !has_cgroup2() {
        eprintln!("no cgroup2 mount on this host: nothing to drive with --cgroup-layout v2");
        return;
    }
    let d = TestDaemon::start_with(&["--cgroup-layout", "v2"]);
    if d.daemon_info()["user_namespaces"] != true {
        eprintln!("user namespaces are unavailable here: the other tests cover this host");
        d.finish();
        return;
    }
    d.ok(&["launch", "busybox", "--name", "dev-v2-ns"]);
    assert_no_device_escape(&d, "dev-v2-ns");
    assert_usual_devices_work(&d, "dev-v2-ns");
    assert_console_works(&d);
    d.ok(&["rm", "-f", "dev-v2-ns"]);
    d.finish();
}

#[test]
fn an_unknown_user_namespaces_value_is_refused_with_the_choices() {
    let out = common::run_command(
        {
            let mut c = std::process::Command::new(common::bin());
            c.args(["daemon", "--user-namespaces", "maybe"]);
            c
        },
        None,
        common::CLI_TIMEOUT,
    );
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("use auto or off"), "{out}");
}
