//! Finding where two application layers, meant to be stacked on the same base, disagree.
//!
//! Two layers conflict at a path when the order they are stacked in changes what a container
//! sees there: both define it as different non-directories, one as a directory and the other
//! not, one deletes it (whiteout) and the other defines it, or one replaces a directory
//! wholesale (opaque) and the other adds to it. Directories present in both merge and are no
//! conflict by themselves, whatever their attributes; equal non-directories (type, mode, owner,
//! content, link target, device number and xattrs; mtimes do not count) are none either.
//!
//! Both trees are walked side by side through directory descriptors, never following a symlink,
//! and only where both have a directory; a conflicting directory is reported once, not with
//! everything below it.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, Statx};

use crate::ImageError;
use crate::inode::{Inode, file_type, is_whiteout, stat_at, stat_fd};
use crate::tree::{child_path, list_dir, open_dir_at, open_root};
use crate::xattr::{self, Node, XattrPolicy};

const COMPARE_BUFFER: usize = 64 * 1024;

/// The paths (relative, `/`-separated, sorted) at which layers `a` and `b` conflict: see the
/// module documentation for what counts. A path equal to or below one of `ignore` (relative
/// directory or file paths such as `var/lib/dpkg/`; leading and trailing slashes do not matter)
/// is skipped, as is a name present in one layer only, unless the other layer's directory
/// around it is opaque and the name is not a whiteout.
pub fn layer_conflicts(a: &Path, b: &Path, ignore: &[&str]) -> Result<Vec<String>, ImageError> {
    let open = |path: &Path| {
        open_root(path).map_err(|source| ImageError::Open {
            path: path.to_owned(),
            source,
        })
    };
    let a = Side {
        fd: open(a)?,
        path: a.to_owned(),
    };
    let b = Side {
        fd: open(b)?,
        path: b.to_owned(),
    };
    let ignore: Vec<&[u8]> = ignore
        .iter()
        .map(|prefix| trim_slashes(prefix.as_bytes()))
        .collect();
    let mut out = Vec::new();
    // Overlayfs ignores an opaque marker on a layer's root, so the roots always merge.
    walk(&a, &b, false, false, &mut Vec::new(), &ignore, &mut out)?;
    out.sort();
    Ok(out)
}

/// One layer's directory at the path being compared.
struct Side {
    fd: OwnedFd,
    /// The host path, for errors.
    path: PathBuf,
}

fn trim_slashes(mut s: &[u8]) -> &[u8] {
    while let [b'/', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b'/'] = s {
        s = rest;
    }
    s
}

fn ignored(rel: &[u8], ignore: &[&[u8]]) -> bool {
    ignore.iter().any(|prefix| {
        prefix.is_empty()
            || rel
                .strip_prefix(*prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
    })
}

/// Compares the children of two directories at `rel` (with a trailing `/` unless empty), adding
/// conflicting paths to `out`.
fn walk(
    a: &Side,
    b: &Side,
    a_opaque: bool,
    b_opaque: bool,
    rel: &mut Vec<u8>,
    ignore: &[&[u8]],
    out: &mut Vec<String>,
) -> Result<(), ImageError> {
    let list = |side: &Side| {
        list_dir(side.fd.as_fd()).map_err(|source| ImageError::Read {
            path: side.path.clone(),
            source,
        })
    };
    let (a_names, b_names) = (list(a)?, list(b)?);
    let (mut i, mut j) = (0, 0);
    while i < a_names.len() || j < b_names.len() {
        let (name, in_a, in_b) = match (a_names.get(i), b_names.get(j)) {
            (Some(x), Some(y)) if x == y => (x, true, true),
            (Some(x), Some(y)) if x < y => (x, true, false),
            (Some(x), None) => (x, true, false),
            (_, Some(y)) => (y, false, true),
            (None, None) => unreachable!("the loop condition"),
        };
        i += usize::from(in_a);
        j += usize::from(in_b);
        let len = rel.len();
        rel.extend_from_slice(name.to_bytes());
        let result = if ignored(rel, ignore) {
            Ok(())
        } else if in_a && in_b {
            both(a, b, name, rel, ignore, out)
        } else {
            // A name in one layer only is hidden by the other's opaque directory when that
            // one is stacked above; a whiteout there deletes nothing the other has.
            let (side, other_opaque) = if in_a { (a, b_opaque) } else { (b, a_opaque) };
            if other_opaque && !is_whiteout(&stat(side, name)?) {
                out.push(shown(rel));
            }
            Ok(())
        };
        rel.truncate(len);
        result?;
    }
    Ok(())
}

/// Compares the entry `name` (at `rel`) that both directories have.
fn both(
    a: &Side,
    b: &Side,
    name: &CStr,
    rel: &mut Vec<u8>,
    ignore: &[&[u8]],
    out: &mut Vec<String>,
) -> Result<(), ImageError> {
    let (a_st, b_st) = (stat(a, name)?, stat(b, name)?);
    let a_dir = file_type(&a_st) == FileType::Directory;
    let b_dir = file_type(&b_st) == FileType::Directory;
    if a_dir && b_dir {
        let (a_sub, a_opaque) = open_sub(a, name)?;
        let (b_sub, b_opaque) = open_sub(b, name)?;
        rel.push(b'/');
        return walk(&a_sub, &b_sub, a_opaque, b_opaque, rel, ignore, out);
    }
    let same = match (is_whiteout(&a_st), is_whiteout(&b_st)) {
        // Two deletions of the same path agree, whatever their metadata.
        (true, true) => true,
        (true, false) | (false, true) => false,
        (false, false) => !a_dir && !b_dir && same_leaf(a, b, name, &a_st, &b_st)?,
    };
    if !same {
        out.push(shown(rel));
    }
    Ok(())
}

fn stat(side: &Side, name: &CStr) -> Result<Statx, ImageError> {
    stat_at(side.fd.as_fd(), name).map_err(|source| ImageError::Stat {
        path: child_path(&side.path, name),
        source,
    })
}

/// Opens the subdirectory `name` and tells whether it is opaque.
fn open_sub(side: &Side, name: &CStr) -> Result<(Side, bool), ImageError> {
    let path = child_path(&side.path, name);
    let fd = open_dir_at(side.fd.as_fd(), name).map_err(|source| ImageError::Open {
        path: path.clone(),
        source,
    })?;
    let opaque = xattr::is_opaque(fd.as_fd()).map_err(|source| ImageError::ReadXattrs {
        path: path.clone(),
        source,
    })?;
    Ok((Side { fd, path }, opaque))
}

/// Whether two non-directories, neither a whiteout, look the same in a container.
fn same_leaf(
    a: &Side,
    b: &Side,
    name: &CStr,
    a_st: &Statx,
    b_st: &Statx,
) -> Result<bool, ImageError> {
    let kind = file_type(a_st);
    let (a_inode, b_inode) = (Inode::from_statx(a_st), Inode::from_statx(b_st));
    if kind != file_type(b_st)
        || (a_inode.uid, a_inode.gid) != (b_inode.uid, b_inode.gid)
        // A symlink's mode means nothing (and differs between filesystems).
        || (kind != FileType::Symlink && a_inode.mode != b_inode.mode)
    {
        return Ok(false);
    }
    let same_body = match kind {
        FileType::RegularFile => a_st.stx_size == b_st.stx_size && same_content(a, b, name)?,
        FileType::Symlink => {
            let target = |side: &Side| {
                rfs::readlinkat(side.fd.as_fd(), name, Vec::new()).map_err(|e| ImageError::Read {
                    path: child_path(&side.path, name),
                    source: e.into(),
                })
            };
            target(a)? == target(b)?
        }
        FileType::CharacterDevice | FileType::BlockDevice => {
            (a_st.stx_rdev_major, a_st.stx_rdev_minor) == (b_st.stx_rdev_major, b_st.stx_rdev_minor)
        }
        _ => true,
    };
    if !same_body {
        return Ok(false);
    }
    let xattrs = |side: &Side| {
        xattr::read(Node::At(side.fd.as_fd(), name), XattrPolicy::NoOverlay).map_err(|source| {
            ImageError::ReadXattrs {
                path: child_path(&side.path, name),
                source,
            }
        })
    };
    Ok(xattrs(a)? == xattrs(b)?)
}

/// Whether the regular files `name` of both sides hold the same bytes.
fn same_content(a: &Side, b: &Side, name: &CStr) -> Result<bool, ImageError> {
    let open = |side: &Side| {
        open_file(side.fd.as_fd(), name).map_err(|source| ImageError::Open {
            path: child_path(&side.path, name),
            source,
        })
    };
    let (mut a_file, mut b_file) = (open(a)?, open(b)?);
    let mut a_buf = vec![0; COMPARE_BUFFER];
    let mut b_buf = vec![0; COMPARE_BUFFER];
    loop {
        let n = fill(&mut a_file, &mut a_buf).map_err(|source| ImageError::Read {
            path: child_path(&a.path, name),
            source,
        })?;
        let m = fill(&mut b_file, &mut b_buf).map_err(|source| ImageError::Read {
            path: child_path(&b.path, name),
            source,
        })?;
        if a_buf[..n] != b_buf[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(len)
}

fn open_file(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<File> {
    // O_NONBLOCK: if the entry was swapped for a FIFO since we looked, opening must not hang.
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if file_type(&stat_fd(fd.as_fd())?) != FileType::RegularFile {
        return Err(io::Error::other("the entry changed type underneath us"));
    }
    Ok(File::from(fd))
}

fn shown(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::fixtures::{Kind, Spec, materialize, owned, spec, with_xattrs};

    const OPAQUE: &[(&str, &[u8])] = &[("trusted.overlay.opaque", b"y")];

    fn layer(tmp: &Path, name: &str, specs: &[Spec]) -> PathBuf {
        let dir = tmp.join(name);
        fs::create_dir(&dir).unwrap();
        materialize(&dir, &[spec("", Kind::Dir, 0o755, (1, 0))]);
        materialize(&dir, specs);
        dir
    }

    fn conflicts(a: &[Spec], b: &[Spec], ignore: &[&str]) -> Vec<String> {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (layer(tmp.path(), "a", a), layer(tmp.path(), "b", b));
        let forward = layer_conflicts(&a, &b, ignore).unwrap();
        assert_eq!(
            layer_conflicts(&b, &a, ignore).unwrap(),
            forward,
            "symmetric"
        );
        forward
    }

    const fn file(path: &'static str, content: &'static [u8]) -> Spec {
        spec(path, Kind::File(content), 0o644, (1_600_000_000, 0))
    }

    const fn dir(path: &'static str) -> Spec {
        spec(path, Kind::Dir, 0o755, (1_600_000_000, 0))
    }

    const fn whiteout(path: &'static str) -> Spec {
        spec(path, Kind::Char(0, 0), 0, (0, 0))
    }

    #[test]
    fn identical_files_and_shared_directories_do_not_conflict() {
        let a = [
            dir("etc"),
            file("etc/same", b"x"),
            file("etc/only-a", b"a"),
            spec("etc/link", Kind::Symlink("same"), 0o777, (1, 0)),
            spec("dev", Kind::Dir, 0o700, (5, 0)),
            spec("dev/null", Kind::Char(1, 3), 0o666, (1, 0)),
            whiteout("gone"),
        ];
        let b = [
            owned(spec("etc", Kind::Dir, 0o750, (9, 9)), 5, 5),
            spec("etc/same", Kind::File(b"x"), 0o644, (1_700_000_000, 7)),
            file("etc/only-b", b"b"),
            spec("etc/link", Kind::Symlink("same"), 0o777, (2, 0)),
            dir("dev"),
            spec("dev/null", Kind::Char(1, 3), 0o666, (2, 0)),
            // Non-canonical, but a deletion all the same.
            spec("gone", Kind::Char(0, 0), 0o644, (5, 0)),
            dir("new"),
            file("new/file", b"only here"),
        ];
        assert_eq!(conflicts(&a, &b, &[]), Vec::<String>::new());
    }

    #[test]
    fn differing_non_directories_conflict() {
        let a = [
            file("content", b"one"),
            file("length", b"one"),
            file("mode", b"x"),
            file("owner", b"x"),
            with_xattrs(file("xattr", b"x"), &[("user.a", b"1")]),
            file("xattr-missing", b"x"),
            spec("target", Kind::Symlink("one"), 0o777, (1, 0)),
            file("type", b"x"),
            spec("device", Kind::Char(1, 3), 0o666, (1, 0)),
            dir("nested"),
            dir("nested/deeper"),
            file("nested/deeper/file", b"one"),
        ];
        let b = [
            file("content", b"two"),
            file("length", b"three"),
            spec("mode", Kind::File(b"x"), 0o755, (1_600_000_000, 0)),
            owned(file("owner", b"x"), 0, 1),
            with_xattrs(file("xattr", b"x"), &[("user.a", b"2")]),
            with_xattrs(file("xattr-missing", b"x"), &[("user.b", b"")]),
            spec("target", Kind::Symlink("two"), 0o777, (1, 0)),
            spec("type", Kind::Symlink("x"), 0o777, (1, 0)),
            spec("device", Kind::Char(1, 5), 0o666, (1, 0)),
            dir("nested"),
            dir("nested/deeper"),
            file("nested/deeper/file", b"two"),
        ];
        assert_eq!(
            conflicts(&a, &b, &[]),
            [
                "content",
                "device",
                "length",
                "mode",
                "nested/deeper/file",
                "owner",
                "target",
                "type",
                "xattr",
                "xattr-missing"
            ]
        );
    }

    #[test]
    fn large_files_differing_late_conflict() {
        const BIG: &[u8] = &[7; 3 * COMPARE_BUFFER + 5];
        let mut other = BIG.to_vec();
        *other.last_mut().unwrap() = 8;
        let other: &'static [u8] = other.leak();
        assert_eq!(
            conflicts(&[file("big", BIG)], &[file("big", other)], &[]),
            ["big"]
        );
        assert!(conflicts(&[file("big", BIG)], &[file("big", BIG)], &[]).is_empty());
    }

    #[test]
    fn directories_against_non_directories_conflict_once() {
        let a = [dir("x"), file("x/inside", b"1"), dir("y"), dir("y/z")];
        let b = [
            file("x", b"a file"),
            spec("y", Kind::Symlink("/elsewhere"), 0o777, (1, 0)),
        ];
        assert_eq!(conflicts(&a, &b, &[]), ["x", "y"]);
    }

    #[test]
    fn whiteouts_conflict_with_anything() {
        let a = [
            whiteout("file"),
            whiteout("dir"),
            whiteout("link"),
            whiteout("both"),
        ];
        let b = [
            file("file", b"x"),
            dir("dir"),
            file("dir/inside", b"x"),
            spec("link", Kind::Symlink("file"), 0o777, (1, 0)),
            whiteout("both"),
        ];
        assert_eq!(conflicts(&a, &b, &[]), ["dir", "file", "link"]);
    }

    #[test]
    fn opaque_directories_hide_what_the_other_adds() {
        let a = [
            dir("opt"),
            with_xattrs(dir("opt/app"), OPAQUE),
            file("opt/app/mine", b"a"),
            file("opt/app/same", b"s"),
            whiteout("opt/app/deleted"),
        ];
        let b = [
            dir("opt"),
            dir("opt/app"),
            file("opt/app/theirs", b"b"),
            dir("opt/app/dir"),
            file("opt/app/dir/deep", b"b"),
            file("opt/app/same", b"s"),
        ];
        assert_eq!(conflicts(&a, &b, &[]), ["opt/app/dir", "opt/app/theirs"]);
        // An opaque root is not opaque to overlayfs.
        let a = [file("mine", b"a")];
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (
            layer(tmp.path(), "a", &a),
            layer(tmp.path(), "b", &[file("theirs", b"b")]),
        );
        rfs::setxattr(&a, "trusted.overlay.opaque", b"y", rfs::XattrFlags::empty()).unwrap();
        assert!(layer_conflicts(&a, &b, &[]).unwrap().is_empty());
    }

    #[test]
    fn ignored_prefixes_are_skipped() {
        let a = [
            dir("var"),
            dir("var/lib"),
            dir("var/lib/dpkg"),
            file("var/lib/dpkg/status", b"a"),
            dir("var/log"),
            file("var/log/apt.log", b"a"),
            file("var/logs", b"a"),
            dir("var/cache"),
        ];
        let b = [
            dir("var"),
            dir("var/lib"),
            dir("var/lib/dpkg"),
            file("var/lib/dpkg/status", b"b"),
            dir("var/log"),
            file("var/log/apt.log", b"b"),
            file("var/logs", b"b"),
            file("var/cache", b"not a directory"),
        ];
        assert_eq!(
            conflicts(&a, &b, &["var/lib/dpkg/", "/var/log", "var/cache/"]),
            ["var/logs"]
        );
        assert_eq!(
            conflicts(&a, &b, &[]),
            [
                "var/cache",
                "var/lib/dpkg/status",
                "var/log/apt.log",
                "var/logs"
            ]
        );
        assert!(
            conflicts(&a, &b, &[""]).is_empty(),
            "an empty prefix is everything"
        );
    }

    #[test]
    fn missing_layers_fail_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let a = layer(tmp.path(), "a", &[]);
        let err = layer_conflicts(&a, &tmp.path().join("nope"), &[]).unwrap_err();
        assert!(
            matches!(&err, ImageError::Open { path, .. } if path.ends_with("nope")),
            "{err:?}"
        );
    }
}
