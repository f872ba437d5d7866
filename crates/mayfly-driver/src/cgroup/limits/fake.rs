//! Fake cgroupfs trees in a temporary directory, for the controllers' unit tests: the files a
//! kernel would show for an instance group `mayfly/inst` and its parent.

use std::fs;
use std::path::{Path, PathBuf};

use super::super::{CgroupMode, Cgroups, Hierarchy};

/// The instance group of the fake trees.
pub(crate) const GROUP: &str = "mayfly/inst";

pub(crate) struct Fake {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) cg: Cgroups,
}

impl Fake {
    /// The content of `file` (relative to the fake root), trimmed.
    pub(crate) fn get(&self, file: &str) -> String {
        fs::read_to_string(self.root.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .trim()
            .to_owned()
    }

    /// Writes `content` into `file` (relative to the fake root), making its directory.
    pub(crate) fn set(&self, file: &str, content: &str) {
        put(&self.root.join(file), content);
    }

    pub(crate) fn remove(&self, file: &str) {
        fs::remove_file(self.root.join(file)).unwrap();
    }
}

fn put(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A unified hierarchy at `<root>/unified` offering `controllers` (all files of each present
/// in the group, with the kernel's defaults).
pub(crate) fn v2(controllers: &[&str]) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let mount = root.join("unified");
    let list = controllers.join(" ");
    put(&mount.join("cgroup.controllers"), &list);
    put(&mount.join("cpuset.cpus.effective"), "0-3\n");
    put(&mount.join("mayfly/cgroup.controllers"), &list);
    put(&mount.join("mayfly/cpuset.cpus.effective"), "0-3\n");
    let g = mount.join(GROUP);
    put(&g.join("cgroup.controllers"), &list);
    put(&g.join("cgroup.procs"), "");
    put(
        &g.join("cpu.stat"),
        "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    );
    let files: &[(&str, &[(&str, &str)])] = &[
        (
            "memory",
            &[
                ("memory.max", "max"),
                ("memory.low", "0"),
                ("memory.swap.max", "max"),
                ("memory.current", "0"),
                ("memory.stat", "anon 0\ninactive_file 0\n"),
                ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
            ],
        ),
        ("cpu", &[("cpu.max", "max 100000"), ("cpu.weight", "100")]),
        ("cpuset", &[("cpuset.cpus", "")]),
        ("pids", &[("pids.max", "max"), ("pids.current", "0")]),
        (
            "io",
            &[
                ("io.max", ""),
                ("io.weight", "default 100"),
                ("io.stat", ""),
            ],
        ),
    ];
    for (controller, files) in files {
        if controllers.contains(controller) {
            for (name, value) in *files {
                // The parent is a group like the instance's (the root lacks these files).
                put(&g.join(name), value);
                put(&mount.join("mayfly").join(name), value);
            }
        }
    }
    let cg = Cgroups {
        mode: CgroupMode::V2,
        roots: vec![Hierarchy {
            mount,
            controllers: Vec::new(),
            boot: Some(super::super::boot::Role::Unified),
        }],
    };
    Fake {
        _dir: dir,
        root,
        cg,
    }
}

/// v1 hierarchies at `<root>/<subsystem>` for each of `subsystems`, as on this project's build
/// machine: cpu and cpuacct apart, blkio with throttling only, memsw present.
pub(crate) fn v1(subsystems: &[&str]) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let mut roots = Vec::new();
    for s in subsystems {
        let mount = root.join(s);
        let g = mount.join(GROUP);
        put(&g.join("cgroup.procs"), "");
        let files: &[(&str, &str)] = match *s {
            "memory" => &[
                ("memory.limit_in_bytes", "9223372036854771712"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712"),
                ("memory.soft_limit_in_bytes", "9223372036854771712"),
                ("memory.swappiness", "60"),
                ("memory.usage_in_bytes", "0"),
                ("memory.stat", "cache 0\ntotal_inactive_file 0\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                ),
            ],
            "cpu" => &[
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "-1"),
                ("cpu.shares", "1024"),
            ],
            "cpuacct" => &[("cpuacct.usage", "0")],
            "cpuset" => &[("cpuset.cpus", "0-3"), ("cpuset.mems", "0")],
            "pids" => &[("pids.max", "max"), ("pids.current", "0")],
            "blkio" => &[
                ("blkio.throttle.read_bps_device", ""),
                ("blkio.throttle.write_bps_device", ""),
                ("blkio.throttle.read_iops_device", ""),
                ("blkio.throttle.write_iops_device", ""),
                ("blkio.throttle.io_service_bytes_recursive", "Total 0\n"),
            ],
            _ => &[],
        };
        for (name, value) in files {
            put(&g.join(name), value);
            // The parent and root have the same files (cpuset.cpus and swappiness are read
            // from the parent).
            put(&mount.join("mayfly").join(name), value);
            put(&mount.join(name), value);
        }
        roots.push(Hierarchy {
            mount,
            controllers: vec![(*s).to_owned()],
            boot: None,
        });
    }
    let cg = Cgroups {
        mode: CgroupMode::Hybrid,
        roots,
    };
    Fake {
        _dir: dir,
        root,
        cg,
    }
}
