//! The layers below the one being unpacked, to give a directory the archive leaves out the
//! attributes the stack below gives it.
//!
//! An OCI layer need not describe the directories it writes into: umoci, for one, writes
//! `etc/.wh.doomed` without an `etc/` entry when only the directory's content changed, and
//! no tool writes the root `./` after the first layer. Such a directory is unchanged by the
//! layer, so `umoci unpack` leaves it as the layers below made it. A layer here is a tree of
//! its own, stacked by overlayfs, which shows a directory with the attributes of the topmost
//! layer that has it; made with defaults (root, 0755, mtime 0), an implied directory would
//! hide the real ones. So it copies them: owner, mode, mtime and portable xattrs of the
//! directory as the layers below show it, found by overlayfs's lookup rules (a whiteout or a
//! non-directory ends the lookup, an opaque directory hides what is below it).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::FileType;

use crate::ImageError;
use crate::inode::{Inode, file_type, is_whiteout, stat_at, stat_fd};
use crate::tree::{open_dir_at, open_root};
use crate::xattr::{self, Node, XattrPolicy, Xattrs};

/// The layers below, topmost first, held open.
pub(super) struct Lower {
    layers: Vec<(OwnedFd, PathBuf)>,
}

impl Lower {
    /// Opens `layers` (lowest first, as a stack is listed).
    pub(super) fn open(layers: &[PathBuf]) -> Result<Self, ImageError> {
        let layers = layers
            .iter()
            .rev()
            .map(|path| {
                open_root(path)
                    .map(|fd| (fd, path.clone()))
                    .map_err(|source| ImageError::Open {
                        path: path.clone(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { layers })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The attributes and portable xattrs of the directory at `path` (normalised, empty for
    /// the root) as the layers below show it; `None` if they show none there.
    pub(super) fn dir(&self, path: &[u8]) -> Result<Option<(Inode, Xattrs)>, ImageError> {
        let components: Vec<&[u8]> = if path.is_empty() {
            Vec::new()
        } else {
            path.split(|&b| b == b'/').collect()
        };
        for (root, layer) in &self.layers {
            match Self::in_layer(root, &components).map_err(|source| ImageError::Read {
                path: layer.join(String::from_utf8_lossy(path).as_ref()),
                source,
            })? {
                Found::Dir(inode, xattrs) => return Ok(Some((inode, xattrs))),
                Found::Hidden => return Ok(None),
                Found::Absent => {}
            }
        }
        Ok(None)
    }

    /// What one layer says about the directory at `components`.
    fn in_layer(root: &OwnedFd, components: &[&[u8]]) -> io::Result<Found> {
        let mut cur = open_dir_at(root.as_fd(), c".")?;
        let mut below_opaque = false;
        for component in components {
            let name = CString::new(*component)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))?;
            let st = match stat_at(cur.as_fd(), &name) {
                Ok(st) => st,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    // Not in this layer: lower layers show through, unless a directory above
                    // it here is opaque.
                    return Ok(if below_opaque {
                        Found::Hidden
                    } else {
                        Found::Absent
                    });
                }
                Err(err) => return Err(err),
            };
            if is_whiteout(&st) || file_type(&st) != FileType::Directory {
                return Ok(Found::Hidden);
            }
            cur = open_dir_at(cur.as_fd(), &name)?;
            below_opaque |= xattr::is_opaque(cur.as_fd())?;
        }
        let st = stat_fd(cur.as_fd())?;
        let xattrs = xattr::read(Node::Fd(cur.as_fd()), XattrPolicy::Portable)?;
        Ok(Found::Dir(Inode::from_statx(&st), xattrs))
    }
}

/// What one layer says about a path.
enum Found {
    /// A directory, with its attributes.
    Dir(Inode, Xattrs),
    /// Nothing: look in the layer below.
    Absent,
    /// A whiteout, a non-directory, or an opaque directory above it: nothing below shows.
    Hidden,
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::path::Path;

    use crate::fixtures::{Raw, TarWriter, budget, xattrs_of};
    use crate::{NoProgress, unpack_layer_archive, unpack_layer_archive_over};

    fn attrs(path: &Path) -> (u32, u32, u32, i64) {
        let m = fs::symlink_metadata(path).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime())
    }

    #[test]
    fn implied_directories_take_what_the_layers_below_show() {
        let tmp = tempfile::tempdir().unwrap();
        let layer = |name: &str, tar: &TarWriter, lower: &[std::path::PathBuf]| {
            let dest = tmp.path().join(name);
            fs::create_dir(&dest).unwrap();
            unpack_layer_archive_over(&tar.finish()[..], &dest, lower, &NoProgress, &budget())
                .unwrap();
            dest
        };
        let dir = |name: &'static [u8], mode: u32, uid: u64, mtime: u64| {
            let mut raw = Raw::new(name, b'5');
            raw.mode = mode;
            raw.uid = uid;
            raw.gid = uid;
            raw.mtime = mtime;
            raw
        };
        let mut bottom = TarWriter::default();
        bottom
            .add(dir(b"./", 0o750, 0, 1_000), &[])
            .add(
                dir(b"etc/", 0o700, 5, 2_000),
                &[("SCHILY.xattr.user.kept", b"yes")],
            )
            .add(dir(b"tmp/", 0o1777, 0, 3_000), &[])
            .add(dir(b"a/", 0o755, 0, 4_000), &[])
            .add(dir(b"a/b/", 0o700, 6, 5_000), &[])
            .add(dir(b"c/", 0o755, 0, 6_000), &[])
            .add(dir(b"c/d/", 0o700, 7, 7_000), &[]);
        let bottom = layer("bottom", &bottom, &[]);
        // The middle layer deletes `a` and replaces `c` by an opaque directory without `d`.
        let mut middle = TarWriter::default();
        middle
            .add(Raw::new(b".wh.a", b'0'), &[])
            .add(dir(b"c/", 0o711, 8, 8_000), &[])
            .add(Raw::new(b"c/.wh..wh..opq", b'0'), &[]);
        let middle = layer("middle", &middle, std::slice::from_ref(&bottom));
        // The top writes into all of them without describing a single directory.
        let mut top = TarWriter::default();
        top.add(Raw::new(b"etc/.wh.gone", b'0'), &[])
            .add(Raw::new(b"tmp/x", b'0'), &[])
            .add(Raw::new(b"a/b/y", b'0'), &[])
            .add(Raw::new(b"c/d/z", b'0'), &[])
            .add(Raw::new(b"c/w", b'0'), &[])
            .add(Raw::new(b"new/dir/f", b'0'), &[]);
        let top = layer("top", &top, &[bottom.clone(), middle]);
        assert_eq!(
            attrs(&top),
            (0o750, 0, 0, 1_000),
            "the root, from the bottom"
        );
        assert_eq!(attrs(&top.join("etc")), (0o700, 5, 5, 2_000));
        assert_eq!(
            xattrs_of(&top.join("etc")).get("user.kept").unwrap(),
            b"yes"
        );
        assert_eq!(attrs(&top.join("tmp")), (0o1777, 0, 0, 3_000));
        assert_eq!(
            attrs(&top.join("c")),
            (0o711, 8, 8, 8_000),
            "from the middle"
        );
        assert!(!xattrs_of(&top.join("c")).contains_key("trusted.overlay.opaque"));
        // Hidden below a whiteout or an opaque directory, or nowhere below: the defaults.
        for gone in ["a", "a/b", "c/d", "new", "new/dir"] {
            assert_eq!(attrs(&top.join(gone)), (0o755, 0, 0, 0), "{gone}");
        }
        // Without layers below, implied directories keep the defaults.
        let alone = tmp.path().join("alone");
        fs::create_dir(&alone).unwrap();
        unpack_layer_archive(&top_again()[..], &alone, &NoProgress, &budget()).unwrap();
        assert_eq!(attrs(&alone), (0o755, 0, 0, 0));
        assert_eq!(attrs(&alone.join("etc")), (0o755, 0, 0, 0));
        assert_eq!(
            fs::metadata(&alone).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    fn top_again() -> Vec<u8> {
        TarWriter::default()
            .add(Raw::new(b"etc/.wh.gone", b'0'), &[])
            .finish()
    }
}
