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
/// told to leave the network alone.
const NETWORK_CONFIG: &str = "network:\n  config: disabled\n";

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

/// Opens `rel` inside the root of running process `pid`, resolving every component inside
/// that root: symlinks are followed (cloud-init's `result.json` is one) but cannot lead out
/// of it, whatever the tenant planted.
fn open_in_instance(pid: i32, rel: &str) -> Option<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        format!("/proc/{pid}/root").as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    rustix::fs::openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()
}

/// Reads at most 64 KiB of a regular file `rel` of the running instance `pid`.
fn read_small(pid: i32, rel: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let fd = open_in_instance(pid, rel)?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return None;
    }
    let mut out = Vec::new();
    std::fs::File::from(fd)
        .take(64 * 1024)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// cloud-init's status in running instance `pid`: `/run/cloud-init/result.json` once it
/// finished, else `running` while `/run/cloud-init/status.json` exists.
pub(super) fn status(pid: i32) -> Option<UserDataStatus> {
    if let Some(bytes) = read_small(pid, "run/cloud-init/result.json") {
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
    read_small(pid, "run/cloud-init/status.json").map(|_| UserDataStatus {
        state: "running".into(),
        code: None,
        at: None,
        errors: Vec::new(),
    })
}
