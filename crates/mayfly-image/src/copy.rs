//! Exact copies of directory trees: a host directory being imported, or an instance's overlay
//! upper directory being committed as a layer.
//!
//! The source is trusted not to be hostile but not to hold still, so the copy works through
//! directory descriptors and never follows a symlink: a rename inside the source can at worst
//! make the copy miss or duplicate an entry, never read or write outside the two trees. The
//! copy preserves everything [`crate::tree_digest`] covers (type, mode bits, owner, mtime to the
//! nanosecond, xattrs by policy, content, link targets, device numbers, hard-link structure), so
//! a copy of a tree has the tree's digest, given [`XattrPolicy::All`]. Overlay whiteouts (0:0
//! character devices) and opaque markers (`trusted.overlay.opaque`) are ordinary inodes and
//! xattrs here. Sockets are skipped: they mean nothing without the process that bound them.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Statx};

use crate::inode::{Inode, device, file_type, stat_at, stat_fd};
use crate::tree::{child_path, list_dir, open_dir_at, open_dir_beneath, open_root};
use crate::xattr::{self, Node, XattrPolicy};
use crate::{ImageError, Progress, TreeStats};

/// How [`copy_tree`] treats xattrs and mounts.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// Which xattrs to copy; the others are left out.
    pub xattrs: XattrPolicy,
    /// Do not descend into directories on another filesystem than the source root; they are
    /// copied as empty directories with their own metadata, like `rsync -x`.
    pub one_file_system: bool,
}

/// Copies the tree at `src` to `dest`, which must not exist (its parent must), preserving every
/// attribute and the hard links within the tree, and returns the entries and content bytes
/// copied (the root not counted). Symlinks inside the tree are copied, never followed; `src`
/// itself is opened as given. On error, `dest` is left partly written for the caller to remove.
pub fn copy_tree(
    src: &Path,
    dest: &Path,
    options: CopyOptions,
    progress: &dyn Progress,
) -> Result<TreeStats, ImageError> {
    let src_fd = open_root(src).map_err(|source| ImageError::Open {
        path: src.to_owned(),
        source,
    })?;
    let src_st = stat_fd(src_fd.as_fd()).map_err(|source| ImageError::Stat {
        path: src.to_owned(),
        source,
    })?;
    let dest_fd = create_root(dest)?;
    let mut copier = Copier::new(options, device(&src_st), &dest_fd, dest, progress)?;
    copier.children(src_fd.as_fd(), dest_fd.as_fd(), src, dest)?;
    copier.finish_dir(src_fd.as_fd(), dest_fd.as_fd(), &src_st, src, dest)?;
    Ok(copier.stats)
}

/// Creates `dest` (mode 0700 until the copy is done) and opens it.
pub(crate) fn create_root(dest: &Path) -> Result<OwnedFd, ImageError> {
    let create_err = |source| ImageError::Create {
        path: dest.to_owned(),
        source,
    };
    let name = dest.file_name().ok_or_else(|| {
        create_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path has no final component",
        ))
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_fd = open_root(parent).map_err(|source| ImageError::Open {
        path: parent.to_owned(),
        source,
    })?;
    rfs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o700)).map_err(|e| create_err(e.into()))?;
    rfs::openat(
        &parent_fd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::Open {
        path: dest.to_owned(),
        source: e.into(),
    })
}

/// Copies entries into one destination tree, keeping hard links between the copies.
pub(crate) struct Copier<'p> {
    options: CopyOptions,
    /// The source root's filesystem, for `one_file_system`.
    dev: (u32, u32),
    dest_root: OwnedFd,
    /// Where the first copy of each multiply-linked source inode went, relative to `dest_root`.
    first_copies: HashMap<((u32, u32), u64), Vec<u8>>,
    stats: TreeStats,
    progress: &'p dyn Progress,
    /// The relative path of the directory being copied, with a trailing `/` (empty at the root).
    rel: Vec<u8>,
}

impl<'p> Copier<'p> {
    /// A copier into the tree whose root `dest_root` (named `dest` in errors) holds open; `dev`
    /// is the source's filesystem, for [`CopyOptions::one_file_system`].
    pub(crate) fn new(
        options: CopyOptions,
        dev: (u32, u32),
        dest_root: &OwnedFd,
        dest: &Path,
        progress: &'p dyn Progress,
    ) -> Result<Self, ImageError> {
        Ok(Self {
            options,
            dev,
            dest_root: dest_root.try_clone().map_err(|source| ImageError::Open {
                path: dest.to_owned(),
                source,
            })?,
            first_copies: HashMap::new(),
            stats: TreeStats::default(),
            progress,
            rel: Vec::new(),
        })
    }

    /// What has been copied so far.
    pub(crate) fn stats(&self) -> TreeStats {
        self.stats
    }

    /// Counts a directory created outside the copier.
    pub(crate) fn count_dir(&mut self) {
        self.stats.add(0, self.progress);
    }

    /// Copies the non-directory `name` of `src_dir` (described by `st`) to the same name in
    /// `dst_dir`, which is at `rel` (with a trailing `/`, empty for the root) in the destination
    /// tree. A source inode already copied becomes a hard link to its first copy.
    #[expect(clippy::too_many_arguments, reason = "each names one side of the copy")]
    pub(crate) fn copy_leaf(
        &mut self,
        src_dir: BorrowedFd<'_>,
        dst_dir: BorrowedFd<'_>,
        rel: &[u8],
        name: &CStr,
        st: &Statx,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<(), ImageError> {
        if file_type(st) == FileType::Directory {
            return Err(ImageError::Create {
                path: dst_path.to_owned(),
                source: io::Error::other("a directory is not a leaf"),
            });
        }
        let saved = std::mem::replace(&mut self.rel, rel.to_vec());
        self.rel.extend_from_slice(name.to_bytes());
        let result = self.entry(src_dir, dst_dir, name, st, src_path, dst_path);
        self.rel = saved;
        result
    }

    fn children(
        &mut self,
        src_dir: BorrowedFd<'_>,
        dst_dir: BorrowedFd<'_>,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<(), ImageError> {
        let names = list_dir(src_dir).map_err(|source| ImageError::Read {
            path: src_path.to_owned(),
            source,
        })?;
        for name in names {
            let src_child = child_path(src_path, &name);
            let dst_child = child_path(dst_path, &name);
            let st = match stat_at(src_dir, &name) {
                Ok(st) => st,
                // Gone since it was listed: a live source is allowed to change.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ImageError::Stat {
                        path: src_child,
                        source,
                    });
                }
            };
            let len = self.rel.len();
            self.rel.extend_from_slice(name.to_bytes());
            let result = self.entry(src_dir, dst_dir, &name, &st, &src_child, &dst_child);
            self.rel.truncate(len);
            result?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        src_dir: BorrowedFd<'_>,
        dst_dir: BorrowedFd<'_>,
        name: &CStr,
        st: &Statx,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<(), ImageError> {
        let kind = file_type(st);
        match kind {
            FileType::Socket | FileType::Unknown => return Ok(()),
            FileType::Directory => return self.dir(src_dir, dst_dir, name, src_path, dst_path),
            _ => {}
        }
        // A regular file is opened first and described by its descriptor, so the content and
        // the attributes we copy belong to the same inode.
        let (file, st) = if kind == FileType::RegularFile {
            let file = open_file(src_dir, name).map_err(|source| ImageError::Open {
                path: src_path.to_owned(),
                source,
            })?;
            let st = stat_fd(file.as_fd()).map_err(|source| ImageError::Stat {
                path: src_path.to_owned(),
                source,
            })?;
            if file_type(&st) != FileType::RegularFile {
                return Err(ImageError::Open {
                    path: src_path.to_owned(),
                    source: io::Error::other("the entry changed type underneath us"),
                });
            }
            (Some(file), st)
        } else {
            (None, *st)
        };
        if st.stx_nlink > 1 {
            let key = (device(&st), st.stx_ino);
            if let Some(first) = self.first_copies.get(&key) {
                self.link(first, dst_dir, name, dst_path)?;
                self.stats.add(0, self.progress);
                return Ok(());
            }
            self.first_copies.insert(key, self.rel.clone());
        }
        let inode = Inode::from_statx(&st);
        let bytes = match file {
            Some(file) => {
                let dst = rfs::openat(
                    dst_dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| ImageError::Create {
                    path: dst_path.to_owned(),
                    source: e.into(),
                })?;
                let dst = File::from(dst);
                let bytes = copy_content(&file, &dst).map_err(|source| ImageError::Write {
                    path: dst_path.to_owned(),
                    source,
                })?;
                inode.set_owner_mode(dst.as_fd(), dst_path)?;
                self.copy_xattrs(
                    Node::Fd(file.as_fd()),
                    Node::Fd(dst.as_fd()),
                    src_path,
                    dst_path,
                )?;
                inode.set_times(dst.as_fd(), dst_path)?;
                bytes
            }
            None => {
                if kind == FileType::Symlink {
                    let target = rfs::readlinkat(src_dir, name, Vec::new()).map_err(|e| {
                        ImageError::Read {
                            path: src_path.to_owned(),
                            source: e.into(),
                        }
                    })?;
                    rfs::symlinkat(target.as_c_str(), dst_dir, name)
                } else {
                    let dev = rfs::makedev(st.stx_rdev_major, st.stx_rdev_minor);
                    rfs::mknodat(dst_dir, name, kind, Mode::from_raw_mode(inode.mode), dev)
                }
                .map_err(|e| ImageError::Create {
                    path: dst_path.to_owned(),
                    source: e.into(),
                })?;
                inode.set_owner_mode_at(dst_dir, name, kind, dst_path)?;
                self.copy_xattrs(
                    Node::At(src_dir, name),
                    Node::At(dst_dir, name),
                    src_path,
                    dst_path,
                )?;
                inode.set_times_at(dst_dir, name, dst_path)?;
                0
            }
        };
        self.stats.add(bytes, self.progress);
        Ok(())
    }

    fn dir(
        &mut self,
        src_dir: BorrowedFd<'_>,
        dst_dir: BorrowedFd<'_>,
        name: &CStr,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<(), ImageError> {
        let src_sub = open_dir_at(src_dir, name).map_err(|source| ImageError::Open {
            path: src_path.to_owned(),
            source,
        })?;
        let st = stat_fd(src_sub.as_fd()).map_err(|source| ImageError::Stat {
            path: src_path.to_owned(),
            source,
        })?;
        rfs::mkdirat(dst_dir, name, Mode::from_raw_mode(0o700)).map_err(|e| {
            ImageError::Create {
                path: dst_path.to_owned(),
                source: e.into(),
            }
        })?;
        let dst_sub = open_dir_at(dst_dir, name).map_err(|source| ImageError::Open {
            path: dst_path.to_owned(),
            source,
        })?;
        self.stats.add(0, self.progress);
        if !self.options.one_file_system || device(&st) == self.dev {
            self.rel.push(b'/');
            let result = self.children(src_sub.as_fd(), dst_sub.as_fd(), src_path, dst_path);
            self.rel.pop();
            result?;
        }
        self.finish_dir(src_sub.as_fd(), dst_sub.as_fd(), &st, src_path, dst_path)
    }

    /// Gives a copied directory its source's attributes; the mtime last, once nothing more is
    /// created inside it.
    pub(crate) fn finish_dir(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        st: &Statx,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<(), ImageError> {
        let inode = Inode::from_statx(st);
        inode.set_owner_mode(dst, dst_path)?;
        self.copy_xattrs(Node::Fd(src), Node::Fd(dst), src_path, dst_path)?;
        inode.set_times(dst, dst_path)
    }

    fn copy_xattrs(
        &self,
        src: Node<'_>,
        dst: Node<'_>,
        src_path: &Path,
        dst_path: &Path,
    ) -> Result<(), ImageError> {
        let xattrs =
            xattr::read(src, self.options.xattrs).map_err(|source| ImageError::ReadXattrs {
                path: src_path.to_owned(),
                source,
            })?;
        for (key, value) in &xattrs {
            xattr::write(dst, key, value).map_err(|source| ImageError::SetXattr {
                path: dst_path.to_owned(),
                name: String::from_utf8_lossy(key).into_owned(),
                source,
            })?;
        }
        Ok(())
    }

    /// Links `name` in `dst_dir` to the earlier copy at `first` (relative to the destination
    /// root), resolving `first` without following anything.
    fn link(
        &self,
        first: &[u8],
        dst_dir: BorrowedFd<'_>,
        name: &CStr,
        dst_path: &Path,
    ) -> Result<(), ImageError> {
        let (dir, leaf) = match first.iter().rposition(|&b| b == b'/') {
            Some(i) => (&first[..i], &first[i + 1..]),
            None => (&b""[..], first),
        };
        let target = PathBuf::from(String::from_utf8_lossy(first).as_ref());
        let link_err = |source| ImageError::Link {
            path: dst_path.to_owned(),
            target: target.clone(),
            source,
        };
        let target_dir = open_dir_beneath(self.dest_root.as_fd(), dir).map_err(link_err)?;
        rfs::linkat(&target_dir, leaf, dst_dir, name, AtFlags::empty())
            .map_err(|e| link_err(e.into()))
    }
}

fn open_file(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<File> {
    // O_NONBLOCK: if the entry was swapped for a FIFO since we looked, opening must not hang.
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// Copies all of `src` into `dst` in the kernel where it can (sharing extents on filesystems
/// that support reflinks), else through a buffer.
fn copy_content(mut src: &File, mut dst: &File) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        match rfs::copy_file_range(src, None, dst, None, 1 << 30) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP,
            ) if total == 0 => break,
            Err(err) => return Err(err.into()),
        }
    }
    let mut buf = vec![0; 256 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        dst.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::fixtures::{Kind, SAMPLE, Spec, Tmpfs, assert_matches, materialize};
    use crate::{NoProgress, tree_digest, tree_stats};

    const ALL: CopyOptions = CopyOptions {
        xattrs: XattrPolicy::All,
        one_file_system: false,
    };

    /// An overlay upper directory: an opaque directory, whiteouts (one of them hard-linked, as
    /// overlayfs does when it reuses a whiteout inode), and trusted xattrs on a symlink.
    const UPPER: &[Spec] = &[
        Spec {
            path: "",
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: (1_700_000_000, 1),
            xattrs: &[],
        },
        Spec {
            path: "opaque",
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: (1_700_000_000, 2),
            xattrs: &[("trusted.overlay.opaque", b"y"), ("user.note", b"kept")],
        },
        Spec {
            path: "opaque/gone",
            kind: Kind::Char(0, 0),
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: (1_700_000_000, 3),
            xattrs: &[],
        },
        Spec {
            path: "gone-too",
            kind: Kind::HardLink("opaque/gone"),
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: (0, 0),
            xattrs: &[],
        },
        Spec {
            path: "link",
            kind: Kind::Symlink("/nowhere"),
            mode: 0o777,
            uid: 4321,
            gid: 4321,
            mtime: (1_700_000_000, 4),
            xattrs: &[("trusted.overlay.origin", b"\x00\xfb")],
        },
    ];

    fn source(specs: &[Spec]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("src")).unwrap();
        materialize(&tmp.path().join("src"), specs);
        tmp
    }

    #[test]
    fn copies_every_type_and_attribute() {
        let tmp = source(SAMPLE);
        let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
        let stats = copy_tree(&src, &dest, ALL, &NoProgress).unwrap();
        assert_matches(&dest, SAMPLE, |_| true);
        assert_eq!(tree_digest(&dest).unwrap(), tree_digest(&src).unwrap());
        assert_eq!(stats, tree_stats(&src).unwrap());
        assert_eq!(stats.entries, SAMPLE.len() as u64 - 1);
    }

    #[test]
    fn all_policy_keeps_overlay_xattrs_and_whiteouts() {
        let tmp = source(UPPER);
        let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
        copy_tree(&src, &dest, ALL, &NoProgress).unwrap();
        assert_matches(&dest, UPPER, |_| true);
        assert_eq!(tree_digest(&dest).unwrap(), tree_digest(&src).unwrap());

        let portable = tmp.path().join("portable");
        let options = CopyOptions {
            xattrs: XattrPolicy::Portable,
            ..ALL
        };
        copy_tree(&src, &portable, options, &NoProgress).unwrap();
        assert_matches(&portable, UPPER, |name| name.starts_with("user."));
        assert_ne!(tree_digest(&portable).unwrap(), tree_digest(&src).unwrap());
    }

    #[test]
    fn skips_sockets() {
        let tmp = source(&SAMPLE[..1]);
        let src = tmp.path().join("src");
        let _listener = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
        fs::write(src.join("file"), "x").unwrap();
        let dest = tmp.path().join("dest");
        let stats = copy_tree(&src, &dest, ALL, &NoProgress).unwrap();
        assert_eq!(
            stats,
            TreeStats {
                entries: 1,
                bytes: 1
            }
        );
        let names: Vec<_> = fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"]);
    }

    #[test]
    fn one_file_system_stops_at_mount_points() {
        let tmp = source(&SAMPLE[..1]);
        let src = tmp.path().join("src");
        fs::write(src.join("file"), "x").unwrap();
        fs::create_dir(src.join("mnt")).unwrap();
        let _mount = Tmpfs::mount(&src.join("mnt"), c"mode=0710,uid=12,gid=34");
        fs::write(src.join("mnt/inner"), "on another filesystem").unwrap();

        let dest = tmp.path().join("one");
        let options = CopyOptions {
            one_file_system: true,
            ..ALL
        };
        copy_tree(&src, &dest, options, &NoProgress).unwrap();
        assert_eq!(fs::read(dest.join("file")).unwrap(), b"x");
        let mnt = fs::symlink_metadata(dest.join("mnt")).unwrap();
        assert!(mnt.is_dir());
        assert_eq!(
            mnt.permissions().mode() & 0o7777,
            0o710,
            "the mount point's own mode"
        );
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&mnt),
                std::os::unix::fs::MetadataExt::gid(&mnt)
            ),
            (12, 34)
        );
        assert_eq!(fs::read_dir(dest.join("mnt")).unwrap().count(), 0);

        let dest = tmp.path().join("all");
        copy_tree(&src, &dest, ALL, &NoProgress).unwrap();
        assert_eq!(
            fs::read(dest.join("mnt/inner")).unwrap(),
            b"on another filesystem"
        );
    }

    #[test]
    fn refuses_an_existing_destination() {
        let tmp = source(SAMPLE);
        let src = tmp.path().join("src");
        fs::create_dir(tmp.path().join("dest")).unwrap();
        let result = copy_tree(&src, &tmp.path().join("dest"), ALL, &NoProgress);
        assert!(
            matches!(result, Err(ImageError::Create { .. })),
            "{result:?}"
        );
        let result = copy_tree(&src, &tmp.path().join("no/such/dest"), ALL, &NoProgress);
        assert!(matches!(result, Err(ImageError::Open { .. })), "{result:?}");
    }
}
