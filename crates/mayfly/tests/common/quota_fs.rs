//! A small filesystem with project quotas for the disk-limit tests: a sparse image file,
//! formatted ext4 (`-O quota,project`) or xfs, attached to a loop device and mounted with
//! `prjquota` at a given directory (a test daemon's state directory, before the daemon
//! starts). [`QuotaFs::finish`] unmounts it, detaches the loop device, deletes the image and
//! says what could not be undone; `Drop` does the same quietly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The filesystem of a [`QuotaFs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// ext4 with the `quota` and `project` features.
    Ext4,
    /// xfs (project quotas need no format feature, only the mount option).
    Xfs,
}

impl QuotaKind {
    fn mkfs(self) -> &'static str {
        match self {
            QuotaKind::Ext4 => "mkfs.ext4",
            QuotaKind::Xfs => "mkfs.xfs",
        }
    }

    /// Whether this machine can make such a filesystem (xfs needs xfsprogs).
    pub fn available(self) -> bool {
        Command::new(self.mkfs())
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The kernel option this filesystem's project quotas need when the running kernel's
    /// configuration shows it off (this machine's kernel has neither); `None` when it is on
    /// or cannot be read (then a failing mount fails the test).
    pub fn kernel_lacks_quota(self) -> Option<&'static str> {
        let option = match self {
            QuotaKind::Ext4 => "CONFIG_QFMT_V2",
            QuotaKind::Xfs => "CONFIG_XFS_QUOTA",
        };
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let config = std::fs::read_to_string(format!("/boot/config-{release}"))
            .ok()
            .or_else(|| {
                let out = Command::new("zcat").arg("/proc/config.gz").output().ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            })?;
        let off = format!("# {option} is not set");
        config.lines().any(|l| l == off).then_some(option)
    }
}

/// A mounted image with project quotas.
#[derive(Debug)]
pub struct QuotaFs {
    image: PathBuf,
    point: PathBuf,
    loop_dev: Option<String>,
    mounted: bool,
}

fn run(what: &str, cmd: &mut Command) -> Result<String, String> {
    let out = super::try_run_command(
        std::mem::replace(cmd, Command::new("true")),
        None,
        Duration::from_secs(60),
    )
    .map_err(|e| format!("{what}: {e}"))?;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(format!("{what}: {out}"))
    }
}

impl QuotaFs {
    /// Formats `image` (sparse, `size_mib` MiB) as `kind` and mounts it with `prjquota` at
    /// `point` (created if missing).
    pub fn mount(kind: QuotaKind, image: &Path, point: &Path, size_mib: u64) -> QuotaFs {
        Self::new(kind, image, point, size_mib, true)
            .unwrap_or_else(|e| panic!("cannot make the quota filesystem: {e}"))
    }

    /// Like [`Self::mount`] but with project ids only, no quotas (ext4 with the `project`
    /// feature alone, mounted without `prjquota`; xfs without it): for kernels without quota
    /// support, where project ids still label files and still refuse cross-project renames.
    pub fn mount_labels_only(kind: QuotaKind, image: &Path, point: &Path) -> QuotaFs {
        Self::new(kind, image, point, 512, false)
            .unwrap_or_else(|e| panic!("cannot make the filesystem: {e}"))
    }

    fn new(
        kind: QuotaKind,
        image: &Path,
        point: &Path,
        size_mib: u64,
        quotas: bool,
    ) -> Result<QuotaFs, String> {
        let mut fs = QuotaFs {
            image: image.to_owned(),
            point: point.to_owned(),
            loop_dev: None,
            mounted: false,
        };
        if let Err(e) = fs.try_mount(kind, size_mib, quotas) {
            let _ = fs.undo();
            return Err(e);
        }
        Ok(fs)
    }

    fn try_mount(&mut self, kind: QuotaKind, size_mib: u64, quotas: bool) -> Result<(), String> {
        let f = std::fs::File::create(&self.image).map_err(|e| e.to_string())?;
        f.set_len(size_mib << 20).map_err(|e| e.to_string())?;
        drop(f);
        let mut mkfs = Command::new(kind.mkfs());
        match kind {
            QuotaKind::Ext4 => mkfs.args([
                "-q",
                "-F",
                "-O",
                if quotas { "quota,project" } else { "project" },
                "-E",
                "nodiscard",
            ]),
            QuotaKind::Xfs => mkfs.args(["-q", "-f", "-K"]),
        };
        run("mkfs", mkfs.arg(&self.image))?;
        let dev = run(
            "losetup",
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&self.image),
        )?;
        self.loop_dev = Some(dev.trim().to_owned());
        std::fs::create_dir_all(&self.point).map_err(|e| e.to_string())?;
        let options = if quotas { "prjquota" } else { "defaults" };
        run(
            "mount",
            Command::new("mount")
                .args(["-o", options, dev.trim()])
                .arg(&self.point),
        )?;
        self.mounted = true;
        Ok(())
    }

    /// The loop device.
    pub fn device(&self) -> &str {
        self.loop_dev.as_deref().unwrap_or("")
    }

    /// Unmounts, detaches and deletes; what went wrong.
    fn undo(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.mounted {
            // A lazy unmount would hide a busy filesystem: a plain one, retried briefly.
            let done = super::poll_until(Duration::from_secs(10), || {
                rustix::mount::unmount(&self.point, rustix::mount::UnmountFlags::empty()).is_ok()
            });
            if done {
                self.mounted = false;
            } else {
                problems.push(format!("cannot unmount {}", self.point.display()));
                let _ = rustix::mount::unmount(&self.point, rustix::mount::UnmountFlags::DETACH);
            }
        }
        if let Some(dev) = self.loop_dev.take() {
            if let Err(e) = run("losetup -d", Command::new("losetup").args(["-d", &dev])) {
                problems.push(e);
            }
            let left = Command::new("losetup")
                .arg("-j")
                .arg(&self.image)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if !left.trim().is_empty() {
                problems.push(format!("loop devices remain: {left}"));
            }
        }
        if let Err(e) = std::fs::remove_file(&self.image)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("cannot delete {}: {e}", self.image.display()));
        }
        problems
    }

    /// Unmounts, detaches and deletes, then checks that no mount at the point and no loop
    /// device on the image is left; what is wrong (empty: all clean).
    pub fn finish(mut self) -> Vec<String> {
        let mut problems = self.undo();
        let point = self.point.display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(point.as_str()))
        {
            problems.push(format!("{point} is still mounted"));
        }
        if self.image.exists() {
            problems.push(format!("{} remains", self.image.display()));
        }
        problems
    }
}

impl Drop for QuotaFs {
    fn drop(&mut self) {
        let _ = self.undo();
    }
}

/// The loop devices (`losetup -a`) whose backing file is under `dir`.
pub fn loop_devices_under(dir: &Path) -> Vec<String> {
    let Ok(out) = Command::new("losetup").arg("-a").output() else {
        return Vec::new();
    };
    let needle = dir.display().to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

/// Asserts that the daemon of `d` left no disk of its own: no loop device backed by a file of
/// its state directory (waiting up to 10 s: loop devices are released after their unmount),
/// no image in `disks/`, and no mount under any of `dirs` (relative to the state directory).
pub fn assert_no_disk_left(d: &super::TestDaemon, dirs: &[&str]) {
    let clean = super::poll_until(Duration::from_secs(10), || {
        loop_devices_under(&d.state).is_empty()
    });
    assert!(
        clean,
        "loop devices remain: {:?}",
        loop_devices_under(&d.state)
    );
    assert!(
        d.state_entries("disks").is_empty(),
        "images remain: {:?}",
        d.state_entries("disks")
    );
    for dir in dirs {
        let mounts = super::mounts_mentioning(&d.state.join(dir).display().to_string());
        assert!(mounts.is_empty(), "mounts remain under {dir}: {mounts:?}");
    }
}

/// Whether `dir` is a mount point (in this process's mount namespace).
pub fn is_mount(dir: &Path) -> bool {
    let want = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}
