//! The NoCloud seed given to a template's own cloud-init: `meta-data`, `user-data` and
//! `network-config` in `<instance dir>/run/nocloud/`, bound read-only at
//! `/var/lib/cloud/seed/nocloud`; and cloud-init's result, read from the running instance.

use std::os::fd::OwnedFd;
use std::path::Path;

use mayfly_api::UserDataStatus;

use crate::EngineError;

/// Where cloud-init's NoCloud datasource looks for its seed.
const SEED_TARGET: &str = "/var/lib/cloud/seed/nocloud";
const SEED_DIR: &str = "run/nocloud";

/// mayfly configures the instance's interfaces itself (before the init runs): cloud-init is
/// told to leave the network alone. Top-level `config: disabled` (no `network:` wrapper): the
/// form NoCloud's `network-config` file takes in every cloud-init (bookworm's 22.4 ignores
/// it inside a `network:` mapping).
const NETWORK_CONFIG: &str = "config: disabled\n";

/// A seed's files.
#[derive(Debug)]
pub(super) struct Seed {
    pub meta_data: String,
    pub user_data: String,
}

/// `meta-data`: mayfly's metadata (as in `meta.json`; JSON is YAML) with cloud-init's own
/// keys added: `instance-id` (stable for the instance, new for a clone) and
/// `local-hostname`. cloud-init shows it to templates and `cloud-init query` as
/// `ds.meta_data`.
pub(super) fn meta_data(id: &str, hostname: &str, meta: &serde_json::Value) -> String {
    let mut m = meta.clone();
    if let Some(obj) = m.as_object_mut() {
        obj.insert("instance-id".into(), id.into());
        obj.insert("local-hostname".into(), hostname.into());
    }
    let mut text = serde_json::to_string_pretty(&m).unwrap_or_default();
    text.push('\n');
    text
}

/// Whether the last start of the instance in `dir` was given a seed.
pub(super) fn seeded(dir: &Path) -> bool {
    dir.join(SEED_DIR).join("meta-data").exists()
}

/// Where the last cloud-init status seen in the running instance is kept, for `info` once it
/// stopped.
const LAST_STATUS: &str = "run/cloud-init.status";

/// Keeps `status` (seen in the running instance of `dir`) for when it has stopped.
pub(super) fn remember(dir: &Path, status: &UserDataStatus) {
    let path = dir.join(LAST_STATUS);
    let Ok(bytes) = serde_json::to_vec(status) else {
        return;
    };
    if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
        let _ = super::write_private(&path, &bytes, 0o600);
    }
}

/// The last cloud-init status seen while the instance of `dir` ran.
pub(super) fn remembered(dir: &Path) -> Option<UserDataStatus> {
    serde_json::from_slice(&std::fs::read(dir.join(LAST_STATUS)).ok()?).ok()
}

/// Removes a seed left by an earlier start (the template's new version has no cloud-init).
pub(super) fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir.join(SEED_DIR));
    let _ = std::fs::remove_file(dir.join(LAST_STATUS));
}

/// Writes `seed` under `dir`; returns the bind that shows it.
pub(super) fn write(dir: &Path, seed: &Seed) -> Result<mayfly_driver::BindMount, EngineError> {
    let _ = std::fs::remove_file(dir.join(LAST_STATUS));
    let d = dir.join(SEED_DIR);
    std::fs::create_dir_all(&d).map_err(crate::error::io_err("create", &d))?;
    super::write_private(&d.join("meta-data"), seed.meta_data.as_bytes(), 0o600)?;
    super::write_private(&d.join("user-data"), seed.user_data.as_bytes(), 0o600)?;
    super::write_private(&d.join("network-config"), NETWORK_CONFIG.as_bytes(), 0o600)?;
    Ok(mayfly_driver::BindMount {
        source: d,
        target: SEED_TARGET.to_owned(),
        readonly: true,
        only_over_file: false,
    })
}

/// Opens `rel` under `root` for reading, safely whatever the tenant planted: every component
/// is resolved inside `root`, no symlink at all is followed (cloud-init writes plain files
/// there), and the file must be a regular file on a tmpfs or overlay (never proc, sysfs or a
/// device bound over it). The file is first opened as a path only (nothing of it is read or
/// triggered), checked, then reopened through that descriptor.
pub(super) fn open_checked(root: &impl std::os::fd::AsFd, rel: &str) -> Option<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const OVERLAYFS_MAGIC: i64 = 0x794c_7630;
    let path = rustix::fs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS,
    )
    .ok()?;
    let st = rustix::fs::fstat(&path).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return None;
    }
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let fs_type = i64::from(rustix::fs::fstatfs(&path).ok()?.f_type as i64);
    if fs_type != TMPFS_MAGIC && fs_type != OVERLAYFS_MAGIC {
        return None;
    }
    // Our own descriptor's link: the same file, now opened for reading.
    use std::os::fd::AsRawFd;
    rustix::fs::open(
        format!("/proc/self/fd/{}", path.as_raw_fd()).as_str(),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

/// Reads at most 64 KiB of the regular file `rel` under `root` (see [`open_checked`]).
pub(super) fn read_small_in(root: &impl std::os::fd::AsFd, rel: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let fd = open_checked(root, rel)?;
    let mut out = Vec::new();
    std::fs::File::from(fd)
        .take(64 * 1024)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// Whether `/run/cloud-init/NAME` exists (as anything, not followed) under `root`: cloud-init
/// made it during this boot (`/run` is a fresh tmpfs).
fn in_run(root: &impl std::os::fd::AsFd, name: &str) -> bool {
    use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
    let Ok(dir) = rustix::fs::openat2(
        root,
        "run/cloud-init",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS,
    ) else {
        return false;
    };
    rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
}

/// cloud-init's `NAME` (`result.json`, `status.json`) of this boot under `root`: cloud-init
/// makes `/run/cloud-init/NAME` a link to `/var/lib/cloud/data/NAME`; the link is never
/// followed, its presence says the file is of this boot, and the file is read at its own
/// place (a plain file in `/run/cloud-init` is read there).
pub(super) fn read_cloud_init(root: &impl std::os::fd::AsFd, name: &str) -> Option<Vec<u8>> {
    if !in_run(root, name) {
        return None;
    }
    read_small_in(root, &format!("run/cloud-init/{name}"))
        .or_else(|| read_small_in(root, &format!("var/lib/cloud/data/{name}")))
}

/// cloud-init's `name` of this boot in the running instance `pid`. Blocking: call it off the
/// async workers.
fn read_small(pid: i32, name: &str) -> Option<Vec<u8>> {
    use rustix::fs::{Mode, OFlags};
    let root = rustix::fs::open(
        format!("/proc/{pid}/root").as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    read_cloud_init(&root, name)
}

/// cloud-init's status in running instance `pid`: `/run/cloud-init/result.json` once it
/// finished, else `running` while `/run/cloud-init/status.json` exists. Blocking.
pub(super) fn status(pid: i32) -> Option<UserDataStatus> {
    if let Some(bytes) = read_small(pid, "result.json") {
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let errors: Vec<String> = v["v1"]["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        return Some(UserDataStatus {
            state: if errors.is_empty() { "done" } else { "failed" }.into(),
            code: None,
            at: None,
            errors,
        });
    }
    read_small(pid, "status.json").map(|_| UserDataStatus {
        state: "running".into(),
        code: None,
        at: None,
        errors: Vec::new(),
    })
}
