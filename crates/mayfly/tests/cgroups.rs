//! Cgroup layouts: the same life cycle driven through the unified (v2) hierarchy and through
//! the v1 controller hierarchies. This build machine is hybrid (v1 controllers beside an empty
//! cgroup2 mount); `--cgroup-layout v2` makes the daemon drive the unified tree there, so the
//! v2 code (groups, `cgroup.freeze`, `cgroup.kill`, removal) runs against a real kernel.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestDaemon, wait_until};

/// Mount points of the cgroup hierarchies of type `fstype` (`cgroup2` or `cgroup`).
fn mounts_of(fstype: &str) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next() == Some(fstype))
                .then(|| PathBuf::from(left.split(' ').nth(4).unwrap_or_default()))
        })
        .collect()
}

/// The unified hierarchy's mount point on this host.
fn unified_root() -> PathBuf {
    mounts_of("cgroup2")
        .into_iter()
        .next()
        .expect("a cgroup2 mount")
}

/// The unified-hierarchy path of `pid` (the `0::` line of /proc/PID/cgroup).
fn unified_group_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .expect("read /proc/PID/cgroup")
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .expect("a unified line")
}

#[test]
fn the_v2_layout_runs_freezes_kills_and_cleans_up_in_the_unified_hierarchy() {
    if mounts_of("cgroup2").is_empty() {
        eprintln!("this host has no cgroup2 mount: nothing to drive with --cgroup-layout v2");
        return;
    }
    let mut d = TestDaemon::start_with(&["--cgroup-layout", "v2"]);
    assert_eq!(d.daemon_info()["cgroup_mode"], "v2");
    let root = unified_root();

    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "v2-web",
        "--persistent",
        "--",
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 1; done",
    ]);
    let id = d.info("v2-web")["id"].as_str().expect("id").to_owned();
    let rel = format!("{}/{id}", d.cgroup_parent());
    let pid = d.pid_of("v2-web");
    assert_eq!(unified_group_of(pid), format!("/{rel}"));
    let group = root.join(&rel);
    let procs = std::fs::read_to_string(group.join("cgroup.procs")).expect("cgroup.procs");
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    // The subtree delegated to the instance is bounded by the kernel (the walk that removes
    // it is), with limits the instance cannot raise.
    let limit = |f: &str| {
        std::fs::read_to_string(group.join(f))
            .expect(f)
            .trim()
            .to_owned()
    };
    assert_eq!(limit("cgroup.max.depth"), "31");
    assert_eq!(limit("cgroup.max.descendants"), "16383");
    let raise = d.sh(
        "v2-web",
        "echo max > /sys/fs/cgroup/cgroup.max.depth 2>/dev/null && echo raised || echo refused",
    );
    assert_eq!(raise.trim(), "refused");
    assert_eq!(limit("cgroup.max.depth"), "31");

    // An exec'd process joins the same group (found by its unique command line; the CLI
    // process that asked for it mentions it too, but lives in no instance group).
    let mut sleeper = d
        .command(&["exec", "v2-web", "--", "sleep", "3601"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start exec");
    let cli = i32::try_from(sleeper.id()).unwrap_or(0);
    let mut exec_pid = 0;
    wait_until(Duration::from_secs(10), "the exec'd sleep to start", || {
        exec_pid = common::processes_mentioning("sleep 3601")
            .into_iter()
            .map(|(pid, _)| pid)
            .find(|pid| *pid != cli)
            .unwrap_or(0);
        exec_pid != 0
    });
    // In the hierarchy delegated to the instance's init, in the leaf mayfly owns below its
    // group (an init such as systemd may make its own group an inner node).
    assert_eq!(unified_group_of(exec_pid), format!("/{rel}/mayfly-exec"));

    // A snapshot of the running instance freezes it through cgroup.freeze and thaws it.
    d.sh("v2-web", "echo kept > /root/f");
    let snap = d.json(&["snapshot", "create", "v2-web", "s", "--json"]);
    assert!(snap["frozen_ms"].is_number(), "{snap}");
    let freeze = std::fs::read_to_string(group.join("cgroup.freeze")).expect("cgroup.freeze");
    assert_eq!(freeze.trim(), "0", "thawed after the snapshot");
    assert_eq!(d.sh("v2-web", "cat /root/f").trim(), "kept");

    // The init ignores SIGTERM: stop falls back to killing the whole group.
    d.ok(&["stop", "--timeout", "1", "v2-web"]);
    let _ = sleeper.wait();
    assert_eq!(d.state_of("v2-web").as_deref(), Some("stopped"));
    assert!(
        !group.exists(),
        "the group is removed once its processes are gone"
    );

    // A daemon asked for another layout refuses the running forker instead of losing track
    // of its instances; the same layout re-attaches.
    d.ok(&["start", "v2-web"]);
    let pid = d.pid_of("v2-web");
    d.stop_daemon();
    let wrong = common::run_command(
        {
            let mut c = std::process::Command::new(common::bin());
            c.args(["daemon", "--cgroup-layout", "v1", "--state-dir"])
                .arg(&d.state)
                .arg("--socket")
                .arg(&d.socket)
                .env_remove("MAYFLY_CGROUP_LAYOUT");
            c
        },
        None,
        common::CLI_TIMEOUT,
    );
    assert_ne!(wrong.code, 0, "{wrong}");
    assert!(
        wrong.stderr.contains("--cgroup-layout") && wrong.stderr.contains("v2"),
        "{wrong}"
    );
    assert!(common::pid_alive(pid), "the instance kept running");
    d.restart();
    assert_eq!(d.pid_of("v2-web"), pid);
    assert_eq!(d.sh("v2-web", "cat /root/f").trim(), "kept");
    d.ok(&["rm", "--force", "v2-web"]);
    d.finish();
}

#[test]
fn the_v1_layout_drives_the_controller_hierarchies() {
    if mounts_of("cgroup").is_empty() {
        eprintln!("this host has no v1 hierarchy: nothing to drive with --cgroup-layout v1");
        return;
    }
    let d = TestDaemon::start_with(&["--cgroup-layout", "v1"]);
    assert_eq!(d.daemon_info()["cgroup_mode"], "v1");
    d.ok(&["launch", "busybox", "--name", "v1-web"]);
    let id = d.info("v1-web")["id"].as_str().expect("id").to_owned();
    let rel = format!("{}/{id}", d.cgroup_parent());
    let present = common::cgroup_present(&rel);
    assert!(
        present
            .iter()
            .any(|p| p.starts_with("/sys/fs/cgroup/memory")),
        "{present:?}"
    );
    // The instance also has a group in the unified tree and name=systemd, for an init that
    // boots (handed to the instance's root; see docs/boot.md).
    for unified in mounts_of("cgroup2") {
        assert!(
            present.iter().any(|p| p.starts_with(&unified)),
            "{present:?}"
        );
    }
    if Path::new("/sys/fs/cgroup/systemd").is_dir() {
        assert!(
            present
                .iter()
                .any(|p| p.starts_with("/sys/fs/cgroup/systemd")),
            "{present:?}"
        );
    }
    d.ok(&["snapshot", "create", "v1-web", "s"]);
    d.ok(&["rm", "--force", "v1-web"]);
    d.finish();
}

#[test]
fn an_unknown_layout_is_bad_usage() {
    let out = common::run_command(
        {
            let mut c = std::process::Command::new(common::bin());
            c.args([
                "daemon",
                "--cgroup-layout",
                "v3",
                "--state-dir",
                "/nonexistent",
            ]);
            c
        },
        None,
        common::CLI_TIMEOUT,
    );
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("auto, v1 or v2"), "{out}");
}

/// Groups an instance makes below its own in `name=systemd` (which has no depth limit) are
/// removed with it, however deep, leaving nothing in any hierarchy.
#[test]
fn groups_an_instance_makes_below_its_own_go_with_it_however_deep() {
    if !Path::new("/sys/fs/cgroup/systemd").is_dir() {
        eprintln!("this host has no name=systemd hierarchy");
        return;
    }
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "deep", "--persistent"]);
    let made = d.sh(
        "deep",
        "cd /sys/fs/cgroup/systemd && for i in $(seq 60); do mkdir g && cd g || exit 1; done; \
         mkdir side && echo made",
    );
    assert_eq!(made.trim(), "made");
    let id = d.info("deep")["id"].as_str().expect("id").to_owned();
    let rel = format!("{}/{id}", d.cgroup_parent());
    let deep = Path::new("/sys/fs/cgroup/systemd")
        .join(&rel)
        .join(["g"; 60].join("/"));
    assert!(deep.join("side").is_dir(), "{}", deep.display());
    d.ok(&["stop", "--timeout", "0", "deep"]);
    assert!(
        common::cgroup_present(&rel).is_empty(),
        "{:?}",
        common::cgroup_present(&rel)
    );
    d.ok(&["rm", "deep"]);
    d.finish();
}
