//! A small layer of mount points: empty files for the paths a container gets files mounted on
//! (`/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`) that its template lacks, and empty
//! directories for the directories it gets mounted (`/run/mayfly`).
//!
//! Docker's answer to the same problem is an "init layer" between the image and the
//! container's writable layer; this is that layer. A bind mount needs an existing file to
//! land on, and creating it in the writable layer would put it into every snapshot and
//! published template — and into every application layer built on such a template, where two
//! applications' copies would then differ. In a layer of its own, stacked right under the
//! writable layer, it never leaves the instance.
//!
//! The layer holds only what is missing: for each path whose parent directories the stack
//! shows as real directories (looked up as overlayfs does: see [`crate::stack`]) and at which it
//! shows nothing, an empty root-owned 0644 file, with its parent directories. Those directories
//! take the attributes (owner, mode, xattrs but overlayfs's own, times) of the directory the
//! stack shows there, and the layer's root those of the topmost layer's root, so that stacking
//! it on top changes nothing else an instance sees. A file whose parent is missing, a symlink
//! or another non-directory in the stack is left out (there is nothing sensible to mount on).
//! A directory is made with whatever parents the stack lacks (root-owned, 0755), unless a
//! symlink or another non-directory is in its way.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};

use crate::copy::{Copier, create_root};
use crate::inode::stat_fd;
use crate::stack::{LowerDir, Shown, lookup, open_stack};
use crate::tree::{child_path, open_dir_at};
use crate::xattr::XattrPolicy;
use crate::{CopyOptions, ImageError, NoProgress};

/// A parent directory of a missing file: its relative path, and the directory the stack shows
/// there (its topmost layer's), whose attributes the copy takes.
struct Parent {
    rel: String,
    /// The directory the stack shows there and its path; `None` where the stack has none (a
    /// directory made for a directory mount point: root's, 0755).
    src: Option<(OwnedFd, PathBuf)>,
}

/// A file (`name`) or directory (`None`: its last parent is the directory itself) the stack
/// lacks.
struct Missing<'a> {
    parents: Vec<Parent>,
    name: Option<CString>,
    file: &'a str,
}

/// A directory made in the layer, with the one whose attributes it takes.
struct Made {
    rel: String,
    dst: OwnedFd,
    src: OwnedFd,
    src_path: PathBuf,
}

/// A copy of the stack's roots (topmost first), to look a path up from the top.
fn clone_level(stack: &[LowerDir]) -> Result<Vec<LowerDir>, ImageError> {
    stack
        .iter()
        .map(|l| {
            Ok(LowerDir {
                fd: l.fd.try_clone().map_err(|source| ImageError::Open {
                    path: l.path.clone(),
                    source,
                })?,
                path: l.path.clone(),
            })
        })
        .collect()
}

/// Writes into `dest` (which must not exist; its parent must) a layer with an empty file for
/// each of `files` (relative paths such as `etc/hosts`) that the stack `layers` (lowest first)
/// lacks, when the stack has its parent directories, and an empty directory for each of
/// `dirs` it lacks (with the parents it lacks); returns the paths it made, in the order
/// given. When nothing is missing, `dest` is not created and the list is empty. On error,
/// `dest` may be left partly written for the caller to remove.
pub fn mount_points(
    layers: &[PathBuf],
    dest: &Path,
    files: &[&str],
    dirs: &[&str],
) -> Result<Vec<String>, ImageError> {
    let stack = open_stack(layers)?;
    let Some(top_root) = stack.first() else {
        return Ok(Vec::new());
    };
    let mut missing: Vec<Missing<'_>> = Vec::new();
    'files: for &file in files {
        let mut parts: Vec<&str> = file.split('/').filter(|p| !p.is_empty()).collect();
        let Some(leaf) = parts.pop() else { continue };
        let mut level = clone_level(&stack)?;
        let mut parents = Vec::new();
        let mut rel = String::new();
        for part in parts {
            let Ok(name) = CString::new(part) else {
                continue 'files;
            };
            let Shown::Dir(dirs) = lookup(&level, &name)? else {
                continue 'files;
            };
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(part);
            let top = &dirs[0];
            let fd = top.fd.try_clone().map_err(|source| ImageError::Open {
                path: top.path.clone(),
                source,
            })?;
            parents.push(Parent {
                rel: rel.clone(),
                src: Some((fd, top.path.clone())),
            });
            level = dirs;
        }
        let Ok(name) = CString::new(leaf) else {
            continue;
        };
        if let Shown::Nothing = lookup(&level, &name)? {
            missing.push(Missing {
                parents,
                name: Some(name),
                file,
            });
        }
    }
    'dirs: for &wanted in dirs {
        let mut level = clone_level(&stack)?;
        let mut parents = Vec::new();
        let mut rel = String::new();
        let mut absent = false;
        for part in wanted.split('/').filter(|p| !p.is_empty() && *p != ".") {
            let Ok(name) = CString::new(part) else {
                continue 'dirs;
            };
            if part == ".." {
                continue 'dirs;
            }
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(part);
            if absent {
                parents.push(Parent {
                    rel: rel.clone(),
                    src: None,
                });
                continue;
            }
            match lookup(&level, &name)? {
                Shown::Dir(dirs) => {
                    let top = &dirs[0];
                    let fd = top.fd.try_clone().map_err(|source| ImageError::Open {
                        path: top.path.clone(),
                        source,
                    })?;
                    parents.push(Parent {
                        rel: rel.clone(),
                        src: Some((fd, top.path.clone())),
                    });
                    level = dirs;
                }
                Shown::Nothing => {
                    absent = true;
                    parents.push(Parent {
                        rel: rel.clone(),
                        src: None,
                    });
                }
                // A symlink or a file in the way: nothing sensible to make.
                _ => continue 'dirs,
            }
        }
        if absent {
            missing.push(Missing {
                parents,
                name: None,
                file: wanted,
            });
        }
    }
    if missing.is_empty() {
        return Ok(Vec::new());
    }

    let root = create_root(dest)?;
    let options = CopyOptions {
        // Never an opaque marker: it would hide the whole directory of the stack below.
        xattrs: XattrPolicy::NoOverlay,
        one_file_system: false,
    };
    let copier = Copier::new(options, (0, 0), &root, dest, &NoProgress)?;
    let mut made_dirs: Vec<Made> = Vec::new();
    let mut made = Vec::new();
    for Missing {
        parents,
        name,
        file,
    } in missing
    {
        let mut dir = root.try_clone().map_err(|source| ImageError::Open {
            path: dest.to_owned(),
            source,
        })?;
        let mut path = dest.to_owned();
        for Parent { rel, src } in parents {
            let part = rel.rsplit('/').next().unwrap_or(&rel);
            let c = CString::new(part).map_err(|_| ImageError::Create {
                path: dest.join(&rel),
                source: std::io::Error::other("a NUL byte in the path"),
            })?;
            path = child_path(&path, &c);
            match rfs::mkdirat(&dir, c.as_c_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => {
                    return Err(ImageError::Create {
                        path,
                        source: e.into(),
                    });
                }
            }
            dir = open_dir_at(dir.as_fd(), &c).map_err(|source| ImageError::Open {
                path: path.clone(),
                source,
            })?;
            match src {
                Some((src, src_path)) if !made_dirs.iter().any(|m| m.rel == rel) => {
                    let dst = dir.try_clone().map_err(|source| ImageError::Open {
                        path: path.clone(),
                        source,
                    })?;
                    made_dirs.push(Made {
                        rel,
                        dst,
                        src,
                        src_path,
                    });
                }
                Some(_) => {}
                None => rfs::fchmod(&dir, Mode::from_raw_mode(0o755)).map_err(|e| {
                    ImageError::Create {
                        path: path.clone(),
                        source: e.into(),
                    }
                })?,
            }
        }
        let Some(name) = name else {
            made.push(file.to_owned());
            continue;
        };
        let file_path = child_path(&path, &name);
        rfs::openat(
            &dir,
            name.as_c_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .and_then(|fd| rfs::fchmod(&fd, Mode::from_raw_mode(0o644)))
        .map_err(|e| ImageError::Create {
            path: file_path,
            source: e.into(),
        })?;
        made.push(file.to_owned());
    }
    // Attributes last, deepest first, so that nothing created afterwards moves an mtime.
    made_dirs.sort_by_key(|m| std::cmp::Reverse(m.rel.matches('/').count()));
    for m in &made_dirs {
        let st = stat_fd(m.src.as_fd()).map_err(|source| ImageError::Stat {
            path: m.src_path.clone(),
            source,
        })?;
        copier.finish_dir(
            m.src.as_fd(),
            m.dst.as_fd(),
            &st,
            &m.src_path,
            &dest.join(&m.rel),
        )?;
    }
    let st = stat_fd(top_root.fd.as_fd()).map_err(|source| ImageError::Stat {
        path: top_root.path.clone(),
        source,
    })?;
    copier.finish_dir(top_root.fd.as_fd(), root.as_fd(), &st, &top_root.path, dest)?;
    Ok(made)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::fixtures::{Kind, Spec, materialize, owned, spec, with_xattrs, xattrs_of};
    use crate::{NoProgress, flatten_layers};

    const T: (i64, u32) = (1_600_000_000, 0);
    const FILES: &[&str] = &["etc/hostname", "etc/hosts", "etc/resolv.conf"];

    fn tree(parent: &Path, name: &str, specs: &[Spec]) -> PathBuf {
        let root = parent.join(name);
        fs::create_dir(&root).unwrap();
        materialize(&root, specs);
        root
    }

    #[test]
    fn only_missing_files_are_made_with_the_stacks_directory_attributes() {
        let tmp = tempfile::tempdir().unwrap();
        let bottom = tree(
            tmp.path(),
            "bottom",
            &[
                spec("", Kind::Dir, 0o755, T),
                spec("etc", Kind::Dir, 0o700, T),
                spec("etc/hosts", Kind::File(b"127.0.0.1 localhost\n"), 0o644, T),
                spec("etc/resolv.conf", Kind::File(b"nameserver 1\n"), 0o644, T),
            ],
        );
        let top = tree(
            tmp.path(),
            "top",
            &[
                owned(spec("", Kind::Dir, 0o751, (1_700_000_000, 5)), 3, 4),
                with_xattrs(
                    owned(spec("etc", Kind::Dir, 0o755, (1_650_000_000, 7)), 1, 2),
                    &[("user.etc", b"1"), ("trusted.overlay.opaque", b"y")],
                ),
                spec("etc/hosts", Kind::File(b"127.0.0.1 localhost\n"), 0o644, T),
            ],
        );
        // The top layer's etc is opaque: the bottom's resolv.conf does not show.
        let layers = vec![bottom, top];
        let dest = tmp.path().join("points");
        let made = mount_points(&layers, &dest, FILES, &[]).unwrap();
        assert_eq!(made, vec!["etc/hostname", "etc/resolv.conf"]);
        let etc = fs::metadata(dest.join("etc")).unwrap();
        assert_eq!(
            (
                etc.mode() & 0o7777,
                etc.uid(),
                etc.gid(),
                etc.mtime(),
                etc.mtime_nsec()
            ),
            (0o755, 1, 2, 1_650_000_000, 7),
            "etc mirrors the directory the stack shows"
        );
        let xattrs = xattrs_of(&dest.join("etc"));
        assert_eq!(xattrs.keys().collect::<Vec<_>>(), vec!["user.etc"]);
        let root = fs::metadata(&dest).unwrap();
        assert_eq!(
            (root.mode() & 0o7777, root.uid(), root.gid(), root.mtime()),
            (0o751, 3, 4, 1_700_000_000)
        );
        for f in &made {
            let m = fs::symlink_metadata(dest.join(f)).unwrap();
            assert!(m.is_file());
            assert_eq!((m.len(), m.mode() & 0o7777, m.uid()), (0, 0o644, 0));
        }
        assert!(!dest.join("etc/hosts").exists());

        // Stacked on top, it adds exactly the mount points and changes nothing else.
        let mut with = layers.clone();
        with.push(dest.clone());
        let (a, b) = (tmp.path().join("flat-a"), tmp.path().join("flat-b"));
        flatten_layers(&layers, &a, &NoProgress).unwrap();
        flatten_layers(&with, &b, &NoProgress).unwrap();
        let times = |p: &Path| {
            let m = fs::metadata(p).unwrap();
            (m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec())
        };
        assert_eq!(times(&a.join("etc")), times(&b.join("etc")));
        assert_eq!(times(&a), times(&b));
        fs::remove_file(b.join("etc/hostname")).unwrap();
        fs::remove_file(b.join("etc/resolv.conf")).unwrap();
        crate::fixtures::set_mtime(&b.join("etc"), (1_650_000_000, 7));
        assert_eq!(
            crate::tree_digest(&a).unwrap(),
            crate::tree_digest(&b).unwrap()
        );

        // Nothing missing: no layer at all.
        let full = tmp.path().join("full");
        assert!(
            mount_points(&layers, &full, &["etc/hosts"], &[])
                .unwrap()
                .is_empty()
        );
        assert!(!full.exists());
    }

    #[test]
    fn nothing_is_made_where_the_parent_is_no_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let linked = tree(
            tmp.path(),
            "linked",
            &[
                spec("", Kind::Dir, 0o755, T),
                spec("etc", Kind::Symlink("/host/etc"), 0o777, T),
                spec("usr", Kind::Dir, 0o755, T),
                spec("usr/hosts", Kind::Symlink("/etc/hosts"), 0o777, T),
            ],
        );
        let dest = tmp.path().join("points");
        let made = mount_points(
            std::slice::from_ref(&linked),
            &dest,
            &["etc/hosts", "usr/hosts", "none/x"],
            &[],
        )
        .unwrap();
        assert!(made.is_empty(), "{made:?}");
        assert!(!dest.exists());
        // A whiteout of the parent, and a file deleted by a whiteout above.
        let over = tree(
            tmp.path(),
            "over",
            &[
                spec("", Kind::Dir, 0o755, T),
                spec("etc", Kind::Char(0, 0), 0, T),
                spec("usr", Kind::Dir, 0o755, T),
                spec("usr/hosts", Kind::Char(0, 0), 0, T),
            ],
        );
        let made = mount_points(&[linked, over], &dest, &["etc/hosts", "usr/hosts"], &[]).unwrap();
        assert_eq!(made, vec!["usr/hosts"]);
    }

    #[test]
    fn directory_mount_points_are_made_with_the_parents_the_stack_lacks() {
        let tmp = tempfile::tempdir().unwrap();
        // No /run at all: run (root's, 0755) and run/mayfly are made.
        let bare = tree(tmp.path(), "bare", &[spec("", Kind::Dir, 0o755, T)]);
        let dest = tmp.path().join("p1");
        let made = mount_points(std::slice::from_ref(&bare), &dest, &[], &["run/mayfly"]).unwrap();
        assert_eq!(made, vec!["run/mayfly"]);
        for d in ["run", "run/mayfly"] {
            let m = fs::symlink_metadata(dest.join(d)).unwrap();
            assert!(m.is_dir(), "{d}");
            assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 0, 0), "{d}");
        }
        // The stack's /run (0700, its owner): only run/mayfly is new; run looks as the stack's.
        let with_run = tree(
            tmp.path(),
            "with-run",
            &[
                spec("", Kind::Dir, 0o755, T),
                owned(spec("run", Kind::Dir, 0o700, T), 7, 8),
            ],
        );
        let dest = tmp.path().join("p2");
        let made =
            mount_points(std::slice::from_ref(&with_run), &dest, &[], &["run/mayfly"]).unwrap();
        assert_eq!(made, vec!["run/mayfly"]);
        let run = fs::symlink_metadata(dest.join("run")).unwrap();
        assert_eq!((run.mode() & 0o7777, run.uid(), run.gid()), (0o700, 7, 8));
        // Already there, or a symlink in the way: nothing is made.
        let has = tree(
            tmp.path(),
            "has",
            &[
                spec("", Kind::Dir, 0o755, T),
                spec("run", Kind::Dir, 0o755, T),
                spec("run/mayfly", Kind::Dir, 0o755, T),
            ],
        );
        let linked = tree(
            tmp.path(),
            "linked",
            &[
                spec("", Kind::Dir, 0o755, T),
                spec("run", Kind::Symlink("/host/run"), 0o777, T),
            ],
        );
        for (i, layer) in [has, linked].into_iter().enumerate() {
            let dest = tmp.path().join(format!("none-{i}"));
            let made = mount_points(&[layer], &dest, &[], &["run/mayfly"]).unwrap();
            assert!(made.is_empty(), "{made:?}");
            assert!(!dest.exists());
        }
    }
}
