//! Extended attributes: which ones a tree may carry, and reading and writing them without
//! following symlinks.
//!
//! Files and directories are handled through a file descriptor we already hold. Symlinks and
//! device/FIFO nodes cannot be opened for xattr calls (an `O_PATH` descriptor is refused and
//! opening a device has side effects), so they are addressed as `/proc/self/fd/<dir>/<name>`
//! with the `l*` calls: the kernel resolves the held directory, looks `name` up in it and does not
//! follow it. No other path string is involved, so a rename elsewhere cannot redirect the call.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs as rfs;
use rustix::io::Errno;

/// Which extended attributes a tree keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrPolicy {
    /// Keep only `user.*` and `security.capability` (what an imported tree may carry).
    Portable,
    /// Keep every xattr, including `trusted.overlay.*` (copying an overlay upper dir exactly).
    All,
    /// Keep every xattr but overlayfs's own `trusted.overlay.*`: what a merged overlay mount
    /// shows.
    NoOverlay,
}

impl XattrPolicy {
    /// Whether an xattr called `name` survives under this policy.
    pub(crate) fn keeps(self, name: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::NoOverlay => !name.starts_with(OVERLAY_PREFIX),
            Self::Portable => name.starts_with(b"user.") || name == b"security.capability",
        }
    }
}

/// The namespace overlayfs keeps its bookkeeping in, hidden from a mount's readers.
pub(crate) const OVERLAY_PREFIX: &[u8] = b"trusted.overlay.";
/// Marks a directory in a layer as replacing, not merging with, the directories below it.
pub(crate) const OPAQUE: &[u8] = b"trusted.overlay.opaque";

/// Name and value pairs, sorted by name.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The inode an xattr call is about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Node<'a> {
    /// A regular file or directory opened for reading or writing.
    Fd(BorrowedFd<'a>),
    /// The entry `name` in the open directory, never followed.
    At(BorrowedFd<'a>, &'a CStr),
}

impl Node<'_> {
    fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> PathBuf {
        let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        path.push(OsStr::from_bytes(name.to_bytes()));
        path
    }
}

/// Reads the xattrs of `node` that `policy` keeps. A filesystem without xattr support has none.
pub(crate) fn read(node: Node<'_>, policy: XattrPolicy) -> io::Result<Xattrs> {
    let names = match node {
        Node::Fd(fd) => fill(|buf| match buf {
            Some(buf) => rfs::flistxattr(fd, buf),
            None => rfs::flistxattr_query(fd),
        }),
        Node::At(dir, name) => {
            let path = Node::proc_path(dir, name);
            fill(|buf| match buf {
                Some(buf) => rfs::llistxattr(&path, buf),
                None => rfs::llistxattr_query(&path),
            })
        }
    };
    let names = match names {
        Ok(names) => names,
        Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
        Err(err) => return Err(err.into()),
    };
    let mut out = Xattrs::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !policy.keeps(name) {
            continue;
        }
        let value = match node {
            Node::Fd(fd) => fill(|buf| match buf {
                Some(buf) => rfs::fgetxattr(fd, name, buf),
                None => rfs::fgetxattr_query(fd, name),
            }),
            Node::At(dir, entry) => {
                let path = Node::proc_path(dir, entry);
                fill(|buf| match buf {
                    Some(buf) => rfs::lgetxattr(&path, name, buf),
                    None => rfs::lgetxattr_query(&path, name),
                })
            }
        };
        match value {
            Ok(value) => out.push((name.to_vec(), value)),
            // Removed between listing and reading: it is simply not there any more.
            Err(Errno::NODATA) => {}
            Err(err) => return Err(err.into()),
        }
    }
    out.sort();
    Ok(out)
}

/// The value of the xattr `name` of `node`, `None` if it has none (or the filesystem has no
/// xattrs).
pub(crate) fn get(node: Node<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let value = match node {
        Node::Fd(fd) => fill(|buf| match buf {
            Some(buf) => rfs::fgetxattr(fd, name, buf),
            None => rfs::fgetxattr_query(fd, name),
        }),
        Node::At(dir, entry) => {
            let path = Node::proc_path(dir, entry);
            fill(|buf| match buf {
                Some(buf) => rfs::lgetxattr(&path, name, buf),
                None => rfs::lgetxattr_query(&path, name),
            })
        }
    };
    match value {
        Ok(value) => Ok(Some(value)),
        Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Whether the directory `dir` carries overlayfs's opaque marker (`trusted.overlay.opaque`
/// = `y`; other values, such as the `x` of newer kernels, do not make it opaque).
pub(crate) fn is_opaque(dir: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(get(Node::Fd(dir), OPAQUE)?.as_deref() == Some(b"y"))
}

/// Sets one xattr on `node`, replacing any value it had.
pub(crate) fn write(node: Node<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let flags = rfs::XattrFlags::empty();
    match node {
        Node::Fd(fd) => rfs::fsetxattr(fd, name, value, flags)?,
        Node::At(dir, entry) => rfs::lsetxattr(Node::proc_path(dir, entry), name, value, flags)?,
    }
    Ok(())
}

/// Removes one xattr from `node`; one that is not there is fine.
pub(crate) fn remove(node: Node<'_>, name: &[u8]) -> io::Result<()> {
    let r = match node {
        Node::Fd(fd) => rfs::fremovexattr(fd, name),
        Node::At(dir, entry) => rfs::lremovexattr(Node::proc_path(dir, entry), name),
    };
    match r {
        Ok(()) | Err(Errno::NODATA) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs a size query (`None`) and then a read into a buffer of that size, retrying if the value
/// grew in between (`ERANGE`).
fn fill(
    mut call: impl FnMut(Option<&mut [u8]>) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    loop {
        let size = call(None)?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0; size];
        match call(Some(&mut buf)) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(Errno::RANGE) => {}
            Err(err) => return Err(err),
        }
    }
}
