//! Mounting a host file over a file of the container's root, only if that file is there and is
//! a regular file: how `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` get the content
//! mayfly writes for each instance (see [`crate::spec::BindMount::only_over_file`]).
//!
//! Runs in the container's child before `pivot_root`, when an absolute symlink would resolve
//! against the host's root. The parent directory is resolved with `RESOLVE_IN_ROOT` (a symlink
//! in the template or the tenant's writable layer stays inside the root) and without crossing
//! a mount; the file itself is opened with `O_NOFOLLOW`, so a tenant's symlink at `/etc/hosts`
//! is never followed at all: the mount is skipped, with a line in the forker's log. So is a
//! missing file (the engine's mount-point layer provides one wherever the template has the
//! directory) or anything but a regular file. Nothing is ever created: what a container is
//! given must not land in its writable layer.

use std::os::fd::OwnedFd;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

use super::child::{ChildFailure, ChildResult, move_onto};
use crate::spec::BindMount;

/// Why a file mount was left out.
fn skip(id: &str, target: &str, why: &str) -> ChildResult<()> {
    eprintln!("forker: instance {id}: {target} left as the instance has it ({why})");
    Ok(())
}

/// Mounts the detached `tree` (the source of `bind`) over the regular file `bind.target` of
/// `root` (the container's root mount), or skips it (see the module documentation).
pub(crate) fn mount_over_file(
    id: &str,
    root: &OwnedFd,
    bind: &BindMount,
    tree: &OwnedFd,
) -> ChildResult<()> {
    let target = bind.target.as_str();
    let rel = target.trim_start_matches('/');
    let (parent, leaf) = match rel.rsplit_once('/') {
        Some((p, l)) => (if p.is_empty() { "." } else { p }, l),
        None => (".", rel),
    };
    if leaf.is_empty() || leaf == "." || leaf == ".." {
        return skip(id, target, "not a file path");
    }
    let dir = match rustix::fs::openat2(
        root,
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    ) {
        Ok(dir) => dir,
        Err(e) => return skip(id, target, &format!("its directory: {e}")),
    };
    let file = match rustix::fs::openat(
        &dir,
        leaf,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(file) => file,
        Err(rustix::io::Errno::NOENT) => return skip(id, target, "it does not exist"),
        Err(e) => return skip(id, target, &e.to_string()),
    };
    let st =
        rustix::fs::fstat(&file).map_err(|e| ChildFailure::io(format!("inspect {target}"), e))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {}
        FileType::Symlink => return skip(id, target, "it is a symlink"),
        _ => return skip(id, target, "it is not a regular file"),
    }
    move_onto(tree, &file).map_err(|e| ChildFailure::io(format!("mount {target}"), e))
}
