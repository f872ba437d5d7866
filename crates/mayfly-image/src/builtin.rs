//! The built-in `busybox` template: a small but usable rootfs made from the host's busybox, so
//! mayfly works without downloading anything.
//!
//! The tree is reproducible: every entry is root-owned and every timestamp is [`FIXED_MTIME`],
//! so its digest depends only on the busybox binary and the applet list it reports. Applets are
//! absolute symlinks to `/bin/busybox`, resolved inside the container. `sbin/init` is our own
//! script rather than busybox init, so an instance stops at once when asked instead of running
//! an inittab.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};
use std::process::Command;

use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::ImageError;
use crate::inode::{Inode, Time, set_times_fd};
use crate::tree::{open_dir_beneath, open_empty_root};

/// Every timestamp in the tree: 2023-11-14T22:13:20Z.
const FIXED_MTIME: Time = Time {
    sec: 1_700_000_000,
    nsec: 0,
};

/// What every applet symlink points at, and where the binary goes.
const BUSYBOX: &str = "bin/busybox";
const INIT: &str = "sbin/init";

const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("home", 0o755),
    ("mnt", 0o755),
    ("proc", 0o755),
    ("root", 0o700),
    ("run", 0o755),
    ("sbin", 0o755),
    ("sys", 0o755),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("var", 0o755),
    ("var/log", 0o755),
    ("var/tmp", 0o1777),
];

const INIT_SCRIPT: &str = "#!/bin/sh
# mayfly built-in init: run /etc/rc.local once, then idle; stop at once on TERM or INT.
trap 'kill -TERM -1 2>/dev/null; exit 0' TERM INT
[ -x /etc/rc.local ] && /etc/rc.local
while :; do sleep 2147483647 & wait $!; done
";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";
const GROUP: &str = "root:x:0:
nogroup:x:65534:
";
const SHADOW: &str = "root:*:::::::
nobody:*:::::::
";
const HOSTS: &str = "127.0.0.1 localhost
::1 localhost
";
const PROFILE: &str = "export PATH=/usr/sbin:/usr/bin:/sbin:/bin
";

/// Builds the built-in `busybox` template rootfs into `dest`, an existing empty directory, from
/// the host binary `busybox` (which must be statically linked to run in the container).
///
/// The tree holds `bin/busybox`, a symlink to `/bin/busybox` for every applet that
/// `busybox --list-full` reports, the usual top-level directories, minimal `etc` files and
/// `sbin/init`, a shell script that runs `/etc/rc.local` once and then waits for a signal.
pub fn build_busybox_rootfs(busybox: &Path, dest: &Path) -> Result<(), ImageError> {
    let applets = applets(busybox)?;
    let version = version(busybox);
    let root = open_empty_root(dest)?;
    let mut builder = Builder {
        root,
        dest,
        dirs: BTreeSet::new(),
    };
    for &(dir, mode) in DIRS {
        builder.dir(dir, mode)?;
    }
    let binary = std::fs::read(busybox).map_err(|source| ImageError::Read {
        path: busybox.to_owned(),
        source,
    })?;
    builder.file(BUSYBOX, &binary, 0o755)?;
    builder.file(INIT, INIT_SCRIPT.as_bytes(), 0o755)?;
    builder.file("etc/passwd", PASSWD.as_bytes(), 0o644)?;
    builder.file("etc/group", GROUP.as_bytes(), 0o644)?;
    builder.file("etc/shadow", SHADOW.as_bytes(), 0o640)?;
    builder.file("etc/hosts", HOSTS.as_bytes(), 0o644)?;
    builder.file("etc/profile", PROFILE.as_bytes(), 0o644)?;
    let os_release = format!("NAME=\"mayfly busybox\"\nID=busybox\nVERSION_ID={version}\n");
    builder.file("etc/os-release", os_release.as_bytes(), 0o644)?;
    for applet in &applets {
        if applet != BUSYBOX && applet != INIT {
            builder.applet(applet)?;
        }
    }
    builder.finish()
}

/// The applet paths `busybox --list-full` reports, each checked to be a plain relative path.
fn applets(busybox: &Path) -> Result<BTreeSet<String>, ImageError> {
    let output = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|source| ImageError::RunBusybox {
            path: busybox.to_owned(),
            source,
        })?;
    let bad = |reason: String| ImageError::BusyboxOutput {
        path: busybox.to_owned(),
        reason,
    };
    if !output.status.success() {
        return Err(bad(format!("`--list-full` failed ({})", output.status)));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|_| bad("`--list-full` printed non-UTF-8".to_owned()))?;
    let mut applets = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let plain = !line.ends_with('/')
            && Path::new(line)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(bad(format!(
                "applet path `{line}` is not a plain relative path"
            )));
        }
        applets.insert(line.to_owned());
    }
    if !applets.contains("bin/sh") {
        return Err(bad("no `bin/sh` applet".to_owned()));
    }
    Ok(applets)
}

/// The version from the first line of `busybox --help` (`BusyBox v1.36.1 (…) multi-call
/// binary.`), or `unknown`.
fn version(busybox: &Path) -> String {
    let Ok(output) = Command::new(busybox).arg("--help").output() else {
        return "unknown".to_owned();
    };
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .next()
        .and_then(|line| {
            line.split_whitespace()
                .filter_map(|word| word.strip_prefix('v'))
                .find(|v| v.starts_with(|c: char| c.is_ascii_digit()))
                .filter(|v| {
                    v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                })
        })
        .unwrap_or("unknown")
        .to_owned()
}

struct Builder<'a> {
    root: OwnedFd,
    dest: &'a Path,
    /// Every directory created, for the final pass over their mtimes.
    dirs: BTreeSet<String>,
}

impl Builder<'_> {
    /// Creates the directory `rel` (and missing parents, mode 0755) with `mode`.
    fn dir(&mut self, rel: &str, mode: u32) -> Result<(), ImageError> {
        if self.dirs.contains(rel) {
            return Ok(());
        }
        let (parent, leaf) = self.parent(rel)?;
        rfs::mkdirat(&parent, &leaf, Mode::from_raw_mode(0o700))
            .map_err(|e| self.err_create(rel, e.into()))?;
        let fd = open_dir_beneath(parent.as_fd(), leaf.as_bytes()).map_err(|source| {
            ImageError::Open {
                path: self.dest.join(rel),
                source,
            }
        })?;
        Inode::root(mode, FIXED_MTIME).set_owner_mode(fd.as_fd(), &self.dest.join(rel))?;
        self.dirs.insert(rel.to_owned());
        Ok(())
    }

    fn file(&mut self, rel: &str, content: &[u8], mode: u32) -> Result<(), ImageError> {
        let (parent, leaf) = self.parent(rel)?;
        let path = self.dest.join(rel);
        let fd = rfs::openat(
            &parent,
            &leaf,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.err_create(rel, e.into()))?;
        let mut file = File::from(fd);
        file.write_all(content)
            .map_err(|source| ImageError::Write {
                path: path.clone(),
                source,
            })?;
        let inode = Inode::root(mode, FIXED_MTIME);
        inode.set_owner_mode(file.as_fd(), &path)?;
        inode.set_times(file.as_fd(), &path)
    }

    fn applet(&mut self, rel: &str) -> Result<(), ImageError> {
        let (parent, leaf) = self.parent(rel)?;
        let path = self.dest.join(rel);
        match rfs::symlinkat(c"/bin/busybox", &parent, &leaf) {
            Ok(()) => {}
            // A directory or file of ours with the same name wins over the applet.
            Err(rustix::io::Errno::EXIST) => return Ok(()),
            Err(err) => return Err(self.err_create(rel, err.into())),
        }
        let inode = Inode::root(0o777, FIXED_MTIME);
        inode.set_owner_mode_at(parent.as_fd(), &leaf, FileType::Symlink, &path)?;
        inode.set_times_at(parent.as_fd(), &leaf, &path)
    }

    /// Opens the parent of `rel`, creating missing directories, and returns it with the final
    /// component.
    fn parent(&mut self, rel: &str) -> Result<(OwnedFd, CString), ImageError> {
        let (dir, leaf) = rel.rsplit_once('/').unwrap_or(("", rel));
        if !dir.is_empty() {
            self.dir(dir, 0o755)?;
        }
        let fd = open_dir_beneath(self.root.as_fd(), dir.as_bytes()).map_err(|source| {
            ImageError::Open {
                path: self.dest.join(dir),
                source,
            }
        })?;
        let leaf = CString::new(leaf).map_err(|e| self.err_create(rel, e.into()))?;
        Ok((fd, leaf))
    }

    /// Sets directory mtimes now that nothing more is created in them, deepest first.
    fn finish(self) -> Result<(), ImageError> {
        let mut dirs: Vec<&str> = self.dirs.iter().map(String::as_str).collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        dirs.push("");
        for dir in dirs {
            let path = self.dest.join(dir);
            let fd = open_dir_beneath(self.root.as_fd(), dir.as_bytes()).map_err(|source| {
                ImageError::Open {
                    path: path.clone(),
                    source,
                }
            })?;
            if dir.is_empty() {
                Inode::root(0o755, FIXED_MTIME).set_owner_mode(fd.as_fd(), &path)?;
            }
            set_times_fd(fd.as_fd(), FIXED_MTIME, &path)?;
        }
        Ok(())
    }

    fn err_create(&self, rel: &str, source: io::Error) -> ImageError {
        ImageError::Create {
            path: self.dest.join(rel),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::tree_digest;

    const HOST_BUSYBOX: &str = "/bin/busybox";

    fn build(tmp: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
        let dest = tmp.path().join(name);
        fs::create_dir(&dest).unwrap();
        build_busybox_rootfs(Path::new(HOST_BUSYBOX), &dest).unwrap();
        dest
    }

    #[test]
    fn builds_a_reproducible_usable_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let one = build(&tmp, "one");
        let two = build(&tmp, "two");
        assert_eq!(tree_digest(&one).unwrap(), tree_digest(&two).unwrap());

        assert_eq!(
            fs::read_link(one.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            fs::read_link(one.join("usr/bin/env")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            fs::read(one.join("bin/busybox")).unwrap(),
            fs::read(HOST_BUSYBOX).unwrap()
        );
        let init = fs::symlink_metadata(one.join("sbin/init")).unwrap();
        assert!(init.is_file());
        assert_eq!(init.permissions().mode() & 0o7777, 0o755);
        assert_eq!(
            fs::read_to_string(one.join("sbin/init")).unwrap(),
            INIT_SCRIPT
        );
        assert!(INIT_SCRIPT.starts_with("#!/bin/sh\n# mayfly built-in init"));

        let mode = |rel: &str| {
            fs::symlink_metadata(one.join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode(""), 0o755);
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("var/tmp"), 0o1777);
        assert_eq!(mode("root"), 0o700);
        assert_eq!(mode("etc/shadow"), 0o640);
        assert_eq!(mode("bin/busybox"), 0o755);
        assert!(
            fs::read_to_string(one.join("etc/passwd"))
                .unwrap()
                .starts_with("root:x:0:0:root:/root:/bin/sh\n")
        );
        let os_release = fs::read_to_string(one.join("etc/os-release")).unwrap();
        assert!(os_release.contains("VERSION_ID=1."), "{os_release}");

        // Every entry root-owned with the fixed mtime, symlinks and the root included.
        let mut stack = vec![one.clone()];
        while let Some(path) = stack.pop() {
            let meta = fs::symlink_metadata(&path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", path.display());
            assert_eq!(
                (meta.mtime(), meta.mtime_nsec()),
                (1_700_000_000, 0),
                "{}",
                path.display()
            );
            if meta.is_dir() {
                stack.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
        }
    }

    #[test]
    fn runs_in_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = build(&tmp, "root");
        // Applet symlinks are absolute, so run them through the binary from the host side.
        let out = Command::new(root.join("bin/busybox"))
            .args(["sh", "-n", root.join("sbin/init").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn refuses_a_destination_that_is_not_empty() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("etc")).unwrap();
        let result = build_busybox_rootfs(Path::new(HOST_BUSYBOX), tmp.path());
        assert!(
            matches!(result, Err(ImageError::NotEmpty { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn reads_the_version_line() {
        assert!(version(Path::new(HOST_BUSYBOX)).starts_with("1."));
        assert_eq!(version(Path::new("/nonexistent/busybox")), "unknown");
        let err =
            build_busybox_rootfs(Path::new("/nonexistent/busybox"), Path::new("/nonexistent"))
                .unwrap_err();
        assert_eq!(err.to_string(), "cannot run `/nonexistent/busybox`");
    }
}
