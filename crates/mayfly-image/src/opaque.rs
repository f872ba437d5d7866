//! Opaque markers a writable layer does not need: dropping them before it becomes a layer.
//!
//! overlayfs marks a directory of its upper layer opaque (`trusted.overlay.opaque` = `y`)
//! where a lower directory *might* show through at that path: a directory created where a
//! whiteout was (`rmdir` then `mkdir`: it really replaces the lower one), and — with
//! `redirect_dir=off`, as mayfly mounts — a directory made in the upper layer and renamed into
//! a directory that merges lower ones, whether or not a lower layer has that name. Package
//! installs do the second all the time (dpkg and maintainer scripts unpack or build a directory
//! aside and rename it into place): an nginx layer came out with 35 such markers
//! (`etc/nginx`, `usr/share/doc/<pkg>`, `usr/share/man/man3`…) over directories no lower layer
//! has.
//!
//! On the stack it was made on, such a marker hides nothing. On another stack it does: an
//! application layer is stacked over other applications' layers at launch, and its needless
//! opaque `usr/share/doc` entries would hide theirs (with `--ordered`) or be refused as a
//! conflict. So a layer keeps a marker only where a directory is visible at that path in the
//! stack below it — the marker really replaces a lower directory — and loses it elsewhere:
//! - the lower stack is looked up as overlayfs does, topmost layer first: a whiteout or a
//!   non-directory ends the lookup (nothing below shows through), a directory merges with the
//!   ones below it down to the first opaque one;
//! - below a directory whose marker is kept, nothing of the lower stack shows, so every marker
//!   inside it is needless;
//! - a marker whose value is not `y` does not make a directory opaque (overlayfs ignores it)
//!   and is dropped too; the root's marker is left alone (overlayfs ignores it on a root).
//!
//! Dropping a needless marker never changes what the original stack shows, so the result is the
//! same tree for every instance of the template it was built on. Everything is read through
//! directory descriptors without following symlinks.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use crate::ImageError;
use crate::inode::file_type;
use crate::stack::{LowerDir, open_stack, visible_dirs};
use crate::tree::{entries, open_dir_at, open_root};
use crate::xattr::{self, Node, OPAQUE};

/// How many opaque markers [`drop_needless_opaque`] kept and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpaqueReport {
    /// Markers that replace a directory visible below: kept.
    pub kept: u64,
    /// Markers that hid nothing: removed.
    pub dropped: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Marker {
    None,
    Opaque,
    /// `trusted.overlay.opaque` with another value than `y`: not opaque to overlayfs.
    Other,
}

fn marker(dir: BorrowedFd<'_>, path: &Path) -> Result<Marker, ImageError> {
    let value = xattr::get(Node::Fd(dir), OPAQUE).map_err(|source| ImageError::ReadXattrs {
        path: path.to_owned(),
        source,
    })?;
    Ok(match value.as_deref() {
        None => Marker::None,
        Some(b"y") => Marker::Opaque,
        Some(_) => Marker::Other,
    })
}

/// Removes from the tree `upper` (a writable layer, or a copy of one) every opaque marker that
/// hides nothing of `lowers` (the layers it sits on, lowest first): see the module
/// documentation. Nothing else is changed (a directory's mtime does not move with its xattrs).
pub fn drop_needless_opaque(upper: &Path, lowers: &[PathBuf]) -> Result<OpaqueReport, ImageError> {
    let root = open_root(upper).map_err(|source| ImageError::Open {
        path: upper.to_owned(),
        source,
    })?;
    let stack = open_stack(lowers)?;
    let mut report = OpaqueReport::default();
    walk(root.as_fd(), upper, &stack, &mut report)?;
    Ok(report)
}

/// Goes through the subdirectories of `dir` (at `path`), whose lower counterparts, topmost
/// first, are `below` (empty when nothing below shows through).
fn walk(
    dir: BorrowedFd<'_>,
    path: &Path,
    below: &[LowerDir],
    report: &mut OpaqueReport,
) -> Result<(), ImageError> {
    for entry in entries(dir, path)? {
        let (name, child, st) = entry?;
        if file_type(&st) != FileType::Directory {
            continue;
        }
        let sub = open_dir_at(dir, &name).map_err(|source| ImageError::Open {
            path: child.clone(),
            source,
        })?;
        let lower = if below.is_empty() {
            Vec::new()
        } else {
            visible_dirs(below, &name)?
        };
        match marker(sub.as_fd(), &child)? {
            Marker::Opaque if !lower.is_empty() => {
                report.kept += 1;
                // It hides everything below: markers inside it hide nothing more.
                walk(sub.as_fd(), &child, &[], report)?;
            }
            Marker::None => walk(sub.as_fd(), &child, &lower, report)?,
            Marker::Opaque | Marker::Other => {
                xattr::remove(Node::Fd(sub.as_fd()), OPAQUE).map_err(|source| {
                    ImageError::SetXattr {
                        path: child.clone(),
                        name: String::from_utf8_lossy(OPAQUE).into_owned(),
                        source,
                    }
                })?;
                report.dropped += 1;
                walk(sub.as_fd(), &child, &lower, report)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
