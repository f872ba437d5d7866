//! Removing what a tree must not keep (package caches, package lists, build logs) while keeping
//! the directories programs expect to find.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType};

use crate::ImageError;
use crate::inode::{file_type, stat_at};
use crate::tree::{entries, open_dir_at, open_dir_beneath, open_root};

/// Removes from the tree `root` every non-directory below each of `emptied` (relative
/// directory paths; their directories, at any depth, stay) and each of `removed` (relative
/// paths of files); returns how many entries went. A path that is missing, or that reaches
/// through a symlink, is left alone: nothing outside `root`, nor anything a symlink points at,
/// is touched. Nothing is followed and no mount is crossed.
pub fn prune_tree(root: &Path, emptied: &[&str], removed: &[&str]) -> Result<u64, ImageError> {
    let fd = open_root(root).map_err(|source| ImageError::Open {
        path: root.to_owned(),
        source,
    })?;
    let mut count = 0;
    for rel in emptied {
        let rel = rel.trim_matches('/');
        let Some(dir) = open_beneath(fd.as_fd(), rel.as_bytes(), root)? else {
            continue;
        };
        count += empty_dir(dir.as_fd(), &root.join(rel))?;
    }
    for rel in removed {
        let rel = rel.trim_matches('/');
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", rel),
        };
        let Some(dir) = open_beneath(fd.as_fd(), parent.as_bytes(), root)? else {
            continue;
        };
        let Ok(name) = CString::new(name) else {
            continue;
        };
        let path = root.join(rel);
        match stat_at(dir.as_fd(), &name) {
            Ok(st) if file_type(&st) != FileType::Directory => {
                unlink(dir.as_fd(), &name, &path)?;
                count += 1;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(ImageError::Stat { path, source }),
        }
    }
    Ok(count)
}

/// The directory `rel` below `root`, `None` if it is missing or reached through a symlink.
fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &[u8],
    root_path: &Path,
) -> Result<Option<rustix::fd::OwnedFd>, ImageError> {
    use rustix::io::Errno;
    match open_dir_beneath(root, rel) {
        Ok(fd) => Ok(Some(fd)),
        Err(e)
            if [Errno::NOENT, Errno::LOOP, Errno::NOTDIR, Errno::XDEV]
                .iter()
                .any(|x| e.raw_os_error() == Some(x.raw_os_error())) =>
        {
            Ok(None)
        }
        Err(source) => Err(ImageError::Open {
            path: root_path.join(String::from_utf8_lossy(rel).as_ref()),
            source,
        }),
    }
}

fn empty_dir(dir: BorrowedFd<'_>, path: &Path) -> Result<u64, ImageError> {
    let mut count = 0;
    for entry in entries(dir, path)? {
        let (name, child, st) = entry?;
        if file_type(&st) == FileType::Directory {
            if crate::inode::device(&st) != crate::inode::device(&stat_dir(dir, path)?) {
                continue;
            }
            let sub = open_dir_at(dir, &name).map_err(|source| ImageError::Open {
                path: child.clone(),
                source,
            })?;
            count += empty_dir(sub.as_fd(), &child)?;
        } else {
            unlink(dir, &name, &child)?;
            count += 1;
        }
    }
    Ok(count)
}

fn stat_dir(dir: BorrowedFd<'_>, path: &Path) -> Result<rfs::Statx, ImageError> {
    crate::inode::stat_fd(dir).map_err(|source| ImageError::Stat {
        path: path.to_owned(),
        source,
    })
}

fn unlink(dir: BorrowedFd<'_>, name: &std::ffi::CStr, path: &Path) -> Result<(), ImageError> {
    rfs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| ImageError::Remove {
        path: path.to_owned(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn contents_go_directories_stay_and_symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(outside.join("d")).unwrap();
        fs::write(outside.join("d/keep"), "k").unwrap();
        fs::write(outside.join("f"), "k").unwrap();
        fs::create_dir_all(root.join("var/lib/apt/lists/partial")).unwrap();
        fs::create_dir_all(root.join("var/log/apt")).unwrap();
        fs::write(root.join("var/lib/apt/lists/deb_InRelease"), "x").unwrap();
        fs::write(root.join("var/lib/apt/lists/partial/half"), "x").unwrap();
        fs::write(root.join("var/lib/apt/lists/lock"), "").unwrap();
        fs::write(root.join("var/log/dpkg.log"), "x").unwrap();
        fs::write(root.join("var/log/keep.log"), "x").unwrap();
        std::os::unix::fs::symlink(outside.join("d"), root.join("var/log/apt/link")).unwrap();
        // Reached through a symlink: left alone.
        fs::create_dir_all(root.join("var/cache")).unwrap();
        std::os::unix::fs::symlink(outside.join("d"), root.join("var/cache/apt")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc")).unwrap();

        let n = prune_tree(
            &root,
            &[
                "var/lib/apt/lists",
                "var/log/apt",
                "var/cache/apt",
                "missing",
            ],
            &[
                "var/log/dpkg.log",
                "etc/f",
                "var/log/none",
                "var/lib/apt/lists",
            ],
        )
        .unwrap();
        assert_eq!(n, 5);
        assert!(root.join("var/lib/apt/lists/partial").is_dir());
        assert_eq!(
            fs::read_dir(root.join("var/lib/apt/lists/partial"))
                .unwrap()
                .count(),
            0
        );
        let lists: Vec<_> = fs::read_dir(root.join("var/lib/apt/lists"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(lists, vec!["partial"]);
        assert!(!root.join("var/log/dpkg.log").exists());
        assert!(root.join("var/log/keep.log").exists());
        assert!(root.join("var/log/apt").is_dir());
        assert!(fs::symlink_metadata(root.join("var/log/apt/link")).is_err());
        assert!(outside.join("d/keep").exists(), "a symlink's target stays");
        assert!(outside.join("f").exists());
        assert!(fs::symlink_metadata(root.join("var/cache/apt")).is_ok());
    }
}
