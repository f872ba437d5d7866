//! Cgroup limits through the container driver and its forker, without a daemon (issue 22):
//! the forker applies an instance's limits to its group before the init joins it, a limit the
//! host cannot enforce fails the start and leaves no group, and the driver changes limits of
//! a running instance and reads its usage straight from the kernel's files.

mod common;

use std::path::Path;
use std::time::Duration;

use common::forker_bench::{ForkerBench, Layout, Sweep, groups, wait_for};
use mayfly_api::{Cpus, IoMax, Limits};
use mayfly_driver::{Driver, InitStdio, InstanceSpec, NetworkMode, ProcessSpec};

/// The content of cgroup file `file` of group `rel`, in whichever hierarchy has it.
fn kernel(rel: &str, file: &str) -> String {
    let path = groups(rel)
        .into_iter()
        .map(|g| g.join(file))
        .find(|f| f.exists())
        .unwrap_or_else(|| panic!("no {file} for group {rel}"));
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

/// A state directory with a busybox layer, its own forker, and a driver talking to it (see
/// `common/forker_bench.rs`); the cleanup kills what is left in the test's cgroups.
type Bench = ForkerBench;

impl ForkerBench {
    fn new() -> Bench {
        Self::create("limtest", Layout::Plain, Sweep::KillAndRemove)
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
            user_data: None,
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
