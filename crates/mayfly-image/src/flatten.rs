//! Squashing a stack of layers into one layer: the tree an overlayfs mount of the stack shows.
//!
//! The merge follows overlayfs's lookup rules, walked top-down one directory at a time:
//! - a name is looked up in every layer that contributes to its parent directory, topmost first;
//! - a whiteout (0:0 character device) ends the lookup: the name, and everything below it in
//!   lower layers, is gone;
//! - a non-directory ends it too: it is what shows if nothing above it was a directory, and is
//!   hidden under a directory otherwise;
//! - a directory merges with the directories of the same name below it, down to the first one
//!   marked opaque (`trusted.overlay.opaque` = `y`), which hides everything below it. The root
//!   merges all layers whatever its xattrs, as overlayfs ignores an opaque marker on a layer's
//!   root.
//!
//! A directory takes its own attributes (owner, mode, xattrs, mtime) from the topmost layer that
//! has it, as the mount reports them. Every non-directory is copied from the one layer it shows
//! from by the copy machinery of [`crate::copy_tree`], which also keeps paths that share an
//! inode sharing one in the result: hard links within a layer stay hard links. The result holds
//! no whiteouts and no `trusted.overlay.*` xattrs (a mount hides those too), so it is a complete
//! tree, usable alone as the bottom layer of a new stack.
//!
//! Overlay features that need more than whiteouts and opaque markers (redirects, metacopy,
//! `user.overlay.*` xattrs) are not followed: layers in this project never carry them.
//! Every layer is read through directory descriptors without following symlinks.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, Statx};

use crate::copy::{Copier, create_root};
use crate::inode::{Inode, Time, file_type, is_whiteout, stat_at, stat_fd};
use crate::tree::{child_path, list_dir, open_dir_at, open_root};
use crate::xattr::{self, XattrPolicy};
use crate::{CopyOptions, ImageError, Progress, TreeStats};

/// Writes into `dest` (which must not exist; its parent must) the merged view of `layers`
/// (lowest first) as overlayfs shows it, as one layer without whiteouts or opaque markers, and
/// returns the entries and content bytes written (the root not counted). With no layers the
/// result is an empty root-owned 0755 directory with mtime 0. On error, `dest` is left partly
/// written for the caller to remove.
pub fn flatten_layers(
    layers: &[PathBuf],
    dest: &Path,
    progress: &dyn Progress,
) -> Result<TreeStats, ImageError> {
    let mut roots = Vec::with_capacity(layers.len());
    for layer in layers.iter().rev() {
        let fd = open_root(layer).map_err(|source| ImageError::Open {
            path: layer.clone(),
            source,
        })?;
        roots.push(Source {
            fd,
            path: layer.clone(),
        });
    }
    let dest_fd = create_root(dest)?;
    let options = CopyOptions {
        xattrs: XattrPolicy::NoOverlay,
        one_file_system: false,
    };
    // Every layer is read whole, whatever it has mounted inside: no filesystem to stay on.
    let mut copier = Copier::new(options, (0, 0), &dest_fd, dest, progress)?;
    merge(&mut copier, &roots, dest_fd.as_fd(), dest, &mut Vec::new())?;
    match roots.first() {
        Some(top) => {
            let st = stat_fd(top.fd.as_fd()).map_err(|source| ImageError::Stat {
                path: top.path.clone(),
                source,
            })?;
            copier.finish_dir(top.fd.as_fd(), dest_fd.as_fd(), &st, &top.path, dest)?;
        }
        None => {
            let inode = Inode::root(0o755, Time::default());
            inode.set_owner_mode(dest_fd.as_fd(), dest)?;
            inode.set_times(dest_fd.as_fd(), dest)?;
        }
    }
    Ok(copier.stats())
}

/// One layer's directory at the path being merged.
struct Source {
    fd: OwnedFd,
    /// The host path, for errors.
    path: PathBuf,
}

/// Fills `dst` (at `rel`, with a trailing `/` unless empty, in the result) with the merge of
/// `sources`, the directories at that path of the contributing layers, topmost first.
fn merge(
    copier: &mut Copier<'_>,
    sources: &[Source],
    dst: BorrowedFd<'_>,
    dst_path: &Path,
    rel: &mut Vec<u8>,
) -> Result<(), ImageError> {
    let mut names = BTreeSet::new();
    for source in sources {
        names.extend(list_dir(source.fd.as_fd()).map_err(|err| ImageError::Read {
            path: source.path.clone(),
            source: err,
        })?);
    }
    for name in names {
        let dst_child = child_path(dst_path, &name);
        match lookup(sources, &name)? {
            Found::Nothing => {}
            Found::Leaf { layer, st } => {
                let source = &sources[layer];
                let src_child = child_path(&source.path, &name);
                copier.copy_leaf(
                    source.fd.as_fd(),
                    dst,
                    rel,
                    &name,
                    &st,
                    &src_child,
                    &dst_child,
                )?;
            }
            Found::Dir(dirs) => {
                rfs::mkdirat(dst, &name, Mode::from_raw_mode(0o700)).map_err(|e| {
                    ImageError::Create {
                        path: dst_child.clone(),
                        source: e.into(),
                    }
                })?;
                let sub = open_dir_at(dst, &name).map_err(|source| ImageError::Open {
                    path: dst_child.clone(),
                    source,
                })?;
                copier.count_dir();
                let len = rel.len();
                rel.extend_from_slice(name.to_bytes());
                rel.push(b'/');
                let result = merge(copier, &dirs, sub.as_fd(), &dst_child, rel);
                rel.truncate(len);
                result?;
                let top = &dirs[0];
                let st = stat_fd(top.fd.as_fd()).map_err(|source| ImageError::Stat {
                    path: top.path.clone(),
                    source,
                })?;
                copier.finish_dir(top.fd.as_fd(), sub.as_fd(), &st, &top.path, &dst_child)?;
            }
        }
    }
    Ok(())
}

/// What a name resolves to in the merged view.
enum Found {
    /// Deleted by a whiteout, or in no layer.
    Nothing,
    /// A non-directory of the source at index `layer`.
    Leaf { layer: usize, st: Box<Statx> },
    /// A directory, with the layers' directories that merge into it, topmost first.
    Dir(Vec<Source>),
}

/// Looks `name` up in `sources` (topmost first) the way overlayfs does.
fn lookup(sources: &[Source], name: &CString) -> Result<Found, ImageError> {
    let mut dirs = Vec::new();
    for (layer, source) in sources.iter().enumerate() {
        let st = match stat_at(source.fd.as_fd(), name) {
            Ok(st) => st,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(ImageError::Stat {
                    path: child_path(&source.path, name),
                    source: err,
                });
            }
        };
        if is_whiteout(&st) {
            break;
        }
        if file_type(&st) != FileType::Directory {
            if dirs.is_empty() {
                return Ok(Found::Leaf {
                    layer,
                    st: Box::new(st),
                });
            }
            // A non-directory under a directory is hidden, and so is everything below it.
            break;
        }
        let path = child_path(&source.path, name);
        let fd = open_dir_at(source.fd.as_fd(), name).map_err(|err| ImageError::Open {
            path: path.clone(),
            source: err,
        })?;
        let opaque = xattr::is_opaque(fd.as_fd()).map_err(|err| ImageError::ReadXattrs {
            path: path.clone(),
            source: err,
        })?;
        dirs.push(Source { fd, path });
        if opaque {
            break;
        }
    }
    Ok(if dirs.is_empty() {
        Found::Nothing
    } else {
        Found::Dir(dirs)
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt as _;

    use super::*;
    use crate::fixtures::{
        CAP_NET_BIND_SERVICE, Kind, Overlay, Spec, materialize, owned, spec, with_xattrs, xattrs_of,
    };
    use crate::{NoProgress, tree_digest, tree_stats};

    const OPAQUE: &[(&str, &[u8])] = &[("trusted.overlay.opaque", b"y")];

    /// The base: everything the upper layers change, and some they leave alone.
    const BOTTOM: &[Spec] = &[
        spec("", Kind::Dir, 0o755, (1_600_000_000, 0)),
        spec("bin", Kind::Dir, 0o755, (1_600_000_001, 0)),
        spec(
            "bin/busybox",
            Kind::File(b"\x7fELF"),
            0o755,
            (1_600_000_002, 0),
        ),
        spec("bin/sh", Kind::HardLink("bin/busybox"), 0, (0, 0)),
        owned(
            spec(
                "bin/ls",
                Kind::Symlink("busybox"),
                0o777,
                (1_600_000_003, 3),
            ),
            7,
            8,
        ),
        spec("etc", Kind::Dir, 0o755, (1_600_000_004, 0)),
        spec(
            "etc/hosts",
            Kind::File(b"old hosts"),
            0o644,
            (1_600_000_005, 0),
        ),
        spec(
            "etc/old",
            Kind::File(b"deleted above"),
            0o644,
            (1_600_000_006, 0),
        ),
        spec(
            "etc/motd",
            Kind::File(b"becomes a dir"),
            0o644,
            (1_600_000_007, 0),
        ),
        spec("etc/passwd", Kind::File(b"root"), 0o644, (1_600_000_008, 0)),
        with_xattrs(
            spec("lib", Kind::Dir, 0o755, (1_600_000_009, 0)),
            &[("user.dir", b"bottom")],
        ),
        with_xattrs(
            spec("lib/ping", Kind::File(b"ping"), 0o4755, (1_600_000_010, 0)),
            &[
                ("security.capability", CAP_NET_BIND_SERVICE),
                ("user.a", b"1"),
            ],
        ),
        spec("opt", Kind::Dir, 0o755, (1_600_000_011, 0)),
        spec("opt/app", Kind::Dir, 0o755, (1_600_000_012, 0)),
        spec(
            "opt/app/old",
            Kind::File(b"hidden"),
            0o644,
            (1_600_000_013, 0),
        ),
        spec("opt/app/sub", Kind::Dir, 0o755, (1_600_000_014, 0)),
        spec(
            "opt/app/sub/old",
            Kind::File(b"hidden"),
            0o644,
            (1_600_000_015, 0),
        ),
        spec("srv", Kind::Dir, 0o755, (1_600_000_016, 0)),
        spec(
            "srv/hidden",
            Kind::File(b"under a file"),
            0o644,
            (1_600_000_017, 0),
        ),
        spec("usr", Kind::Dir, 0o755, (1_600_000_018, 0)),
        spec("usr/share", Kind::Dir, 0o755, (1_600_000_019, 0)),
        spec("usr/share/doc", Kind::Dir, 0o755, (1_600_000_020, 0)),
        spec(
            "usr/share/doc/a",
            Kind::File(b"doc"),
            0o644,
            (1_600_000_021, 0),
        ),
        spec(
            "usr/share/man",
            Kind::File(b"man"),
            0o644,
            (1_600_000_022, 0),
        ),
        spec("var", Kind::Dir, 0o755, (1_600_000_023, 0)),
        spec("var/log", Kind::Dir, 0o755, (1_600_000_024, 0)),
        spec(
            "var/log/base.log",
            Kind::File(b"log"),
            0o640,
            (1_600_000_025, 0),
        ),
    ];

    /// Replaces, deletes, opaquely replaces, changes types and adds hard links.
    const MIDDLE: &[Spec] = &[
        spec("", Kind::Dir, 0o755, (1_600_000_100, 0)),
        spec("data", Kind::Dir, 0o755, (1_600_000_101, 0)),
        spec(
            "data/f1",
            Kind::File(b"replaced above"),
            0o644,
            (1_600_000_102, 0),
        ),
        spec("data/f2", Kind::HardLink("data/f1"), 0, (0, 0)),
        spec("data/f3", Kind::HardLink("data/f1"), 0, (0, 0)),
        spec("etc", Kind::Dir, 0o750, (1_600_000_103, 0)),
        spec(
            "etc/hosts",
            Kind::File(b"new hosts"),
            0o600,
            (1_600_000_104, 0),
        ),
        spec("etc/old", Kind::Char(0, 0), 0, (0, 0)),
        spec("etc/motd", Kind::Dir, 0o755, (1_600_000_105, 0)),
        spec(
            "etc/motd/today",
            Kind::File(b"hello"),
            0o644,
            (1_600_000_106, 0),
        ),
        with_xattrs(
            spec("opt", Kind::Dir, 0o755, (1_600_000_107, 0)),
            &[("user.opt", b"middle")],
        ),
        with_xattrs(
            spec("opt/app", Kind::Dir, 0o700, (1_600_000_108, 0)),
            OPAQUE,
        ),
        spec(
            "opt/app/new",
            Kind::File(b"new app"),
            0o644,
            (1_600_000_109, 0),
        ),
        spec(
            "srv",
            Kind::File(b"a file over a dir"),
            0o644,
            (1_600_000_110, 0),
        ),
        spec("lib", Kind::Dir, 0o711, (1_600_000_111, 0)),
        spec(
            "lib/libc.so",
            Kind::File(b"libc"),
            0o755,
            (1_600_000_112, 0),
        ),
    ];

    /// Deletes a directory, changes a lower directory's attributes, adds inside lower
    /// directories, and breaks a lower hard-link group.
    const TOP: &[Spec] = &[
        with_xattrs(
            spec("", Kind::Dir, 0o751, (1_600_000_200, 5)),
            &[("user.root", b"top")],
        ),
        spec("data", Kind::Dir, 0o755, (1_600_000_201, 0)),
        spec("data/f1", Kind::File(b"top"), 0o644, (1_600_000_202, 0)),
        spec("usr", Kind::Dir, 0o755, (1_600_000_203, 0)),
        spec("usr/share", Kind::Dir, 0o755, (1_600_000_204, 0)),
        spec("usr/share/doc", Kind::Char(0, 0), 0, (0, 0)),
        spec("var", Kind::Dir, 0o755, (1_600_000_205, 0)),
        with_xattrs(
            owned(
                spec("var/log", Kind::Dir, 0o2770, (1_600_000_206, 6)),
                1000,
                1001,
            ),
            &[("user.log", b"top")],
        ),
        spec(
            "var/log/new.log",
            Kind::File(b"new"),
            0o644,
            (1_600_000_207, 0),
        ),
        spec("bin", Kind::Dir, 0o755, (1_600_000_208, 0)),
        spec(
            "bin/sh",
            Kind::Symlink("busybox"),
            0o777,
            (1_600_000_209, 0),
        ),
    ];

    fn stack(tmp: &Path) -> Vec<PathBuf> {
        [("bottom", BOTTOM), ("middle", MIDDLE), ("top", TOP)]
            .iter()
            .map(|(name, specs)| {
                let dir = tmp.join(name);
                fs::create_dir(&dir).unwrap();
                materialize(&dir, specs);
                dir
            })
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn flattening_matches_an_overlay_mount() {
        let tmp = tempfile::tempdir().unwrap();
        let layers = stack(tmp.path());
        let flat = tmp.path().join("flat");
        let stats = flatten_layers(&layers, &flat, &NoProgress).unwrap();
        assert_eq!(stats, tree_stats(&flat).unwrap());

        let mnt = tmp.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let mount = Overlay::mount(&mnt, &layers);
        assert_eq!(tree_digest(&flat).unwrap(), tree_digest(&mnt).unwrap());
        drop(mount);

        // The same, checked with std alone.
        assert_eq!(
            names(&flat),
            ["bin", "data", "etc", "lib", "opt", "srv", "usr", "var"]
        );
        assert_eq!(names(&flat.join("etc")), ["hosts", "motd", "passwd"]);
        assert_eq!(fs::read(flat.join("etc/hosts")).unwrap(), b"new hosts");
        assert_eq!(fs::read(flat.join("etc/motd/today")).unwrap(), b"hello");
        assert_eq!(names(&flat.join("opt/app")), ["new"]);
        assert_eq!(fs::read(flat.join("srv")).unwrap(), b"a file over a dir");
        assert_eq!(names(&flat.join("usr/share")), ["man"]);
        assert_eq!(names(&flat.join("var/log")), ["base.log", "new.log"]);
        assert_eq!(names(&flat.join("lib")), ["libc.so", "ping"]);
        let log = fs::metadata(flat.join("var/log")).unwrap();
        assert_eq!(
            (log.mode() & 0o7777, log.uid(), log.gid(), log.mtime()),
            (0o2770, 1000, 1001, 1_600_000_206)
        );
        let lib = fs::metadata(flat.join("lib")).unwrap();
        assert_eq!(lib.mode() & 0o7777, 0o711);
        assert!(
            xattrs_of(&flat.join("lib")).is_empty(),
            "the top lib has none"
        );
        assert_eq!(
            xattrs_of(&flat.join("lib/ping")).get("security.capability"),
            Some(&CAP_NET_BIND_SERVICE.to_vec())
        );
        assert_eq!(
            fs::metadata(flat.join("lib/ping")).unwrap().mode() & 0o7777,
            0o4755
        );
        let root = fs::metadata(&flat).unwrap();
        assert_eq!((root.mode() & 0o7777, root.mtime()), (0o751, 1_600_000_200));
        assert_eq!(xattrs_of(&flat).len(), 1);
        assert!(
            xattrs_of(&flat.join("opt/app")).is_empty(),
            "opaque marker dropped"
        );
        let ino = |rel: &str| fs::symlink_metadata(flat.join(rel)).unwrap().ino();
        assert_eq!(ino("data/f2"), ino("data/f3"), "hard links within a layer");
        assert_ne!(ino("data/f1"), ino("data/f2"));
        assert_eq!(fs::read(flat.join("data/f2")).unwrap(), b"replaced above");
        assert_eq!(fs::read(flat.join("data/f1")).unwrap(), b"top");
        assert_eq!(
            fs::symlink_metadata(flat.join("bin/busybox"))
                .unwrap()
                .nlink(),
            1
        );
        assert_eq!(
            fs::read_link(flat.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::symlink_metadata(flat.join("bin/ls")).unwrap().uid(),
            7,
            "symlink owner"
        );
    }

    #[test]
    fn one_layer_flattens_to_itself_without_overlay_marks() {
        let tmp = tempfile::tempdir().unwrap();
        let layers = stack(tmp.path());
        let flat = tmp.path().join("flat");
        flatten_layers(&layers[..1], &flat, &NoProgress).unwrap();
        assert_eq!(
            tree_digest(&flat).unwrap(),
            tree_digest(&layers[0]).unwrap()
        );

        // A whiteout or opaque marker in the bottom layer hides nothing and is not kept.
        let middle_alone = tmp.path().join("middle-alone");
        flatten_layers(&layers[1..2], &middle_alone, &NoProgress).unwrap();
        assert_eq!(
            names(&middle_alone.join("etc")),
            ["hosts", "motd"],
            "no whiteout"
        );
        assert!(xattrs_of(&middle_alone.join("opt/app")).is_empty());
    }

    #[test]
    fn an_empty_stack_is_an_empty_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let flat = tmp.path().join("flat");
        let stats = flatten_layers(&[], &flat, &NoProgress).unwrap();
        assert_eq!(stats, TreeStats::default());
        let root = fs::metadata(&flat).unwrap();
        assert_eq!(
            (root.mode() & 0o7777, root.uid(), root.mtime()),
            (0o755, 0, 0)
        );
        assert!(names(&flat).is_empty());
    }

    #[test]
    fn the_destination_must_not_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let layers = stack(tmp.path());
        let result = flatten_layers(&layers, &layers[0], &NoProgress);
        assert!(
            matches!(result, Err(ImageError::Create { .. })),
            "{result:?}"
        );
        let result = flatten_layers(
            &[tmp.path().join("missing")],
            &tmp.path().join("flat"),
            &NoProgress,
        );
        assert!(matches!(result, Err(ImageError::Open { .. })), "{result:?}");
        assert!(fs::symlink_metadata(tmp.path().join("flat")).is_err());
    }
}
