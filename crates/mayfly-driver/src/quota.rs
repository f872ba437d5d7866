//! Disk limits on writable layers: project quotas on the state filesystem.
//!
//! Each instance directory `<state>/instances/<id>/` that gets a disk limit also gets a
//! project id of its own with the inherit flag (`FS_XFLAG_PROJINHERIT`): everything made under
//! it later (writable layers, overlayfs' work directory, logs, the files mayfly writes for the
//! instance) counts against that project, and the limit is the project's hard space limit.
//! The id lives on the directory itself (read back from it; no catalogue column): it is chosen
//! from [`PROJECT_IDS`] among ids with no usage and no limit. When a directory gets its id,
//! what it holds already is stamped too, by a bounded walk that never follows symbolic links
//! (directories and regular files only: symbolic links, device nodes such as overlayfs
//! whiteouts, fifos and sockets cannot be opened for the ioctl and keep their few bytes in the
//! default project).
//!
//! Works on ext4 with the `project` and `quota` features mounted with `prjquota`, and on xfs
//! mounted with `prjquota`/`pquota`; [`DiskQuotas::probe`] says why not elsewhere. A file cannot
//! be renamed or hard-linked into a directory of another project (EXDEV): whatever mayfly
//! writes for an instance is made inside the instance directory.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::{DriverError, files};

/// Project ids mayfly hands out (high, to stay clear of ids an administrator assigns by hand
/// in `/etc/projid`).
pub const PROJECT_IDS: std::ops::Range<u32> = 0x7000_0000..0x7fff_0000;

/// At most this many entries are stamped when an existing directory gets its project.
pub const STAMP_MAX_ENTRIES: u64 = 2_000_000;
/// Directories deeper than this are refused while stamping.
pub const STAMP_MAX_DEPTH: usize = 200;

/// Project quotas of the filesystem holding the state directory.
#[derive(Debug)]
pub struct DiskQuotas {
    /// Why limits cannot be enforced (`None`: they can).
    unsupported: Option<String>,
    /// The device of the state filesystem (instance directories must be on it).
    dev: u64,
    /// Serialises choosing and claiming project ids.
    assign: Mutex<()>,
}

fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The kernel option `fstype` needs for project quotas when the running kernel's build
/// configuration (`/boot/config-RELEASE` or `/proc/config.gz`) shows it off; `None` when it is
/// on or the configuration cannot be read.
fn kernel_lacks_quota(fstype: &str) -> Option<&'static str> {
    let option = match fstype {
        "ext4" => "CONFIG_QFMT_V2",
        "xfs" => "CONFIG_XFS_QUOTA",
        _ => return None,
    };
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let config = std::fs::read_to_string(format!("/boot/config-{release}"))
        .ok()
        .or_else(|| {
            use std::io::Read;
            let file = std::fs::File::open("/proc/config.gz").ok()?;
            let mut text = String::new();
            // A kernel configuration is a few hundred KiB; read at most 16 MiB.
            flate2::read::GzDecoder::new(file)
                .take(16 << 20)
                .read_to_string(&mut text)
                .ok()?;
            Some(text)
        })?;
    let off = format!("# {option} is not set");
    config.lines().any(|l| l == off).then_some(option)
}

/// The filesystem type and source of the mount holding `path`, from `/proc/self/mountinfo`.
fn mount_of(path: &Path) -> Option<(String, String)> {
    let path = std::fs::canonicalize(path).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String, String)> = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let point = point.replace("\\040", " ");
        let mut r = right.split(' ');
        let (Some(fstype), Some(source)) = (r.next(), r.next()) else {
            continue;
        };
        // The last mount of the longest matching point is the visible one.
        if path.starts_with(&point) && best.as_ref().is_none_or(|b| point.len() >= b.0) {
            best = Some((point.len(), fstype.to_owned(), source.to_owned()));
        }
    }
    best.map(|(_, t, s)| (t, s))
}

impl DiskQuotas {
    /// Probes the filesystem holding `state_dir` once.
    pub fn probe(state_dir: &Path) -> Self {
        let dev = std::fs::metadata(state_dir).map_or(0, |m| {
            use std::os::unix::fs::MetadataExt;
            m.dev()
        });
        DiskQuotas {
            unsupported: Self::why_not(state_dir).err(),
            dev,
            assign: Mutex::new(()),
        }
    }

    fn why_not(state_dir: &Path) -> Result<(), String> {
        let dir = open_dir(state_dir).map_err(|e| {
            format!(
                "cannot open the state directory {}: {e}",
                state_dir.display()
            )
        })?;
        let (fstype, source) = mount_of(state_dir).unwrap_or_else(|| ("?".into(), "DEV".into()));
        let shown = state_dir.display();
        let state = mayfly_sys::quota::project_quota_state(&dir);
        if state.as_ref().is_ok_and(|s| s.accounting && s.enforced) {
            return Ok(());
        }
        let detail = match &state {
            Ok(s) if s.accounting => " (usage is counted but limits are not enforced)",
            _ => "",
        };
        if let Some(option) = kernel_lacks_quota(&fstype) {
            return Err(format!(
                "the state directory {shown} is on {fstype}, but this kernel was built without {option}, so it has no project quotas there: boot a kernel with {option}=y, or use a filesystem whose quotas it supports"
            ));
        }
        if let Err(e) = &state
            && e.raw_os_error() == Some(libc::ENOSYS)
            && matches!(fstype.as_str(), "ext4" | "xfs")
        {
            return Err(format!(
                "the state directory {shown} is on {fstype}, but this kernel has no quota calls for it (quotactl_fd: {e}): mayfly needs Linux 5.14 or later built with quota support for {fstype}"
            ));
        }
        Err(match fstype.as_str() {
            "ext4" => format!(
                "the state directory {shown} is on ext4 mounted without project quotas{detail}: run `tune2fs -O project,quota {source}` on the unmounted filesystem and mount it with `prjquota`, or put the state directory on xfs mounted with `prjquota`"
            ),
            "xfs" => format!(
                "the state directory {shown} is on xfs mounted without project quotas{detail}: mount it with `prjquota` (xfs turns quotas on only at mount time, not on remount), or put the state directory on ext4 with the `project` and `quota` features mounted with `prjquota`"
            ),
            other => format!(
                "the state directory {shown} is on {other}, where mayfly has no disk limits (they are project quotas): put the state directory on ext4 with the `project` and `quota` features (`mkfs.ext4 -O project,quota`, or `tune2fs -O project,quota` unmounted) mounted with `prjquota`, or on xfs mounted with `prjquota`"
            ),
        })
    }

    /// Why disk limits cannot be enforced here (`None`: they can).
    pub fn unsupported(&self) -> Option<&str> {
        self.unsupported.as_deref()
    }

    fn refuse(&self) -> Result<(), DriverError> {
        match &self.unsupported {
            None => Ok(()),
            Some(why) => Err(DriverError::Failed(crate::protocol::Failure::other(
                why.clone(),
            ))),
        }
    }

    /// The project id mayfly gave `dir` (one of [`PROJECT_IDS`], inherited), if any.
    fn project_of(dir: &OwnedFd) -> std::io::Result<Option<u32>> {
        let (id, inherit) = mayfly_sys::quota::project_of(dir)?;
        Ok((inherit && PROJECT_IDS.contains(&id)).then_some(id))
    }

    /// An id of [`PROJECT_IDS`] with no usage and no limit on the filesystem of `fs`.
    fn unused_id(fs: &OwnedFd) -> std::io::Result<u32> {
        for _ in 0..64 {
            let mut rnd = [0u8; 4];
            rustix::rand::getrandom(&mut rnd, rustix::rand::GetRandomFlags::empty())?;
            let span = PROJECT_IDS.end - PROJECT_IDS.start;
            let id = PROJECT_IDS.start + u32::from_le_bytes(rnd) % span;
            match mayfly_sys::quota::get_project_quota(fs, id) {
                Ok(q) if q == Default::default() => return Ok(id),
                Ok(_) => {}
                // A filesystem that keeps no quota records at all has no usage to collide
                // with (only seen when stamping without limits, as the tests do); xfs has no
                // record of an id nothing ever used (ENOENT), others may say ESRCH.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOSYS | libc::ENOENT | libc::ESRCH)
                    ) =>
                {
                    return Ok(id);
                }
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(
            "found no unused project id in 64 tries",
        ))
    }

    /// Sets (`Some`) or lifts (`None`) the disk limit of `instance_dir`, giving it a project
    /// first if it has none.
    pub fn set(&self, instance_dir: &Path, bytes: Option<u64>) -> Result<(), DriverError> {
        if bytes.is_some() {
            self.refuse()?;
        }
        let dir = match open_dir(instance_dir) {
            Ok(d) => d,
            // Nothing to lift on a directory that is gone.
            Err(e) if bytes.is_none() && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(e) => return Err(files("open", instance_dir)(e)),
        };
        let project = match Self::project_of(&dir) {
            Ok(p) => p,
            Err(_) if bytes.is_none() => None,
            Err(e) => return Err(files("read the project id of", instance_dir)(e)),
        };
        let Some(bytes) = bytes else {
            if let Some(id) = project {
                mayfly_sys::quota::set_project_space_limit(&dir, id, None)
                    .map_err(files("lift the disk limit of", instance_dir))?;
            }
            return Ok(());
        };
        let dev = rustix::fs::fstat(&dir)
            .map_err(|e| files("stat", instance_dir)(e.into()))?
            .st_dev;
        if dev != self.dev {
            return Err(files("limit the disk use of", instance_dir)(
                std::io::Error::other(
                    "it is not on the state directory's filesystem, where quotas were probed",
                ),
            ));
        }
        let id = match project {
            Some(id) => id,
            None => self.assign_project(instance_dir, STAMP_MAX_ENTRIES)?,
        };
        mayfly_sys::quota::set_project_space_limit(&dir, id, Some(bytes))
            .map_err(files("set the disk limit of", instance_dir))
    }

    /// The project of `instance_dir`: read back from it, or, when it has none of
    /// [`PROJECT_IDS`], an unused one given to it with the inherit flag and to what it holds
    /// (at most `max_entries` entries; directories and regular files, never through a
    /// symbolic link or into another filesystem). Works without quotas being on (the ids are
    /// then only labels).
    pub fn assign_project(
        &self,
        instance_dir: &Path,
        max_entries: u64,
    ) -> Result<u32, DriverError> {
        let dir = open_dir(instance_dir).map_err(files("open", instance_dir))?;
        let _claim = self.assign.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) =
            Self::project_of(&dir).map_err(files("read the project id of", instance_dir))?
        {
            return Ok(id);
        }
        let dev = rustix::fs::fstat(&dir)
            .map_err(|e| files("stat", instance_dir)(e.into()))?
            .st_dev;
        let id = Self::unused_id(&dir).map_err(files("choose a project for", instance_dir))?;
        mayfly_sys::quota::set_project(&dir, id, true)
            .map_err(files("set the project of", instance_dir))?;
        let mut budget = max_entries;
        if let Err(e) = stamp(&dir, id, dev, 0, &mut budget, max_entries) {
            // Not read back as assigned: a later call chooses again and stamps everything.
            let _ = mayfly_sys::quota::set_project(&dir, 0, false);
            return Err(files("set the project of the files under", instance_dir)(e));
        }
        Ok(id)
    }

    /// Bytes used under `instance_dir` when it has a disk limit.
    pub fn usage(&self, instance_dir: &Path) -> Result<Option<u64>, DriverError> {
        if self.unsupported.is_some() {
            return Ok(None);
        }
        let dir = match open_dir(instance_dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(files("open", instance_dir)(e)),
        };
        let Some(id) =
            Self::project_of(&dir).map_err(files("read the project id of", instance_dir))?
        else {
            return Ok(None);
        };
        let q = match mayfly_sys::quota::get_project_quota(&dir, id) {
            Ok(q) => q,
            // No record yet (xfs, before the first limit): nothing counted, no limit.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
                return Ok(None);
            }
            Err(e) => return Err(files("read the disk use of", instance_dir)(e)),
        };
        Ok((q.space_limit > 0).then_some(q.space_used))
    }

    /// The project id of `instance_dir` (for tests and diagnostics).
    pub fn project_id(instance_dir: &Path) -> std::io::Result<Option<u32>> {
        Self::project_of(&open_dir(instance_dir)?)
    }
}

/// Gives every directory and regular file under `dir` (on device `dev`) project `id`,
/// without following symbolic links or crossing mounts; `budget` bounds the entries visited.
fn stamp(
    dir: &OwnedFd,
    id: u32,
    dev: u64,
    depth: usize,
    budget: &mut u64,
    max: u64,
) -> std::io::Result<()> {
    if depth >= STAMP_MAX_DEPTH {
        return Err(std::io::Error::other(format!(
            "directories nested deeper than {STAMP_MAX_DEPTH}"
        )));
    }
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        *budget = budget.checked_sub(1).ok_or_else(|| {
            std::io::Error::other(format!(
                "more than {max} entries (remove some, or set no disk limit)"
            ))
        })?;
        names.push((name.to_owned(), entry.file_type()));
    }
    for (name, mut kind) in names {
        if kind == FileType::Unknown {
            match rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => kind = FileType::from_raw_mode(st.st_mode),
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if !matches!(kind, FileType::Directory | FileType::RegularFile) {
            continue;
        }
        // A path-only descriptor first: the entry may have been swapped for a device node
        // meanwhile (an instance without a user namespace can make them), and opening that
        // for real would be the host's root opening the device.
        let path_fd = match rustix::fs::openat(
            dir,
            name.as_c_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Gone meanwhile.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&path_fd)?;
        let is_dir = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => true,
            FileType::RegularFile => false,
            // Replaced by a symbolic link or something else.
            _ => continue,
        };
        if st.st_dev != dev {
            continue;
        }
        // The same inode, opened for the ioctl through the descriptor (no name to swap).
        let flags = if is_dir {
            OFlags::DIRECTORY
        } else {
            OFlags::NONBLOCK
        };
        let fd = rustix::fs::open(
            format!("/proc/self/fd/{}", path_fd.as_raw_fd()),
            flags | OFlags::RDONLY | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        mayfly_sys::quota::set_project(fd.as_fd(), id, is_dir)?;
        if is_dir {
            stamp(&fd, id, dev, depth + 1, budget, max)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filesystem_without_project_quotas_is_refused_with_what_to_do() {
        // /proc never has quotas; the message names its type and both ways out.
        let q = DiskQuotas::probe(Path::new("/proc"));
        let why = q.unsupported().expect("no quotas on proc");
        assert!(why.contains("is on proc"), "{why}");
        assert!(why.contains("prjquota") && why.contains("xfs"), "{why}");
        let err = q.set(Path::new("/proc"), Some(1 << 30)).unwrap_err();
        assert!(crate::error_chain(&err).contains("is on proc"), "{err}");
        // Lifting where there is nothing is no error.
        q.set(Path::new("/nonexistent-mayfly"), None).unwrap();
        assert_eq!(q.usage(Path::new("/proc")).unwrap(), None);
    }
}
