//! The file systems an init needs to boot, as systemd's Container Interface asks of a
//! container manager (systemd.io/CONTAINER_INTERFACE), mounted by the container's child
//! before `pivot_root` (the instance's root cannot mount them itself: it has no
//! CAP_SYS_ADMIN):
//!
//! - `/run` (tmpfs, `nosuid,nodev`, 64 MiB) and `/run/lock` (tmpfs, `nosuid,nodev,noexec`,
//!   5 MiB, sticky and world-writable as Debian has it), for an instance that boots an init
//!   ([`boots_init`]) whose template has a real `/run` directory. A template without one (or
//!   with a symlink there) is left as it is: nothing is created in the instance's root, and a
//!   symlink is never followed. An application keeps its template's `/run`, as Docker and
//!   Podman leave it: images make directories there (postgres' socket directory, sshd's
//!   privilege separation directory) that a fresh tmpfs would hide.
//! - `/sys/fs/cgroup`: a cgroup filesystem in which the instance's own group is the root (its
//!   cgroup namespace was made after it entered its group) and is delegated to it (see
//!   `cgroup::boot`): cgroup2 on a v2 host; on v1 and hybrid hosts a read-only tmpfs with
//!   `systemd` (the name=systemd hierarchy) and `unified` (cgroup2). Mounted writable only
//!   when the instance has a user namespace: its root can then write only the files it was
//!   given. Without one its root is the host's, and the mounts are read-only.
//!
//! Every step runs with the instance's root as the working directory (relative paths).

use rustix::fs::{AtFlags, FileType, Mode};
use rustix::mount::MountFlags;

use super::child::{ChildFailure, ChildResult};
use crate::cgroup::BootMounts;

/// Whether the command `args` boots an init: `/sbin/init` and its usual places, systemd
/// itself, or busybox's `init` applet (as Podman tells them for its `--systemd` mode). Those
/// set up `/run` from scratch at boot; anything else expects its image's.
pub(crate) fn boots_init(args: &[String]) -> bool {
    let Some(program) = args.first() else {
        return false;
    };
    let base = program.rsplit('/').next().unwrap_or(program);
    matches!(
        program.as_str(),
        "/sbin/init" | "/usr/sbin/init" | "/usr/local/sbin/init"
    ) || base == "systemd"
        || (base == "busybox" && args.get(1).is_some_and(|a| a == "init"))
}

/// Mounts the tmpfs at `/run` and `/run/lock` when the root has a real `/run` directory.
pub(crate) fn mount_run(id: &str) -> ChildResult<()> {
    match rustix::fs::statat(rustix::fs::CWD, "run", AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
        Ok(_) => {
            eprintln!("forker: instance {id}: /run is not a directory; no tmpfs mounted there");
            return Ok(());
        }
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(ChildFailure::io("inspect /run", e)),
    }
    rustix::mount::mount(
        c"tmpfs",
        c"run",
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=755,size=65536k,nr_inodes=65536"),
    )
    .map_err(|e| ChildFailure::io("mount /run", e))?;
    // Our fresh tmpfs: nothing of the template is below.
    rustix::fs::mkdir("run/lock", Mode::from_raw_mode(0o1777))
        .map_err(|e| ChildFailure::io("create /run/lock", e))?;
    rustix::mount::mount(
        c"tmpfs",
        c"run/lock",
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(c"mode=1777,size=5120k,nr_inodes=4096"),
    )
    .map_err(|e| ChildFailure::io("mount /run/lock", e))
}

/// Mounts the cgroup filesystems of `mounts` at `sys/fs/cgroup` (when the instance's `/sys`
/// has that directory), writable when `delegated`.
pub(crate) fn mount_cgroups(mounts: BootMounts, delegated: bool) -> ChildResult<()> {
    if !std::path::Path::new("sys/fs/cgroup").is_dir() {
        return Ok(());
    }
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if !delegated {
        flags |= MountFlags::RDONLY;
    }
    let cgroup2 = |at: &std::ffi::CStr| {
        rustix::mount::mount(c"cgroup2", at, c"cgroup2", flags, None)
            .map_err(|e| ChildFailure::io(format!("mount /{}", at.to_string_lossy()), e))
    };
    match mounts {
        BootMounts::Unified => cgroup2(c"sys/fs/cgroup"),
        BootMounts::Hybrid {
            named_systemd,
            unified,
        } => {
            let fixed = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
            rustix::mount::mount(
                c"tmpfs",
                c"sys/fs/cgroup",
                c"tmpfs",
                fixed,
                Some(c"mode=755,size=64k,nr_inodes=64"),
            )
            .map_err(|e| ChildFailure::io("mount /sys/fs/cgroup", e))?;
            if named_systemd {
                mkdir("sys/fs/cgroup/systemd")?;
                rustix::mount::mount(
                    c"cgroup",
                    c"sys/fs/cgroup/systemd",
                    c"cgroup",
                    flags,
                    Some(c"none,name=systemd"),
                )
                .map_err(|e| ChildFailure::io("mount /sys/fs/cgroup/systemd", e))?;
            }
            if unified {
                mkdir("sys/fs/cgroup/unified")?;
                cgroup2(c"sys/fs/cgroup/unified")?;
            }
            // The tmpfs itself is read-only once its mount points are made, as on a host.
            rustix::mount::mount_remount(
                c"sys/fs/cgroup",
                MountFlags::BIND | MountFlags::RDONLY | fixed,
                c"",
            )
            .map_err(|e| ChildFailure::io("make /sys/fs/cgroup read-only", e))
        }
    }
}

fn mkdir(path: &str) -> ChildResult<()> {
    rustix::fs::mkdir(path, Mode::from_raw_mode(0o755))
        .map_err(|e| ChildFailure::io(format!("create /{path}"), e))
}

#[cfg(test)]
mod tests {
    use super::boots_init;

    #[test]
    fn inits_are_told_from_applications() {
        let args = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        for init in [
            "/sbin/init",
            "/usr/sbin/init",
            "/lib/systemd/systemd --log-level=info",
            "/usr/lib/systemd/systemd",
            "/bin/busybox init",
        ] {
            assert!(boots_init(&args(init)), "{init}");
        }
        for app in [
            "/usr/sbin/nginx",
            "sh -c init",
            "/bin/busybox sh",
            "initdb",
            "",
        ] {
            assert!(!boots_init(&args(app)), "{app}");
        }
        assert!(!boots_init(&[]));
    }
}
