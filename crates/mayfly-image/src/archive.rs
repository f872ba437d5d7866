//! Unpacking rootfs tarballs and OCI image layers: the one place where untrusted input becomes
//! files, as root.
//!
//! Invariants, each enforced here rather than trusted to the tar reader:
//! - every name is normalised and refused if absolute or containing `..`;
//! - every parent directory is resolved from the destination's descriptor with `openat2`
//!   (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | …`), so nothing is ever written through a symlink,
//!   whether the archive planted it or not, and nothing leaves the destination's mount;
//! - leaves are created with `O_EXCL`/`O_NOFOLLOW`, `symlinkat`, `mknodat` or `linkat`, none of
//!   which follow a symlink at the final component;
//! - a hard link may only point at a regular file this archive already unpacked;
//! - owners are the numeric ids of the header, never looked up by name on the host;
//! - only portable xattrs survive ([`XattrPolicy::Portable`]): an archive must not be able to
//!   smuggle in `trusted.overlay.*` and change how overlayfs reads the layer.
//!
//! An OCI layer is unpacked by the same code with one difference, its whiteout names: where a
//! rootfs tarball's `.wh.x` is just a file, a layer's becomes the overlay whiteout or opaque
//! marker it stands for. Only we write those, in canonical form, so the layer digests the same
//! whichever tool made the archive.
//!
//! Directories the archive does not describe itself (the root, and parents it leaves out) are
//! root-owned, mode 0755, mtime 0, so the resulting tree, and its digest, depends only on the
//! archive. Directory mtimes are applied at the very end, deepest first, because creating their
//! children changes them.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use tar::EntryType;

use crate::inode::{Inode, PERMISSION_BITS, Time, device, file_type, set_times_fd, stat_at};
use crate::tree::{list_dir, open_dir_beneath, open_root, remove_below};
use crate::xattr::{self, Node, OPAQUE, XattrPolicy, Xattrs};
use crate::{ImageError, Progress, TreeStats};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
const BZIP2_MAGIC: &[u8] = b"BZh";
const PAX_XATTR: &[u8] = b"SCHILY.xattr.";
const PAX_SPARSE: &[u8] = b"GNU.sparse.";
const COPY_BUFFER: usize = 256 * 1024;

/// Unpacks a tar archive (plain, gzip or zstd, told apart by their first bytes) into `dest`, an
/// existing empty directory, and returns what it wrote: one entry per archive member applied
/// (a `.` member and hard links included, implied parent directories not), and the bytes of
/// regular-file content.
///
/// The archive is untrusted: see the module documentation for what is refused. A `.` entry sets
/// the metadata of `dest` itself; otherwise `dest` becomes root-owned, mode 0755, mtime 0. On
/// error, whatever was unpacked so far stays in `dest` for the caller to remove; nothing is ever
/// written outside it.
pub fn unpack_archive<R: Read>(
    input: R,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<TreeStats, ImageError> {
    unpack(input, dest, progress, Names::Plain)
}

/// Unpacks an OCI image layer (a "changeset" tarball: plain, gzip or zstd) into `dest`, an
/// existing empty directory, as an overlayfs layer, with every check of [`unpack_archive`].
///
/// OCI whiteouts become overlay ones: an entry `dir/.wh.NAME` becomes a whiteout at `dir/NAME`
/// (a root-owned 0:0 character device with mode 0 and mtime 0), replacing whatever this archive
/// put there before, a whole directory included; `dir/.wh..wh..opq` marks `dir` opaque
/// (`trusted.overlay.opaque` = `y`), creating it like an implied parent if the archive has not.
/// Other `.wh..wh.` names are AUFS bookkeeping and are skipped. A hard link or symlink named
/// `.wh.*`, a whiteout of `.` or `..`, and a path that goes through a `.wh.` name are refused.
/// Whiteouts count as entries in the returned stats; opaque markers and skipped names do not.
pub fn unpack_layer_archive<R: Read>(
    input: R,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<TreeStats, ImageError> {
    unpack(input, dest, progress, Names::Layer)
}

/// Whether `.wh.` names are ordinary files or OCI whiteouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    /// A rootfs tarball: every name is a file.
    Plain,
    /// An OCI layer: `.wh.` names are whiteouts and opaque markers.
    Layer,
}

fn unpack<R: Read>(
    input: R,
    dest: &Path,
    progress: &dyn Progress,
    meaning: Names,
) -> Result<TreeStats, ImageError> {
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
    Inode::root(0o755, Time::default()).set_owner_mode(root.as_fd(), dest)?;

    let mut stream = EndTracker {
        inner: decompress(input)?,
        reached_end: false,
    };
    let mut unpacker = Unpacker {
        root,
        names: meaning,
        dir_times: HashMap::from([(Vec::new(), Time::default())]),
        files: HashSet::new(),
        stats: TreeStats::default(),
        buf: vec![0; COPY_BUFFER],
    };
    {
        let mut archive = tar::Archive::new(&mut stream);
        let mut first = true;
        for entry in archive.entries().map_err(ImageError::bad_archive)? {
            let entry = entry.map_err(|e| {
                if first {
                    // Nothing readable at all: say what was expected rather than which
                    // header field looked odd.
                    ImageError::bad_archive(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("it does not start with a tar header ({e})"),
                    ))
                } else {
                    ImageError::bad_archive(e)
                }
            })?;
            first = false;
            unpacker.entry(entry, progress)?;
        }
    }
    // The tar reader also stops at the end of the stream, so a tarball cut at a block boundary
    // would look complete; the end-of-archive marker is what tells them apart.
    if stream.reached_end {
        return Err(ImageError::bad_archive(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the archive ends without an end-of-archive marker",
        )));
    }
    // Reading to the end makes the decompressor check its trailing checksum.
    io::copy(&mut stream, &mut io::sink()).map_err(ImageError::bad_archive)?;
    unpacker.finish()
}

/// Picks the decoder from the first bytes of the stream.
fn decompress<'a, R: Read + 'a>(mut input: R) -> Result<Box<dyn Read + 'a>, ImageError> {
    let mut magic = [0; 6];
    let mut len = 0;
    while len < magic.len() {
        match input.read(&mut magic[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(ImageError::bad_archive(err)),
        }
    }
    let head = &magic[..len];
    let whole = io::Cursor::new(magic).take(len as u64).chain(input);
    if head.starts_with(GZIP_MAGIC) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(whole)))
    } else if head.starts_with(ZSTD_MAGIC) {
        Ok(Box::new(
            zstd::Decoder::new(whole).map_err(ImageError::bad_archive)?,
        ))
    } else if head.starts_with(XZ_MAGIC) || head.starts_with(BZIP2_MAGIC) {
        Err(ImageError::bad_archive(io::Error::new(
            io::ErrorKind::Unsupported,
            "only plain, gzip and zstd tarballs are supported",
        )))
    } else {
        Ok(Box::new(whole))
    }
}

/// Remembers whether the decompressed stream ran out, as opposed to the tar reader stopping at
/// an end-of-archive marker.
struct EndTracker<R> {
    inner: R,
    reached_end: bool,
}

impl<R: Read> Read for EndTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.reached_end = true;
        }
        Ok(n)
    }
}

struct Unpacker {
    root: OwnedFd,
    names: Names,
    /// Every directory in the tree by normalised path (root: empty), with the mtime it gets at
    /// the end.
    dir_times: HashMap<Vec<u8>, Time>,
    /// Regular files unpacked so far, the only permitted hard-link targets.
    files: HashSet<Vec<u8>>,
    stats: TreeStats,
    buf: Vec<u8>,
}

/// What the header and its PAX records say about an entry besides name and type.
struct Meta {
    inode: Inode,
    xattrs: Xattrs,
}

impl Unpacker {
    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        progress: &dyn Progress,
    ) -> Result<(), ImageError> {
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let path =
            normalize(&raw_name).map_err(|problem| unsafe_entry(&name, problem.reason("it")))?;
        if self.names == Names::Layer {
            match layer_name(&path, kind).map_err(|reason| unsafe_entry(&name, reason))? {
                LayerName::Plain => {}
                LayerName::Skip => return Ok(()),
                LayerName::Opaque => {
                    self.opaque(&path, &name)?;
                    return Ok(());
                }
                LayerName::Whiteout(target) => {
                    self.whiteout(&target, &name)?;
                    self.stats.add(0, progress);
                    return Ok(());
                }
            }
        }
        let meta = read_meta(&mut entry, &name)?;
        let bytes = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse
                if !raw_name.ends_with(b"/") =>
            {
                self.file(&mut entry, &path, &name, &meta)?
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
    ) -> Result<u64, ImageError> {
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
        self.files.insert(path.to_vec());
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
                    self.files.remove(path);
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
        self.dir_times.insert(path.to_vec(), meta.inode.mtime);
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
        let shown = String::from_utf8_lossy(raw_target);
        let subject = format!("its link target `{shown}`");
        let target = normalize(raw_target).map_err(|p| unsafe_entry(name, p.reason(&subject)))?;
        if target == path {
            return Ok(());
        }
        if !self.files.contains(&target) {
            return Err(unsafe_entry(
                name,
                format!("{subject} is not a regular file unpacked earlier from this archive"),
            ));
        }
        let (target_dir, target_leaf) = split(&target);
        let target_parent = open_dir_beneath(self.root.as_fd(), target_dir).map_err(|err| {
            if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                unsafe_entry(name, format!("{subject} is reached through a symlink"))
            } else {
                ImageError::Open {
                    path: PathBuf::from(shown.as_ref()),
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
            Err(source) => {
                return Err(ImageError::Stat {
                    path: PathBuf::from(shown.as_ref()),
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
            target: PathBuf::from(shown.as_ref()),
            source: e.into(),
        })?;
        self.files.insert(path.to_vec());
        Ok(())
    }

    /// Marks the parent directory of the opaque marker at `path` opaque, creating the directory
    /// (and its parents) if the archive has not yet.
    fn opaque(&mut self, path: &[u8], name: &str) -> Result<(), ImageError> {
        let (dir, _) = self.parent(path, name)?;
        // Written by us, not taken from the archive: the portable-xattr rule is about what an
        // archive may say, and this is the one overlay xattr a layer is meant to carry.
        xattr::write(Node::Fd(dir.as_fd()), OPAQUE, b"y").map_err(|source| ImageError::SetXattr {
            path: PathBuf::from(name),
            name: String::from_utf8_lossy(OPAQUE).into_owned(),
            source,
        })
    }

    /// Puts a canonical whiteout at `target`, replacing whatever is there, a directory and all
    /// it holds included.
    fn whiteout(&mut self, target: &[u8], name: &str) -> Result<(), ImageError> {
        let (parent, leaf) = self.parent(target, name)?;
        match stat_at(parent.as_fd(), &leaf) {
            Ok(st) => {
                let is_dir = file_type(&st) == FileType::Directory;
                if is_dir {
                    let sub =
                        open_dir_beneath(parent.as_fd(), leaf.as_bytes()).map_err(|source| {
                            ImageError::Open {
                                path: PathBuf::from(name),
                                source,
                            }
                        })?;
                    remove_below(sub.as_fd(), device(&st), Path::new(name))?;
                }
                let flags = if is_dir {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                rfs::unlinkat(&parent, &leaf, flags).map_err(|e| ImageError::Remove {
                    path: PathBuf::from(name),
                    source: e.into(),
                })?;
                let below = |path: &Vec<u8>| {
                    path.strip_prefix(target)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
                };
                self.files.retain(|path| !below(path));
                self.dir_times.retain(|path, _| !below(path));
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ImageError::Stat {
                    path: PathBuf::from(name),
                    source,
                });
            }
        }
        let canonical = Inode::root(0, Time::default());
        rfs::mknodat(
            &parent,
            &leaf,
            FileType::CharacterDevice,
            Mode::empty(),
            rfs::makedev(0, 0),
        )
        .map_err(|e| create(name, e.into()))?;
        canonical.set_owner_mode_at(
            parent.as_fd(),
            &leaf,
            FileType::CharacterDevice,
            Path::new(name),
        )?;
        canonical.set_times_at(parent.as_fd(), &leaf, Path::new(name))
    }

    /// Sets owner, mode and xattrs on a file or directory we hold open.
    fn apply(&self, fd: BorrowedFd<'_>, meta: &Meta, name: &str) -> Result<(), ImageError> {
        meta.inode.set_owner_mode(fd, Path::new(name))?;
        write_xattrs(Node::Fd(fd), &meta.xattrs, name)
    }

    /// Opens the parent directory of the non-root `path`, creating missing directories, and
    /// returns it with the final component. Refuses any symlink on the way.
    fn parent(&mut self, path: &[u8], name: &str) -> Result<(OwnedFd, CString), ImageError> {
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
            let shown = String::from_utf8_lossy(&so_far).into_owned();
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
                    self.dir_times.entry(so_far.clone()).or_default();
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
                self.files.remove(path);
                Ok(())
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ImageError::Stat {
                path: PathBuf::from(name),
                source,
            }),
        }
    }

    /// Applies directory mtimes, deepest first.
    fn finish(self) -> Result<TreeStats, ImageError> {
        let mut dirs: Vec<_> = self.dir_times.into_iter().collect();
        let depth = |path: &[u8]| {
            if path.is_empty() {
                0
            } else {
                1 + path.iter().filter(|&&b| b == b'/').count()
            }
        };
        dirs.sort_by(|(a, _), (b, _)| depth(b).cmp(&depth(a)).then_with(|| a.cmp(b)));
        for (path, mtime) in dirs {
            let shown = if path.is_empty() {
                PathBuf::from(".")
            } else {
                PathBuf::from(String::from_utf8_lossy(&path).as_ref())
            };
            let fd =
                open_dir_beneath(self.root.as_fd(), &path).map_err(|source| ImageError::Open {
                    path: shown.clone(),
                    source,
                })?;
            set_times_fd(fd.as_fd(), mtime, &shown)?;
        }
        Ok(self.stats)
    }
}

/// Reads owner, mode, mtime (with PAX nanoseconds) and portable xattrs of an entry.
fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, ImageError> {
    let header = entry.header();
    let mode = header.mode().map_err(ImageError::bad_archive)? & PERMISSION_BITS;
    let id = |value: u64, what: &str| {
        u32::try_from(value)
            .ok()
            .filter(|&id| id != u32::MAX)
            .ok_or_else(|| ImageError::UnsupportedEntry {
                entry: name.to_owned(),
                kind: format!("{what} {value} is not a valid id"),
            })
    };
    let uid = id(header.uid().map_err(ImageError::bad_archive)?, "owner")?;
    let gid = id(header.gid().map_err(ImageError::bad_archive)?, "group")?;
    let header_mtime = header.mtime().map_err(ImageError::bad_archive)?;
    let mut mtime = Time {
        sec: i64::try_from(header_mtime).map_err(|_| bad_field("mtime", name))?,
        nsec: 0,
    };
    let mut xattrs = Xattrs::new();
    if let Some(records) = entry.pax_extensions().map_err(ImageError::bad_archive)? {
        for record in records {
            let record = record.map_err(ImageError::bad_archive)?;
            let key = record.key_bytes();
            if key == b"mtime" {
                mtime = parse_pax_time(record.value_bytes())
                    .ok_or_else(|| bad_field("PAX mtime", name))?;
            } else if let Some(xattr) = key.strip_prefix(PAX_XATTR) {
                if XattrPolicy::Portable.keeps(xattr) {
                    xattrs.push((xattr.to_vec(), record.value_bytes().to_vec()));
                }
            } else if key.starts_with(PAX_SPARSE) {
                return Err(ImageError::UnsupportedEntry {
                    entry: name.to_owned(),
                    kind: "PAX sparse file".to_owned(),
                });
            }
        }
    }
    Ok(Meta {
        inode: Inode {
            mode,
            uid,
            gid,
            atime: mtime,
            mtime,
        },
        xattrs,
    })
}

fn bad_field(field: &str, name: &str) -> ImageError {
    ImageError::bad_archive(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad {field} for `{name}`"),
    ))
}

/// Parses a PAX time: decimal seconds, optionally negative, optionally with a fraction.
fn parse_pax_time(value: &[u8]) -> Option<Time> {
    let value = std::str::from_utf8(value).ok()?;
    let (negative, value) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    let sec: i64 = whole.parse().ok()?;
    // Nanoseconds are the first nine digits of the fraction; finer digits cannot be stored.
    let mut nsec = 0u32;
    for i in 0..9 {
        let digit = fraction
            .as_bytes()
            .get(i)
            .map_or(0, |b| u32::from(b - b'0'));
        nsec = nsec * 10 + digit;
    }
    Some(match (negative, nsec) {
        (false, _) => Time { sec, nsec },
        (true, 0) => Time { sec: -sec, nsec: 0 },
        (true, _) => Time {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        },
    })
}

/// Why a name cannot be used.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NameProblem {
    Empty,
    Absolute,
    ParentDir,
    Nul,
}

impl NameProblem {
    /// The reason, with `subject` ("it", "its link target `x`") as the grammatical subject.
    pub(crate) fn reason(self, subject: &str) -> String {
        match self {
            Self::Empty => format!("{subject} is empty"),
            Self::Absolute => format!("{subject} is an absolute path"),
            Self::ParentDir => format!("{subject} climbs out of the root with `..`"),
            Self::Nul => format!("{subject} contains a NUL byte"),
        }
    }
}

/// Normalises an archive name to `a/b/c` (empty for the root): drops `.` and empty components,
/// refuses absolute names, `..` and NUL bytes.
pub(crate) fn normalize(name: &[u8]) -> Result<Vec<u8>, NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    if name.starts_with(b"/") {
        return Err(NameProblem::Absolute);
    }
    if name.contains(&0) {
        return Err(NameProblem::Nul);
    }
    let mut out = Vec::with_capacity(name.len());
    for component in name.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(NameProblem::ParentDir),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(component);
            }
        }
    }
    Ok(out)
}

/// What a normalised name means in an OCI layer.
#[derive(Debug, PartialEq, Eq)]
enum LayerName {
    /// An ordinary entry.
    Plain,
    /// AUFS bookkeeping (`.wh..wh.plnk` and friends), which means nothing to overlayfs.
    Skip,
    /// `.wh..wh..opq`: its directory hides what lower layers have there.
    Opaque,
    /// `.wh.NAME`: the normalised path it deletes.
    Whiteout(Vec<u8>),
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Classifies an OCI layer entry by its name, or says why it is refused.
fn layer_name(path: &[u8], kind: EntryType) -> Result<LayerName, String> {
    let (dir, leaf) = split(path);
    for component in dir.split(|&b| b == b'/') {
        if component.starts_with(AUFS_META_PREFIX) {
            return Ok(LayerName::Skip);
        }
        if component.starts_with(WHITEOUT_PREFIX) {
            return Err(format!(
                "it goes through the whiteout name `{}`",
                String::from_utf8_lossy(component)
            ));
        }
    }
    let Some(deleted) = leaf.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(LayerName::Plain);
    };
    // A link named like a whiteout would make the meaning of the name depend on where it
    // points; no image tool writes one.
    if matches!(kind, EntryType::Link | EntryType::Symlink) {
        return Err("it is a link named like a whiteout".to_owned());
    }
    if leaf == OPAQUE_MARKER {
        return Ok(LayerName::Opaque);
    }
    if leaf.starts_with(AUFS_META_PREFIX) {
        return Ok(LayerName::Skip);
    }
    if matches!(deleted, b"" | b"." | b"..") {
        return Err("it is a whiteout of no valid name".to_owned());
    }
    let mut target = dir.to_vec();
    if !target.is_empty() {
        target.push(b'/');
    }
    target.extend_from_slice(deleted);
    Ok(LayerName::Whiteout(target))
}

/// Splits a normalised non-root path into its parent (empty for top level) and final component.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

fn c_name(component: &[u8], name: &str) -> Result<CString, ImageError> {
    // `normalize` already refused NUL bytes; this only converts.
    CString::new(component).map_err(|_| unsafe_entry(name, NameProblem::Nul.reason("it")))
}

fn mkdir(parent: BorrowedFd<'_>, leaf: &CString, name: &str) -> Result<(), ImageError> {
    rfs::mkdirat(parent, leaf, Mode::from_raw_mode(0o700)).map_err(|e| create(name, e.into()))?;
    // Root-owned 0755 whatever the umask or a setgid parent would have made of it; an entry for
    // this directory later in the archive overrides it.
    let fd = open_dir_beneath(parent, leaf.as_bytes()).map_err(|e| create(name, e))?;
    Inode::root(0o755, Time::default()).set_owner_mode(fd.as_fd(), Path::new(name))
}

fn write_xattrs(node: Node<'_>, xattrs: &Xattrs, name: &str) -> Result<(), ImageError> {
    for (key, value) in xattrs {
        xattr::write(node, key, value).map_err(|source| ImageError::SetXattr {
            path: PathBuf::from(name),
            name: String::from_utf8_lossy(key).into_owned(),
            source,
        })?;
    }
    Ok(())
}

fn describe_type(kind: EntryType) -> String {
    match kind.as_byte() {
        b'V' => "GNU volume label".to_owned(),
        b'M' => "GNU multi-volume continuation".to_owned(),
        b'D' => "GNU dump directory".to_owned(),
        b'N' => "old GNU long name".to_owned(),
        byte if byte.is_ascii_graphic() => format!("entry type `{}`", char::from(byte)),
        byte => format!("entry type byte {byte:#04x}"),
    }
}

fn unsafe_entry(name: &str, reason: String) -> ImageError {
    ImageError::UnsafeEntry {
        entry: name.to_owned(),
        reason,
    }
}

fn create(name: &str, source: io::Error) -> ImageError {
    ImageError::Create {
        path: PathBuf::from(name),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::fixtures::{
        Kind, Raw, SAMPLE, Spec, TarWriter, assert_matches, materialize, tar_of, xattrs_of,
    };
    use crate::{NoProgress, tree_digest};

    fn unpack(archive: &[u8]) -> (tempfile::TempDir, Result<TreeStats, ImageError>) {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let result = unpack_archive(archive, &dest, &NoProgress);
        (tmp, result)
    }

    use std::fs;

    #[test]
    fn round_trip_keeps_every_type_and_attribute() {
        let (tmp, result) = unpack(&tar_of(SAMPLE));
        let stats = result.unwrap();
        let dest = tmp.path().join("dest");
        assert_matches(&dest, SAMPLE, |_| true);
        assert_eq!(stats.entries, SAMPLE.len() as u64);

        let direct = tmp.path().join("direct");
        fs::create_dir(&direct).unwrap();
        materialize(&direct, SAMPLE);
        assert_matches(&direct, SAMPLE, |_| true);
        assert_eq!(tree_digest(&dest).unwrap(), tree_digest(&direct).unwrap());
    }

    #[test]
    fn compressed_archives_unpack_like_plain_ones() {
        let plain = tar_of(SAMPLE);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 3).unwrap();

        let (tmp, result) = unpack(&plain);
        result.unwrap();
        let want = tree_digest(&tmp.path().join("dest")).unwrap();
        for archive in [gz, zst] {
            let (tmp, result) = unpack(&archive);
            result.unwrap();
            let dest = tmp.path().join("dest");
            assert_matches(&dest, SAMPLE, |_| true);
            assert_eq!(tree_digest(&dest).unwrap(), want);
        }
    }

    #[test]
    fn only_portable_xattrs_survive() {
        let specs = [
            Spec {
                path: "f",
                kind: Kind::File(b"x"),
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: (1, 0),
                xattrs: &[
                    ("user.keep", b"1"),
                    ("trusted.overlay.opaque", b"y"),
                    ("trusted.overlay.redirect", b"/etc"),
                    ("security.selinux", b"system_u:object_r:etc_t:s0"),
                ],
            },
            Spec {
                path: "d",
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: (1, 0),
                xattrs: &[("trusted.overlay.opaque", b"y")],
            },
        ];
        let (tmp, result) = unpack(&tar_of(&specs));
        result.unwrap();
        let dest = tmp.path().join("dest");
        let mut expected = vec![Spec {
            path: "",
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: (0, 0),
            xattrs: &[],
        }];
        expected.extend(specs);
        assert_matches(&dest, &expected, |name| name == "user.keep");
    }

    #[test]
    fn missing_parents_are_root_owned_0755_with_mtime_zero() {
        let mut tar = TarWriter::default();
        let mut file = Raw::new(b"./deep/er/file", b'0');
        file.uid = 1000;
        file.data = b"content";
        tar.add(file, &[]);
        let (tmp, result) = unpack(&tar.finish());
        assert_eq!(
            result.unwrap(),
            TreeStats {
                entries: 1,
                bytes: 7
            }
        );
        let dest = tmp.path().join("dest");
        let plain = |path: &'static str| Spec {
            path,
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: (0, 0),
            xattrs: &[],
        };
        let specs = [
            plain(""),
            plain("deep"),
            plain("deep/er"),
            Spec {
                path: "deep/er/file",
                kind: Kind::File(b"content"),
                mode: 0o644,
                uid: 1000,
                gid: 0,
                mtime: (1_600_000_000, 0),
                xattrs: &[],
            },
        ];
        assert_matches(&dest, &specs, |_| true);
    }

    #[test]
    fn later_entries_replace_earlier_ones_but_not_directories() {
        let mut tar = TarWriter::default();
        let mut first = Raw::new(b"x", b'0');
        first.data = b"first";
        tar.add(first, &[]);
        let mut link = Raw::new(b"x", b'2');
        link.link = b"/somewhere";
        tar.add(link, &[]);
        tar.add(Raw::new(b"y", b'0'), &[]);
        tar.add(Raw::new(b"y", b'5'), &[]);
        let (tmp, result) = unpack(&tar.finish());
        result.unwrap();
        let dest = tmp.path().join("dest");
        assert_eq!(
            fs::read_link(dest.join("x")).unwrap(),
            Path::new("/somewhere")
        );
        assert!(fs::symlink_metadata(dest.join("y")).unwrap().is_dir());

        tar.add(Raw::new(b"y", b'0'), &[]);
        let (_tmp, result) = unpack(&tar.finish());
        assert!(
            matches!(result, Err(ImageError::UnsupportedEntry { ref entry, .. }) if entry == "y"),
            "{result:?}"
        );
    }

    #[test]
    fn progress_counts_entries_and_bytes() {
        #[derive(Default)]
        struct Count(std::sync::Mutex<(u64, u64)>);
        impl Progress for Count {
            fn advance(&self, entries: u64, bytes: u64) {
                let mut c = self.0.lock().unwrap();
                c.0 += entries;
                c.1 += bytes;
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let count = Count::default();
        let stats = unpack_archive(&tar_of(SAMPLE)[..], tmp.path(), &count).unwrap();
        let content: usize = SAMPLE
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
            stats,
            TreeStats {
                entries: SAMPLE.len() as u64,
                bytes: content as u64
            }
        );
        assert_eq!(*count.0.lock().unwrap(), (stats.entries, stats.bytes));
    }

    #[test]
    fn refuses_a_destination_that_is_not_empty() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("x"), "").unwrap();
        let result = unpack_archive(&tar_of(SAMPLE)[..], tmp.path(), &NoProgress);
        assert!(
            matches!(result, Err(ImageError::NotEmpty { .. })),
            "{result:?}"
        );
    }

    /// A scratch area with a destination, an empty sentinel directory next to it, and a
    /// directory holding one file that symlinks in archives point at.
    struct Attack {
        tmp: tempfile::TempDir,
    }

    impl Attack {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            fs::create_dir(tmp.path().join("dest")).unwrap();
            fs::create_dir(tmp.path().join("outside")).unwrap();
            fs::create_dir(tmp.path().join("target")).unwrap();
            fs::write(tmp.path().join("target/keep"), "original").unwrap();
            Self { tmp }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.tmp.path().join(rel)
        }

        /// Unpacks `archive`, expects it refused as unsafe, and checks nothing leaked.
        fn refuses(&self, archive: &[u8], culprit: &str) -> String {
            // A fresh destination each time, like the caller that removes a failed import.
            fs::remove_dir_all(self.path("dest")).unwrap();
            fs::create_dir(self.path("dest")).unwrap();
            let result = unpack_archive(archive, &self.path("dest"), &NoProgress);
            let message = match result {
                Err(err @ ImageError::UnsafeEntry { .. }) => {
                    let ImageError::UnsafeEntry { entry, .. } = &err else {
                        unreachable!()
                    };
                    assert_eq!(entry, culprit);
                    err.to_string()
                }
                other => panic!("expected an unsafe-entry error for `{culprit}`, got {other:?}"),
            };
            assert_eq!(
                fs::read_dir(self.path("outside")).unwrap().count(),
                0,
                "sentinel touched"
            );
            let target: Vec<_> = fs::read_dir(self.path("target"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(target, ["keep"], "symlink target touched");
            assert_eq!(fs::read(self.path("target/keep")).unwrap(), b"original");
            let keep = fs::metadata(self.path("target/keep")).unwrap();
            assert_eq!(keep.permissions().mode() & 0o7777, 0o644);
            message
        }
    }

    use std::os::unix::fs::PermissionsExt as _;

    fn file(name: &[u8]) -> Raw<'_> {
        let mut raw = Raw::new(name, b'0');
        raw.data = b"pwned";
        raw
    }

    fn link<'a>(name: &'a [u8], typeflag: u8, target: &'a [u8]) -> Raw<'a> {
        let mut raw = Raw::new(name, typeflag);
        raw.link = target;
        raw
    }

    #[test]
    fn refuses_absolute_names() {
        let attack = Attack::new();
        let name = format!("{}/pwned", attack.path("outside").display()).into_bytes();
        let mut raw = file(b"");
        raw.name = &name;
        let archive = TarWriter::default().add(raw, &[]).finish();
        let message = attack.refuses(&archive, std::str::from_utf8(&name).unwrap());
        assert!(message.ends_with("it is an absolute path"), "{message}");
    }

    #[test]
    fn refuses_dot_dot() {
        let attack = Attack::new();
        let archive = TarWriter::default()
            .add(file(b"../outside/pwned"), &[])
            .finish();
        let message = attack.refuses(&archive, "../outside/pwned");
        assert_eq!(
            message,
            "refusing archive entry `../outside/pwned`: it climbs out of the root with `..`"
        );
        let archive = TarWriter::default()
            .add(file(b"a/../../outside/pwned"), &[])
            .finish();
        attack.refuses(&archive, "a/../../outside/pwned");
        // A PAX path overrides the harmless header name.
        let archive = TarWriter::default()
            .add(file(b"harmless"), &[("path", b"x/../../outside/pwned")])
            .finish();
        attack.refuses(&archive, "x/../../outside/pwned");
    }

    #[test]
    fn refuses_writing_through_a_symlink() {
        let attack = Attack::new();
        let target = attack.path("target").into_os_string().into_encoded_bytes();
        let archive = TarWriter::default()
            .add(link(b"evil", b'2', &target), &[])
            .add(file(b"evil/file"), &[])
            .finish();
        let message = attack.refuses(&archive, "evil/file");
        assert_eq!(
            message,
            "refusing archive entry `evil/file`: it is written through symlink `evil`"
        );

        let attack = Attack::new();
        let archive = TarWriter::default()
            .add(link(b"up", b'2', b"../outside"), &[])
            .add(Raw::new(b"up/dir/", b'5'), &[])
            .finish();
        attack.refuses(&archive, "up/dir/");

        // Overwriting the file the symlink points at must replace the symlink, not follow it.
        let attack = Attack::new();
        let keep = attack
            .path("target/keep")
            .into_os_string()
            .into_encoded_bytes();
        let archive = TarWriter::default()
            .add(link(b"evil", b'2', &keep), &[])
            .add(file(b"evil"), &[])
            .finish();
        unpack_archive(&archive[..], &attack.path("dest"), &NoProgress).unwrap();
        assert_eq!(fs::read(attack.path("dest/evil")).unwrap(), b"pwned");
        assert_eq!(fs::read(attack.path("target/keep")).unwrap(), b"original");
    }

    #[test]
    fn refuses_hard_links_outside_the_archive() {
        let attack = Attack::new();
        let target = attack.path("target").into_os_string().into_encoded_bytes();
        let archive = TarWriter::default()
            .add(link(b"evil", b'2', &target), &[])
            .add(link(b"pwn", b'1', b"evil/keep"), &[])
            .finish();
        let message = attack.refuses(&archive, "pwn");
        assert!(
            message.contains("its link target `evil/keep` is not a regular file"),
            "{message}"
        );

        let archive = TarWriter::default()
            .add(link(b"evil", b'2', &target), &[])
            .add(file(b"real"), &[])
            .add(link(b"evil/pwn", b'1', b"real"), &[])
            .finish();
        let message = attack.refuses(&archive, "evil/pwn");
        assert!(
            message.ends_with("it is written through symlink `evil`"),
            "{message}"
        );

        let archive = TarWriter::default()
            .add(link(b"pwn", b'1', b"/etc/passwd"), &[])
            .finish();
        let message = attack.refuses(&archive, "pwn");
        assert!(
            message.ends_with("its link target `/etc/passwd` is an absolute path"),
            "{message}"
        );

        let archive = TarWriter::default()
            .add(link(b"pwn", b'1', b"../../x"), &[])
            .finish();
        let message = attack.refuses(&archive, "pwn");
        assert!(
            message.ends_with("its link target `../../x` climbs out of the root with `..`"),
            "{message}"
        );

        let archive = TarWriter::default()
            .add(link(b"pwn", b'1', b"not/here"), &[])
            .finish();
        attack.refuses(&archive, "pwn");

        // A symlink is no hard-link target either, even one the archive made.
        let archive = TarWriter::default()
            .add(link(b"evil", b'2', &target), &[])
            .add(link(b"pwn", b'1', b"evil"), &[])
            .finish();
        attack.refuses(&archive, "pwn");
    }

    #[test]
    fn truncated_or_corrupt_archives_are_bad() {
        let plain = tar_of(SAMPLE);
        let gz = {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&plain).unwrap();
            gz.finish().unwrap()
        };
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        let big = [7u8; 5000];
        let mut raw = Raw::new(b"big", b'0');
        raw.data = &big;
        let with_big = TarWriter::default().add(raw, &[]).finish();
        let mut garbage = plain.clone();
        garbage[100] ^= 0x55;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("inside file content", with_big[..2000].to_vec()),
            ("inside padding", plain[..plain.len() - 1024 - 300].to_vec()),
            ("at a block boundary", plain[..plain.len() - 1024].to_vec()),
            (
                "inside a header",
                plain[..plain.len() - 1024 - 512 - 100].to_vec(),
            ),
            ("gzip", gz[..gz.len() - 10].to_vec()),
            ("zstd", zst[..zst.len() - 10].to_vec()),
            ("header checksum", garbage),
            ("empty", Vec::new()),
            (
                "not a tar",
                b"hello, this is not an archive at all".repeat(40),
            ),
        ];
        for (what, archive) in cases {
            let (_tmp, result) = unpack(&archive);
            assert!(
                matches!(result, Err(ImageError::BadArchive { .. })),
                "{what}: {result:?}"
            );
        }
    }

    #[test]
    fn unsupported_entry_types_are_named() {
        let archive = TarWriter::default()
            .add(Raw::new(b"label", b'V'), &[])
            .finish();
        let (_tmp, result) = unpack(&archive);
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported archive entry `label`: GNU volume label"
        );
    }

    #[test]
    fn global_pax_headers_are_not_entries() {
        let archive = TarWriter::default()
            .add(Raw::new(b"pax_global_header", b'g'), &[])
            .add(file(b"f"), &[])
            .finish();
        let (tmp, result) = unpack(&archive);
        assert_eq!(result.unwrap().entries, 1);
        let names: Vec<_> = fs::read_dir(tmp.path().join("dest"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
    }

    fn unpack_layer(archive: &[u8]) -> (tempfile::TempDir, Result<TreeStats, ImageError>) {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let result = unpack_layer_archive(archive, &dest, &NoProgress);
        (tmp, result)
    }

    fn assert_whiteout(path: &Path) {
        use std::os::unix::fs::MetadataExt as _;
        let meta = fs::symlink_metadata(path).unwrap();
        assert_eq!(
            (
                meta.mode(),
                meta.rdev(),
                meta.uid(),
                meta.gid(),
                meta.mtime()
            ),
            (0o020_000, 0, 0, 0, 0),
            "{} is a canonical whiteout",
            path.display()
        );
        assert!(xattrs_of(path).is_empty());
    }

    #[test]
    fn layer_whiteouts_become_overlay_whiteouts() {
        let mut tar = TarWriter::default();
        tar.add(Raw::new(b"etc/", b'5'), &[]);
        tar.add(file(b"etc/kept"), &[]);
        tar.add(file(b"etc/replaced"), &[]);
        tar.add(Raw::new(b"etc/tree/", b'5'), &[]);
        tar.add(file(b"etc/tree/deep"), &[]);
        tar.add(link(b"etc/tree/hard", b'1', b"etc/tree/deep"), &[]);
        // Deletes something of a lower layer: the parent is implied.
        tar.add(Raw::new(b"./usr/lib/.wh.libold.so", b'0'), &[]);
        // Replaces a file and a whole directory unpacked earlier from this archive.
        let mut with_data = Raw::new(b"etc/.wh.replaced", b'0');
        with_data.data = b"whiteout files are empty, but content does not matter";
        with_data.uid = 1000;
        with_data.mode = 0o755;
        tar.add(with_data, &[]);
        tar.add(Raw::new(b"etc/.wh.tree", b'0'), &[]);
        // AUFS leftovers mean nothing.
        tar.add(Raw::new(b".wh..wh.aufs", b'0'), &[]);
        tar.add(Raw::new(b".wh..wh.plnk/", b'5'), &[]);
        tar.add(file(b".wh..wh.plnk/123.456"), &[]);
        let (tmp, result) = unpack_layer(&tar.finish());
        let stats = result.unwrap();
        assert_eq!(
            stats,
            TreeStats {
                entries: 9,
                bytes: 15
            }
        );
        let dest = tmp.path().join("dest");
        assert_whiteout(&dest.join("usr/lib/libold.so"));
        assert_whiteout(&dest.join("etc/replaced"));
        assert_whiteout(&dest.join("etc/tree"));
        assert_eq!(fs::read(dest.join("etc/kept")).unwrap(), b"pwned");
        let mut names: Vec<_> = fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["etc", "usr"]);
        let usr = fs::symlink_metadata(dest.join("usr/lib")).unwrap();
        assert!(usr.is_dir());
        assert_eq!(usr.permissions().mode() & 0o7777, 0o755);
    }

    #[test]
    fn layer_opaque_markers_mark_their_directory() {
        let mut tar = TarWriter::default();
        tar.add(Raw::new(b"opt/", b'5'), &[]);
        tar.add(Raw::new(b"opt/.wh..wh..opq", b'0'), &[]);
        tar.add(file(b"opt/new"), &[]);
        // The marker may come before its directory, or without it.
        tar.add(Raw::new(b"var/cache/.wh..wh..opq", b'0'), &[]);
        let mut var_cache = Raw::new(b"var/cache/", b'5');
        var_cache.mode = 0o700;
        tar.add(var_cache, &[("SCHILY.xattr.user.note", b"kept")]);
        tar.add(Raw::new(b"srv/empty/.wh..wh..opq", b'0'), &[]);
        let (tmp, result) = unpack_layer(&tar.finish());
        assert_eq!(result.unwrap().entries, 3);
        let dest = tmp.path().join("dest");
        let opaque = |rel: &str| {
            xattrs_of(&dest.join(rel))
                .get("trusted.overlay.opaque")
                .cloned()
        };
        assert_eq!(opaque("opt"), Some(b"y".to_vec()));
        assert_eq!(opaque("var/cache"), Some(b"y".to_vec()));
        assert_eq!(
            xattrs_of(&dest.join("var/cache")).get("user.note").unwrap(),
            b"kept"
        );
        assert_eq!(opaque("srv/empty"), Some(b"y".to_vec()));
        assert_eq!(opaque("srv"), None);
        assert_eq!(opaque("var"), None);
        assert_eq!(
            fs::metadata(dest.join("var/cache"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o700
        );
        assert!(
            fs::read_dir(dest.join("srv/empty"))
                .unwrap()
                .next()
                .is_none()
        );
        assert_eq!(fs::read(dest.join("opt/new")).unwrap(), b"pwned");
    }

    #[test]
    fn plain_archives_keep_whiteout_names_as_files() {
        let archive = TarWriter::default()
            .add(file(b"etc/.wh.passwd"), &[])
            .add(file(b"etc/.wh..wh..opq"), &[])
            .finish();
        let (tmp, result) = unpack(&archive);
        result.unwrap();
        let dest = tmp.path().join("dest");
        assert_eq!(fs::read(dest.join("etc/.wh.passwd")).unwrap(), b"pwned");
        assert_eq!(fs::read(dest.join("etc/.wh..wh..opq")).unwrap(), b"pwned");
        assert!(xattrs_of(&dest.join("etc")).is_empty());
    }

    #[test]
    fn layer_refuses_links_and_bad_whiteout_names() {
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (
                TarWriter::default()
                    .add(file(b"real"), &[])
                    .add(link(b"a/.wh.x", b'1', b"real"), &[])
                    .finish(),
                "a/.wh.x",
                "it is a link named like a whiteout",
            ),
            (
                TarWriter::default()
                    .add(link(b".wh..wh..opq", b'2', b"/etc"), &[])
                    .finish(),
                ".wh..wh..opq",
                "it is a link named like a whiteout",
            ),
            (
                TarWriter::default().add(file(b"a/.wh..."), &[]).finish(),
                "a/.wh...",
                "it is a whiteout of no valid name",
            ),
            (
                TarWriter::default().add(file(b".wh."), &[]).finish(),
                ".wh.",
                "it is a whiteout of no valid name",
            ),
            (
                TarWriter::default().add(file(b"a/.wh.b/c"), &[]).finish(),
                "a/.wh.b/c",
                "it goes through the whiteout name `.wh.b`",
            ),
        ];
        for (archive, entry, reason) in cases {
            let (tmp, result) = unpack_layer(&archive);
            match result {
                Err(ImageError::UnsafeEntry {
                    entry: got,
                    reason: why,
                }) => assert_eq!((got.as_str(), why.as_str()), (entry, reason)),
                other => panic!("{entry}: {other:?}"),
            }
            drop(tmp);
        }
    }

    #[test]
    fn names_normalise() {
        assert_eq!(normalize(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(normalize(b"./").unwrap(), b"");
        assert_eq!(normalize(b".").unwrap(), b"");
        assert!(matches!(normalize(b"/a"), Err(NameProblem::Absolute)));
        assert!(matches!(normalize(b"a/.."), Err(NameProblem::ParentDir)));
        assert!(matches!(normalize(b""), Err(NameProblem::Empty)));
        assert!(matches!(normalize(b"a\0b"), Err(NameProblem::Nul)));
        assert_eq!(normalize(b"a..b/...").unwrap(), b"a..b/...");
    }

    #[test]
    fn pax_times_parse() {
        let t = |sec, nsec| Some(Time { sec, nsec });
        assert_eq!(parse_pax_time(b"1700000000"), t(1_700_000_000, 0));
        assert_eq!(parse_pax_time(b"1.5"), t(1, 500_000_000));
        assert_eq!(parse_pax_time(b"1.1234567899"), t(1, 123_456_789));
        assert_eq!(parse_pax_time(b"-1.25"), t(-2, 750_000_000));
        assert_eq!(parse_pax_time(b"-3"), t(-3, 0));
        assert_eq!(parse_pax_time(b""), None);
        assert_eq!(parse_pax_time(b"1.2e3"), None);
        assert_eq!(parse_pax_time(b".5"), None);
    }
}
