//! What names mean in an OCI layer: whiteouts, opaque markers and AUFS bookkeeping, and how
//! the unpacker writes the overlay whiteouts and opaque markers they stand for.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode};
use tar::EntryType;

use super::names::{c_name, create, split};
use super::unpack::{Unpacker, key};
use crate::ImageError;
use crate::inode::{Inode, Time, device, file_type, stat_at};
use crate::tree::{open_dir_beneath, remove_below};
use crate::xattr::{self, Node, OPAQUE};

/// What a normalised name means in an OCI layer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LayerName {
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
pub(super) fn layer_name(path: &[u8], kind: EntryType) -> Result<LayerName, String> {
    let (dir, leaf) = split(path);
    for component in dir.split(|&b| b == b'/') {
        if component.starts_with(AUFS_META_PREFIX) {
            return Ok(LayerName::Skip);
        }
        if component.starts_with(WHITEOUT_PREFIX) {
            return Err(format!(
                "it goes through the whiteout name `{}`",
                mayfly_api::text::show_bytes(component)
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

impl Unpacker {
    /// Marks the parent directory of the opaque marker at `path` opaque, creating the directory
    /// (and its parents) if the archive has not yet.
    pub(super) fn opaque(&mut self, path: &[u8], name: &str) -> Result<(), ImageError> {
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
    /// it holds included, and returns `true`; or, when this archive made a path above `target`
    /// a non-directory, does nothing and returns `false`.
    ///
    /// That second case is how umoci writes a directory that became a file or a symlink: the
    /// new `opt/d` first, then a whiteout for each child the directory had (`opt/d/.wh.x`).
    /// Those children went with the directory, so the whiteouts mean nothing; `umoci unpack`
    /// and buildah accept them. Nothing is created or followed: a symlink above `target` is
    /// only looked at, never resolved.
    pub(super) fn whiteout(&mut self, target: &[u8], name: &str) -> Result<bool, ImageError> {
        if self.below_non_directory(split(target).0, name)? {
            return Ok(false);
        }
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
                // Keys below it stay (they are hashes): see `Unpacker::files`.
                self.files.remove(&key(target));
                self.dir_times.remove(&key(target));
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
        canonical.set_times_at(parent.as_fd(), &leaf, Path::new(name))?;
        Ok(true)
    }

    /// Whether some component of the directory path `dir` (normalised, relative to the root)
    /// exists as something other than a directory. Components that do not exist yet end the
    /// walk: [`Unpacker::parent`] creates them.
    fn below_non_directory(&self, dir: &[u8], name: &str) -> Result<bool, ImageError> {
        if dir.is_empty() || open_dir_beneath(self.root.as_fd(), dir).is_ok() {
            return Ok(false);
        }
        let mut cur =
            open_dir_beneath(self.root.as_fd(), b"").map_err(|source| ImageError::Open {
                path: PathBuf::from("."),
                source,
            })?;
        for component in dir.split(|&b| b == b'/') {
            let c_component = c_name(component, name)?;
            match stat_at(cur.as_fd(), &c_component) {
                Ok(st) if file_type(&st) == FileType::Directory => {}
                Ok(_) => return Ok(true),
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(source) => {
                    return Err(ImageError::Stat {
                        path: PathBuf::from(name),
                        source,
                    });
                }
            }
            cur = open_dir_beneath(cur.as_fd(), component).map_err(|source| ImageError::Open {
                path: PathBuf::from(name),
                source,
            })?;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

    use super::*;
    use crate::archive::tests::{file, link, unpack};
    use crate::fixtures::{Raw, TarWriter, budget, xattrs_of};
    use crate::{NoProgress, TreeStats, unpack_layer_archive};

    fn unpack_layer(archive: &[u8]) -> (tempfile::TempDir, Result<TreeStats, ImageError>) {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let result = unpack_layer_archive(archive, &dest, &NoProgress, &budget());
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
    fn whiteouts_below_what_the_layer_made_a_non_directory_are_no_ops() {
        // As umoci 0.4.7 writes directories that became a file, a symlink or a fifo: the new
        // entry, then a whiteout for each child the directory had.
        let mut symlink = Raw::new(b"opt/d2l", b'2');
        symlink.link = b"/etc";
        let mut tar = TarWriter::default();
        tar.add(Raw::new(b"opt/", b'5'), &[])
            .add(file(b"opt/d2f"), &[])
            .add(Raw::new(b"opt/d2f/.wh.inner", b'0'), &[])
            .add(symlink, &[])
            .add(Raw::new(b"opt/d2l/.wh.inner", b'0'), &[])
            .add(Raw::new(b"opt/d2l/.wh.sub", b'0'), &[])
            .add(Raw::new(b"opt/d2p", b'6'), &[])
            .add(Raw::new(b"opt/d2p/.wh.k", b'0'), &[])
            // Deeper below, and below a whiteout of this layer: no-ops as well.
            .add(Raw::new(b"opt/d2f/sub/.wh.deep", b'0'), &[])
            .add(Raw::new(b"srv/.wh.gone", b'0'), &[])
            .add(Raw::new(b"srv/gone/.wh.child", b'0'), &[])
            // A whiteout beside them still counts.
            .add(Raw::new(b"opt/.wh.old", b'0'), &[]);
        let (tmp, result) = unpack_layer(&tar.finish());
        assert_eq!(
            result.unwrap(),
            TreeStats {
                entries: 6,
                bytes: 5
            }
        );
        let dest = tmp.path().join("dest");
        assert_eq!(fs::read(dest.join("opt/d2f")).unwrap(), b"pwned");
        assert_eq!(
            fs::read_link(dest.join("opt/d2l")).unwrap(),
            Path::new("/etc")
        );
        assert!(
            fs::symlink_metadata(dest.join("opt/d2p"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_whiteout(&dest.join("srv/gone"));
        assert_whiteout(&dest.join("opt/old"));
        let mut names: Vec<_> = fs::read_dir(dest.join("opt"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["d2f", "d2l", "d2p", "old"]);
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
    fn what_a_whiteout_removed_is_no_hard_link_target() {
        // `a/b` was unpacked, then its directory whited out: a hard link to it is refused like
        // one to a file never unpacked.
        let mut dir = Raw::new(b"a/", b'5');
        dir.mtime = 1_000;
        let archive = TarWriter::default()
            .add(dir, &[])
            .add(file(b"a/b"), &[])
            .add(Raw::new(b".wh.a", b'0'), &[])
            .add(link(b"c", b'1', b"a/b"), &[])
            .finish();
        let (_tmp, result) = unpack_layer(&archive);
        match result {
            Err(ImageError::UnsafeEntry { entry, reason }) => assert_eq!(
                (entry.as_str(), reason.as_str()),
                (
                    "c",
                    "its link target `a/b` is not a regular file unpacked earlier from this archive"
                )
            ),
            other => panic!("{other:?}"),
        }
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
}
