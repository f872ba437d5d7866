//! The attributes every inode we create gets (owner, permission bits, times), read with `statx`
//! and set without following symlinks.
//!
//! Order matters and lives here so no caller gets it wrong: owner before mode, because `chown`
//! clears setuid/setgid; times last, after content and xattrs, because writing bumps the mtime.
//! Device and FIFO nodes are never opened for I/O (opening a device has side effects), so their
//! mode is set through an `O_PATH` descriptor's `/proc/self/fd` link, which reaches exactly
//! that inode.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Statx, StatxFlags, Timestamps};
use rustix::process::{Gid, Uid};
use rustix::time::Timespec;

use crate::ImageError;

/// The twelve permission bits, including setuid, setgid and sticky.
pub(crate) const PERMISSION_BITS: u32 = 0o7777;

/// A point in time with nanosecond precision, as file timestamps have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Time {
    pub(crate) sec: i64,
    pub(crate) nsec: u32,
}

impl Time {
    fn timespec(self) -> Timespec {
        Timespec {
            tv_sec: self.sec,
            tv_nsec: i64::from(self.nsec),
        }
    }
}

/// Owner, permission bits and times of one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inode {
    /// Only the [`PERMISSION_BITS`]; the file type travels separately.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: Time,
    pub(crate) mtime: Time,
}

impl Inode {
    /// Root-owned with the given mode, both times set to `mtime`.
    pub(crate) fn root(mode: u32, mtime: Time) -> Self {
        Self {
            mode,
            uid: 0,
            gid: 0,
            atime: mtime,
            mtime,
        }
    }

    pub(crate) fn from_statx(st: &Statx) -> Self {
        let time = |t: rfs::StatxTimestamp| Time {
            sec: t.tv_sec,
            nsec: t.tv_nsec,
        };
        Self {
            mode: u32::from(st.stx_mode) & PERMISSION_BITS,
            uid: st.stx_uid,
            gid: st.stx_gid,
            atime: time(st.stx_atime),
            mtime: time(st.stx_mtime),
        }
    }

    fn owner(&self) -> (Option<Uid>, Option<Gid>) {
        // `!0` means "leave unchanged" to the kernel; callers reject it before we get here.
        (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)))
    }

    fn timestamps(&self) -> Timestamps {
        Timestamps {
            last_access: self.atime.timespec(),
            last_modification: self.mtime.timespec(),
        }
    }

    /// Sets owner and then mode on an open file or directory.
    pub(crate) fn set_owner_mode(&self, fd: BorrowedFd<'_>, path: &Path) -> Result<(), ImageError> {
        let (uid, gid) = self.owner();
        rfs::fchown(fd, uid, gid).map_err(|e| set_owner(path, e))?;
        rfs::fchmod(fd, Mode::from_raw_mode(self.mode)).map_err(|e| set_mode(path, e))
    }

    /// Sets owner and then mode on the entry `name` of `dir`, which is of type `kind` and must not
    /// be a regular file or directory (those have descriptors: use [`Self::set_owner_mode`]).
    /// A symlink's mode is not settable on Linux, so only its owner is set.
    pub(crate) fn set_owner_mode_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        kind: FileType,
        path: &Path,
    ) -> Result<(), ImageError> {
        let (uid, gid) = self.owner();
        rfs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| set_owner(path, e))?;
        if kind == FileType::Symlink {
            return Ok(());
        }
        let node = rfs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| set_mode(path, e))?;
        // Whatever was there when we looked, the descriptor now pins one inode; make sure it is
        // still the kind we created before changing it.
        let st = stat_fd(node.as_fd()).map_err(|e| set_mode(path, e))?;
        if file_type(&st) != kind {
            return Err(set_mode(
                path,
                io::Error::other("the entry changed type underneath us"),
            ));
        }
        let link = format!("/proc/self/fd/{}", node.as_raw_fd());
        rfs::chmodat(
            rfs::CWD,
            link.as_str(),
            Mode::from_raw_mode(self.mode),
            AtFlags::empty(),
        )
        .map_err(|e| set_mode(path, e))
    }

    /// Sets the times of an open file or directory.
    pub(crate) fn set_times(&self, fd: BorrowedFd<'_>, path: &Path) -> Result<(), ImageError> {
        rfs::futimens(fd, &self.timestamps()).map_err(|e| set_times(path, e))
    }

    /// Sets the times of the entry `name` of `dir` without following it.
    pub(crate) fn set_times_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
    ) -> Result<(), ImageError> {
        rfs::utimensat(dir, name, &self.timestamps(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| set_times(path, e))
    }
}

/// Sets both times of an open file or directory to `mtime`.
pub(crate) fn set_times_fd(fd: BorrowedFd<'_>, mtime: Time, path: &Path) -> Result<(), ImageError> {
    let both = Timestamps {
        last_access: mtime.timespec(),
        last_modification: mtime.timespec(),
    };
    rfs::futimens(fd, &both).map_err(|e| set_times(path, e))
}

fn set_owner(path: &Path, source: impl Into<io::Error>) -> ImageError {
    ImageError::SetOwner {
        path: path.to_owned(),
        source: source.into(),
    }
}

fn set_mode(path: &Path, source: impl Into<io::Error>) -> ImageError {
    ImageError::SetMode {
        path: path.to_owned(),
        source: source.into(),
    }
}

fn set_times(path: &Path, source: impl Into<io::Error>) -> ImageError {
    ImageError::SetTimes {
        path: path.to_owned(),
        source: source.into(),
    }
}

/// `statx` of the entry `name` in `dir`, not following it or triggering an automount.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Statx> {
    Ok(rfs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        StatxFlags::BASIC_STATS,
    )?)
}

/// `statx` of an open descriptor.
pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Statx> {
    Ok(rfs::statx(
        fd,
        c"",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    )?)
}

pub(crate) fn file_type(st: &Statx) -> FileType {
    FileType::from_raw_mode(u32::from(st.stx_mode))
}

/// The filesystem an inode lives on, comparable between two `statx` results.
pub(crate) fn device(st: &Statx) -> (u32, u32) {
    (st.stx_dev_major, st.stx_dev_minor)
}

/// Whether an inode is an overlay whiteout: a character device with device number 0:0.
pub(crate) fn is_whiteout(st: &Statx) -> bool {
    file_type(st) == FileType::CharacterDevice && st.stx_rdev_major == 0 && st.stx_rdev_minor == 0
}
