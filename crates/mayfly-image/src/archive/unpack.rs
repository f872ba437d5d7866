//! Turning archive entries into files, directories, links and nodes beneath the destination,
//! one descriptor-relative step at a time.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use tar::EntryType;

use super::Names;
use super::layer::{LayerName, layer_name};
use super::lower::Lower;
use super::meta::{Meta, read_meta, write_xattrs};
use super::meter::Meter;
use super::names::{c_name, create, describe_type, normalize, split, unsafe_entry};
use crate::inode::{Inode, Time, file_type, set_times_fd, stat_at};
use crate::tree::{open_dir_at, open_dir_beneath};
use crate::xattr::Node;
use crate::{ImageError, ImportBudget, Progress, TreeStats};

const COPY_BUFFER: usize = 256 * 1024;

/// How much may be written, and how many entries created, between two looks at the free space
/// of the filesystem (one `fstatvfs` each).
const FREE_CHECK_BYTES: u64 = 16 << 20;
const FREE_CHECK_ENTRIES: u64 = 1024;

/// A path as the unpacker remembers it: 16 bytes of its BLAKE3 hash, so that what it keeps per
/// entry does not grow with the path's length (2 million entries of 4 KiB paths would otherwise
/// take 8 GiB).
pub(super) type PathKey = [u8; 16];

pub(super) fn key(path: &[u8]) -> PathKey {
    let mut out = [0; 16];
    out.copy_from_slice(&blake3::hash(path).as_bytes()[..16]);
    out
}

pub(super) struct Unpacker {
    pub(super) root: OwnedFd,
    pub(super) names: Names,
    /// Every directory made or described, by normalised path (root: empty), with the mtime it
    /// gets at the end. A whiteout leaves the keys of what it removed: the final walk only
    /// visits directories that exist, and a directory made again is inserted again.
    pub(super) dir_times: HashMap<PathKey, Time>,
    /// Regular files unpacked so far, the only permitted hard-link targets (stale keys under a
    /// whiteout fail at the lookup that follows).
    pub(super) files: HashSet<PathKey>,
    /// Directories an entry described (the root included, if a `.` entry did). The others
    /// are implied, and take their attributes from `lower` where it has them.
    described: HashSet<PathKey>,
    /// The layers below an OCI layer (none for a root filesystem or a bottom layer).
    lower: Lower,
    pub(super) stats: TreeStats,
    meter: Rc<Meter>,
    buf: Vec<u8>,
    /// Bytes written and entries made since the free space was last looked at.
    unchecked_bytes: u64,
    unchecked_entries: u64,
}

impl Unpacker {
    pub(super) fn new(root: OwnedFd, names: Names, lower: Lower, meter: Rc<Meter>) -> Self {
        Self {
            root,
            names,
            meter,
            dir_times: HashMap::from([(key(b""), Time::default())]),
            files: HashSet::new(),
            described: HashSet::new(),
            lower,
            stats: TreeStats::default(),
            buf: vec![0; COPY_BUFFER],
            unchecked_bytes: 0,
            unchecked_entries: 0,
        }
    }

    pub(super) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        progress: &dyn Progress,
        budget: &ImportBudget,
    ) -> Result<(), ImageError> {
        budget.add_entry()?;
        self.unchecked_entries += 1;
        if self.unchecked_entries >= FREE_CHECK_ENTRIES {
            self.unchecked_entries = 0;
            budget.check_free(self.root.as_fd(), 0)?;
        }
        let raw_name = entry.path_bytes().into_owned();
        let name = mayfly_api::text::show_bytes(&raw_name);
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let path =
            normalize(&raw_name).map_err(|problem| unsafe_entry(&name, problem.reason("it")))?;
        budget.check_path(&name, &path)?;
        if self.names == Names::Layer {
            match layer_name(&path, kind).map_err(|reason| unsafe_entry(&name, reason))? {
                LayerName::Plain => {}
                LayerName::Skip => return Ok(()),
                LayerName::Opaque => {
                    self.opaque(&path, &name)?;
                    return Ok(());
                }
                LayerName::Whiteout(target) => {
                    if self.whiteout(&target, &name)? {
                        self.stats.add(0, progress);
                    }
                    return Ok(());
                }
            }
        }
        let meta = read_meta(entry, &name)?;
        let bytes = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse
                if !raw_name.ends_with(b"/") =>
            {
                self.file(entry, &path, &name, &meta, budget)?
            }
            // Pre-POSIX archives mark directories by a trailing slash on a regular entry.
            EntryType::Directory | EntryType::Regular => {
                self.dir(&path, &name, &meta)?;
                0
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| ImageError::UnsupportedEntry {
                        entry: name.clone(),
                        kind: "symlink without a target".to_owned(),
                    })?;
                self.symlink(&path, &target, &name, &meta)?;
                0
            }
            EntryType::Link => {
                let target =
                    entry
                        .link_name_bytes()
                        .ok_or_else(|| ImageError::UnsupportedEntry {
                            entry: name.clone(),
                            kind: "hard link without a target".to_owned(),
                        })?;
                self.hard_link(&path, &target, &name)?;
                0
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let header = entry.header();
                let major = header.device_major().map_err(ImageError::bad_archive)?;
                let minor = header.device_minor().map_err(ImageError::bad_archive)?;
                let dev = rfs::makedev(major.unwrap_or(0), minor.unwrap_or(0));
                self.node(&path, file_type, dev, &name, &meta)?;
                0
            }
            other => {
                return Err(ImageError::UnsupportedEntry {
                    entry: name,
                    kind: describe_type(other),
                });
            }
        };
        self.stats.add(bytes, progress);
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &[u8],
        name: &str,
        meta: &Meta,
        budget: &ImportBudget,
    ) -> Result<u64, ImageError> {
        // The header says how much is coming: refuse before writing any of it.
        let size = entry.size();
        budget.check_file(name, size)?;
        if size >= FREE_CHECK_BYTES {
            budget.check_free(self.root.as_fd(), size)?;
        }
        let (parent, leaf) = self.parent(path, name)?;
        self.clear_leaf(parent.as_fd(), &leaf, path, name)?;
        let fd = rfs::openat(
            &parent,
            &leaf,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| create(name, e.into()))?;
        let mut file = File::from(fd);
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(ImageError::bad_archive(err)),
            };
            // Counted before it is written: the first byte past a limit never reaches the disk.
            budget.add_bytes(n as u64)?;
            self.meter.count_content(n as u64)?;
            self.unchecked_bytes += n as u64;
            if self.unchecked_bytes >= FREE_CHECK_BYTES {
                self.unchecked_bytes = 0;
                budget.check_free(self.root.as_fd(), size.saturating_sub(written))?;
            }
            file.write_all(&self.buf[..n])
                .map_err(|source| ImageError::Write {
                    path: PathBuf::from(name),
                    source,
                })?;
            written += n as u64;
        }
        if written != entry.size() {
            return Err(ImageError::bad_archive(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends inside `{name}`"),
            )));
        }
        let fd = file.as_fd();
        self.apply(fd, meta, name)?;
        meta.inode.set_times(fd, Path::new(name))?;
        self.files.insert(key(path));
        Ok(written)
    }

    fn dir(&mut self, path: &[u8], name: &str, meta: &Meta) -> Result<(), ImageError> {
        if path.is_empty() {
            self.apply(self.root.as_fd(), meta, name)?;
        } else {
            let (parent, leaf) = self.parent(path, name)?;
            match stat_at(parent.as_fd(), &leaf) {
                Ok(st) if file_type(&st) == FileType::Directory => {}
                Ok(_) => {
                    rfs::unlinkat(&parent, &leaf, AtFlags::empty()).map_err(|e| {
                        ImageError::Remove {
                            path: PathBuf::from(name),
                            source: e.into(),
                        }
                    })?;
                    self.files.remove(&key(path));
                    mkdir(parent.as_fd(), &leaf, name)?;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    mkdir(parent.as_fd(), &leaf, name)?;
                }
                Err(source) => {
                    return Err(ImageError::Stat {
                        path: PathBuf::from(name),
                        source,
                    });
                }
            }
            let fd = open_dir_beneath(parent.as_fd(), leaf.as_bytes()).map_err(|source| {
                ImageError::Open {
                    path: PathBuf::from(name),
                    source,
                }
            })?;
            self.apply(fd.as_fd(), meta, name)?;
        }
        self.dir_times.insert(key(path), meta.inode.mtime);
        self.described.insert(key(path));
        Ok(())
    }

    fn symlink(
        &mut self,
        path: &[u8],
        target: &[u8],
        name: &str,
        meta: &Meta,
    ) -> Result<(), ImageError> {
        let (parent, leaf) = self.parent(path, name)?;
        self.clear_leaf(parent.as_fd(), &leaf, path, name)?;
        // The target is stored verbatim and never resolved here: absolute targets are normal in
        // a rootfs and only mean something inside the container.
        rfs::symlinkat(target, &parent, &leaf).map_err(|e| create(name, e.into()))?;
        meta.inode
            .set_owner_mode_at(parent.as_fd(), &leaf, FileType::Symlink, Path::new(name))?;
        write_xattrs(Node::At(parent.as_fd(), &leaf), &meta.xattrs, name)?;
        meta.inode
            .set_times_at(parent.as_fd(), &leaf, Path::new(name))
    }

    fn node(
        &mut self,
        path: &[u8],
        kind: FileType,
        dev: rfs::Dev,
        name: &str,
        meta: &Meta,
    ) -> Result<(), ImageError> {
        if path.is_empty() {
            return Err(unsafe_entry(
                name,
                "it would replace the root directory".into(),
            ));
        }
        let (parent, leaf) = self.parent(path, name)?;
        self.clear_leaf(parent.as_fd(), &leaf, path, name)?;
        rfs::mknodat(
            &parent,
            &leaf,
            kind,
            Mode::from_raw_mode(meta.inode.mode),
            dev,
        )
        .map_err(|e| create(name, e.into()))?;
        meta.inode
            .set_owner_mode_at(parent.as_fd(), &leaf, kind, Path::new(name))?;
        write_xattrs(Node::At(parent.as_fd(), &leaf), &meta.xattrs, name)?;
        meta.inode
            .set_times_at(parent.as_fd(), &leaf, Path::new(name))
    }

    fn hard_link(&mut self, path: &[u8], raw_target: &[u8], name: &str) -> Result<(), ImageError> {
        let shown = mayfly_api::text::show_bytes(raw_target);
        let subject = format!("its link target `{shown}`");
        let target = normalize(raw_target).map_err(|p| unsafe_entry(name, p.reason(&subject)))?;
        if target == path {
            return Ok(());
        }
        let not_ours = || {
            unsafe_entry(
                name,
                format!("{subject} is not a regular file unpacked earlier from this archive"),
            )
        };
        if !self.files.contains(&key(&target)) {
            return Err(not_ours());
        }
        let (target_dir, target_leaf) = split(&target);
        let target_parent = open_dir_beneath(self.root.as_fd(), target_dir).map_err(|err| {
            if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                unsafe_entry(name, format!("{subject} is reached through a symlink"))
            } else if matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) {
                // It was unpacked, then a whiteout removed a directory above it.
                not_ours()
            } else {
                ImageError::Open {
                    path: PathBuf::from(&shown),
                    source: err,
                }
            }
        })?;
        let target_leaf = c_name(target_leaf, name)?;
        match stat_at(target_parent.as_fd(), &target_leaf) {
            Ok(st) if file_type(&st) == FileType::RegularFile => {}
            Ok(_) => {
                return Err(unsafe_entry(
                    name,
                    format!("{subject} is not a regular file"),
                ));
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(not_ours()),
            Err(source) => {
                return Err(ImageError::Stat {
                    path: PathBuf::from(&shown),
                    source,
                });
            }
        }
        let (parent, leaf) = self.parent(path, name)?;
        self.clear_leaf(parent.as_fd(), &leaf, path, name)?;
        // No AT_SYMLINK_FOLLOW: the link is made to the target entry itself.
        rfs::linkat(
            &target_parent,
            &target_leaf,
            &parent,
            &leaf,
            AtFlags::empty(),
        )
        .map_err(|e| ImageError::Link {
            path: PathBuf::from(name),
            target: PathBuf::from(&shown),
            source: e.into(),
        })?;
        self.files.insert(key(path));
        Ok(())
    }

    /// Sets owner, mode and xattrs on a file or directory we hold open.
    fn apply(&self, fd: BorrowedFd<'_>, meta: &Meta, name: &str) -> Result<(), ImageError> {
        meta.inode.set_owner_mode(fd, Path::new(name))?;
        write_xattrs(Node::Fd(fd), &meta.xattrs, name)
    }

    /// Opens the parent directory of the non-root `path`, creating missing directories, and
    /// returns it with the final component. Refuses any symlink on the way.
    pub(super) fn parent(
        &mut self,
        path: &[u8],
        name: &str,
    ) -> Result<(OwnedFd, CString), ImageError> {
        let (dir, leaf) = split(path);
        let leaf = c_name(leaf, name)?;
        if let Ok(fd) = open_dir_beneath(self.root.as_fd(), dir) {
            return Ok((fd, leaf));
        }
        // Slow path: something is missing or wrong; walk one component at a time to create what
        // is missing and to name what is wrong.
        let mut cur =
            open_dir_beneath(self.root.as_fd(), b"").map_err(|source| ImageError::Open {
                path: PathBuf::from("."),
                source,
            })?;
        let mut so_far = Vec::new();
        for component in dir.split(|&b| b == b'/') {
            if !so_far.is_empty() {
                so_far.push(b'/');
            }
            so_far.extend_from_slice(component);
            let shown = mayfly_api::text::show_bytes(&so_far);
            let c_component = c_name(component, name)?;
            match stat_at(cur.as_fd(), &c_component) {
                Ok(st) => match file_type(&st) {
                    FileType::Directory => {}
                    FileType::Symlink => {
                        return Err(unsafe_entry(
                            name,
                            format!("it is written through symlink `{shown}`"),
                        ));
                    }
                    _ => {
                        return Err(create(
                            name,
                            io::Error::new(
                                io::ErrorKind::NotADirectory,
                                format!("`{shown}` is not a directory"),
                            ),
                        ));
                    }
                },
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    mkdir(cur.as_fd(), &c_component, &shown)?;
                    self.dir_times.insert(key(&so_far), Time::default());
                }
                Err(source) => {
                    return Err(ImageError::Stat {
                        path: PathBuf::from(shown),
                        source,
                    });
                }
            }
            cur = open_dir_beneath(cur.as_fd(), component).map_err(|source| ImageError::Open {
                path: PathBuf::from(shown),
                source,
            })?;
        }
        Ok((cur, leaf))
    }

    /// Makes room for a non-directory at `leaf`: later entries replace earlier ones, except that
    /// a directory (and everything unpacked into it) is never replaced.
    fn clear_leaf(
        &mut self,
        parent: BorrowedFd<'_>,
        leaf: &CString,
        path: &[u8],
        name: &str,
    ) -> Result<(), ImageError> {
        if path.is_empty() {
            return Err(unsafe_entry(
                name,
                "it would replace the root directory".into(),
            ));
        }
        match stat_at(parent, leaf) {
            Ok(st) if file_type(&st) == FileType::Directory => Err(ImageError::UnsupportedEntry {
                entry: name.to_owned(),
                kind: "a non-directory replacing a directory".to_owned(),
            }),
            Ok(_) => {
                rfs::unlinkat(parent, leaf, AtFlags::empty()).map_err(|e| ImageError::Remove {
                    path: PathBuf::from(name),
                    source: e.into(),
                })?;
                self.files.remove(&key(path));
                Ok(())
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ImageError::Stat {
                path: PathBuf::from(name),
                source,
            }),
        }
    }

    /// Applies directory mtimes, found by walking the tree (creating a child changes its
    /// directory's mtime, so this comes last; setting one does not change its parent's).
    pub(super) fn finish(self) -> Result<TreeStats, ImageError> {
        self.set_dir_times(self.root.as_fd(), &mut Vec::new())?;
        Ok(self.stats)
    }

    /// Sets the mtime of the directory `dir` (at `path`) and of every directory below it. The
    /// recursion is as deep as the tree, which the depth limit bounds.
    fn set_dir_times(&self, dir: BorrowedFd<'_>, path: &mut Vec<u8>) -> Result<(), ImageError> {
        let shown = |path: &[u8]| {
            if path.is_empty() {
                PathBuf::from(".")
            } else {
                PathBuf::from(String::from_utf8_lossy(path).as_ref())
            }
        };
        let read_err = |source: rustix::io::Errno, at: PathBuf| ImageError::Read {
            path: at,
            source: source.into(),
        };
        let mut subdirs = Vec::new();
        for entry in rfs::Dir::read_from(dir).map_err(|e| read_err(e, shown(path)))? {
            let entry = entry.map_err(|e| read_err(e, shown(path)))?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => stat_at(dir, name)
                    .map(|st| file_type(&st) == FileType::Directory)
                    .map_err(|source| ImageError::Stat {
                        path: shown(path),
                        source,
                    })?,
                _ => false,
            };
            if is_dir {
                subdirs.push(name.to_owned());
            }
        }
        for name in subdirs {
            let len = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.to_bytes());
            let sub = open_dir_at(dir, &name).map_err(|source| ImageError::Open {
                path: shown(path),
                source,
            })?;
            self.set_dir_times(sub.as_fd(), path)?;
            path.truncate(len);
        }
        let mut mtime = self.dir_times.get(&key(path)).copied().unwrap_or_default();
        if !self.lower.is_empty()
            && !self.described.contains(&key(path))
            && let Some((inode, xattrs)) = self.lower.dir(path)?
        {
            // Implied here, there below: as the layers below show it.
            let name = shown(path);
            inode.set_owner_mode(dir, &name)?;
            write_xattrs(Node::Fd(dir), &xattrs, &name.to_string_lossy())?;
            mtime = inode.mtime;
        }
        set_times_fd(dir, mtime, &shown(path))
    }
}

pub(super) fn mkdir(parent: BorrowedFd<'_>, leaf: &CString, name: &str) -> Result<(), ImageError> {
    rfs::mkdirat(parent, leaf, Mode::from_raw_mode(0o700)).map_err(|e| create(name, e.into()))?;
    // Root-owned 0755 whatever the umask or a setgid parent would have made of it; an entry for
    // this directory later in the archive overrides it.
    let fd = open_dir_beneath(parent, leaf.as_bytes()).map_err(|e| create(name, e))?;
    Inode::root(0o755, Time::default()).set_owner_mode(fd.as_fd(), Path::new(name))
}
