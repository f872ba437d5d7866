//! Cgroup limits through the container driver and its forker, without a daemon (issue 22):
//! the forker applies an instance's limits to its group before the init joins it, a limit the
//! host cannot enforce fails the start and leaves no group, and the driver changes limits of
//! a running instance and reads its usage straight from the kernel's files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mayfly_api::{Cpus, IoMax, Limits};
use mayfly_driver::cgroup::CgroupLayout;
use mayfly_driver::container::ContainerDriver;
use mayfly_driver::{Driver, InitStdio, InstanceSpec, NetworkMode, ProcessSpec};

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The hierarchies' mount points: `/sys/fs/cgroup` itself (v2) and each directory in it (v1).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out = vec![root.to_owned()];
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.push(e.path());
        }
    }
    out
}

/// The groups at `rel` in every hierarchy.
fn groups(rel: &str) -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .map(|h| h.join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// The content of cgroup file `file` of group `rel`, in whichever hierarchy has it.
fn kernel(rel: &str, file: &str) -> String {
    let path = groups(rel)
        .into_iter()
        .map(|g| g.join(file))
        .find(|f| f.exists())
        .unwrap_or_else(|| panic!("no {file} for group {rel}"));
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

/// Kills what runs in `group` (and below), then removes the groups, deepest first.
fn remove_tree(group: &Path) {
    for e in std::fs::read_dir(group).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_tree(&e.path());
        }
    }
    let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let end = Instant::now() + Duration::from_secs(5);
    while std::fs::remove_dir(group).is_err() && group.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ends the forker and removes what the test left in the cgroup hierarchies.
struct Cleanup {
    forker: Child,
    parent: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.forker.kill();
        let _ = self.forker.wait();
        for g in groups(&self.parent) {
            remove_tree(&g);
        }
    }
}

/// A state directory with a busybox layer, its own forker, and a driver talking to it.
/// Fields drop in order: the driver, then the forker (and the test's cgroups), then the state.
struct Bench {
    driver: ContainerDriver,
    rt: tokio::runtime::Runtime,
    _events: tokio::sync::mpsc::Receiver<mayfly_driver::DriverEvent>,
    state: PathBuf,
    layer: PathBuf,
    trash: PathBuf,
    parent: String,
    _cleanup: Cleanup,
    _tmp: tempfile::TempDir,
}

impl Bench {
    fn new() -> Bench {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().to_owned();
        let layer = state.join("layer");
        std::fs::create_dir(&layer).unwrap();
        mayfly_image::build_busybox_rootfs(Path::new("/bin/busybox"), &layer).unwrap();
        let trash = state.join("trash");
        std::fs::create_dir(&trash).unwrap();
        let exe = env!("CARGO_BIN_EXE_mayfly");
        let parent = format!("mayfly-limtest-{}", std::process::id());
        let forker = Command::new(exe)
            .args(["forker", "--state-dir"])
            .arg(&state)
            .args(["--cgroup-parent", &parent])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let cleanup = Cleanup {
            forker,
            parent: parent.clone(),
        };
        wait_for("the forker's socket", Duration::from_secs(10), || {
            state.join("run/forker.sock").exists()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, events) = tokio::sync::mpsc::channel(64);
        let driver = ContainerDriver::new(&state, Path::new(exe), &parent, CgroupLayout::Auto, tx);
        Bench {
            driver,
            rt,
            _events: events,
            state,
            layer,
            trash,
            parent,
            _cleanup: cleanup,
            _tmp: tmp,
        }
    }

    /// Starts container `id` running `sh -c script` under `limits`.
    fn start(
        &self,
        id: &str,
        script: &str,
        limits: Limits,
    ) -> Result<mayfly_driver::Started, mayfly_driver::DriverError> {
        let dir = self.state.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = InstanceSpec {
            id: id.to_owned(),
            hostname: id.to_owned(),
            layers: vec![self.layer.clone()],
            instance_dir: dir.clone(),
            writable: dir.join("upper"),
            new_identity: false,
            network: NetworkMode::Isolated,
            interfaces: vec![],
            binds: vec![],
            idmap: None,
            process: ProcessSpec {
                args: vec!["sh".into(), "-c".into(), script.into()],
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                user: String::new(),
                tty: false,
            },
            init: false,
            limits,
        };
        self.driver.prepare_writable(&spec, &self.trash).unwrap();
        self.rt.block_on(
            self.driver
                .start(spec, InitStdio::Log { max_bytes: 1 << 20 }),
        )
    }

    fn stop(&self, id: &str, pid: i32) {
        self.rt.block_on(self.driver.kill(id)).unwrap();
        wait_for("the instance to end", Duration::from_secs(10), || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z "))
        });
        let _ = self.rt.block_on(self.driver.release(id));
    }
}

#[test]
fn limits_are_applied_before_the_init_changed_live_and_refused_cleanly() {
    let b = Bench::new();
    let v1 = Path::new("/sys/fs/cgroup/memory").is_dir();
    if !v1 {
        eprintln!(
            "this host's cgroups are v2: see the unit tests of cgroup::limits for what applies there"
        );
    }
    let io_dev = mayfly_driver::cgroup::limits::io_device(&b.state).is_some();
    let limits = Limits {
        cpus: Some(Cpus(500)),
        cpu_weight: Some(50),
        cpuset: Some("0".into()),
        memory: Some(64 << 20),
        memory_reserve: Some(32 << 20),
        pids: Some(32),
        io_max: io_dev.then_some(IoMax {
            rbps: Some(4 << 20),
            ..IoMax::default()
        }),
        ..Limits::default()
    };
    if v1 {
        assert_eq!(b.driver.check_limits(&limits), Ok(()));
    }
    let started = b.start("lim-a", "sleep 60", limits.clone()).expect("start");
    let rel = format!("{}/lim-a", b.parent);
    if v1 {
        assert_eq!(
            kernel(&rel, "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            kernel(&rel, "memory.memsw.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(kernel(&rel, "memory.swappiness"), "0", "no swap by default");
        assert_eq!(
            kernel(&rel, "memory.soft_limit_in_bytes"),
            (32u64 << 20).to_string()
        );
        assert_eq!(kernel(&rel, "cpu.cfs_quota_us"), "50000");
        assert_eq!(kernel(&rel, "cpu.shares"), "512");
        assert_eq!(kernel(&rel, "cpuset.cpus"), "0");
        assert_eq!(kernel(&rel, "pids.max"), "32");
        if io_dev {
            assert!(
                kernel(&rel, "blkio.throttle.read_bps_device").ends_with(&format!(" {}", 4 << 20))
            );
        }
    } else {
        assert_eq!(kernel(&rel, "memory.max"), (64u64 << 20).to_string());
        assert_eq!(kernel(&rel, "pids.max"), "32");
    }
    let usage = b.rt.block_on(b.driver.usage("lim-a")).expect("usage");
    assert!(usage.pids >= 1, "{usage:?}");

    // Live: raise memory, lower the CPU quota, change pids.
    let live = Limits {
        cpus: Some(Cpus(250)),
        memory: Some(128 << 20),
        pids: Some(64),
        ..limits.clone()
    };
    let applied = b.rt.block_on(b.driver.set_limits("lim-a", &live)).unwrap();
    assert!(applied.refused.is_empty(), "{:?}", applied.refused);
    if v1 {
        assert_eq!(
            kernel(&rel, "memory.limit_in_bytes"),
            (128u64 << 20).to_string()
        );
        assert_eq!(kernel(&rel, "cpu.cfs_quota_us"), "25000");
    }
    assert_eq!(kernel(&rel, "pids.max"), "64");

    // What the host cannot do is answered per key, and the rest still applies.
    let odd = Limits {
        cpuset: Some("4095".into()),
        pids: Some(48),
        ..live.clone()
    };
    let applied = b.rt.block_on(b.driver.set_limits("lim-a", &odd)).unwrap();
    let keys: Vec<&str> = applied.refused.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["cpuset"], "{:?}", applied.refused);
    assert_eq!(kernel(&rel, "pids.max"), "48");
    let e = b.driver.check_limits(&odd).unwrap_err();
    assert!(e.contains("--cpuset: CPU 4095 is not available"), "{e}");

    // A start whose limits cannot be applied fails, naming the key, and leaves no group.
    let err = b
        .start("lim-b", "sleep 60", odd.clone())
        .expect_err("a start with a CPU the host lacks");
    let msg = mayfly_driver::error_chain(&err);
    assert!(
        msg.contains("cannot apply the instance's limits") && msg.contains("--cpuset"),
        "{msg}"
    );
    assert_eq!(
        err.failure_kind(),
        Some(mayfly_driver::FailureKind::LimitRefused),
        "a refusal the engine answers with 400: {msg}"
    );
    let _ = b.rt.block_on(b.driver.release("lim-b"));
    let rel_b = format!("{}/lim-b", b.parent);
    wait_for("the refused group to go", Duration::from_secs(5), || {
        groups(&rel_b).is_empty()
    });
    assert!(b.rt.block_on(b.driver.usage("lim-b")).is_err());

    b.stop("lim-a", started.pid);
    wait_for("the group to go", Duration::from_secs(10), || {
        groups(&rel).is_empty()
    });
}
