//! Looking paths up in a stack of layers the way overlayfs does, without mounting it.
//!
//! A name is looked up in every layer that contributes to its parent directory, topmost first:
//! a whiteout (0:0 character device) ends the lookup (the name is deleted); a non-directory ends
//! it too (it shows if nothing above was a directory, and is hidden under one otherwise); a
//! directory merges with the directories of the same name below it, down to the first one
//! marked opaque. Every layer is read through directory descriptors, never following a symlink.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{FileType, Statx};

use crate::ImageError;
use crate::inode::{file_type, is_whiteout, stat_at};
use crate::tree::{child_path, open_dir_at, open_root};
use crate::xattr;

/// One layer's directory at the path being looked at.
pub(crate) struct LowerDir {
    pub(crate) fd: OwnedFd,
    /// The host path, for errors.
    pub(crate) path: PathBuf,
}

/// Opens the roots of `layers` (lowest first) as a lookup stack, topmost first.
pub(crate) fn open_stack(layers: &[PathBuf]) -> Result<Vec<LowerDir>, ImageError> {
    layers
        .iter()
        .rev()
        .map(|layer| {
            let fd = open_root(layer).map_err(|source| ImageError::Open {
                path: layer.clone(),
                source,
            })?;
            Ok(LowerDir {
                fd,
                path: layer.clone(),
            })
        })
        .collect()
}

/// What a stack shows at one name.
pub(crate) enum Shown {
    /// Nothing: no layer has it, or a whiteout deletes it.
    Nothing,
    /// A non-directory.
    Leaf,
    /// A directory, merged from these layers' directories (topmost first).
    Dir(Vec<LowerDir>),
}

fn stat(layer: &LowerDir, name: &CStr) -> Result<Option<Statx>, ImageError> {
    match stat_at(layer.fd.as_fd(), name) {
        Ok(st) => Ok(Some(st)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ImageError::Stat {
            path: child_path(&layer.path, name),
            source,
        }),
    }
}

/// What `stack` (directories at one path, topmost first) shows at `name`.
pub(crate) fn lookup(stack: &[LowerDir], name: &CStr) -> Result<Shown, ImageError> {
    for layer in stack {
        let Some(st) = stat(layer, name)? else {
            continue;
        };
        if is_whiteout(&st) {
            return Ok(Shown::Nothing);
        }
        return Ok(match file_type(&st) {
            FileType::Directory => Shown::Dir(visible_dirs(stack, name)?),
            _ => Shown::Leaf,
        });
    }
    Ok(Shown::Nothing)
}

/// The directories named `name` in `stack` (directories at one path, topmost first) that an
/// overlay of the stack merges into the directory it shows there, topmost first; empty when it
/// shows no directory there (nothing, a whiteout, or a non-directory on top).
pub(crate) fn visible_dirs(stack: &[LowerDir], name: &CStr) -> Result<Vec<LowerDir>, ImageError> {
    let mut dirs = Vec::new();
    for layer in stack {
        let Some(st) = stat(layer, name)? else {
            continue;
        };
        if is_whiteout(&st) || file_type(&st) != FileType::Directory {
            // Under a directory above, a non-directory is hidden and so is all below it; with
            // no directory above, a non-directory (or a deletion) is what shows.
            break;
        }
        let path = child_path(&layer.path, name);
        let fd = open_dir_at(layer.fd.as_fd(), name).map_err(|source| ImageError::Open {
            path: path.clone(),
            source,
        })?;
        let opaque = xattr::is_opaque(fd.as_fd()).map_err(|source| ImageError::ReadXattrs {
            path: path.clone(),
            source,
        })?;
        dirs.push(LowerDir { fd, path });
        if opaque {
            break;
        }
    }
    Ok(dirs)
}

/// Whether the stack of `layers` (lowest first) shows a non-directory at `path` (relative,
/// `/`-separated), looked up as an overlay of them would show it: a whiteout or an opaque
/// directory in a layer above hides what is below; no symlink is followed (one on the way
/// means the path shows nothing here), so nothing outside the layers is ever looked at.
pub fn stack_shows_file(layers: &[PathBuf], path: &str) -> Result<bool, ImageError> {
    let mut stack = open_stack(layers)?;
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    while let Some(part) = parts.next() {
        let Ok(name) = std::ffi::CString::new(part) else {
            return Ok(false);
        };
        if parts.peek().is_none() {
            return Ok(matches!(lookup(&stack, &name)?, Shown::Leaf));
        }
        stack = visible_dirs(&stack, &name)?;
        if stack.is_empty() {
            return Ok(false);
        }
    }
    Ok(false)
}
