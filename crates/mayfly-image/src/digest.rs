//! Content digests of trees.
//!
//! A tree's digest is blake3 over a canonical serialisation: entries in byte-wise sorted order
//! of their relative paths (the root is the empty path), each an unambiguous record of
//! length-prefixed fields. It covers exactly what a container can observe: path, type, the
//! twelve mode bits, owner, mtime to the nanosecond, every xattr, content, link target, device
//! numbers, and which paths share an inode. It leaves out what a copy cannot preserve or that
//! does not matter inside a container: atime, ctime, inode numbers, the device a tree lives on,
//! and how content is laid out on disk. A version tag at the start means a future change of
//! format yields different digests rather than colliding ones.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::str::FromStr;

use rustix::fs::{self as rfs, FileType, Mode, OFlags, Statx};

use crate::ImageError;
use crate::inode::{Inode, device, file_type, stat_at, stat_fd};
use crate::tree::{child_path, list_dir, open_dir_at, open_root};
use crate::xattr::{self, Node, XattrPolicy};

const PREFIX: &str = "blake3:";
const HEX_LEN: usize = 64;
const FORMAT_TAG: &[u8] = b"mayfly tree digest v1\0";

/// A content digest in the form `blake3:<64 lowercase hex>`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub(crate) fn from_hash(hash: &blake3::Hash) -> Self {
        Self(format!("{PREFIX}{}", hash.to_hex()))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// The first 12 hex digits, for display.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    /// `blake3-<hex>`, usable as a file or directory name.
    pub fn dir_name(&self) -> String {
        format!("blake3-{}", self.hex())
    }

    /// The full `blake3:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = ImageError;

    /// Accepts only `blake3:` followed by exactly 64 lowercase hex digits.
    fn from_str(s: &str) -> Result<Self, ImageError> {
        let valid = s.strip_prefix(PREFIX).is_some_and(|hex| {
            hex.len() == HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(ImageError::BadDigest(s.to_owned()))
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = ImageError;

    fn try_from(s: String) -> Result<Self, ImageError> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> Self {
        digest.0
    }
}

/// The digest of the tree at `root`: see the module documentation for what it covers. Symlinks
/// are recorded, never followed; all xattrs count, whatever their namespace.
pub fn tree_digest(root: &Path) -> Result<Digest, ImageError> {
    let fd = open_root(root).map_err(|source| ImageError::Open {
        path: root.to_owned(),
        source,
    })?;
    let st = stat_fd(fd.as_fd()).map_err(|source| ImageError::Stat {
        path: root.to_owned(),
        source,
    })?;
    let mut hasher = Hasher {
        out: blake3::Hasher::new(),
        first_paths: HashMap::new(),
    };
    hasher.out.update(FORMAT_TAG);
    let xattrs = xattr::read(Node::Fd(fd.as_fd()), XattrPolicy::All).map_err(|source| {
        ImageError::ReadXattrs {
            path: root.to_owned(),
            source,
        }
    })?;
    hasher.record_inode(b"", &st, &xattrs);
    hasher.walk(fd.as_fd(), &mut Vec::new(), root)?;
    Ok(Digest::from_hash(&hasher.out.finalize()))
}

struct Hasher {
    out: blake3::Hasher,
    /// The first path (in walk order) of every inode with more than one link.
    first_paths: HashMap<((u32, u32), u64), Vec<u8>>,
}

impl Hasher {
    /// Records the children of `dir`, whose relative path with a trailing `/` (empty for the root)
    /// is `prefix`, and everything below them.
    fn walk(
        &mut self,
        dir: BorrowedFd<'_>,
        prefix: &mut Vec<u8>,
        host: &Path,
    ) -> Result<(), ImageError> {
        let names = list_dir(dir).map_err(|source| ImageError::Read {
            path: host.to_owned(),
            source,
        })?;
        let mut children = Vec::with_capacity(names.len());
        // A directory `a` sorts at `a` but its contents at `a/`, and other siblings (`a-b`,
        // `a.txt`) can fall in between; keying the visit and the descent separately keeps the
        // whole walk in byte-wise order of full paths.
        let mut steps: Vec<(Vec<u8>, usize, bool)> = Vec::with_capacity(names.len());
        for (i, name) in names.into_iter().enumerate() {
            let st = stat_at(dir, &name).map_err(|source| ImageError::Stat {
                path: child_path(host, &name),
                source,
            })?;
            let key = name.to_bytes().to_vec();
            if file_type(&st) == FileType::Directory {
                let mut descend = key.clone();
                descend.push(b'/');
                steps.push((descend, i, true));
            }
            steps.push((key, i, false));
            children.push((name, st));
        }
        steps.sort();
        for (_, i, descend) in steps {
            let (name, st) = &children[i];
            let len = prefix.len();
            prefix.extend_from_slice(name.to_bytes());
            let host_child = child_path(host, name);
            let result = if descend {
                prefix.push(b'/');
                open_dir_at(dir, name)
                    .map_err(|source| ImageError::Open {
                        path: host_child.clone(),
                        source,
                    })
                    .and_then(|sub| self.walk(sub.as_fd(), prefix, &host_child))
            } else {
                self.record_child(dir, name, st, prefix, &host_child)
            };
            prefix.truncate(len);
            result?;
        }
        Ok(())
    }

    fn record_child(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        st: &Statx,
        path: &[u8],
        host: &Path,
    ) -> Result<(), ImageError> {
        let kind = file_type(st);
        if kind != FileType::Directory && st.stx_nlink > 1 {
            let key = (device(st), st.stx_ino);
            if let Some(first) = self.first_paths.get(&key) {
                field(&mut self.out, path);
                self.out.update(b"h");
                field(&mut self.out, first);
                return Ok(());
            }
            self.first_paths.insert(key, path.to_vec());
        }
        let xattrs = xattr::read(Node::At(dir, name), XattrPolicy::All).map_err(|source| {
            ImageError::ReadXattrs {
                path: host.to_owned(),
                source,
            }
        })?;
        self.record_inode(path, st, &xattrs);
        match kind {
            FileType::RegularFile => {
                let hash = content_hash(dir, name).map_err(|source| ImageError::Read {
                    path: host.to_owned(),
                    source,
                })?;
                self.out.update(&st.stx_size.to_le_bytes());
                self.out.update(hash.as_bytes());
            }
            FileType::Symlink => {
                let target =
                    rfs::readlinkat(dir, name, Vec::new()).map_err(|e| ImageError::Read {
                        path: host.to_owned(),
                        source: e.into(),
                    })?;
                field(&mut self.out, target.as_bytes());
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                self.out.update(&st.stx_rdev_major.to_le_bytes());
                self.out.update(&st.stx_rdev_minor.to_le_bytes());
            }
            _ => {}
        }
        Ok(())
    }

    /// The part of a record every entry has: path, type, mode, owner, mtime and xattrs.
    fn record_inode(&mut self, path: &[u8], st: &Statx, xattrs: &xattr::Xattrs) {
        let inode = Inode::from_statx(st);
        let out = &mut self.out;
        field(out, path);
        out.update(&[type_tag(file_type(st))]);
        out.update(&inode.mode.to_le_bytes());
        out.update(&inode.uid.to_le_bytes());
        out.update(&inode.gid.to_le_bytes());
        out.update(&inode.mtime.sec.to_le_bytes());
        out.update(&inode.mtime.nsec.to_le_bytes());
        out.update(&(xattrs.len() as u64).to_le_bytes());
        for (name, value) in xattrs {
            field(out, name);
            field(out, value);
        }
    }
}

/// Writes a length-prefixed byte string, so no two different field sequences serialise alike.
fn field(out: &mut blake3::Hasher, bytes: &[u8]) {
    out.update(&(bytes.len() as u64).to_le_bytes());
    out.update(bytes);
}

fn type_tag(kind: FileType) -> u8 {
    match kind {
        FileType::RegularFile => b'f',
        FileType::Directory => b'd',
        FileType::Symlink => b'l',
        FileType::CharacterDevice => b'c',
        FileType::BlockDevice => b'b',
        FileType::Fifo => b'p',
        FileType::Socket => b's',
        FileType::Unknown => b'?',
    }
}

fn content_hash(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<blake3::Hash> {
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
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::from(fd))?;
    Ok(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::PathBuf;

    use rustix::fs::FileType;

    use super::*;
    use crate::fixtures::{Kind, SAMPLE, materialize, mknod, set_mtime};

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digests_parse_strictly() {
        let text = format!("blake3:{HEX}");
        let digest: Digest = text.parse().unwrap();
        assert_eq!(digest.as_str(), text);
        assert_eq!(digest.to_string(), text);
        assert_eq!(digest.hex(), HEX);
        assert_eq!(digest.short(), "0123456789ab");
        assert_eq!(digest.dir_name(), format!("blake3-{HEX}"));
        assert_eq!(Digest::try_from(text.clone()).unwrap(), digest);
        assert_eq!(String::from(digest), text);

        let upper = format!("blake3:{}", HEX.to_uppercase());
        let short = format!("blake3:{}", &HEX[1..]);
        let long = format!("blake3:{HEX}0");
        let sha = format!("sha256:{HEX}");
        let dir_name = format!("blake3-{HEX}");
        let not_hex = format!("blake3:{}g", &HEX[1..]);
        for bad in [
            upper,
            short,
            long,
            sha,
            dir_name,
            not_hex,
            String::new(),
            HEX.to_owned(),
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert!(
                matches!(err, ImageError::BadDigest(ref s) if *s == bad),
                "{bad}"
            );
        }
    }

    fn sample(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
        let root = tmp.path().join(name);
        fs::create_dir(&root).unwrap();
        materialize(&root, SAMPLE);
        root
    }

    /// Puts back the sample's mtimes, which most mutations disturb on the side.
    fn reset_mtimes(root: &Path) {
        for s in SAMPLE.iter().rev() {
            let path = root.join(s.path);
            if !matches!(s.kind, Kind::HardLink(_)) && fs::symlink_metadata(&path).is_ok() {
                set_mtime(&path, s.mtime);
            }
        }
    }

    #[test]
    fn equal_trees_have_equal_digests() {
        let tmp = tempfile::tempdir().unwrap();
        let one = tree_digest(&sample(&tmp, "one")).unwrap();
        let two = tree_digest(&sample(&tmp, "two")).unwrap();
        assert_eq!(one, two);
        assert_eq!(
            tree_digest(&tmp.path().join("one")).unwrap(),
            one,
            "stable across runs"
        );
    }

    #[test]
    fn every_attribute_changes_the_digest() {
        type Mutation = fn(&Path);
        let mutations: &[(&str, Mutation, bool)] = &[
            (
                "setuid bit",
                |r| {
                    fs::set_permissions(r.join("etc/passwd"), fs::Permissions::from_mode(0o755))
                        .unwrap()
                },
                false,
            ),
            (
                "sticky bit",
                |r| fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o777)).unwrap(),
                false,
            ),
            (
                "root mode",
                |r| fs::set_permissions(r, fs::Permissions::from_mode(0o755)).unwrap(),
                false,
            ),
            (
                "owner",
                |r| std::os::unix::fs::lchown(r.join("a/c"), Some(1), None).unwrap(),
                false,
            ),
            (
                "group",
                |r| std::os::unix::fs::lchown(r.join("a/c"), None, Some(1)).unwrap(),
                false,
            ),
            (
                "symlink owner",
                |r| std::os::unix::fs::lchown(r.join("bin/sh"), Some(1235), None).unwrap(),
                false,
            ),
            (
                "file mtime ns",
                |r| set_mtime(&r.join("etc/passwd"), (1_650_000_000, 123_456_790)),
                true,
            ),
            (
                "dir mtime",
                |r| set_mtime(&r.join("empty"), (1_600_000_011, 12)),
                true,
            ),
            (
                "root mtime",
                |r| set_mtime(r, (1_600_000_000, 500_000_001)),
                true,
            ),
            (
                "symlink mtime",
                |r| set_mtime(&r.join("bin/rel"), (1_600_000_007, 8)),
                true,
            ),
            (
                "new xattr",
                |r| {
                    rfs::lsetxattr(r.join("a/c"), "user.new", b"", rfs::XattrFlags::empty())
                        .unwrap()
                },
                false,
            ),
            (
                "xattr value",
                |r| {
                    rfs::lsetxattr(
                        r.join("etc/passwd"),
                        "user.foo",
                        b"baz",
                        rfs::XattrFlags::empty(),
                    )
                    .unwrap()
                },
                false,
            ),
            (
                "trusted xattr",
                |r| {
                    rfs::lsetxattr(
                        r.join("empty"),
                        "trusted.overlay.opaque",
                        b"y",
                        rfs::XattrFlags::empty(),
                    )
                    .unwrap()
                },
                false,
            ),
            (
                "content byte",
                |r| fs::write(r.join("bin/busybox"), b"#!/bin/sh\necho ho\n").unwrap(),
                false,
            ),
            (
                "symlink target",
                |r| {
                    fs::remove_file(r.join("bin/rel")).unwrap();
                    std::os::unix::fs::symlink("../etc/passwe", r.join("bin/rel")).unwrap();
                },
                false,
            ),
            (
                "hard link broken",
                |r| {
                    fs::remove_file(r.join("etc/passwd.hard")).unwrap();
                    fs::copy(r.join("etc/passwd"), r.join("etc/passwd.hard")).unwrap();
                    std::os::unix::fs::lchown(r.join("etc/passwd.hard"), Some(1234), Some(5678))
                        .unwrap();
                    fs::set_permissions(
                        r.join("etc/passwd.hard"),
                        fs::Permissions::from_mode(0o4755),
                    )
                    .unwrap();
                    rfs::lsetxattr(
                        r.join("etc/passwd.hard"),
                        "user.foo",
                        b"bar",
                        rfs::XattrFlags::empty(),
                    )
                    .unwrap();
                    set_mtime(&r.join("etc/passwd.hard"), (1_650_000_000, 123_456_789));
                },
                false,
            ),
            (
                "hard link added",
                |r| fs::hard_link(r.join("a/c"), r.join("a/c2")).unwrap(),
                false,
            ),
            (
                "device number",
                |r| {
                    fs::remove_file(r.join("dev/null")).unwrap();
                    mknod(&r.join("dev/null"), FileType::CharacterDevice, 0o666, 1, 5);
                },
                false,
            ),
            (
                "device type",
                |r| {
                    fs::remove_file(r.join("dev/null")).unwrap();
                    mknod(&r.join("dev/null"), FileType::BlockDevice, 0o666, 1, 3);
                },
                false,
            ),
            (
                "rename",
                |r| fs::rename(r.join("a/c"), r.join("a/d")).unwrap(),
                false,
            ),
            (
                "new empty dir",
                |r| fs::create_dir(r.join("empty/sub")).unwrap(),
                false,
            ),
        ];
        let tmp = tempfile::tempdir().unwrap();
        let base = tree_digest(&sample(&tmp, "base")).unwrap();
        let mut seen = vec![base.clone()];
        for (i, (what, mutate, is_time)) in mutations.iter().enumerate() {
            let root = sample(&tmp, &i.to_string());
            mutate(&root);
            if !is_time {
                reset_mtimes(&root);
            }
            let digest = tree_digest(&root).unwrap();
            assert!(!seen.contains(&digest), "{what} did not change the digest");
            seen.push(digest);
        }
    }
}
