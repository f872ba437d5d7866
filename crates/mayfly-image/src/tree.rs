//! Walking trees through directory descriptors, measuring them and removing them.
//!
//! Every walk holds a descriptor per directory level and names children relative to it, with
//! `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW` throughout, so neither a symlink in the tree nor a concurrent
//! rename of an ancestor can send a walk somewhere else. The price is one open descriptor per
//! level of depth, which the kernel's path length limit keeps in the low thousands at worst.
//!
//! Removal is the dangerous one: it refuses to enter anything that is a mount point (by
//! `STATX_ATTR_MOUNT_ROOT`, which also catches bind mounts of the same filesystem, or by a
//! different device), because the caller means "this tree", never "whatever is mounted in it".

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Statx, StatxAttributes,
};

use crate::inode::{device, file_type, stat_at};
use crate::{ImageError, TreeStats};

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the directory at a caller-given host path (following it, as the caller named it).
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory at `dest`, where a tree is about to be made: it must be empty.
pub(crate) fn open_empty_root(dest: &Path) -> Result<OwnedFd, ImageError> {
    let root = open_root(dest).map_err(|source| ImageError::Open {
        path: dest.to_owned(),
        source,
    })?;
    let names = list_dir(root.as_fd()).map_err(|source| ImageError::Read {
        path: dest.to_owned(),
        source,
    })?;
    if !names.is_empty() {
        return Err(ImageError::NotEmpty {
            path: dest.to_owned(),
        });
    }
    Ok(root)
}

/// Opens the subdirectory `name` of `dir`, refusing a symlink.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(dir, name, DIR_FLAGS, Mode::empty())?)
}

/// Opens the directory at the relative path `rel` below `root`, failing (`ELOOP`, `EXDEV`) rather
/// than resolving any symlink or leaving `root`'s mount.
pub(crate) fn open_dir_beneath(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
    Ok(rfs::openat2(
        root,
        rel,
        DIR_FLAGS,
        Mode::empty(),
        ResolveFlags::BENEATH
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::NO_XDEV,
    )?)
}

/// The names in a directory, without `.` and `..`, sorted byte-wise so every walk is
/// deterministic.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// `base` with the directory entry `name` appended, for error messages.
pub(crate) fn child_path(base: &Path, name: &CStr) -> PathBuf {
    base.join(OsStr::from_bytes(name.to_bytes()))
}

/// The entries of `dir` (at `path`), sorted by name, each with its path and its `statx` (no
/// link following), taken one at a time; a failure names the directory or the entry.
pub(crate) fn entries<'a>(
    dir: BorrowedFd<'a>,
    path: &'a Path,
) -> Result<
    impl Iterator<Item = Result<(CString, PathBuf, rustix::fs::Statx), ImageError>> + 'a,
    ImageError,
> {
    let names = list_dir(dir).map_err(|source| ImageError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(names.into_iter().map(move |name| {
        let child = child_path(path, &name);
        match stat_at(dir, &name) {
            Ok(st) => Ok((name, child, st)),
            Err(source) => Err(ImageError::Stat {
                path: child,
                source,
            }),
        }
    }))
}

/// Total entries and regular-file bytes under `root` (the root itself not counted; every path
/// counts as an entry but a hard-linked file's bytes count once), no link following.
pub fn tree_stats(root: &Path) -> Result<TreeStats, ImageError> {
    let fd = open_root(root).map_err(|source| ImageError::Open {
        path: root.to_owned(),
        source,
    })?;
    let mut stats = TreeStats::default();
    let mut seen = HashSet::new();
    stats_below(fd.as_fd(), root, &mut stats, &mut seen)?;
    Ok(stats)
}

fn stats_below(
    dir: BorrowedFd<'_>,
    path: &Path,
    stats: &mut TreeStats,
    seen: &mut HashSet<((u32, u32), u64)>,
) -> Result<(), ImageError> {
    for entry in entries(dir, path)? {
        let (name, child, st) = entry?;
        stats.entries += 1;
        match file_type(&st) {
            FileType::Directory => {
                let sub = open_dir_at(dir, &name).map_err(|source| ImageError::Open {
                    path: child.clone(),
                    source,
                })?;
                stats_below(sub.as_fd(), &child, stats, seen)?;
            }
            FileType::RegularFile if st.stx_nlink < 2 || seen.insert((device(&st), st.stx_ino)) => {
                stats.bytes += st.stx_size;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Below this depth, [`tree_usage`] does not descend.
const USAGE_MAX_DEPTH: usize = 1024;

/// The bytes of the blocks used by the tree at `root` (the root included), each inode counted
/// once, without following symlinks nor leaving `root`'s filesystem, counting at most
/// `max_entries` entries. Best effort, for a tree that may change meanwhile: what cannot be
/// read (or was swapped for something else) is skipped.
pub fn tree_usage(root: &Path, max_entries: u64) -> u64 {
    let Ok(fd) = open_root(root) else {
        return 0;
    };
    let Ok(st) = crate::inode::stat_fd(fd.as_fd()) else {
        return 0;
    };
    let mut walk = Usage {
        dev: device(&st),
        seen: HashSet::new(),
        left: max_entries,
        bytes: st.stx_blocks.saturating_mul(512),
    };
    walk.below(fd.as_fd(), 0);
    walk.bytes
}

struct Usage {
    dev: (u32, u32),
    seen: HashSet<u64>,
    left: u64,
    bytes: u64,
}

impl Usage {
    fn below(&mut self, dir: BorrowedFd<'_>, depth: usize) {
        let Ok(names) = list_dir(dir) else { return };
        for name in names {
            if self.left == 0 {
                return;
            }
            self.left -= 1;
            let Ok(st) = stat_at(dir, &name) else {
                continue;
            };
            if device(&st) != self.dev || !self.seen.insert(st.stx_ino) {
                continue;
            }
            self.bytes = self.bytes.saturating_add(st.stx_blocks.saturating_mul(512));
            if file_type(&st) == FileType::Directory && depth < USAGE_MAX_DEPTH {
                // Opened without following a link; a directory swapped meanwhile for one fails
                // here, and one swapped for another directory is checked by its inode.
                let Ok(sub) = open_dir_at(dir, &name) else {
                    continue;
                };
                match crate::inode::stat_fd(sub.as_fd()) {
                    Ok(now) if device(&now) == self.dev && now.stx_ino == st.stx_ino => {
                        self.below(sub.as_fd(), depth + 1);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Removes the tree at `root` depth-first without following symlinks. Succeeds if `root` does not
/// exist. Refuses with [`ImageError::MountPoint`] if `root` or anything below it is a mount point,
/// leaving everything below that mount point alone; a symlink at `root` is removed, not followed.
pub fn remove_tree(root: &Path) -> Result<(), ImageError> {
    let remove_err = |source| ImageError::Remove {
        path: root.to_owned(),
        source,
    };
    let Some(name) = root.file_name() else {
        return Err(remove_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path has no final component",
        )));
    };
    let name = CString::new(name.as_bytes()).map_err(|e| remove_err(e.into()))?;
    let parent = match root.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_fd = match open_root(parent) {
        Ok(fd) => fd,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ImageError::Open {
                path: parent.to_owned(),
                source,
            });
        }
    };
    let st = match stat_at(parent_fd.as_fd(), &name) {
        Ok(st) => st,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ImageError::Stat {
                path: root.to_owned(),
                source,
            });
        }
    };
    if is_mount_root(&st) {
        return Err(ImageError::MountPoint {
            path: root.to_owned(),
        });
    }
    if file_type(&st) == FileType::Directory {
        let fd = open_dir_at(parent_fd.as_fd(), &name).map_err(|source| ImageError::Open {
            path: root.to_owned(),
            source,
        })?;
        remove_below(fd.as_fd(), device(&st), root)?;
        unlink(parent_fd.as_fd(), &name, AtFlags::REMOVEDIR, root)
    } else {
        unlink(parent_fd.as_fd(), &name, AtFlags::empty(), root)
    }
}

/// Removes everything below the open directory `dir` (on device `dev`), refusing mount points
/// like [`remove_tree`]; `path` names `dir` in errors.
pub(crate) fn remove_below(
    dir: BorrowedFd<'_>,
    dev: (u32, u32),
    path: &Path,
) -> Result<(), ImageError> {
    let names = list_dir(dir).map_err(|source| ImageError::Read {
        path: path.to_owned(),
        source,
    })?;
    for name in names {
        let child = child_path(path, &name);
        let st = match stat_at(dir, &name) {
            Ok(st) => st,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ImageError::Stat {
                    path: child,
                    source,
                });
            }
        };
        if is_mount_root(&st) || device(&st) != dev {
            return Err(ImageError::MountPoint { path: child });
        }
        if file_type(&st) == FileType::Directory {
            let sub = open_dir_at(dir, &name).map_err(|source| ImageError::Open {
                path: child.clone(),
                source,
            })?;
            remove_below(sub.as_fd(), dev, &child)?;
            unlink(dir, &name, AtFlags::REMOVEDIR, &child)?;
        } else {
            unlink(dir, &name, AtFlags::empty(), &child)?;
        }
    }
    Ok(())
}

fn unlink(dir: BorrowedFd<'_>, name: &CStr, flags: AtFlags, path: &Path) -> Result<(), ImageError> {
    match rfs::unlinkat(dir, name, flags) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(err) => Err(ImageError::Remove {
            path: path.to_owned(),
            source: err.into(),
        }),
    }
}

fn is_mount_root(st: &Statx) -> bool {
    st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::fixtures::{Kind, SAMPLE, Tmpfs, materialize};

    #[test]
    fn stats_count_paths_and_hard_linked_bytes_once() {
        let tmp = tempfile::tempdir().unwrap();
        materialize(tmp.path(), SAMPLE);
        let bytes: usize = SAMPLE
            .iter()
            .map(|s| {
                if let Kind::File(c) = s.kind {
                    c.len()
                } else {
                    0
                }
            })
            .sum();
        assert_eq!(
            tree_stats(tmp.path()).unwrap(),
            TreeStats {
                entries: SAMPLE.len() as u64 - 1,
                bytes: bytes as u64,
            }
        );
    }

    #[test]
    fn removes_deep_trees_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "keep").unwrap();
        let root = tmp.path().join("root");
        let mut dir = root.clone();
        for _ in 0..300 {
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("file"), "x").unwrap();
            std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
            dir.push("d");
        }
        // Read-only directories do not stop root.
        fs::set_permissions(
            root.join("d"),
            std::os::unix::fs::PermissionsExt::from_mode(0o555),
        )
        .unwrap();
        remove_tree(&root).unwrap();
        assert!(fs::symlink_metadata(&root).is_err());
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep");

        remove_tree(&root).unwrap();

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep");
    }

    #[test]
    fn refuses_to_remove_across_mount_points() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("a/mnt")).unwrap();
        fs::write(root.join("a/z"), "").unwrap();
        let mount = Tmpfs::mount(&root.join("a/mnt"), c"mode=0755");
        fs::write(root.join("a/mnt/precious"), "data").unwrap();

        let err = remove_tree(&root).unwrap_err();
        assert!(
            matches!(&err, ImageError::MountPoint { path } if *path == root.join("a/mnt")),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to remove `{}`: it is a mount point",
                root.join("a/mnt").display()
            )
        );
        assert_eq!(fs::read(root.join("a/mnt/precious")).unwrap(), b"data");

        let err = remove_tree(&root.join("a/mnt")).unwrap_err();
        assert!(matches!(err, ImageError::MountPoint { .. }), "{err:?}");
        assert_eq!(fs::read(root.join("a/mnt/precious")).unwrap(), b"data");

        drop(mount);
        remove_tree(&root).unwrap();
        assert!(fs::symlink_metadata(&root).is_err());
    }
}
