//! Project quotas: `quotactl_fd(2)` (Linux 5.14) for project limits and usage, and the
//! `FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR` ioctls for a directory's project id and its
//! inherit flag. Neither is wrapped by rustix.
//!
//! The quotactl commands used here are the generic ones (`Q_GETQUOTA`, `Q_SETQUOTA`) and the
//! XFS-style state query (`Q_XGETQSTATV`); the kernel serves all three on ext4 and on xfs.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// The project quota type (`PRJQUOTA` in `<linux/quota.h>`).
const PRJQUOTA: u32 = 2;
/// `Q_XGETQSTATV`: `XQM_CMD(8)`.
const Q_XGETQSTATV: u32 = (('X' as u32) << 8) + 8;
/// `FS_QUOTA_PDQ_ACCT`, `FS_QUOTA_PDQ_ENFD` of `fs_quota_statv.qs_flags`.
const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
/// `FS_QSTATV_VERSION1`.
const FS_QSTATV_VERSION1: i8 = 1;
/// Quota blocks of `if_dqblk` are 1 KiB (`QIF_DQBLKSIZE`).
const QIF_DQBLKSIZE: u64 = 1024;
/// `FS_XFLAG_PROJINHERIT`.
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

/// `QCMD(cmd, PRJQUOTA)`.
fn qcmd(cmd: u32) -> u32 {
    (cmd << 8) | (PRJQUOTA & 0x00ff)
}

/// `quotactl_fd(fd, cmd, id, addr)` for the project quota type.
///
/// # Safety
/// `addr` must point to the structure `cmd` reads or writes, valid for the whole call.
unsafe fn quotactl_prj(
    fs: impl AsFd,
    cmd: u32,
    id: u32,
    addr: *mut libc::c_void,
) -> io::Result<()> {
    // SAFETY: the fd is borrowed and open for the call; `addr` is the caller's promise.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fs.as_fd().as_raw_fd(),
            qcmd(cmd),
            id,
            addr,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `struct fs_qfilestatv` of `<linux/dqblk_xfs.h>`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsQfilestatv {
    ino: u64,
    nblks: u64,
    nextents: u32,
    pad: u32,
}

/// `struct fs_quota_statv` of `<linux/dqblk_xfs.h>` (version 1, 160 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct FsQuotaStatv {
    version: i8,
    pad1: u8,
    flags: u16,
    incoredqs: u32,
    uquota: FsQfilestatv,
    gquota: FsQfilestatv,
    pquota: FsQfilestatv,
    btimelimit: i32,
    itimelimit: i32,
    rtbtimelimit: i32,
    bwarnlimit: u16,
    iwarnlimit: u16,
    rtbwarnlimit: u16,
    pad3: u16,
    pad4: u32,
    pad2: [u64; 7],
}

/// Project quota state of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectQuotaState {
    /// Usage is counted per project.
    pub accounting: bool,
    /// Limits are enforced.
    pub enforced: bool,
}

/// The project quota state of the filesystem holding `fs` (any open file on it). An error
/// means the filesystem or kernel has no quota support at all (`ENOSYS`, `ENOTTY`,
/// `EOPNOTSUPP`) or project quotas are off (`ESRCH`, kernel-dependent).
pub fn project_quota_state(fs: impl AsFd) -> io::Result<ProjectQuotaState> {
    let mut st = FsQuotaStatv {
        version: FS_QSTATV_VERSION1,
        ..FsQuotaStatv::default()
    };
    // SAFETY: `st` is a version-1 fs_quota_statv, which Q_XGETQSTATV fills in.
    unsafe { quotactl_prj(fs, Q_XGETQSTATV, 0, (&raw mut st).cast())? };
    Ok(ProjectQuotaState {
        accounting: st.flags & FS_QUOTA_PDQ_ACCT != 0,
        enforced: st.flags & FS_QUOTA_PDQ_ENFD != 0,
    })
}

/// Limits and usage of one project.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectQuota {
    /// Hard limit on space, bytes (0: none).
    pub space_limit: u64,
    /// Soft limit on space, bytes (0: none).
    pub space_soft_limit: u64,
    /// Hard limit on inodes (0: none).
    pub inode_limit: u64,
    /// Soft limit on inodes (0: none).
    pub inode_soft_limit: u64,
    /// Space used, bytes.
    pub space_used: u64,
    /// Inodes used.
    pub inodes_used: u64,
}

/// `Q_GETQUOTA` of project `id` on the filesystem holding `fs`. A project the filesystem has
/// never seen reads as all zeros.
pub fn get_project_quota(fs: impl AsFd, id: u32) -> io::Result<ProjectQuota> {
    let mut q = libc::dqblk {
        dqb_bhardlimit: 0,
        dqb_bsoftlimit: 0,
        dqb_curspace: 0,
        dqb_ihardlimit: 0,
        dqb_isoftlimit: 0,
        dqb_curinodes: 0,
        dqb_btime: 0,
        dqb_itime: 0,
        dqb_valid: 0,
    };
    // SAFETY: `q` is an if_dqblk (libc's dqblk has its layout), which Q_GETQUOTA fills in.
    match unsafe { quotactl_prj(fs, libc::Q_GETQUOTA as u32, id, (&raw mut q).cast()) } {
        Ok(()) => {}
        // ext4 answers ESRCH for an id it has no record of.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(ProjectQuota::default()),
        Err(e) => return Err(e),
    }
    Ok(ProjectQuota {
        space_limit: q.dqb_bhardlimit.saturating_mul(QIF_DQBLKSIZE),
        space_soft_limit: q.dqb_bsoftlimit.saturating_mul(QIF_DQBLKSIZE),
        inode_limit: q.dqb_ihardlimit,
        inode_soft_limit: q.dqb_isoftlimit,
        space_used: q.dqb_curspace,
        inodes_used: q.dqb_curinodes,
    })
}

/// Bytes of space limit per inode allowed: empty files, short symbolic links and
/// directories stored in their inode use no counted blocks, so without an inode limit an
/// instance could use up the filesystem's inodes within its space limit.
const BYTES_PER_INODE: u64 = 4096;
/// The fewest inodes a limit allows.
const MIN_INODES: u64 = 4096;

/// The inode limit that goes with a space limit of `bytes` (0: none).
pub fn inode_limit_for(bytes: u64) -> u64 {
    if bytes == 0 {
        0
    } else {
        (bytes / BYTES_PER_INODE).max(MIN_INODES)
    }
}

/// `Q_SETQUOTA` of project `id`: a hard space limit of `bytes` rounded up to whole KiB
/// (`None` or 0: no limit) and the inode limit [`inode_limit_for`] that goes with it; no soft
/// limits.
pub fn set_project_space_limit(fs: impl AsFd, id: u32, bytes: Option<u64>) -> io::Result<()> {
    let blocks = bytes.unwrap_or(0).div_ceil(QIF_DQBLKSIZE);
    let mut q = libc::dqblk {
        dqb_bhardlimit: blocks,
        dqb_bsoftlimit: 0,
        dqb_curspace: 0,
        dqb_ihardlimit: inode_limit_for(bytes.unwrap_or(0)),
        dqb_isoftlimit: 0,
        dqb_curinodes: 0,
        dqb_btime: 0,
        dqb_itime: 0,
        dqb_valid: libc::QIF_LIMITS,
    };
    // SAFETY: `q` is an if_dqblk, which Q_SETQUOTA reads.
    unsafe { quotactl_prj(fs, libc::Q_SETQUOTA as u32, id, (&raw mut q).cast()) }
}

/// `struct fsxattr` of `<linux/fs.h>` (28 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// `FS_IOC_FSGETXATTR`: `_IOR('X', 31, struct fsxattr)`.
const FS_IOC_FSGETXATTR: libc::c_ulong = ioc(2, 31);
/// `FS_IOC_FSSETXATTR`: `_IOW('X', 32, struct fsxattr)`.
const FS_IOC_FSSETXATTR: libc::c_ulong = ioc(1, 32);

/// `_IOC(dir, 'X', nr, sizeof(struct fsxattr))` with the generic ioctl encoding (x86_64,
/// aarch64 and most others; not alpha, mips, powerpc or sparc).
const fn ioc(dir: libc::c_ulong, nr: libc::c_ulong) -> libc::c_ulong {
    (dir << 30) | ((std::mem::size_of::<FsXattr>() as libc::c_ulong) << 16) | (0x58 << 8) | nr
}

fn get_fsxattr(file: impl AsFd) -> io::Result<FsXattr> {
    let mut x = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR writes one fsxattr into `x`; the fd is borrowed and open.
    let ret = unsafe { libc::ioctl(file.as_fd().as_raw_fd(), FS_IOC_FSGETXATTR, &raw mut x) };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(x)
    }
}

/// The project id of the open file or directory `file`, and whether new entries inherit it
/// (`FS_XFLAG_PROJINHERIT`).
pub fn project_of(file: impl AsFd) -> io::Result<(u32, bool)> {
    let x = get_fsxattr(file)?;
    Ok((x.projid, x.xflags & FS_XFLAG_PROJINHERIT != 0))
}

/// Gives the open file or directory `file` project id `id` (moving its usage to that
/// project), and sets (`inherit`) or clears the inherit flag: on a directory, whatever is
/// created in it later then gets the same id.
pub fn set_project(file: impl AsFd, id: u32, inherit: bool) -> io::Result<()> {
    let fd = file.as_fd();
    let mut x = get_fsxattr(fd)?;
    x.projid = id;
    if inherit {
        x.xflags |= FS_XFLAG_PROJINHERIT;
    } else {
        x.xflags &= !FS_XFLAG_PROJINHERIT;
    }
    // SAFETY: FS_IOC_FSSETXATTR reads one fsxattr from `x`; the fd is borrowed and open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, &raw const x) };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_and_requests_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<FsQuotaStatv>(), 160);
        assert_eq!(std::mem::size_of::<libc::dqblk>(), 72);
        assert_eq!(FS_IOC_FSGETXATTR, 0x801c_581f);
        assert_eq!(FS_IOC_FSSETXATTR, 0x401c_5820);
        assert_eq!(qcmd(libc::Q_GETQUOTA as u32), 0x8000_0702);
    }

    #[test]
    fn a_space_limit_brings_an_inode_limit() {
        assert_eq!(inode_limit_for(0), 0, "no space limit, no inode limit");
        assert_eq!(inode_limit_for(16 << 20), 4096, "the floor");
        assert_eq!(inode_limit_for(1 << 30), 262_144, "one per 4 KiB");
    }
}
