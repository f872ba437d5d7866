//! Disk limits where the state filesystem has no project quotas: a filesystem image per
//! instance.
//!
//! An instance with a disk limit gets a sparse ext4 image `<state>/disks/<id>.img`, sized so
//! that about the limit is usable, loop-mounted (`nodev,nosuid`) over its directory
//! `<state>/instances/<id>/`: every path the engine and the forker use stays the same, and a
//! write past the limit fails with ENOSPC because the filesystem is full.
//!
//! The image file is authoritative: it is renamed to its final name only once it holds a
//! complete copy of the directory, and the directory's old content is moved aside only after
//! that. So a failure (or a crash) at any step leaves either the plain directory as it was, or
//! the image with everything; temporaries (`<id>.img.new`, the mount point `<id>.mnt`, the old
//! content `<id>.old`) are removed on failure and by [`recover`] at start-up. Loop devices are
//! made by `mount -o loop`, which gives them the auto-clear flag: they go with their mount.
//!
//! Growing works on a mounted image (`losetup -c` + online `resize2fs`, which needs
//! `CAP_SYS_RESOURCE`; without it the new size waits for the next start); shrinking, growing
//! a stopped instance, making the first image and going back to a plain directory copy the
//! content, so they need the instance stopped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::protocol::Failure;
use crate::{DriverError, files};

/// Deadline of `mount`, `umount` and `losetup`.
const MOUNT_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline of `mkfs.ext4` and `resize2fs`.
const MKFS_DEADLINE: Duration = Duration::from_secs(120);
/// At most this much of a failing program's error output is kept for the message.
const STDERR_MAX: u64 = 4096;

fn failed(message: String) -> DriverError {
    DriverError::Failed(Failure::other(message))
}

/// The test hook: `MAYFLY_FAIL_AT` (comma-separated) naming `name` fails that step.
fn inject(name: &str) -> Result<(), DriverError> {
    let hit = std::env::var("MAYFLY_FAIL_AT").is_ok_and(|v| v.split(',').any(|n| n.trim() == name));
    if hit {
        return Err(failed(format!(
            "injected failure at {name} (MAYFLY_FAIL_AT)"
        )));
    }
    Ok(())
}

/// The test hook for crashes: `MAYFLY_CRASH_AT` naming `name` aborts the process there.
fn crash_point(name: &str) {
    if std::env::var("MAYFLY_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("mayfly: crashing at {name} (MAYFLY_CRASH_AT)");
        std::process::abort();
    }
}

/// The size of the image for a limit of `bytes`: the limit, plus ext4's own metadata (inode
/// tables at one 256-byte inode per 16 KiB, bitmaps and group descriptors, the journal), so
/// that about the limit is usable. Whole MiB. `None` where that overflows.
pub fn image_size(bytes: u64) -> Option<u64> {
    const MIB: u64 = 1 << 20;
    let journal = journal_mib(bytes) * MIB;
    let size = bytes
        .checked_add(bytes / 24)?
        .checked_add(journal)?
        .checked_add(4 * MIB)?;
    size.div_ceil(MIB).checked_mul(MIB)
}

/// [`image_size`], or the error of a limit too large for an image.
fn checked_image_size(bytes: u64) -> Result<u64, DriverError> {
    image_size(bytes).ok_or_else(|| failed(format!("a disk limit of {bytes} bytes is too large")))
}

/// The journal of an image for a limit of `bytes` (MiB): 1/64 of it, 4 to 128 MiB.
fn journal_mib(bytes: u64) -> u64 {
    (bytes >> 26).clamp(4, 128)
}

/// Finds `program` in the usual system directories or `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .into_iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Runs `program` with `args` within `deadline`; an error carries its error output.
fn run(program: &str, args: &[&std::ffi::OsStr], deadline: Duration) -> Result<(), DriverError> {
    use std::io::Read;
    let exe = find_program(program).ok_or_else(|| {
        failed(format!(
            "`{program}` is not installed (it is in e2fsprogs / util-linux)"
        ))
    })?;
    let shown = || {
        let mut s = program.to_owned();
        for a in args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    };
    let mut child = Command::new(&exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run {}: {e}", shown())))?;
    let end = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "{} did not finish within {} s",
                    shown(),
                    deadline.as_secs()
                )));
            }
            Err(e) => return Err(failed(format!("cannot wait for {}: {e}", shown()))),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(stderr) = child.stderr.take() {
        let _ = stderr.take(STDERR_MAX).read_to_string(&mut err);
    }
    Err(failed(format!(
        "{} failed ({status}): {}",
        shown(),
        err.trim()
    )))
}

/// The source (device) of the mount whose mount point is exactly `dir`, from
/// `/proc/self/mountinfo` (the last one: the visible one).
pub fn mount_source(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The table shows resolved paths (a state directory reached through a symbolic link).
    let resolved = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let want = resolved.to_str()?;
    let mut found = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        if point.replace("\\040", " ") == want
            && let Some(source) = right.split(' ').nth(1)
        {
            found = Some(source.to_owned());
        }
    }
    found
}

fn mount(image: &Path, dir: &Path) -> Result<(), DriverError> {
    run(
        "mount",
        &[
            "-t".as_ref(),
            "ext4".as_ref(),
            "-o".as_ref(),
            "loop,nodev,nosuid,noatime".as_ref(),
            image.as_os_str(),
            dir.as_os_str(),
        ],
        MOUNT_DEADLINE,
    )
}

fn umount(dir: &Path) -> Result<(), DriverError> {
    run("umount", &[dir.as_os_str()], MOUNT_DEADLINE)
}

/// Unmounts whatever is mounted at `dir` (all of it; lazily when busy). For removals.
fn umount_all(dir: &Path) {
    for _ in 0..8 {
        if mount_source(dir).is_none() {
            return;
        }
        if umount(dir).is_err() {
            let _ = run("umount", &["-l".as_ref(), dir.as_os_str()], MOUNT_DEADLINE);
        }
    }
}

/// Removes `path` whatever it is (a file, a tree), if it exists.
fn remove_any(path: &Path) -> Result<(), DriverError> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => mayfly_image::remove_tree(path).map_err(|e| {
            failed(format!(
                "cannot remove {}: {}",
                path.display(),
                crate::error_chain(&e)
            ))
        }),
        Ok(_) => std::fs::remove_file(path).map_err(files("remove", path)),
    }
}

/// Makes a sparse image at `path` formatted for a limit of `bytes`.
fn make_image(path: &Path, bytes: u64) -> Result<(), DriverError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(files("create", path))?;
    file.set_len(checked_image_size(bytes)?)
        .map_err(files("size", path))?;
    drop(file);
    let journal = format!("size={}", journal_mib(bytes));
    run(
        "mkfs.ext4",
        &[
            "-q".as_ref(),
            "-F".as_ref(),
            "-m".as_ref(),
            "0".as_ref(),
            "-T".as_ref(),
            "default".as_ref(),
            "-b".as_ref(),
            "4096".as_ref(),
            "-J".as_ref(),
            journal.as_ref(),
            "-E".as_ref(),
            "nodiscard,lazy_itable_init=1".as_ref(),
            path.as_os_str(),
        ],
        MKFS_DEADLINE,
    )
}

/// Copies the content of `src` into the root of the filesystem mounted at `mnt` (which gets
/// `src`'s owner and mode): all attributes, xattrs (overlay markers), whiteouts, hard links.
fn copy_in(src: &Path, mnt: &Path) -> Result<(), DriverError> {
    let _ = std::fs::remove_dir(mnt.join("lost+found"));
    let staged = mnt.join(".mayfly-copy");
    let options = mayfly_image::CopyOptions {
        xattrs: mayfly_image::XattrPolicy::All,
        one_file_system: true,
    };
    mayfly_image::copy_tree(src, &staged, options, &mayfly_image::NoProgress).map_err(|e| {
        failed(format!(
            "cannot copy {} into its disk image: {}",
            src.display(),
            crate::error_chain(&e)
        ))
    })?;
    for entry in std::fs::read_dir(&staged).map_err(files("read", &staged))? {
        let entry = entry.map_err(files("read", &staged))?;
        let to = mnt.join(entry.file_name());
        std::fs::rename(entry.path(), &to).map_err(files("move into place", &to))?;
    }
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(&staged).map_err(files("stat", &staged))?;
        std::os::unix::fs::chown(mnt, Some(meta.uid()), Some(meta.gid()))
            .map_err(files("chown", mnt))?;
        std::fs::set_permissions(mnt, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(files("chmod", mnt))?;
    }
    std::fs::remove_dir(&staged).map_err(files("remove", &staged))
}

/// A fresh image `new` for `bytes`, holding a copy of `src`; on failure nothing of it is
/// left (no mount, no file).
fn build(new: &Path, mnt: &Path, src: &Path, bytes: u64) -> Result<(), DriverError> {
    umount_all(mnt);
    remove_any(mnt)?;
    remove_any(new)?;
    let made = (|| {
        make_image(new, bytes)?;
        std::fs::create_dir(mnt).map_err(files("create", mnt))?;
        mount(new, mnt)?;
        let copied = copy_in(src, mnt).and_then(|()| inject("disk-image:copied"));
        let unmounted = umount(mnt);
        copied?;
        unmounted
    })();
    if made.is_err() {
        umount_all(mnt);
    }
    let _ = std::fs::remove_dir(mnt);
    if made.is_err() {
        let _ = std::fs::remove_file(new);
    }
    made
}

/// Filesystem images of the instances of one state directory.
#[derive(Debug)]
pub struct DiskImages {
    state: PathBuf,
    /// Why images cannot be made here (`None`: they can).
    unsupported: Option<String>,
}

impl DiskImages {
    /// The images of `state_dir`; whether they can be made is probed once, here.
    pub fn probe(state_dir: &Path) -> Self {
        DiskImages {
            state: state_dir.to_owned(),
            unsupported: Self::why_not(),
        }
    }

    /// Images of `state_dir`, without probing (for start-up recovery and removals).
    pub fn at(state_dir: &Path) -> Self {
        DiskImages {
            state: state_dir.to_owned(),
            unsupported: None,
        }
    }

    fn why_not() -> Option<String> {
        let control = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control");
        if let Err(e) = control {
            return Some(format!(
                "no loop devices can be made (/dev/loop-control: {e}): load the `loop` module (`modprobe loop`) or run the daemon where /dev/loop-control is available"
            ));
        }
        for program in ["mkfs.ext4", "resize2fs", "mount", "umount", "losetup"] {
            if find_program(program).is_none() {
                return Some(format!(
                    "`{program}` is not installed: install e2fsprogs and util-linux"
                ));
            }
        }
        None
    }

    /// Why limits cannot be enforced with images here (`None`: they can).
    pub fn unsupported(&self) -> Option<&str> {
        self.unsupported.as_deref()
    }

    /// The directory holding the images.
    pub fn dir(&self) -> PathBuf {
        self.state.join("disks")
    }

    fn paths(&self, instance_dir: &Path) -> Result<(String, PathBuf), DriverError> {
        let id = instance_dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && !n.starts_with('.'))
            .ok_or_else(|| {
                failed(format!(
                    "{} is no instance directory",
                    instance_dir.display()
                ))
            })?;
        Ok((id.to_owned(), self.dir()))
    }

    /// The image of the instance whose directory is `instance_dir`.
    pub fn image_of(&self, instance_dir: &Path) -> Option<PathBuf> {
        let (id, dir) = self.paths(instance_dir).ok()?;
        Some(dir.join(format!("{id}.img")))
    }

    /// Whether the instance of `instance_dir` has an image.
    pub fn has_image(&self, instance_dir: &Path) -> bool {
        self.image_of(instance_dir).is_some_and(|p| p.is_file())
    }

    /// Mounts the image of `instance_dir` over it if it has one that is not mounted (after a
    /// reboot, or a crash between the steps of a change). What the directory holds then is a
    /// leftover (the image has all of it) and is moved aside and deleted.
    pub fn ensure_mounted(&self, instance_dir: &Path) -> Result<bool, DriverError> {
        let (id, disks) = self.paths(instance_dir)?;
        let image = disks.join(format!("{id}.img"));
        if !image.is_file() {
            return Ok(false);
        }
        if mount_source(instance_dir).is_some() {
            return Ok(true);
        }
        let old = disks.join(format!("{id}.old"));
        if instance_dir.exists() {
            remove_any(&old)?;
            std::fs::rename(instance_dir, &old).map_err(files("move aside", instance_dir))?;
        }
        std::fs::create_dir_all(instance_dir).map_err(files("create", instance_dir))?;
        mount(&image, instance_dir)?;
        remove_any(&old)?;
        Ok(true)
    }

    /// Sets the limit of `instance_dir` to `bytes` with an image (making it, growing it, or,
    /// when the instance is not `running`, shrinking it).
    pub fn set(&self, instance_dir: &Path, bytes: u64, running: bool) -> Result<(), DriverError> {
        if let Some(why) = &self.unsupported {
            return Err(failed(why.clone()));
        }
        let (id, disks) = self.paths(instance_dir)?;
        std::fs::create_dir_all(&disks).map_err(files("create", &disks))?;
        let image = disks.join(format!("{id}.img"));
        let new = disks.join(format!("{id}.img.new"));
        let mnt = disks.join(format!("{id}.mnt"));
        let size = checked_image_size(bytes)?;
        if !image.is_file() {
            if running {
                return Err(failed(
                    "a disk image is made for a running instance at its next start (its directory is copied into it)".into(),
                ));
            }
            if mount_source(instance_dir).is_some() {
                return Err(failed(format!(
                    "{} is a mount point already",
                    instance_dir.display()
                )));
            }
            build(&new, &mnt, instance_dir, bytes)?;
            return self.swap_in(&id, &new, &image, instance_dir, false);
        }
        self.ensure_mounted(instance_dir)?;
        let current = std::fs::metadata(&image)
            .map_err(files("stat", &image))?
            .len();
        if size == current {
            return Ok(());
        }
        if running {
            if size < current {
                return Err(failed(
                    "a disk image shrinks only while the instance is stopped: the new limit takes effect at its next start".into(),
                ));
            }
            return grow(&image, instance_dir, current, size).map_err(|e| {
                failed(format!(
                    "the mounted disk image cannot grow ({}): the new limit takes effect at the next start",
                    crate::error_chain(&e)
                ))
            });
        }
        // Stopped: a new image of the new size with a copy of the content (growing
        // offline the same way needs no CAP_SYS_RESOURCE, which online resizing does).
        build(&new, &mnt, instance_dir, bytes)?;
        self.swap_in(&id, &new, &image, instance_dir, true)
    }

    /// Puts the complete image `new` in place of the directory's content (or old image).
    fn swap_in(
        &self,
        id: &str,
        new: &Path,
        image: &Path,
        instance_dir: &Path,
        replacing: bool,
    ) -> Result<(), DriverError> {
        let old = self.dir().join(format!("{id}.old"));
        let undo = |e: DriverError| {
            let _ = std::fs::remove_file(new);
            e
        };
        if replacing {
            umount(instance_dir).map_err(undo)?;
        } else {
            remove_any(&old).map_err(undo)?;
            std::fs::rename(instance_dir, &old)
                .map_err(files("move aside", instance_dir))
                .map_err(undo)?;
            if let Err(e) = std::fs::create_dir(instance_dir) {
                let _ = std::fs::rename(&old, instance_dir);
                return Err(undo(files("create", instance_dir)(e)));
            }
        }
        crash_point("disk-image:moved-aside");
        // From here the new image is the instance's content.
        if let Err(e) = std::fs::rename(new, image) {
            // Put things back as they were.
            if replacing {
                let _ = mount(image, instance_dir);
            } else {
                let _ = std::fs::remove_dir(instance_dir);
                let _ = std::fs::rename(&old, instance_dir);
            }
            return Err(undo(files("move into place", new)(e)));
        }
        crash_point("disk-image:placed");
        if let Err(e) = mount(image, instance_dir) {
            if !replacing {
                // Back to the plain directory, which still holds everything.
                let _ = std::fs::remove_dir(instance_dir);
                if std::fs::rename(&old, instance_dir).is_ok() {
                    let _ = std::fs::remove_file(image);
                }
            }
            return Err(e);
        }
        remove_any(&old)
    }

    /// Lifts the limit of `instance_dir`: its content is copied out of the image into a plain
    /// directory, and the image goes. Only while the instance is not `running`.
    pub fn unset(&self, instance_dir: &Path, running: bool) -> Result<(), DriverError> {
        let (id, disks) = self.paths(instance_dir)?;
        let image = disks.join(format!("{id}.img"));
        if !image.is_file() {
            return Ok(());
        }
        if running {
            return Err(failed(
                "a disk image is removed (its content copied out) only while the instance is stopped: the limit goes at its next start".into(),
            ));
        }
        self.ensure_mounted(instance_dir)?;
        let parent = instance_dir.parent().unwrap_or(Path::new("/"));
        let out = parent.join(format!(".{id}.out"));
        remove_any(&out)?;
        let options = mayfly_image::CopyOptions {
            xattrs: mayfly_image::XattrPolicy::All,
            one_file_system: true,
        };
        let copied =
            mayfly_image::copy_tree(instance_dir, &out, options, &mayfly_image::NoProgress)
                .map_err(|e| {
                    failed(format!(
                        "cannot copy {} out of its disk image: {}",
                        instance_dir.display(),
                        crate::error_chain(&e)
                    ))
                })
                .and_then(|_| inject("disk-image:copied-out"))
                .and_then(|()| umount(instance_dir));
        if let Err(e) = copied {
            let _ = remove_any(&out);
            return Err(e);
        }
        // The image stays authoritative until the copy is in place.
        let old = disks.join(format!("{id}.old"));
        let placed = remove_any(&old)
            .and_then(|()| {
                std::fs::rename(instance_dir, &old).map_err(files("move aside", instance_dir))
            })
            .and_then(|()| {
                std::fs::rename(&out, instance_dir).map_err(files("move into place", &out))
            });
        if let Err(e) = placed {
            let _ = self.ensure_mounted(instance_dir);
            let _ = remove_any(&out);
            return Err(e);
        }
        let _ = remove_any(&old);
        std::fs::remove_file(&image).map_err(files("remove", &image))
    }

    /// Unmounts and deletes the image of `instance_dir` (its content is discarded) and every
    /// temporary of it. A no-op where there is none.
    pub fn release(&self, instance_dir: &Path) -> Result<(), DriverError> {
        let (id, disks) = self.paths(instance_dir)?;
        let image = disks.join(format!("{id}.img"));
        let mnt = disks.join(format!("{id}.mnt"));
        if image.exists() || mount_source(instance_dir).is_some_and(|s| s.starts_with("/dev/loop"))
        {
            umount_all(instance_dir);
        }
        umount_all(&mnt);
        for path in [
            mnt,
            disks.join(format!("{id}.img.new")),
            disks.join(format!("{id}.old")),
            image,
        ] {
            remove_any(&path)?;
        }
        Ok(())
    }

    /// Bytes used in the image of `instance_dir`, when it has one mounted.
    pub fn usage(&self, instance_dir: &Path) -> Result<Option<u64>, DriverError> {
        if !self.has_image(instance_dir) || mount_source(instance_dir).is_none() {
            return Ok(None);
        }
        let st = rustix::fs::statvfs(instance_dir)
            .map_err(|e| files("read the disk use of", instance_dir)(e.into()))?;
        Ok(Some(st.f_blocks.saturating_sub(st.f_bfree) * st.f_frsize))
    }
}

/// Grows the mounted image `image` (of `current` bytes) to `size`, online.
fn grow(image: &Path, dir: &Path, current: u64, size: u64) -> Result<(), DriverError> {
    let device = mount_source(dir)
        .filter(|s| s.starts_with("/dev/loop"))
        .ok_or_else(|| failed(format!("{} has no loop device mounted", dir.display())))?;
    let set_len = |len: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .and_then(|f| f.set_len(len))
            .map_err(files("resize", image))
    };
    set_len(size)?;
    let resized = run("losetup", &["-c".as_ref(), device.as_ref()], MOUNT_DEADLINE)
        .and_then(|()| run("resize2fs", &[device.as_ref()], MKFS_DEADLINE));
    if resized.is_err() {
        let _ = set_len(current);
        let _ = run("losetup", &["-c".as_ref(), device.as_ref()], MOUNT_DEADLINE);
    }
    resized
}

/// At start-up, before anything reads instance directories: mounts the images of the
/// instances `known` and of the volumes `volumes` (after a reboot) and removes the images of
/// the others and every temporary an interrupted change left. Best effort: logged.
pub fn recover(
    state_dir: &Path,
    known: &std::collections::HashSet<String>,
    volumes: &std::collections::HashSet<String>,
) {
    let images = DiskImages::at(state_dir);
    let Ok(entries) = std::fs::read_dir(images.dir()) else {
        return;
    };
    let instances = state_dir.join("instances");
    let volume_dirs = state_dir.join("volumes");
    let mut ids = std::collections::BTreeSet::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name.split('.').next().unwrap_or_default().to_owned();
        if !id.is_empty() {
            ids.insert(id);
        }
    }
    for id in ids {
        // A volume's image is mounted over its directory, an instance's over its own.
        let dir = if volumes.contains(&id) || volume_dirs.join(&id).is_dir() {
            volume_dirs.join(&id)
        } else {
            instances.join(&id)
        };
        let disks = images.dir();
        let result = if known.contains(&id) || volumes.contains(&id) {
            recover_known(&images, &disks, &id, &dir)
        } else {
            images.release(&dir)
        };
        if let Err(e) = result {
            tracing::warn!(
                "cannot recover the disk image of instance {id}: {}",
                crate::error_chain(&e)
            );
        }
    }
}

/// Settles the disk image of a catalogued instance after a crash or reboot: temporaries go;
/// without a complete image, the old content moved aside (a crash while the first image was
/// put in place) goes back; with one, it is mounted.
fn recover_known(
    images: &DiskImages,
    disks: &Path,
    id: &str,
    dir: &Path,
) -> Result<(), DriverError> {
    let mnt = disks.join(format!("{id}.mnt"));
    umount_all(&mnt);
    remove_any(&mnt)?;
    remove_any(&disks.join(format!("{id}.img.new")))?;
    let old = disks.join(format!("{id}.old"));
    if !disks.join(format!("{id}.img").as_str()).is_file() && old.exists() {
        let empty = std::fs::read_dir(dir).map_or(true, |mut e| e.next().is_none());
        if !empty {
            return Err(failed(format!(
                "{} and {} both hold content and there is no image: left for an administrator",
                dir.display(),
                old.display()
            )));
        }
        let _ = std::fs::remove_dir(dir);
        return std::fs::rename(&old, dir).map_err(files("put back", &old));
    }
    images.ensure_mounted(dir)?;
    remove_any(&old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_leave_room_for_ext4_and_about_the_limit_usable() {
        let size = |b| image_size(b).unwrap();
        assert_eq!(size(16 << 20) % (1 << 20), 0);
        assert!(size(16 << 20) >= (16 << 20) + (4 << 20));
        assert!(size(1 << 30) < (1 << 30) + (64 << 20));
        assert_eq!(image_size(u64::MAX), None);
        assert_eq!(image_size(u64::MAX - (1 << 30)), None);
        assert_eq!(journal_mib(16 << 20), 4);
        assert_eq!(journal_mib(100 << 30), 128);
    }

    /// The formatted image leaves at least the limit free (and not much more).
    #[test]
    fn a_formatted_image_holds_the_limit() {
        if find_program("mkfs.ext4").is_none() || find_program("dumpe2fs").is_none() {
            eprintln!("NOT RUN: no e2fsprogs");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        for limit in [16u64 << 20, 1 << 30, 4 << 30] {
            let path = tmp.path().join(format!("{limit}.img"));
            make_image(&path, limit).unwrap();
            let out = Command::new(find_program("dumpe2fs").unwrap())
                .args(["-h".as_ref(), path.as_os_str()])
                .stderr(Stdio::null())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let field = |name: &str| -> u64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no {name} in {text}"))
            };
            let free = field("Free blocks:") * field("Block size:");
            assert!(
                free >= limit && free < limit + limit / 16 + (8 << 20),
                "limit {limit}: {free} bytes free"
            );
            std::fs::remove_file(&path).unwrap();
        }
    }
}
