//! Test fixtures: trees described entry by entry, built on disk directly or written as tar
//! archives by hand, and checks of trees against such descriptions that use plain `stat` (std)
//! rather than this crate's code, so a broken digest cannot hide a broken copy.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, Timestamps};
use rustix::time::Timespec;

/// What an entry is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Dir,
    File(&'static [u8]),
    Symlink(&'static str),
    /// A hard link to the earlier entry at this path; its own attributes are ignored.
    HardLink(&'static str),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One entry of a tree; `path` is relative, empty for the root.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) path: &'static str,
    pub(crate) kind: Kind,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: (i64, u32),
    pub(crate) xattrs: &'static [(&'static str, &'static [u8])],
}

pub(crate) const fn spec(path: &'static str, kind: Kind, mode: u32, mtime: (i64, u32)) -> Spec {
    Spec {
        path,
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime,
        xattrs: &[],
    }
}

pub(crate) const fn owned(mut s: Spec, uid: u32, gid: u32) -> Spec {
    s.uid = uid;
    s.gid = gid;
    s
}

pub(crate) const fn with_xattrs(
    mut s: Spec,
    xattrs: &'static [(&'static str, &'static [u8])],
) -> Spec {
    s.xattrs = xattrs;
    s
}

/// A v2 `security.capability` value granting `cap_net_bind_service` (effective, permitted).
pub(crate) const CAP_NET_BIND_SERVICE: &[u8] = &[
    0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x00, 0x04, 0x00, 0x00, // permitted, low word: bit 10
    0x00, 0x00, 0x00, 0x00, // inheritable, low word
    0x00, 0x00, 0x00, 0x00, // permitted, high word
    0x00, 0x00, 0x00, 0x00, // inheritable, high word
];

/// Every entry type and attribute an imported tree may carry, parents before children.
pub(crate) const SAMPLE: &[Spec] = &[
    spec("", Kind::Dir, 0o750, (1_600_000_000, 500_000_000)),
    spec(
        "a-b",
        Kind::File(b"sorts between `a` and `a/`"),
        0o644,
        (1_600_000_001, 0),
    ),
    spec("a", Kind::Dir, 0o755, (1_600_000_002, 2)),
    spec("a/c", Kind::File(b"c"), 0o600, (1_600_000_003, 3)),
    spec("bin", Kind::Dir, 0o755, (1_600_000_004, 4)),
    spec(
        "bin/busybox",
        Kind::File(b"#!/bin/sh\necho hi\n"),
        0o755,
        (1_600_000_005, 5),
    ),
    owned(
        spec(
            "bin/sh",
            Kind::Symlink("/bin/busybox"),
            0o777,
            (1_600_000_006, 6),
        ),
        1234,
        5678,
    ),
    spec(
        "bin/rel",
        Kind::Symlink("../etc/passwd"),
        0o777,
        (1_600_000_007, 7),
    ),
    spec("dev", Kind::Dir, 0o755, (1_600_000_008, 8)),
    spec("dev/null", Kind::Char(1, 3), 0o666, (1_600_000_009, 9)),
    owned(
        spec("dev/sda", Kind::Block(8, 0), 0o660, (1_600_000_010, 10)),
        0,
        6,
    ),
    owned(
        spec("empty", Kind::Dir, 0o700, (1_600_000_011, 11)),
        1234,
        5678,
    ),
    owned(
        spec("etc", Kind::Dir, 0o755, (1_600_000_012, 12)),
        1234,
        5678,
    ),
    with_xattrs(
        owned(
            spec(
                "etc/passwd",
                Kind::File(b"root:x:0:0::/root:/bin/sh\n"),
                0o4755,
                (1_650_000_000, 123_456_789),
            ),
            1234,
            5678,
        ),
        &[("user.foo", b"bar")],
    ),
    spec("etc/passwd.hard", Kind::HardLink("etc/passwd"), 0, (0, 0)),
    spec("nested", Kind::Dir, 0o755, (1_600_000_013, 13)),
    spec("nested/a", Kind::Dir, 0o755, (1_600_000_014, 14)),
    owned(
        spec("nested/a/b", Kind::Dir, 0o2750, (1_600_000_015, 15)),
        0,
        5678,
    ),
    spec("nested/a/b/c", Kind::File(b""), 0o640, (1_600_000_016, 16)),
    spec("run", Kind::Dir, 0o755, (1_600_000_017, 17)),
    spec("run/fifo", Kind::Fifo, 0o600, (1_600_000_018, 18)),
    spec("tmp", Kind::Dir, 0o1777, (1_600_000_019, 19)),
    with_xattrs(
        spec(
            "ping",
            Kind::File(b"\x7fELF pretend"),
            0o755,
            (1_600_000_020, 20),
        ),
        &[
            ("security.capability", CAP_NET_BIND_SERVICE),
            ("user.a", b""),
            ("user.b", b"\0binary\xff"),
        ],
    ),
];

/// Builds `specs` under `root` (an existing directory) with std and rustix calls only.
pub(crate) fn materialize(root: &Path, specs: &[Spec]) {
    for s in specs {
        let path = root.join(s.path);
        match s.kind {
            Kind::Dir if s.path.is_empty() => {}
            Kind::Dir => fs::create_dir(&path).unwrap(),
            Kind::File(content) => fs::write(&path, content).unwrap(),
            Kind::Symlink(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            Kind::HardLink(target) => {
                fs::hard_link(root.join(target), &path).unwrap();
                continue;
            }
            Kind::Char(major, minor) => {
                mknod(&path, FileType::CharacterDevice, s.mode, major, minor)
            }
            Kind::Block(major, minor) => mknod(&path, FileType::BlockDevice, s.mode, major, minor),
            Kind::Fifo => mknod(&path, FileType::Fifo, s.mode, 0, 0),
        }
        std::os::unix::fs::lchown(&path, Some(s.uid), Some(s.gid)).unwrap();
        if !matches!(s.kind, Kind::Symlink(_)) {
            fs::set_permissions(&path, fs::Permissions::from_mode(s.mode)).unwrap();
        }
        for (name, value) in s.xattrs {
            rfs::lsetxattr(&path, *name, value, rfs::XattrFlags::empty()).unwrap();
        }
    }
    // Children are listed after their parents: set times backwards so no later creation
    // disturbs a directory's mtime.
    for s in specs.iter().rev() {
        if !matches!(s.kind, Kind::HardLink(_)) {
            set_mtime(&root.join(s.path), s.mtime);
        }
    }
}

pub(crate) fn mknod(path: &Path, kind: FileType, mode: u32, major: u32, minor: u32) {
    rfs::mknodat(
        rfs::CWD,
        path,
        kind,
        Mode::from_raw_mode(mode),
        rfs::makedev(major, minor),
    )
    .unwrap();
}

pub(crate) fn set_mtime(path: &Path, (sec, nsec): (i64, u32)) {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: i64::from(nsec),
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rfs::utimensat(rfs::CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// Asserts that the tree at `root` has exactly the entries of `specs` with all their attributes
/// (xattrs those of the spec that `keep` accepts), using `lstat`.
pub(crate) fn assert_matches(root: &Path, specs: &[Spec], keep: impl Fn(&str) -> bool) {
    let mut expected_paths: Vec<&str> = specs.iter().map(|s| s.path).collect();
    expected_paths.sort_unstable();
    let mut found = Vec::new();
    list_all(root, root, &mut found);
    found.sort();
    assert_eq!(found, expected_paths, "entries of {}", root.display());
    for s in specs {
        let path = root.join(s.path);
        let meta = fs::symlink_metadata(&path).unwrap();
        let what = format!("`{}`", s.path);
        if let Kind::HardLink(target) = s.kind {
            let target = fs::symlink_metadata(root.join(target)).unwrap();
            assert_eq!(
                (meta.dev(), meta.ino()),
                (target.dev(), target.ino()),
                "{what} is a hard link"
            );
            continue;
        }
        let file_type = meta.file_type();
        match s.kind {
            Kind::Dir => assert!(file_type.is_dir(), "{what} is a directory"),
            Kind::File(content) => {
                assert!(file_type.is_file(), "{what} is a file");
                assert_eq!(fs::read(&path).unwrap(), content, "{what} content");
            }
            Kind::Symlink(target) => {
                assert!(file_type.is_symlink(), "{what} is a symlink");
                assert_eq!(
                    fs::read_link(&path).unwrap(),
                    Path::new(target),
                    "{what} target"
                );
            }
            Kind::Char(major, minor) | Kind::Block(major, minor) => {
                let want_char = matches!(s.kind, Kind::Char(..));
                assert_eq!(
                    meta.mode() & 0o170_000,
                    if want_char { 0o020_000 } else { 0o060_000 },
                    "{what} type"
                );
                assert_eq!(meta.rdev(), rfs::makedev(major, minor), "{what} device");
            }
            Kind::Fifo => assert_eq!(meta.mode() & 0o170_000, 0o010_000, "{what} is a fifo"),
            Kind::HardLink(_) => unreachable!(),
        }
        assert_eq!(meta.mode() & 0o7777, s.mode, "{what} mode");
        assert_eq!((meta.uid(), meta.gid()), (s.uid, s.gid), "{what} owner");
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (s.mtime.0, i64::from(s.mtime.1)),
            "{what} mtime"
        );
        let want: BTreeMap<String, Vec<u8>> = s
            .xattrs
            .iter()
            .filter(|(name, _)| keep(name))
            .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
            .collect();
        assert_eq!(xattrs_of(&path), want, "{what} xattrs");
    }
}

fn list_all(root: &Path, dir: &Path, out: &mut Vec<String>) {
    if dir == root {
        out.push(String::new());
    }
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        out.push(
            path.strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned(),
        );
        if entry.file_type().unwrap().is_dir() {
            list_all(root, &path, out);
        }
    }
}

/// All xattrs of `path` (not following it), by name.
pub(crate) fn xattrs_of(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0; 4096];
    let len = rfs::llistxattr(path, &mut names[..]).unwrap();
    names[..len]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let mut value = vec![0; 4096];
            let len = rfs::lgetxattr(path, name, &mut value[..]).unwrap();
            value.truncate(len);
            (String::from_utf8(name.to_vec()).unwrap(), value)
        })
        .collect()
}

/// A tar archive written header by header, so tests can say things `tar::Builder` refuses to.
#[derive(Debug, Default)]
pub(crate) struct TarWriter {
    buf: Vec<u8>,
}

/// One raw archive member.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Raw<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) typeflag: u8,
    pub(crate) link: &'a [u8],
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: u64,
    pub(crate) dev: (u32, u32),
    pub(crate) data: &'a [u8],
}

impl<'a> Raw<'a> {
    pub(crate) const fn new(name: &'a [u8], typeflag: u8) -> Self {
        Self {
            name,
            typeflag,
            link: b"",
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            dev: (0, 0),
            data: b"",
        }
    }
}

impl TarWriter {
    /// Appends a member, preceded by a PAX header with `pax` records if there are any.
    pub(crate) fn add(&mut self, raw: Raw<'_>, pax: &[(&str, &[u8])]) -> &mut Self {
        if !pax.is_empty() {
            let mut records = Vec::new();
            for (key, value) in pax {
                let body_len = 1 + key.len() + 1 + value.len() + 1;
                let mut len = body_len + 1;
                while len != body_len + len.to_string().len() {
                    len = body_len + len.to_string().len();
                }
                records.extend_from_slice(format!("{len} {key}=").as_bytes());
                records.extend_from_slice(value);
                records.push(b'\n');
            }
            self.member(Raw::new(b"PaxHeader", b'x'), &records);
        }
        self.member(raw, raw.data);
        self
    }

    fn member(&mut self, raw: Raw<'_>, data: &[u8]) {
        let mut header = tar::Header::new_ustar();
        {
            let ustar = header.as_ustar_mut().unwrap();
            ustar.name[..raw.name.len()].copy_from_slice(raw.name);
            ustar.linkname[..raw.link.len()].copy_from_slice(raw.link);
        }
        header.set_mode(raw.mode);
        header.set_uid(raw.uid);
        header.set_gid(raw.gid);
        header.set_mtime(raw.mtime);
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::new(raw.typeflag));
        header.set_device_major(raw.dev.0).unwrap();
        header.set_device_minor(raw.dev.1).unwrap();
        header.set_cksum();
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().next_multiple_of(512), 0);
    }

    /// The archive with its end-of-archive marker.
    pub(crate) fn finish(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.resize(out.len() + 1024, 0);
        out
    }
}

/// `specs` as a tar archive: PAX records for nanosecond mtimes and xattrs, like GNU tar's
/// `--format=posix --xattrs`.
pub(crate) fn tar_of(specs: &[Spec]) -> Vec<u8> {
    let mut tar = TarWriter::default();
    for s in specs {
        let name = match s.kind {
            Kind::Dir if s.path.is_empty() => "./".to_owned(),
            Kind::Dir => format!("{}/", s.path),
            _ => s.path.to_owned(),
        };
        let (typeflag, link, data, dev) = match s.kind {
            Kind::Dir => (b'5', "", &b""[..], (0, 0)),
            Kind::File(content) => (b'0', "", content, (0, 0)),
            Kind::Symlink(target) => (b'2', target, &b""[..], (0, 0)),
            Kind::HardLink(target) => (b'1', target, &b""[..], (0, 0)),
            Kind::Char(major, minor) => (b'3', "", &b""[..], (major, minor)),
            Kind::Block(major, minor) => (b'4', "", &b""[..], (major, minor)),
            Kind::Fifo => (b'6', "", &b""[..], (0, 0)),
        };
        let mtime = format!("{}.{:09}", s.mtime.0, s.mtime.1);
        let xattr_keys: Vec<(String, &[u8])> = s
            .xattrs
            .iter()
            .map(|(n, v)| (format!("SCHILY.xattr.{n}"), *v))
            .collect();
        let mut pax: Vec<(&str, &[u8])> = vec![("mtime", mtime.as_bytes())];
        pax.extend(xattr_keys.iter().map(|(k, v)| (k.as_str(), *v)));
        tar.add(
            Raw {
                name: name.as_bytes(),
                typeflag,
                link: link.as_bytes(),
                mode: s.mode,
                uid: u64::from(s.uid),
                gid: u64::from(s.gid),
                mtime: u64::try_from(s.mtime.0).unwrap(),
                dev,
                data,
            },
            &pax,
        );
    }
    tar.finish()
}

/// A tmpfs mounted for the life of the value.
#[derive(Debug)]
pub(crate) struct Tmpfs(PathBuf);

impl Tmpfs {
    pub(crate) fn mount(at: &Path, options: &std::ffi::CStr) -> Self {
        rustix::mount::mount(
            "mayfly-test",
            at,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            options,
        )
        .unwrap();
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH).unwrap();
    }
}

/// A read-only overlayfs mount of `layers` (lowest first, no upper directory), made with the
/// new mount API and detached when the value is dropped, so a failing test leaves no mount.
#[derive(Debug)]
pub(crate) struct Overlay(PathBuf);

impl Overlay {
    pub(crate) fn mount(at: &Path, layers: &[PathBuf]) -> Self {
        use rustix::mount::{
            FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
            fsconfig_set_string, fsmount, fsopen, move_mount,
        };
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).unwrap();
        // `lowerdir+` stacks in the order given, topmost first.
        for layer in layers.iter().rev() {
            fsconfig_set_string(&fs, "lowerdir+", layer).unwrap();
        }
        fsconfig_create(&fs).unwrap();
        let mnt = fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_RDONLY,
        )
        .unwrap();
        move_mount(
            &mnt,
            "",
            rfs::CWD,
            at,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .unwrap();
        Self(at.to_owned())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH).unwrap();
    }
}

/// A budget under the default limits, as the daemon's.
pub(crate) fn budget() -> crate::ImportBudget {
    crate::ImportBudget::new(crate::ImportLimits::default())
}
