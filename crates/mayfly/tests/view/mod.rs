//! What an instance sees, read from the host through `/proc/<init pid>/root`: every path with
//! its type, permission bits, owner (relative to the instance's id range), size, content hash,
//! link target, mtime, `user.*` xattrs and hard-link structure. Two views compare equal when
//! the instances show exactly the same tree, whatever host ids or inode numbers they use.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

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
    /// Modification time, seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// `user.*` xattrs.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For the second and later names of a hard-linked file: the first name.
    pub link_of: Option<String>,
}

fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "link"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else {
        "socket"
    }
}

fn user_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names) else {
        return out;
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !name.starts_with(b"user.") {
            continue;
        }
        let mut value = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, name, &mut value) {
            value.truncate(len);
            out.insert(String::from_utf8_lossy(name).into_owned(), value);
        }
    }
    out
}

/// The tree instance init `pid` sees, with ids made relative to `id_base`; `/proc`, `/sys`
/// and `/dev` (mounted filesystems, not the instance's tree) are left out.
pub fn of_pid(pid: i32, id_base: u32) -> BTreeMap<String, Entry> {
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    // Mount points inside the instance (its own view of them): what is mounted there is not
    // the instance's tree. (st_dev cannot tell: overlayfs reports the underlying filesystem's
    // device for files and its own for directories.)
    let mounts: std::collections::HashSet<String> =
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .expect("read the instance's mountinfo")
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|m| m.trim_start_matches('/').to_owned())
            .filter(|m| !m.is_empty())
            .collect();
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    let mut stack = vec![String::new()];
    let rel = |id: u32| -> i64 {
        let base = i64::from(id_base);
        let v = i64::from(id);
        if v >= base && v < base + 65536 {
            v - base
        } else {
            v
        }
    };
    while let Some(dir) = stack.pop() {
        let path = if dir.is_empty() {
            root.clone()
        } else {
            root.join(&dir)
        };
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .expect("read dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let _ = meta;
        for name in names {
            let relpath = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            if dir.is_empty() && ["proc", "sys", "dev"].contains(&name.as_str()) {
                continue;
            }
            if mounts.contains(&relpath) {
                continue;
            }
            let p = root.join(&relpath);
            let m = std::fs::symlink_metadata(&p).expect("stat entry");
            let k = kind(m.file_type());
            let mut e = Entry {
                kind: k,
                mode: m.mode() & 0o7777,
                uid: rel(m.uid()),
                gid: rel(m.gid()),
                size: 0,
                content: 0,
                target: String::new(),
                mtime: (m.mtime(), m.mtime_nsec()),
                xattrs: user_xattrs(&p),
                link_of: None,
            };
            match k {
                "file" => {
                    let data = std::fs::read(&p).expect("read file");
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    data.hash(&mut h);
                    e.size = m.len();
                    e.content = h.finish();
                    if m.nlink() > 1 {
                        let key = (m.dev(), m.ino());
                        match inodes.get(&key) {
                            Some(first) => e.link_of = Some(first.clone()),
                            None => {
                                inodes.insert(key, relpath.clone());
                            }
                        }
                    }
                }
                "link" => {
                    e.target = std::fs::read_link(&p)
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_default();
                }
                "dir" => stack.push(relpath.clone()),
                _ => {}
            }
            out.insert(relpath, e);
        }
    }
    out
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
