//! What a tree holds, read through the file system: every path with its type, permission
//! bits, owner (relative to an id range), size, content hash, link target, device number,
//! mtime, `user.*` xattrs and hard-link structure. Two views compare equal when they show
//! exactly the same tree, whatever host ids or inode numbers they use. [`of_pid`] reads what
//! an instance sees, from the host through `/proc/<init pid>/root`; [`of_dir`] reads any
//! directory.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::tools::kind_of;
use crate::common::{TestDaemon, id_base};

/// One entry of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `file`, `dir`, `link`, `fifo`, `char`, `block`, `socket`.
    pub kind: &'static str,
    /// The twelve permission bits.
    pub mode: u32,
    /// Owner, relative to the instance's id base (or raw when outside the range).
    pub uid: i64,
    /// Group, likewise.
    pub gid: i64,
    /// Bytes (files).
    pub size: u64,
    /// Hash of the content (files).
    pub content: u64,
    /// Link target (symlinks).
    pub target: String,
    /// Device number (character and block devices).
    pub rdev: u64,
    /// Modification time, seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// `user.*` xattrs.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For the second and later names of a hard-linked file: the first name.
    pub link_of: Option<String>,
}

/// xattr names of `path` (without following a symlink).
pub fn xattr_names(path: &Path) -> Vec<String> {
    let mut names = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names) else {
        return Vec::new();
    };
    names[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// The value of xattr `name` of `path` (without following a symlink), if set.
pub fn xattr_value(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut value = vec![0u8; 65536];
    let len = rustix::fs::lgetxattr(path, name, &mut value).ok()?;
    value.truncate(len);
    Some(value)
}

fn user_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    xattr_names(path)
        .into_iter()
        .filter(|x| x.starts_with("user."))
        .filter_map(|x| xattr_value(path, &x).map(|v| (x, v)))
        .collect()
}

/// The entry at `path` (named `relpath` in the view), owners made relative to `id_base`;
/// `inodes` holds the first name of each hard-linked file seen so far.
fn entry(
    path: &Path,
    relpath: &str,
    id_base: u32,
    inodes: &mut HashMap<(u64, u64), String>,
) -> Entry {
    let rel = |id: u32| -> i64 {
        let base = i64::from(id_base);
        let v = i64::from(id);
        if v >= base && v < base + 65536 {
            v - base
        } else {
            v
        }
    };
    let m =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    let k = kind_of(m.file_type());
    let mut e = Entry {
        kind: k,
        mode: m.mode() & 0o7777,
        uid: rel(m.uid()),
        gid: rel(m.gid()),
        size: 0,
        content: 0,
        target: String::new(),
        rdev: 0,
        mtime: (m.mtime(), m.mtime_nsec()),
        xattrs: user_xattrs(path),
        link_of: None,
    };
    match k {
        "file" => {
            let data =
                std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let mut h = std::collections::hash_map::DefaultHasher::new();
            data.hash(&mut h);
            e.size = m.len();
            e.content = h.finish();
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                match inodes.get(&key) {
                    Some(first) => e.link_of = Some(first.clone()),
                    None => {
                        inodes.insert(key, relpath.to_owned());
                    }
                }
            }
        }
        "link" => {
            e.target = std::fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        "char" | "block" => e.rdev = m.rdev(),
        _ => {}
    }
    e
}

/// The tree under `root` (the root itself as `.`), owners made relative to `id_base`,
/// skipping top-level `proc`, `sys`, `dev` and every path in `skip`. Walked depth first in
/// name order, so hard-link structure compares equal between two walks of equal trees.
pub fn of_dir(root: &Path, id_base: u32, skip: &HashSet<String>) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes = HashMap::new();
    out.insert(".".to_owned(), entry(root, ".", id_base, &mut inodes));
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let path = if dir.is_empty() {
            root.to_owned()
        } else {
            root.join(&dir)
        };
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // Depth first in name order: push subdirectories in reverse.
        let mut subdirs = Vec::new();
        for name in names {
            let relpath = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            if dir.is_empty() && ["proc", "sys", "dev"].contains(&name.as_str()) {
                continue;
            }
            if skip.contains(&relpath) {
                continue;
            }
            let e = entry(&root.join(&relpath), &relpath, id_base, &mut inodes);
            if e.kind == "dir" {
                subdirs.push(relpath.clone());
            }
            out.insert(relpath, e);
        }
        stack.extend(subdirs.into_iter().rev());
    }
    out
}

/// The tree instance init `pid` sees, with ids made relative to `id_base`, without its root
/// directory itself; `/proc`, `/sys`, `/dev` and whatever else is mounted inside it (mounted
/// filesystems, not the instance's tree) are left out.
pub fn of_pid(pid: i32, id_base: u32) -> BTreeMap<String, Entry> {
    // Mount points inside the instance (its own view of them). (st_dev cannot tell: overlayfs
    // reports the underlying filesystem's device for files and its own for directories.)
    let mounts: HashSet<String> = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .expect("read the instance's mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.trim_start_matches('/').to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    let mut out = of_dir(
        &PathBuf::from(format!("/proc/{pid}/root")),
        id_base,
        &mounts,
    );
    out.remove(".");
    out
}

/// The tree running instance `name` sees ([`of_pid`] of its init, ids relative to its range).
pub fn of_instance(d: &TestDaemon, name: &str) -> BTreeMap<String, Entry> {
    of_pid(d.pid_of(name), id_base(d, name))
}

/// Panics with the first differences when two views differ.
pub fn assert_same(what: &str, a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>) {
    if a == b {
        return;
    }
    let mut diffs = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => diffs.push(format!("only in the first: {k} {v:?}")),
            Some(w) if w != v => diffs.push(format!("{k}:\n    first  {v:?}\n    second {w:?}")),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            diffs.push(format!("only in the second: {k} {v:?}"));
        }
    }
    diffs.truncate(20);
    panic!("{what}: the views differ:\n  {}", diffs.join("\n  "));
}
