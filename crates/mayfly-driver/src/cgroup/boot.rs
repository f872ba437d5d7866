//! What an instance's init needs of cgroups to boot, as systemd's Container Interface asks
//! (systemd.io/CONTAINER_INTERFACE): a cgroup filesystem at `/sys/fs/cgroup` in which the
//! instance's own group is delegated to it, and nothing above it is writable.
//!
//! - **v2**: the instance's group in the unified tree is handed to the instance's root (the
//!   group directory and its `cgroup.procs`, `cgroup.subtree_control` and `cgroup.threads`,
//!   as the kernel's delegation model says); the init is placed in it before its cgroup
//!   namespace is made, so that it sees its group as the root of a cgroup2 mount.
//! - **v1 / hybrid** (driven through the v1 controllers): the instance also gets a group of
//!   its own in the `name=systemd` hierarchy and in the unified tree, delegated the same way;
//!   the child mounts a read-only tmpfs at `/sys/fs/cgroup` holding `systemd` (name=systemd)
//!   and `unified` (cgroup2), which is the hybrid layout systemd knows. The v1 controller
//!   hierarchies are not shown: limits are the host's business, and an init only needs a
//!   hierarchy to track its services with.
//!
//! Delegation never reaches above the instance's group: the files the instance owns are those
//! of its own group (and of the groups it makes below it); a cgroup2 migration needs write
//! access to the common ancestor's `cgroup.procs`, so no process can be moved in or out of the
//! subtree; in `name=systemd` a migration also needs the writer to own the process. Without a
//! user namespace (the instance's root is the host's), nothing is handed over and the cgroup
//! filesystems are mounted read-only.
//!
//! `exec`'d processes join [`EXEC_LEAF`], a leaf below the instance's group in these
//! hierarchies (made on first use), never the group itself: once the init has made child
//! groups and enabled controllers for them, the instance's group may hold no process
//! (cgroup v2's no-internal-processes rule), and an exec'd process must not appear in the
//! init's own group as if it were one of its services.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{CgroupError, CgroupMode, Cgroups, Hierarchy, io_err, write_file};

/// The leaf of an instance's delegated groups that `exec`'d processes join.
pub const EXEC_LEAF: &str = "mayfly-exec";

/// Bounds of a walk through an instance's delegated subtree (the instance makes those groups;
/// the kernel's own default limits are far higher, so these only bound our work).
const MAX_DEPTH: usize = 32;
const MAX_GROUPS: usize = 16 * 1024;

/// What a hierarchy is to a booting init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The v1 `name=systemd` hierarchy (no controllers), mounted at `/sys/fs/cgroup/systemd`.
    NamedSystemd,
    /// The unified (cgroup2) tree: at `/sys/fs/cgroup/unified` beside v1, at `/sys/fs/cgroup`
    /// on v2.
    Unified,
}

/// The cgroup filesystems a container's child mounts at `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMounts {
    /// cgroup2 at `/sys/fs/cgroup` (v2).
    Unified,
    /// A tmpfs at `/sys/fs/cgroup` with `systemd` (name=systemd) and `unified` (cgroup2), each
    /// when the host has it (v1 and hybrid).
    Hybrid {
        /// The host has a `name=systemd` hierarchy.
        named_systemd: bool,
        /// The host has a cgroup2 mount.
        unified: bool,
    },
}

/// The hierarchies an instance's init gets beside the v1 controllers: `name=systemd` (mounted
/// at `named`) and the unified tree (at `v2`), those the host has.
pub(super) fn v1_boot_hierarchies(named: Option<PathBuf>, v2: Option<PathBuf>) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    if let Some(mount) = named {
        out.push(Hierarchy {
            mount,
            controllers: Vec::new(),
            boot: Some(Role::NamedSystemd),
        });
    }
    if let Some(mount) = v2 {
        out.push(Hierarchy {
            mount,
            controllers: Vec::new(),
            boot: Some(Role::Unified),
        });
    }
    out
}

/// `dir` and every group below it, parents before their children (empty if `dir` does not
/// exist). Bounded in depth and count.
pub(super) fn subtree(dir: &Path) -> Vec<PathBuf> {
    if !dir.is_dir() {
        return Vec::new();
    }
    let mut out = vec![dir.to_owned()];
    let mut level = vec![dir.to_owned()];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for d in &level {
            let Ok(entries) = fs::read_dir(d) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) && out.len() + next.len() < MAX_GROUPS {
                    next.push(e.path());
                }
            }
        }
        if next.is_empty() {
            break;
        }
        out.extend(next.iter().cloned());
        level = next;
    }
    out
}

/// Most groups one [`remove_subtree`] call visits (the caller retries a subtree left over).
const REMOVE_BUDGET: usize = 64 * 1024;

/// Removes group `top` and every group below it, children before their parents, walking by
/// descriptors: no depth or path length limit applies (the `name=systemd` hierarchy has no
/// `cgroup.max.depth`, and an instance may make groups deeper than [`subtree`] walks or than a
/// path can name). `Ok(true)` once it is gone; `Ok(false)` while a group still has processes
/// (`EBUSY`), or when the budget ran out: the caller tries again later.
pub(super) fn remove_subtree(top: &Path) -> io::Result<bool> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut cur = match rustix::fs::open(top, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    /// A group being emptied: its name in its parent (none for `top`) and the child groups
    /// not visited yet.
    struct Frame {
        name: Option<std::ffi::CString>,
        pending: Vec<std::ffi::CString>,
    }
    let child_groups = |fd: &rustix::fd::OwnedFd| -> io::Result<Vec<std::ffi::CString>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(fd)? {
            let entry = entry?;
            let name = entry.file_name();
            if entry.file_type() == rustix::fs::FileType::Directory
                && name.to_bytes() != b"."
                && name.to_bytes() != b".."
            {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    };
    let mut stack = vec![Frame {
        name: None,
        pending: child_groups(&cur)?,
    }];
    let mut visited = 0;
    while let Some(frame) = stack.last_mut() {
        if let Some(child) = frame.pending.pop() {
            visited += 1;
            if visited > REMOVE_BUDGET {
                return Ok(false);
            }
            match rustix::fs::openat(&cur, child.as_c_str(), flags, Mode::empty()) {
                Ok(fd) => {
                    let pending = child_groups(&fd)?;
                    cur = fd;
                    stack.push(Frame {
                        name: Some(child),
                        pending,
                    });
                }
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        // Every child of this group is gone: the group itself goes.
        let Some(name) = stack.pop().and_then(|f| f.name) else {
            break;
        };
        let parent = rustix::fs::openat(&cur, c"..", flags, Mode::empty())?;
        match rustix::fs::unlinkat(&parent, name.as_c_str(), AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(rustix::io::Errno::BUSY) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        cur = parent;
    }
    drop(cur);
    match fs::remove_dir(top) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The files of a delegated group its owner may write, by hierarchy.
fn delegated_files(role: Role) -> &'static [&'static str] {
    match role {
        // The kernel's delegation model (Documentation/admin-guide/cgroup-v2.rst).
        Role::Unified => &["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"],
        // No `notify_on_release`: it would have the host's release agent run for the group.
        Role::NamedSystemd => &["cgroup.procs", "tasks", "cgroup.clone_children"],
    }
}

impl Cgroups {
    /// Which cgroup filesystems an instance's child mounts at `/sys/fs/cgroup`.
    pub fn boot_mounts(&self) -> BootMounts {
        if self.mode == CgroupMode::V2 {
            return BootMounts::Unified;
        }
        let has = |role| self.roots.iter().any(|h| h.boot == Some(role));
        BootMounts::Hybrid {
            named_systemd: has(Role::NamedSystemd),
            unified: has(Role::Unified),
        }
    }

    /// Hands group `rel` (created already) in the hierarchies an init boots with to the
    /// host ids `uid`/`gid` (the instance's root): the group directory and the files of
    /// [`delegated_files`]. Nothing else, and nothing above it.
    pub fn delegate(&self, rel: &str, uid: u32, gid: u32) -> Result<(), CgroupError> {
        let rel = rel.trim_start_matches('/');
        let owner = (
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
        );
        for h in &self.roots {
            let Some(role) = h.boot else { continue };
            let dir = h.mount.join(rel);
            if role == Role::Unified {
                // The kernel keeps the instance's subtree within what `subtree` walks (these
                // files stay the host's). name=systemd (v1) has no such limit.
                for (file, max) in [
                    ("cgroup.max.depth", MAX_DEPTH - 1),
                    ("cgroup.max.descendants", MAX_GROUPS - 1),
                ] {
                    let path = dir.join(file);
                    write_file(&path, &max.to_string()).map_err(io_err("limit", &path))?;
                }
            }
            let paths = std::iter::once(dir.clone())
                .chain(delegated_files(role).iter().map(|f| dir.join(f)))
                .filter(|p| p == &dir || p.exists());
            for path in paths {
                rustix::fs::chown(&path, owner.0, owner.1)
                    .map_err(|e| io_err("delegate", &path)(e.into()))?;
            }
        }
        Ok(())
    }

    /// Moves the `exec`'d process `pid` into group `rel` of the controller hierarchies, and
    /// into its leaf [`EXEC_LEAF`] (made if missing) where an init may have made groups of
    /// its own.
    pub fn add_exec_process(&self, rel: &str, pid: i32) -> Result<(), CgroupError> {
        let rel = rel.trim_start_matches('/');
        let pid = pid.to_string();
        for h in &self.roots {
            let mut dir = h.mount.join(rel);
            if h.boot.is_some() {
                dir.push(EXEC_LEAF);
                // Made directly: the instance's group belongs to its init, whose
                // `cgroup.subtree_control` mayfly never writes (see `init_new_group`).
                match fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create", &dir)(e)),
                }
            }
            let file = dir.join("cgroup.procs");
            write_file(&file, &pid).map_err(io_err("join", &file))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::CgroupLayout;
    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu
29 25 0:26 / /sys/fs/cgroup/systemd rw shared:13 - cgroup cgroup rw,xattr,name=systemd
";

    /// A fake cgroupfs: each hierarchy a directory of the mountinfo's mount points moved under
    /// `root`, with the files a kernel would show.
    fn fake(root: &Path, mountinfo: &str, layout: CgroupLayout) -> Cgroups {
        let mut cg = Cgroups::from_mountinfo_as(mountinfo, layout).unwrap();
        for h in &mut cg.roots {
            h.mount = root.join(h.mount.strip_prefix("/").unwrap());
            fs::create_dir_all(&h.mount).unwrap();
            for f in [
                "cgroup.procs",
                "cgroup.controllers",
                "cgroup.subtree_control",
            ] {
                fs::write(h.mount.join(f), "").unwrap();
            }
        }
        cg
    }

    /// A group as the kernel would make it (a plain directory cannot make its own files).
    fn kernel_files(cg: &Cgroups, rel: &str) {
        for h in &cg.roots {
            let dir = h.mount.join(rel);
            let files: &[&str] = match h.boot {
                Some(Role::Unified) => &[
                    "cgroup.procs",
                    "cgroup.subtree_control",
                    "cgroup.threads",
                    "cgroup.controllers",
                    "cgroup.max.depth",
                    "cgroup.max.descendants",
                    "memory.max",
                ],
                _ => &[
                    "cgroup.procs",
                    "tasks",
                    "cgroup.clone_children",
                    "notify_on_release",
                ],
            };
            for f in files {
                fs::write(dir.join(f), "").unwrap();
            }
            if h.boot.is_some() {
                // The exec leaf, as the kernel would show it once made.
                fs::create_dir(dir.join(EXEC_LEAF)).unwrap();
                fs::write(dir.join(EXEC_LEAF).join("cgroup.procs"), "").unwrap();
            }
        }
    }

    fn owner(p: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(p).unwrap().uid()
    }

    #[test]
    fn hybrid_hosts_give_the_init_name_systemd_and_unified() {
        let cg = Cgroups::from_mountinfo_as(HYBRID, CgroupLayout::Auto).unwrap();
        let roles: Vec<_> = cg.roots.iter().map(|h| (h.mount.clone(), h.boot)).collect();
        assert_eq!(
            roles,
            [
                (PathBuf::from("/sys/fs/cgroup/cpu"), None),
                (
                    PathBuf::from("/sys/fs/cgroup/systemd"),
                    Some(Role::NamedSystemd)
                ),
                (PathBuf::from("/sys/fs/cgroup/unified"), Some(Role::Unified)),
            ]
        );
        assert_eq!(
            cg.boot_mounts(),
            BootMounts::Hybrid {
                named_systemd: true,
                unified: true
            }
        );
        let v2 = Cgroups::from_mountinfo_as(HYBRID, CgroupLayout::V2).unwrap();
        assert_eq!(v2.boot_mounts(), BootMounts::Unified);
        let pure_v1 = "27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let v1 = Cgroups::from_mountinfo_as(pure_v1, CgroupLayout::Auto).unwrap();
        assert_eq!(
            v1.boot_mounts(),
            BootMounts::Hybrid {
                named_systemd: false,
                unified: false
            }
        );
    }

    /// The v2 paths against a fake cgroupfs (the real proof of a pure v2 host is impossible on
    /// this hybrid build machine; the system tests drive the unified tree with
    /// `--cgroup-layout v2`, which has no controllers here).
    #[test]
    fn v2_delegation_hands_over_only_the_instances_group() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = fake(
            tmp.path(),
            "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
            CgroupLayout::Auto,
        );
        let root = cg.roots[0].mount.clone();
        fs::write(root.join("cgroup.controllers"), "cpu memory pids").unwrap();
        fs::create_dir(root.join("parent")).unwrap();
        fs::write(root.join("parent/cgroup.controllers"), "cpu memory pids").unwrap();
        fs::write(root.join("parent/cgroup.subtree_control"), "").unwrap();
        fs::write(root.join("parent/cgroup.procs"), "").unwrap();
        cg.create("parent/inst").unwrap();
        kernel_files(&cg, "parent/inst");
        // The parent hands its controllers down; the instance's own group enables none, so
        // its init may live in it (no internal processes).
        assert!(
            fs::read_to_string(root.join("parent/cgroup.subtree_control"))
                .unwrap()
                .starts_with('+'),
            "the parent was asked to hand controllers down"
        );
        assert_eq!(
            fs::read_to_string(root.join("parent/inst/cgroup.subtree_control")).unwrap(),
            ""
        );
        cg.delegate("parent/inst", 12345, 12345).unwrap();
        let inst = root.join("parent/inst");
        for p in [
            inst.clone(),
            inst.join("cgroup.procs"),
            inst.join("cgroup.subtree_control"),
            inst.join("cgroup.threads"),
        ] {
            assert_eq!(owner(&p), 12345, "{}", p.display());
        }
        // The subtree the instance may make is bounded by the kernel, in what mayfly walks.
        assert_eq!(
            fs::read_to_string(inst.join("cgroup.max.depth")).unwrap(),
            (MAX_DEPTH - 1).to_string()
        );
        assert_eq!(
            fs::read_to_string(inst.join("cgroup.max.descendants")).unwrap(),
            (MAX_GROUPS - 1).to_string()
        );
        for p in [
            inst.join("memory.max"),
            inst.join("cgroup.max.depth"),
            inst.join("cgroup.max.descendants"),
            inst.join("cgroup.controllers"),
            root.join("parent"),
            root.join("parent/cgroup.procs"),
        ] {
            assert_eq!(owner(&p), 0, "{} stays the host's", p.display());
        }
        // An exec'd process lands in a leaf, not in the init's group.
        cg.add_exec_process("parent/inst", 4242).unwrap();
        assert_eq!(
            fs::read_to_string(inst.join(EXEC_LEAF).join("cgroup.procs")).unwrap(),
            "4242"
        );
        assert_eq!(fs::read_to_string(inst.join("cgroup.procs")).unwrap(), "");
        // The init's own groups are seen (pids) and go first on removal.
        fs::create_dir_all(inst.join("init.scope")).unwrap();
        fs::write(inst.join("init.scope/cgroup.procs"), "1\n").unwrap();
        let mut pids = cg.pids("parent/inst").unwrap();
        pids.sort_unstable();
        assert_eq!(pids, [1, 4242]);
        let order = subtree(&inst);
        assert_eq!(order[0], inst);
        assert!(order.contains(&inst.join("init.scope")));
        assert!(order.contains(&inst.join(EXEC_LEAF)));
    }

    #[test]
    fn hybrid_delegation_covers_name_systemd_and_unified_but_no_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = fake(tmp.path(), HYBRID, CgroupLayout::Auto);
        cg.create("p/inst").unwrap();
        kernel_files(&cg, "p/inst");
        cg.delegate("p/inst", 54321, 54321).unwrap();
        let at = |h: &str, f: &str| {
            tmp.path()
                .join("sys/fs/cgroup")
                .join(h)
                .join("p/inst")
                .join(f)
        };
        for (h, f) in [
            ("systemd", ""),
            ("systemd", "cgroup.procs"),
            ("systemd", "tasks"),
            ("unified", ""),
            ("unified", "cgroup.procs"),
            ("unified", "cgroup.subtree_control"),
        ] {
            assert_eq!(owner(&at(h, f)), 54321, "{h}/{f}");
        }
        for (h, f) in [
            ("cpu", ""),
            ("cpu", "cgroup.procs"),
            ("systemd", "notify_on_release"),
            ("unified", "memory.max"),
        ] {
            assert_eq!(owner(&at(h, f)), 0, "{h}/{f} stays the host's");
        }
        cg.add_exec_process("p/inst", 7).unwrap();
        assert_eq!(fs::read_to_string(at("cpu", "cgroup.procs")).unwrap(), "7");
        assert_eq!(
            fs::read_to_string(at("systemd", "mayfly-exec/cgroup.procs")).unwrap(),
            "7"
        );
        assert!(!at("cpu", EXEC_LEAF).exists());
    }

    #[test]
    fn a_subtree_deeper_than_a_path_can_name_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("inst");
        fs::create_dir(&top).unwrap();
        // A chain far deeper than MAX_DEPTH, made by descriptors (its full path would pass
        // PATH_MAX), with a few siblings on the way.
        let name = "g".repeat(200);
        let mut fd = rustix::fs::open(
            &top,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        for level in 0..100 {
            rustix::fs::mkdirat(&fd, name.as_str(), rustix::fs::Mode::from_raw_mode(0o755))
                .unwrap();
            if level % 10 == 0 {
                rustix::fs::mkdirat(&fd, "side", rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
            }
            fd = rustix::fs::openat(
                &fd,
                name.as_str(),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
        }
        drop(fd);
        assert!(remove_subtree(&top).unwrap());
        assert!(!top.exists());
        assert!(remove_subtree(&top).unwrap(), "a missing group is gone");
    }
}
