//! Control groups on cgroup v2, v1, and the hybrid layout (v1 controllers beside a cgroup2
//! mount that holds none of them, which this build machine has).
//!
//! Each instance gets one group, at the same relative path (`<parent>/<instance id>`) in every
//! hierarchy we use. On v1 we use the hierarchies that carry the controllers mayfly needs now
//! or soon (cpu, cpuacct, cpuset, memory, pids, freezer, blkio, devices); on v2 the one
//! unified tree. In a hybrid layout the controllers live in v1, so it is driven as v1.
//!
//! The operator can force a layout (`mayfly daemon --cgroup-layout v1|v2`): `v2` on a hybrid
//! host drives the unified hierarchy even though it holds no controllers (freezing, killing
//! and accounting of processes work; every limit asked for is refused, naming the missing
//! controller), which is also how the test suite exercises the v2 code on a hybrid machine.
//!
//! Limits and usage are in [`limits`]: one controller abstraction with a v1 and a v2
//! implementation of each controller.
//!
//! Invariants: a group is created before its first process joins, and removed only once it is
//! empty. Nothing here waits: freezing and removal are requests whose completion the caller
//! polls (the kernel empties a group a moment after its last process is reaped, and a freeze
//! completes once every process has stopped), so one slow instance cannot stall the forker's
//! loop that serves the others.

mod boot;
pub mod devices;
pub mod limits;

pub use boot::{BootMounts, EXEC_LEAF};

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only the unified hierarchy.
    V2,
    /// Only v1 hierarchies.
    V1,
    /// v1 controller hierarchies plus a cgroup2 mount that holds no controller we use.
    Hybrid,
}

impl CgroupMode {
    /// `v2`, `v1` or `hybrid`.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::V2 => "v2",
            CgroupMode::V1 => "v1",
            CgroupMode::Hybrid => "hybrid",
        }
    }

    /// The mode named `s` (as [`Self::as_str`] writes it).
    pub fn parse(s: &str) -> Option<CgroupMode> {
        [CgroupMode::V2, CgroupMode::V1, CgroupMode::Hybrid]
            .into_iter()
            .find(|m| m.as_str() == s)
    }

    /// Which hierarchies instance groups live in: `v1` (hybrid is driven as v1) or `v2`.
    pub fn hierarchies(self) -> &'static str {
        match self {
            CgroupMode::V2 => "v2",
            CgroupMode::V1 | CgroupMode::Hybrid => "v1",
        }
    }
}

/// Which layout to drive: the detected one, or one the operator insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupLayout {
    /// Whatever the host has (hybrid is driven as v1).
    #[default]
    Auto,
    /// The v1 controller hierarchies, even beside a cgroup2 mount.
    V1,
    /// The unified hierarchy, even when the controllers are bound to v1 hierarchies.
    V2,
}

impl CgroupLayout {
    /// `auto`, `v1` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupLayout::Auto => "auto",
            CgroupLayout::V1 => "v1",
            CgroupLayout::V2 => "v2",
        }
    }
}

impl std::str::FromStr for CgroupLayout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(CgroupLayout::Auto),
            "v1" => Ok(CgroupLayout::V1),
            "v2" => Ok(CgroupLayout::V2),
            other => Err(format!(
                "unknown cgroup layout `{other}`: use auto, v1 or v2"
            )),
        }
    }
}

/// Where a group's freezer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    /// Its processes run.
    Thawed,
    /// Asked to freeze; some processes have not stopped yet.
    Freezing,
    /// Every process is stopped.
    Frozen,
}

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup hierarchy is mounted.
    #[error(
        "no cgroup hierarchy is mounted (looked for cgroup2 and v1 controllers in /proc/self/mountinfo)"
    )]
    NotMounted,
    /// The layout asked for is not mounted on this host.
    #[error(
        "cgroup layout {wanted} was asked for, but this host has no {wanted} hierarchy mounted (start the daemon with --cgroup-layout auto)"
    )]
    LayoutUnavailable {
        /// `v1` or `v2`.
        wanted: &'static str,
    },
    /// Reading the mount table failed.
    #[error("cannot read /proc/self/mountinfo")]
    MountInfo(#[source] io::Error),
    /// A file operation on a cgroup path failed.
    #[error("cgroup {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The cgroup file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Controllers mayfly uses on v1 hierarchies.
const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio", "devices",
];

/// Controllers enabled for instance groups on v2.
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids", "io"];

/// The cgroup hierarchies of this host, as mayfly uses them.
#[derive(Debug, Clone)]
pub struct Cgroups {
    mode: CgroupMode,
    /// Mount points: one for v2, one per used v1 hierarchy.
    roots: Vec<Hierarchy>,
}

#[derive(Debug, Clone)]
struct Hierarchy {
    mount: PathBuf,
    controllers: Vec<String>,
    /// What the instance's init sees of this hierarchy, if anything (see [`boot`]): its group
    /// here is delegated to the instance, and exec'd processes land in a leaf below it.
    boot: Option<boot::Role>,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

impl Cgroups {
    /// Finds the hierarchies from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Cgroups, CgroupError> {
        Self::detect_as(CgroupLayout::Auto)
    }

    /// Finds the hierarchies of `layout` from `/proc/self/mountinfo`.
    pub fn detect_as(layout: CgroupLayout) -> Result<Cgroups, CgroupError> {
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
        Self::from_mountinfo_as(&mountinfo, layout)
    }

    #[cfg(test)]
    fn from_mountinfo(mountinfo: &str) -> Result<Cgroups, CgroupError> {
        Self::from_mountinfo_as(mountinfo, CgroupLayout::Auto)
    }

    fn from_mountinfo_as(mountinfo: &str, layout: CgroupLayout) -> Result<Cgroups, CgroupError> {
        let mut v2: Option<PathBuf> = None;
        let mut v1: Vec<Hierarchy> = Vec::new();
        let mut named_systemd: Option<PathBuf> = None;
        for line in mountinfo.lines() {
            // Fields: id parent major:minor root mount-point options [optional...] - fstype source super-options
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(mount), Some(fstype)) = (left.get(4), right.first()) else {
                continue;
            };
            if left.get(3) != Some(&"/") {
                continue; // a bind mount of a subtree, not a hierarchy root
            }
            let mount = PathBuf::from(unescape_mountinfo(mount));
            match *fstype {
                "cgroup2" if v2.is_none() => {
                    v2 = Some(mount);
                }
                "cgroup" => {
                    let opts = right.get(2).copied().unwrap_or("");
                    if opts.split(',').any(|o| o == "name=systemd") && named_systemd.is_none() {
                        named_systemd = Some(mount.clone());
                    }
                    let controllers: Vec<String> = opts
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o))
                        .map(str::to_owned)
                        .collect();
                    if !controllers.is_empty() && !v1.iter().any(|h| h.mount == mount) {
                        v1.push(Hierarchy {
                            mount,
                            controllers,
                            boot: None,
                        });
                    }
                }
                _ => {}
            }
        }
        // Driven as v1, the instance also gets a group of its own in the name=systemd
        // hierarchy and the unified tree, for the init it boots (see `boot`).
        let with_boot = |mut roots: Vec<Hierarchy>, v2: Option<PathBuf>| {
            roots.extend(boot::v1_boot_hierarchies(named_systemd.clone(), v2));
            roots
        };
        match (layout, v2, v1.is_empty()) {
            (CgroupLayout::V2, None, _) => Err(CgroupError::LayoutUnavailable { wanted: "v2" }),
            (CgroupLayout::V1, _, true) => Err(CgroupError::LayoutUnavailable { wanted: "v1" }),
            (CgroupLayout::V2, Some(mount), _) => Ok(Cgroups::unified(mount)),
            (CgroupLayout::V1, v2, false) => Ok(Cgroups {
                mode: CgroupMode::V1,
                roots: with_boot(v1, v2),
            }),
            (CgroupLayout::Auto, Some(v2), false) => Ok(Cgroups {
                mode: CgroupMode::Hybrid,
                roots: with_boot(v1, Some(v2)),
            }),
            (CgroupLayout::Auto, None, false) => Ok(Cgroups {
                mode: CgroupMode::V1,
                roots: with_boot(v1, None),
            }),
            (CgroupLayout::Auto, Some(mount), true) => Ok(Cgroups::unified(mount)),
            (CgroupLayout::Auto, None, true) => Err(CgroupError::NotMounted),
        }
    }

    fn unified(mount: PathBuf) -> Cgroups {
        Cgroups {
            mode: CgroupMode::V2,
            roots: vec![Hierarchy {
                mount,
                controllers: Vec::new(),
                boot: Some(boot::Role::Unified),
            }],
        }
    }

    /// The host's layout.
    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    fn dirs(&self, rel: &str) -> impl Iterator<Item = PathBuf> + '_ {
        let rel = rel.trim_start_matches('/').to_owned();
        self.roots.iter().map(move |h| h.mount.join(&rel))
    }

    /// Creates `rel` (and its parents) in every hierarchy, ready for processes.
    pub fn create(&self, rel: &str) -> Result<(), CgroupError> {
        let rel = rel.trim_start_matches('/');
        for h in &self.roots {
            let mut cur = h.mount.clone();
            for part in rel.split('/').filter(|p| !p.is_empty()) {
                let parent = cur.clone();
                cur.push(part);
                match fs::create_dir(&cur) {
                    Ok(()) => self.init_new_group(h, &parent, &cur)?,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create", &cur)(e)),
                }
            }
        }
        Ok(())
    }

    fn init_new_group(&self, h: &Hierarchy, parent: &Path, dir: &Path) -> Result<(), CgroupError> {
        if self.mode == CgroupMode::V2 {
            // Make sure the parent hands the controllers down to the new group. The new
            // group's own `cgroup.subtree_control` stays empty: it is a leaf that processes
            // join (the no-internal-processes rule forbids both), and an instance's group
            // is delegated to its init, which enables what it wants for its own children
            // once it has moved itself into one (as systemd does). Controllers the kernel
            // lacks are skipped; EBUSY (a parent in use as a leaf) is left as it is.
            let file = parent.join("cgroup.subtree_control");
            let available =
                fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
            for c in V2_CONTROLLERS {
                if available.split_whitespace().any(|a| a == *c) {
                    let _ = write_file(&file, &format!("+{c}"));
                }
            }
        } else if h.has("cpuset") {
            // A v1 cpuset group starts with no cpus and no memory nodes, and a process cannot
            // join it until both are set: copy them from the parent, and let the group's own
            // children inherit them from now on.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = fs::read_to_string(parent.join(file))
                    .map_err(io_err("read", &parent.join(file)))?;
                write_file(&dir.join(file), value.trim())
                    .map_err(io_err("write", &dir.join(file)))?;
            }
            write_file(&dir.join("cgroup.clone_children"), "1")
                .map_err(io_err("write", &dir.join("cgroup.clone_children")))?;
        }
        Ok(())
    }

    /// Moves process `pid` into group `rel` in every hierarchy.
    pub fn add_process(&self, rel: &str, pid: i32) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        for dir in self.dirs(rel) {
            let file = dir.join("cgroup.procs");
            write_file(&file, &pid).map_err(io_err("join", &file))?;
        }
        Ok(())
    }

    /// Process ids in group `rel` (from the first hierarchy; all hold the same processes).
    pub fn pids(&self, rel: &str) -> Result<Vec<i32>, CgroupError> {
        let Some(dir) = self.dirs(rel).next() else {
            return Ok(Vec::new());
        };
        // A delegated group (v2) may have groups of the instance's own below it.
        let mut out = Vec::new();
        for group in boot::subtree(&dir) {
            let file = group.join("cgroup.procs");
            match fs::read_to_string(&file) {
                Ok(s) => out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("read", &file)(e)),
            }
        }
        Ok(out)
    }

    /// Whether group `rel` exists.
    pub fn exists(&self, rel: &str) -> bool {
        self.dirs(rel).next().is_some_and(|d| d.is_dir())
    }

    fn freezer_file(&self, rel: &str) -> Option<(PathBuf, &'static str, &'static str)> {
        let rel = rel.trim_start_matches('/');
        if self.mode == CgroupMode::V2 {
            let dir = self.roots.first()?.mount.join(rel);
            Some((dir.join("cgroup.freeze"), "1", "0"))
        } else {
            let h = self.roots.iter().find(|h| h.has("freezer"))?;
            Some((h.mount.join(rel).join("freezer.state"), "FROZEN", "THAWED"))
        }
    }

    /// Asks the kernel to freeze (`true`) or thaw (`false`) every process of group `rel`, and
    /// returns at once: freezing completes later (see [`Self::freezer_state`]). The caller
    /// polls; nothing here waits, so one instance that freezes slowly cannot stall a loop
    /// that serves others.
    pub fn request_frozen(&self, rel: &str, frozen: bool) -> Result<(), CgroupError> {
        let Some((file, on, off)) = self.freezer_file(rel) else {
            return Err(CgroupError::Io {
                action: "freeze",
                path: PathBuf::from(rel),
                source: io::Error::new(io::ErrorKind::Unsupported, "no freezer controller"),
            });
        };
        write_file(&file, if frozen { on } else { off }).map_err(io_err("write", &file))
    }

    /// Where group `rel` stands: thawed, on its way to frozen, or frozen. A group without a
    /// freezer (or that does not exist) counts as thawed.
    pub fn freezer_state(&self, rel: &str) -> Result<FreezerState, CgroupError> {
        let Some((file, _, _)) = self.freezer_file(rel) else {
            return Ok(FreezerState::Thawed);
        };
        if self.mode == CgroupMode::V2 {
            // `cgroup.freeze` holds what was asked; `cgroup.events` says `frozen 1` once every
            // process has stopped.
            let asked = match fs::read_to_string(&file) {
                Ok(s) => s.trim() == "1",
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FreezerState::Thawed),
                Err(e) => return Err(io_err("read", &file)(e)),
            };
            let events = file.with_file_name("cgroup.events");
            let text = fs::read_to_string(&events).map_err(io_err("read", &events))?;
            let frozen = text
                .lines()
                .find_map(|l| l.strip_prefix("frozen "))
                .is_some_and(|v| v.trim() == "1");
            Ok(match (asked, frozen) {
                (_, true) => FreezerState::Frozen,
                (true, false) => FreezerState::Freezing,
                (false, false) => FreezerState::Thawed,
            })
        } else {
            match fs::read_to_string(&file) {
                Ok(s) => Ok(match s.trim() {
                    "FROZEN" => FreezerState::Frozen,
                    "FREEZING" => FreezerState::Freezing,
                    _ => FreezerState::Thawed,
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(FreezerState::Thawed),
                Err(e) => Err(io_err("read", &file)(e)),
            }
        }
    }

    /// Sends SIGKILL to every process of group `rel`.
    pub fn kill_all(&self, rel: &str) -> Result<(), CgroupError> {
        if self.mode == CgroupMode::V2 {
            let file = self.roots[0]
                .mount
                .join(rel.trim_start_matches('/'))
                .join("cgroup.kill");
            if file.exists() {
                return write_file(&file, "1").map_err(io_err("kill", &file));
            }
        }
        for pid in self.pids(rel)? {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        Ok(())
    }

    /// Tries once to remove group `rel` from every hierarchy: `Ok(true)` once it is gone
    /// everywhere, `Ok(false)` while the kernel still counts processes in it (it empties a
    /// group a moment after its last process is reaped; the caller retries later, without
    /// waiting here). A group that does not exist is gone.
    pub fn try_remove(&self, rel: &str) -> Result<bool, CgroupError> {
        let mut gone = true;
        for top in self.dirs(rel) {
            // The groups an init made below its delegated group go first, deepest first.
            if !boot::remove_subtree(&top).map_err(io_err("remove", &top))? {
                gone = false;
            }
        }
        Ok(gone)
    }

    /// Removes group `rel` if it has no child groups and no processes; reports whether it
    /// is gone.
    pub fn remove_if_unused(&self, rel: &str) -> bool {
        let mut all_gone = true;
        for dir in self.dirs(rel) {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => all_gone = false,
            }
        }
        all_gone
    }

    /// Names of the child groups of `rel` (in the first hierarchy).
    pub fn children(&self, rel: &str) -> Vec<String> {
        let Some(dir) = self.dirs(rel).next() else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    // cgroup files take one value per write(2), no buffering. (Truncation means nothing to
    // cgroupfs; it makes the fake trees of the unit tests behave like it.)
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(value.as_bytes())
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu
28 25 0:25 / /sys/fs/cgroup/memory rw shared:12 - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/systemd rw shared:13 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/net_cls rw shared:14 - cgroup cgroup rw,net_cls
";

    #[test]
    fn hybrid_layout_is_driven_through_its_v1_controllers() {
        let cg = Cgroups::from_mountinfo(HYBRID).unwrap();
        assert_eq!(cg.mode(), CgroupMode::Hybrid);
        let mounts: Vec<_> = cg.roots.iter().map(|h| h.mount.to_str().unwrap()).collect();
        // The controllers first (pids and the freezer are read there), then the hierarchies
        // an init boots with (see `boot`).
        assert_eq!(
            mounts,
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified"
            ]
        );
    }

    #[test]
    fn pure_v2_and_pure_v1_are_recognised() {
        let v2 = "30 1 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(Cgroups::from_mountinfo(v2).unwrap().mode(), CgroupMode::V2);
        let v1 = "27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let cg = Cgroups::from_mountinfo(v1).unwrap();
        assert_eq!(cg.mode(), CgroupMode::V1);
        assert!(cg.roots[0].has("cpuacct"));
        assert!(Cgroups::from_mountinfo("").is_err());
    }

    #[test]
    fn a_forced_layout_picks_its_hierarchies_or_says_it_is_missing() {
        let v2 = Cgroups::from_mountinfo_as(HYBRID, CgroupLayout::V2).unwrap();
        assert_eq!(v2.mode(), CgroupMode::V2);
        let mounts: Vec<_> = v2.roots.iter().map(|h| h.mount.to_str().unwrap()).collect();
        assert_eq!(mounts, ["/sys/fs/cgroup/unified"]);
        let v1 = Cgroups::from_mountinfo_as(HYBRID, CgroupLayout::V1).unwrap();
        assert_eq!(v1.mode(), CgroupMode::V1);
        assert_eq!(v1.roots.iter().filter(|h| h.boot.is_none()).count(), 2);

        let pure_v1 = "27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let e = Cgroups::from_mountinfo_as(pure_v1, CgroupLayout::V2).unwrap_err();
        assert!(e.to_string().contains("no v2 hierarchy"), "{e}");
        let pure_v2 = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let e = Cgroups::from_mountinfo_as(pure_v2, CgroupLayout::V1).unwrap_err();
        assert!(e.to_string().contains("no v1 hierarchy"), "{e}");
        assert!("v3".parse::<CgroupLayout>().is_err());
        assert_eq!("v2".parse::<CgroupLayout>(), Ok(CgroupLayout::V2));
    }

    /// Drives the real unified hierarchy of this host (as root): a group is created, a
    /// process joins it, is frozen and thawed, killed through the group, and the group goes.
    /// On a hybrid host this is the only way the v2 paths run against a kernel.
    #[test]
    fn the_v2_operations_work_on_the_real_unified_hierarchy() {
        let Ok(cg) = Cgroups::detect_as(CgroupLayout::V2) else {
            eprintln!("no cgroup2 mount on this host: nothing to drive");
            return;
        };
        let rel = format!("mayfly-unit-{}/g", std::process::id());
        let parent = rel.split('/').next().unwrap().to_owned();
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        // Whatever fails below, the child and the groups go.
        struct Cleanup(Cgroups, String, String, std::process::Child);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = self.3.kill();
                let _ = self.3.wait();
                let _ = self.0.try_remove(&self.1);
                let _ = self.0.try_remove(&self.2);
            }
        }
        let mut guard = Cleanup(cg.clone(), rel.clone(), parent.clone(), child);
        cg.create(&rel).unwrap();
        cg.add_process(&rel, pid).unwrap();
        assert_eq!(cg.pids(&rel).unwrap(), [pid]);
        assert_eq!(cg.freezer_state(&rel).unwrap(), FreezerState::Thawed);
        cg.request_frozen(&rel, true).unwrap();
        let until = |want: FreezerState| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while cg.freezer_state(&rel).unwrap() != want {
                assert!(std::time::Instant::now() < deadline, "never {want:?}");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        until(FreezerState::Frozen);
        let events = fs::read_to_string(cg.roots[0].mount.join(&rel).join("cgroup.events"));
        assert!(events.unwrap().contains("frozen 1"));
        // A frozen group is not empty: it cannot go.
        assert!(!cg.try_remove(&rel).unwrap());
        cg.request_frozen(&rel, false).unwrap();
        until(FreezerState::Thawed);
        cg.kill_all(&rel).unwrap();
        let status = guard.3.wait().unwrap();
        assert!(!status.success(), "killed through the group: {status}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !cg.try_remove(&rel).unwrap() {
            assert!(
                std::time::Instant::now() < deadline,
                "the empty group never went"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(cg.remove_if_unused(&parent));
        assert!(!cg.exists(&rel));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
