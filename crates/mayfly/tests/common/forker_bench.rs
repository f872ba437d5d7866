//! A bench for the driver-level tests (`net_forker.rs`, `forker_limits.rs`, `disk_quota.rs`):
//! a state directory with a busybox layer and a trash directory, its own forker (started from
//! the calling thread, so in that thread's network namespace: the driver would start one from
//! a runtime thread), a container driver talking to it, and a runtime to drive it. No daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mayfly_driver::DriverEvent;
use mayfly_driver::cgroup::CgroupLayout;
use mayfly_driver::container::ContainerDriver;

use super::quota_fs::{QuotaFs, QuotaKind};

/// Where the bench's state directory lives.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    /// A fresh temporary directory is the state directory.
    Plain,
    /// `/tmp/mfq-XXXXXX/state`, with an `instances` directory, on a fresh quota filesystem of
    /// the kind given (mounted from `/tmp/mfq-XXXXXX/img`), or a plain directory with `None`.
    Quota(Option<QuotaKind>),
}

/// How the cleanup removes the test's cgroups.
#[derive(Debug, Clone, Copy)]
pub enum Sweep {
    /// Removes the groups, deepest first.
    Remove,
    /// Kills what runs in each group first, and retries a removal for up to 5 s.
    KillAndRemove,
}

/// The hierarchies' mount points: `/sys/fs/cgroup` itself (v2) and each directory in it (v1).
pub fn hierarchies() -> Vec<PathBuf> {
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
pub fn groups(rel: &str) -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .map(|h| h.join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes `group` and the groups below it, deepest first; with [`Sweep::KillAndRemove`],
/// kills what runs in each first.
pub fn remove_tree(group: &Path, sweep: Sweep) {
    for e in std::fs::read_dir(group).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_tree(&e.path(), sweep);
        }
    }
    match sweep {
        Sweep::Remove => {
            let _ = std::fs::remove_dir(group);
        }
        Sweep::KillAndRemove => {
            let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            let end = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(group).is_err() && group.exists() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Waits until `f` holds, failing the test after `within`.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ends the forker and removes what the test left in the cgroup hierarchies (on drop, or
/// earlier with [`ForkerBench::end_forker`]).
struct Cleanup {
    forker: Child,
    parent: String,
    sweep: Sweep,
}

impl Cleanup {
    fn run(&mut self) {
        let _ = self.forker.kill();
        let _ = self.forker.wait();
        for g in groups(&self.parent) {
            remove_tree(&g, self.sweep);
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// The bench. Fields drop in this order: the driver, then the forker (and the test's
/// cgroups), then the quota filesystem, then the test directory.
pub struct ForkerBench {
    pub driver: ContainerDriver,
    pub rt: tokio::runtime::Runtime,
    pub events: tokio::sync::mpsc::Receiver<DriverEvent>,
    pub state: PathBuf,
    pub layer: PathBuf,
    pub trash: PathBuf,
    /// The cgroup parent, `mayfly-<name>-<pid>`.
    pub parent: String,
    cleanup: Cleanup,
    /// The quota filesystem ([`Layout::Quota`] with a kind).
    pub fs: Option<QuotaFs>,
    /// The test directory.
    pub tmp: tempfile::TempDir,
}

impl ForkerBench {
    /// A bench laid out as `layout` whose cgroups are under `mayfly-<name>-<pid>` and are
    /// removed as `sweep` says.
    pub fn create(name: &str, layout: Layout, sweep: Sweep) -> ForkerBench {
        let (tmp, state, fs) = match layout {
            Layout::Plain => {
                let tmp = tempfile::tempdir().unwrap();
                let state = tmp.path().to_owned();
                (tmp, state, None)
            }
            Layout::Quota(kind) => {
                let tmp = tempfile::Builder::new()
                    .prefix("mfq-")
                    .tempdir_in("/tmp")
                    .unwrap();
                let state = tmp.path().join("state");
                let fs = kind.map(|k| QuotaFs::mount(k, &tmp.path().join("img"), &state, 512));
                std::fs::create_dir_all(&state).unwrap();
                (tmp, state, fs)
            }
        };
        let layer = state.join("layer");
        std::fs::create_dir(&layer).unwrap();
        mayfly_image::build_busybox_rootfs(Path::new("/bin/busybox"), &layer).unwrap();
        let trash = state.join("trash");
        std::fs::create_dir(&trash).unwrap();
        if let Layout::Quota(_) = layout {
            std::fs::create_dir(state.join("instances")).unwrap();
        }
        let exe = env!("CARGO_BIN_EXE_mayfly");
        let parent = format!("mayfly-{name}-{}", std::process::id());
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
            sweep,
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
        ForkerBench {
            driver,
            rt,
            events,
            state,
            layer,
            trash,
            parent,
            cleanup,
            fs,
            tmp,
        }
    }

    /// Stops the forker and removes the test's cgroups now (dropping the bench does it too).
    pub fn end_forker(&mut self) {
        self.cleanup.run();
    }
}
