//! OS templates that boot: what `template build NAME --debian SUITE` adds so that an instance
//! of it boots systemd (unless `--no-init`).
//!
//! - `systemd-sysv` (systemd as `/sbin/init`, which makes the template's default command
//!   `/sbin/init`) and `dbus` (for `loginctl`, `hostnamectl`, `timedatectl`), installed by
//!   debootstrap with the variant;
//! - the units that cannot work in any mayfly instance masked, as Debian's and systemd's own
//!   container practice does ([`MASKED_UNITS`], listed in docs/boot.md). Everything else that
//!   cannot work in a container is skipped by systemd itself (`ConditionVirtualization=`,
//!   `ConditionPathIsReadWrite=/sys`, capabilities it lacks).

use std::path::Path;

use crate::EngineError;
use crate::error::io_err;

/// The packages an OS template gets for its init.
pub(crate) const INIT_PACKAGES: [&str; 2] = ["systemd-sysv", "dbus"];

/// Units masked in a booting OS template, with why.
pub(crate) const MASKED_UNITS: [(&str, &str); 1] = [(
    "systemd-machine-id-commit.service",
    "mayfly mounts the instance's own /etc/machine-id at every start; committing it to the root \
     would need CAP_SYS_ADMIN, and fails",
)];

/// Adds [`INIT_PACKAGES`] to `packages` (those not there yet).
pub(crate) fn add_init_packages(packages: &mut Vec<String>) {
    for p in INIT_PACKAGES {
        if !packages.iter().any(|x| x == p) {
            packages.push(p.to_owned());
        }
    }
}

/// Masks [`MASKED_UNITS`] in the root filesystem `root` (those its systemd has), as
/// `systemctl mask` does: a link to `/dev/null` in `/etc/systemd/system`, and empties the
/// machine id systemd's installation drew on the build host (as Debian's container images
/// ship it): every instance gets its own mounted over it, and a published or exported
/// template must not carry one. Returns the units masked. Blocking.
///
/// Every path is resolved inside `root` (`RESOLVE_IN_ROOT`): the tree came from packages, and
/// an absolute symlink in it (`etc -> /etc`) must never lead to the host's files.
pub(crate) fn mask_units(root: &Path) -> Result<Vec<String>, EngineError> {
    use rustix::fs::{Mode, OFlags};
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open", root)(e.into()))?;
    let at = |rel: &str| root.join(rel);
    // Missing, a dangling link, or not a file that opens for writing: nothing to empty.
    if let Ok(fd) = in_root(
        &root_fd,
        "etc/machine-id",
        OFlags::WRONLY | OFlags::NONBLOCK,
    ) {
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| io_err("inspect", &at("etc/machine-id"))(e.into()))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile {
            rustix::fs::ftruncate(&fd, 0)
                .map_err(|e| io_err("empty", &at("etc/machine-id"))(e.into()))?;
        }
    }
    let mut masked = Vec::new();
    for (unit, _) in MASKED_UNITS {
        let shipped = ["lib/systemd/system", "usr/lib/systemd/system"]
            .iter()
            .any(|d| in_root(&root_fd, &format!("{d}/{unit}"), OFlags::PATH).is_ok());
        if !shipped {
            continue;
        }
        let mut dir = None;
        for prefix in ["etc", "etc/systemd", "etc/systemd/system"] {
            let (parent, name) = prefix.rsplit_once('/').unwrap_or(("", prefix));
            let parent_fd = match parent {
                "" => None,
                p => Some(in_root(&root_fd, p, OFlags::PATH | OFlags::DIRECTORY)),
            };
            let parent_fd = match parent_fd {
                None => rustix::fs::openat(
                    &root_fd,
                    ".",
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                ),
                Some(r) => r,
            }
            .map_err(|e| io_err("open", &at(parent))(e.into()))?;
            match rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(io_err("create", &at(prefix))(e.into())),
            }
            dir = Some(
                in_root(&root_fd, prefix, OFlags::PATH | OFlags::DIRECTORY)
                    .map_err(|e| io_err("open", &at(prefix))(e.into()))?,
            );
        }
        let Some(dir) = dir else { continue };
        let link = at("etc/systemd/system").join(unit);
        match rustix::fs::unlinkat(&dir, unit, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(io_err("replace", &link)(e.into())),
        }
        rustix::fs::symlinkat("/dev/null", &dir, unit)
            .map_err(|e| io_err("create", &link)(e.into()))?;
        masked.push(unit.to_owned());
    }
    Ok(masked)
}

/// Opens `rel` with `flags`, every symlink on the way resolved as if `root` were `/`.
fn in_root(
    root: &rustix::fd::OwnedFd,
    rel: &str,
    flags: rustix::fs::OFlags,
) -> rustix::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::ResolveFlags;
    rustix::fs::openat2(
        root,
        rel,
        flags | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shipped_units_are_masked_and_packages_are_added_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert!(mask_units(root).unwrap().is_empty());
        assert!(!root.join("etc/systemd/system").exists());
        std::fs::create_dir_all(root.join("lib/systemd/system")).unwrap();
        std::fs::write(
            root.join("lib/systemd/system/systemd-machine-id-commit.service"),
            "",
        )
        .unwrap();
        assert_eq!(
            mask_units(root).unwrap(),
            ["systemd-machine-id-commit.service"]
        );
        std::fs::write(
            root.join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        mask_units(root).unwrap();
        assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
        let link = root.join("etc/systemd/system/systemd-machine-id-commit.service");
        assert_eq!(std::fs::read_link(link).unwrap(), Path::new("/dev/null"));
        // Absolute symlinks in the tree resolve inside it, never to the host's files.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("machine-id"), "kept\n").unwrap();
        let evil = tempfile::tempdir().unwrap();
        let evil_root = evil.path();
        std::fs::create_dir_all(evil_root.join("lib/systemd/system")).unwrap();
        std::fs::write(
            evil_root.join("lib/systemd/system/systemd-machine-id-commit.service"),
            "",
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), evil_root.join("etc")).unwrap();
        // Where that link leads inside the tree.
        let inside_etc = evil_root.join(outside.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside_etc).unwrap();
        assert_eq!(
            mask_units(evil_root).unwrap(),
            ["systemd-machine-id-commit.service"]
        );
        assert_eq!(
            std::fs::read(outside.path().join("machine-id")).unwrap(),
            b"kept\n"
        );
        assert!(!outside.path().join("systemd").exists());
        // The mask was made inside the tree.
        let inside = inside_etc.join("systemd/system/systemd-machine-id-commit.service");
        assert_eq!(std::fs::read_link(inside).unwrap(), Path::new("/dev/null"));
        let mut p = vec!["dbus".to_owned(), "less".to_owned()];
        add_init_packages(&mut p);
        assert_eq!(p, ["dbus", "less", "systemd-sysv"]);
    }
}
