//! Rewriting a tree in place: moving owners between user-namespace id ranges, and turning a
//! copy of an overlay upper directory into a layer.
//!
//! A writable layer's files are owned by host ids of the instance's range (base + n). A clone
//! gets another range, so its copy is shifted; a published layer goes back to the canonical
//! 0-based ids that template layers have (instances see them through idmapped mounts).
//!
//! `chown` clears setuid/setgid and drops file capabilities, so each entry's mode is set again
//! after its owner, and its `security.capability` is written back — with the namespaced root
//! id of a version-3 capability moved along with the owners. Times are untouched (neither
//! `chown`, `chmod` nor xattr changes move an mtime).
//!
//! Overlay whiteouts (character devices 0:0) are created by overlayfs with the mounter's
//! credentials (host root), outside any instance range: a shift leaves them alone, and a layer
//! gets them in canonical form (root-owned, mode 0, times 0) so that equal trees digest equally.

use std::collections::HashSet;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::process::{Gid, Uid};

use crate::ImageError;
use crate::inode::{PERMISSION_BITS, file_type, is_whiteout, stat_fd};
use crate::opaque::{OpaqueReport, drop_needless_opaque};
use crate::tree::{entries, open_dir_at, open_root};
use crate::xattr::{self, Node, XattrPolicy};

/// A range of ids: `start .. start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id.
    pub start: u32,
    /// Number of ids.
    pub count: u32,
}

impl IdRange {
    fn map_into(self, id: u32, to: u32) -> Option<u32> {
        (id >= self.start && id - self.start < self.count).then(|| to + (id - self.start))
    }
}

/// What to do with each entry.
#[derive(Debug, Clone, Copy)]
enum Rewrite {
    /// Move owners in `from` to start at `to`; leave others.
    Shift { from: IdRange, to: u32 },
    /// Make a layer: owners in `from` (if any) back to 0-based, canonical whiteouts, overlay
    /// bookkeeping xattrs dropped.
    Layer { from: Option<IdRange> },
}

const CAPABILITY: &[u8] = b"security.capability";
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;

/// Moves the owners of every entry of `root` (root included) that lie in `from` to the range
/// starting at `to`; owners outside `from` are left alone.
pub fn shift_owners(root: &Path, from: IdRange, to: u32) -> Result<(), ImageError> {
    rewrite_tree(root, Rewrite::Shift { from, to })
}

/// Turns `root`, a copy of an overlay upper directory whose owners lie in `instance_ids` (when
/// the instance had a user namespace), into a layer tree to be stacked on `lowers` (lowest
/// first: the layers it was made on): owners back to 0-based ids, whiteouts canonical, every
/// `trusted.overlay.*` xattr dropped but `opaque`, and that one kept only where it replaces a
/// directory of `lowers` ([`crate::drop_needless_opaque`]). Fails if an entry other than a
/// whiteout is owned outside the range (it cannot be translated).
pub fn upper_to_layer(
    root: &Path,
    instance_ids: Option<IdRange>,
    lowers: &[PathBuf],
) -> Result<OpaqueReport, ImageError> {
    rewrite_tree(root, Rewrite::Layer { from: instance_ids })?;
    drop_needless_opaque(root, lowers)
}

fn rewrite_tree(root: &Path, how: Rewrite) -> Result<(), ImageError> {
    let dir = open_root(root).map_err(|source| ImageError::Open {
        path: root.to_owned(),
        source,
    })?;
    let st = stat_fd(dir.as_fd()).map_err(|source| ImageError::Stat {
        path: root.to_owned(),
        source,
    })?;
    rewrite_entry(Entry::Dir(dir.as_fd()), &st, how, root)?;
    rewrite_dir(dir.as_fd(), how, root, &mut HashSet::new())
}

/// `seen` holds the inodes with several names already rewritten: a hard-linked file must be
/// rewritten once (a second shift would move it twice, or find it outside the range).
fn rewrite_dir(
    dir: BorrowedFd<'_>,
    how: Rewrite,
    path: &Path,
    seen: &mut HashSet<(u32, u32, u64)>,
) -> Result<(), ImageError> {
    for entry in entries(dir, path)? {
        let (name, child, st) = entry?;
        if file_type(&st) == FileType::Directory {
            let sub: OwnedFd = open_dir_at(dir, &name).map_err(|source| ImageError::Open {
                path: child.clone(),
                source,
            })?;
            rewrite_entry(Entry::Dir(sub.as_fd()), &st, how, &child)?;
            rewrite_dir(sub.as_fd(), how, &child, seen)?;
        } else {
            if st.stx_nlink > 1 && !seen.insert((st.stx_dev_major, st.stx_dev_minor, st.stx_ino)) {
                continue;
            }
            rewrite_entry(Entry::At(dir, &name), &st, how, &child)?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Entry<'a> {
    Dir(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a CStr),
}

impl Entry<'_> {
    fn node(&self) -> Node<'_> {
        match *self {
            Entry::Dir(fd) => Node::Fd(fd),
            Entry::At(dir, name) => Node::At(dir, name),
        }
    }
}

fn rewrite_entry(
    entry: Entry<'_>,
    st: &rfs::Statx,
    how: Rewrite,
    path: &Path,
) -> Result<(), ImageError> {
    let kind = file_type(st);
    let mode = u32::from(st.stx_mode) & PERMISSION_BITS;
    let (uid, gid, new_mode, canonical_whiteout) = match how {
        Rewrite::Shift { from, to } => (
            from.map_into(st.stx_uid, to).unwrap_or(st.stx_uid),
            from.map_into(st.stx_gid, to).unwrap_or(st.stx_gid),
            mode,
            false,
        ),
        Rewrite::Layer { from } => {
            if is_whiteout(st) {
                (0, 0, 0, true)
            } else {
                let back = |id: u32| match from {
                    Some(range) => range.map_into(id, 0).ok_or_else(|| ImageError::SetOwner {
                        path: path.to_owned(),
                        source: io::Error::other(format!(
                            "owner {id} is outside the instance's id range {}..{}",
                            range.start,
                            u64::from(range.start) + u64::from(range.count)
                        )),
                    }),
                    None => Ok(id),
                };
                (back(st.stx_uid)?, back(st.stx_gid)?, mode, false)
            }
        }
    };
    let node = entry.node();
    let caps = if kind == FileType::RegularFile {
        xattr::read(node, XattrPolicy::All)
            .map_err(|source| ImageError::ReadXattrs {
                path: path.to_owned(),
                source,
            })?
            .into_iter()
            .find(|(n, _)| n == CAPABILITY)
            .map(|(_, v)| v)
    } else {
        None
    };
    if (uid, gid) != (st.stx_uid, st.stx_gid) {
        let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let r = match entry {
            Entry::Dir(fd) => rfs::fchown(fd, owner.0, owner.1),
            Entry::At(dir, name) => {
                rfs::chownat(dir, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
            }
        };
        r.map_err(|e| ImageError::SetOwner {
            path: path.to_owned(),
            source: e.into(),
        })?;
    }
    // chown cleared setuid/setgid on non-directories; whiteouts become mode 0.
    if kind != FileType::Symlink && (new_mode != mode || (uid, gid) != (st.stx_uid, st.stx_gid)) {
        set_mode(entry, kind, new_mode, path)?;
    }
    if let Some(value) = caps {
        let value = match how {
            Rewrite::Shift { from, to } => {
                shift_cap_rootid(&value, |id| from.map_into(id, to).unwrap_or(id))
            }
            Rewrite::Layer { from: Some(range) } => {
                shift_cap_rootid(&value, |id| range.map_into(id, 0).unwrap_or(id))
            }
            Rewrite::Layer { from: None } => value,
        };
        xattr::write(node, CAPABILITY, &value).map_err(|source| ImageError::SetXattr {
            path: path.to_owned(),
            name: String::from_utf8_lossy(CAPABILITY).into_owned(),
            source,
        })?;
    }
    if let Rewrite::Layer { .. } = how {
        let xattrs =
            xattr::read(node, XattrPolicy::All).map_err(|source| ImageError::ReadXattrs {
                path: path.to_owned(),
                source,
            })?;
        for (name, _) in xattrs {
            if name.starts_with(b"trusted.overlay.") && name != b"trusted.overlay.opaque" {
                xattr::remove(node, &name).map_err(|source| ImageError::SetXattr {
                    path: path.to_owned(),
                    name: String::from_utf8_lossy(&name).into_owned(),
                    source,
                })?;
            }
        }
    }
    if canonical_whiteout && let Entry::At(dir, name) = entry {
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let times = Timestamps {
            last_access: zero,
            last_modification: zero,
        };
        rfs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
            ImageError::SetTimes {
                path: path.to_owned(),
                source: e.into(),
            }
        })?;
    }
    Ok(())
}

fn set_mode(entry: Entry<'_>, kind: FileType, mode: u32, path: &Path) -> Result<(), ImageError> {
    let err = |e: io::Error| ImageError::SetMode {
        path: path.to_owned(),
        source: e,
    };
    match entry {
        Entry::Dir(fd) => rfs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(|e| err(e.into())),
        Entry::At(dir, name) => {
            // Devices and FIFOs must not be opened for I/O: pin the inode with O_PATH and
            // chmod it through its /proc link.
            let node = rfs::openat(
                dir,
                name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| err(e.into()))?;
            let st = stat_fd(node.as_fd()).map_err(err)?;
            if file_type(&st) != kind {
                return Err(err(io::Error::other(
                    "the entry changed type underneath us",
                )));
            }
            let link = format!("/proc/self/fd/{}", node.as_raw_fd());
            rfs::chmodat(
                rfs::CWD,
                link.as_str(),
                Mode::from_raw_mode(mode),
                AtFlags::empty(),
            )
            .map_err(|e| err(e.into()))
        }
    }
}

/// A `security.capability` value with the root id of a version-3 (namespaced) capability
/// mapped through `map`; other versions are returned unchanged.
fn shift_cap_rootid(value: &[u8], map: impl Fn(u32) -> u32) -> Vec<u8> {
    let mut out = value.to_vec();
    if value.len() >= 24 {
        let magic = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
        if magic & VFS_CAP_REVISION_MASK == VFS_CAP_REVISION_3 {
            let root = u32::from_le_bytes([value[20], value[21], value[22], value[23]]);
            out[20..24].copy_from_slice(&map(root).to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mknod(path: &Path, kind: FileType, mode: u32, major: u32, minor: u32) {
        crate::fixtures::mknod(path, kind, mode, major, minor);
    }

    #[test]
    fn shifting_moves_owners_keeps_setuid_and_leaves_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("upper");
        std::fs::create_dir(&root).unwrap();
        let base = 1 << 30;
        std::os::unix::fs::chown(&root, Some(base), Some(base)).unwrap();
        let f = root.join("suid");
        std::fs::write(&f, b"x").unwrap();
        std::os::unix::fs::chown(&f, Some(base + 5), Some(base + 6)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("suid", root.join("link")).unwrap();
        std::os::unix::fs::lchown(root.join("link"), Some(base + 1), Some(base + 1)).unwrap();
        mknod(&root.join("gone"), FileType::CharacterDevice, 0, 0, 0);
        let mtime = std::fs::metadata(&f).unwrap().mtime();

        let to = base + 65536;
        shift_owners(
            &root,
            IdRange {
                start: base,
                count: 65536,
            },
            to,
        )
        .unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.uid(), m.gid()), (to + 5, to + 6));
        assert_eq!(m.mode() & 0o7777, 0o4755, "setuid survives the chown");
        assert_eq!(m.mtime(), mtime);
        assert_eq!(
            std::fs::symlink_metadata(root.join("link")).unwrap().uid(),
            to + 1
        );
        assert_eq!(std::fs::metadata(&root).unwrap().uid(), to);
        assert_eq!(
            std::fs::symlink_metadata(root.join("gone")).unwrap().uid(),
            0
        );
    }

    #[test]
    fn upper_becomes_a_canonical_layer() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("upper");
        std::fs::create_dir(&root).unwrap();
        let base = 1 << 30;
        let range = IdRange {
            start: base,
            count: 65536,
        };
        std::os::unix::fs::chown(&root, Some(base), Some(base)).unwrap();
        let d = root.join("opaque");
        std::fs::create_dir(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(base + 7), Some(base)).unwrap();
        rfs::setxattr(&d, "trusted.overlay.opaque", b"y", rfs::XattrFlags::empty()).unwrap();
        rfs::setxattr(
            &d,
            "trusted.overlay.origin",
            b"junk",
            rfs::XattrFlags::empty(),
        )
        .unwrap();
        rfs::setxattr(&d, "user.keep", b"1", rfs::XattrFlags::empty()).unwrap();
        mknod(
            &root.join("deleted"),
            FileType::CharacterDevice,
            0o644,
            0,
            0,
        );

        // The marker replaces a directory of the layer below, so it stays.
        let lower = dir.path().join("lower");
        std::fs::create_dir_all(lower.join("opaque")).unwrap();
        let report = upper_to_layer(&root, Some(range), std::slice::from_ref(&lower)).unwrap();
        assert_eq!((report.kept, report.dropped), (1, 0));
        assert_eq!(std::fs::metadata(&root).unwrap().uid(), 0);
        assert_eq!(std::fs::metadata(&d).unwrap().uid(), 7);
        let names = crate::fixtures::xattrs_of(&d);
        assert!(names.contains_key("trusted.overlay.opaque"));
        assert!(names.contains_key("user.keep"));
        assert!(!names.contains_key("trusted.overlay.origin"));
        let w = std::fs::symlink_metadata(root.join("deleted")).unwrap();
        assert_eq!((w.uid(), w.mode() & 0o7777, w.mtime()), (0, 0, 0));

        // An entry outside the range cannot be translated.
        let stray = root.join("stray");
        std::fs::write(&stray, b"").unwrap();
        std::os::unix::fs::chown(&stray, Some(12), Some(12)).unwrap();
        assert!(
            upper_to_layer(
                &root,
                Some(IdRange {
                    start: 0,
                    count: 10
                }),
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn hard_linked_files_are_rewritten_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("upper");
        std::fs::create_dir(&root).unwrap();
        let base = 1 << 30;
        std::os::unix::fs::chown(&root, Some(base), Some(base)).unwrap();
        let a = root.join("a");
        std::fs::write(&a, b"x").unwrap();
        std::fs::hard_link(&a, root.join("b")).unwrap();
        std::os::unix::fs::chown(&a, Some(base + 9), Some(base + 9)).unwrap();
        upper_to_layer(
            &root,
            Some(IdRange {
                start: base,
                count: 65536,
            }),
            &[],
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&a).unwrap().uid(), 9);

        std::os::unix::fs::chown(&a, Some(base + 9), Some(base + 9)).unwrap();
        std::os::unix::fs::chown(&root, Some(base), Some(base)).unwrap();
        // Adjacent ranges: a second shift of the same inode would land outside both.
        shift_owners(
            &root,
            IdRange {
                start: base,
                count: 65536,
            },
            base + 65536,
        )
        .unwrap();
        assert_eq!(
            std::fs::metadata(root.join("b")).unwrap().uid(),
            base + 65536 + 9
        );
    }

    #[test]
    fn capability_root_ids_move_with_the_owners() {
        let mut v3 = vec![0u8; 24];
        v3[0..4].copy_from_slice(&(VFS_CAP_REVISION_3 | 1).to_le_bytes());
        v3[20..24].copy_from_slice(&100u32.to_le_bytes());
        let shifted = shift_cap_rootid(&v3, |id| id + 5);
        assert_eq!(u32::from_le_bytes(shifted[20..24].try_into().unwrap()), 105);
        let v2 = vec![
            0u8, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ];
        assert_eq!(shift_cap_rootid(&v2, |id| id + 5), v2);
    }
}
