//! Volumes: data that lives outside any instance, attached to one at a time.
//!
//! A volume is a directory `<state>/volumes/<id>/data`, owned by 0:0 with mode 0755 on the
//! host, bind-mounted into the instance holding it; the forker's bind mounts are idmapped
//! through the instance's user namespace, so root inside owns it. Its catalogue row names
//! the instance holding it (the single-attach lock, see `mayfly_store`'s volumes). A size
//! limit uses the disk-limit mechanism of instances (a project quota on `<state>/volumes/<id>`
//! where the state filesystem has them, else an ext4 image loop-mounted over it).
//!
//! One file per concern: `targets.rs` (where a volume may be mounted), `copy.rs` (the copies
//! a clone gets with `--copy-volumes`); here the verbs and what a start needs.

mod copy;
mod targets;

use std::path::Path;
use std::sync::Arc;

use mayfly_api::{
    AttachVolume, CreateVolume, DetachVolume, InstanceState, VolumeAttachment, VolumeInfo,
    VolumeMount,
};
use mayfly_driver::BindMount;
use mayfly_store::{InstanceRecord, Layout, Store, StoreError, VolumeRecord};

use crate::{Engine, EngineError, lock};

pub(crate) use targets::check_mounts;

/// The smallest size limit accepted (an ext4 image needs room for itself).
pub const MIN_VOLUME_SIZE: u64 = 16 << 20;

/// At most this many entries are counted for the used bytes of a volume without a limit.
const USAGE_MAX_ENTRIES: u64 = 1_000_000;

/// Checks a volume name (the rule of instance names).
fn check_volume_name(name: &str) -> Result<(), EngineError> {
    mayfly_api::names::check_instance_name(name).map_err(|e| {
        EngineError::invalid(
            e.replace("instance name", "volume name"),
            "e.g. `mayfly volume create data`",
        )
    })
}

/// Makes `dir` (0700, for the size limit) and `dir/data` (0:0, 0755: root's inside).
fn make_dirs(dir: &Path) -> Result<(), EngineError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| EngineError::Io {
            action,
            path,
            source,
        }
    };
    let data = dir.join("data");
    if !data.is_dir() {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&data)
            .map_err(io("create", &data))?;
    }
    std::os::unix::fs::chown(&data, Some(0), Some(0)).map_err(io("set the owner of", &data))?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))
        .map_err(io("set permissions of", &data))?;
    crate::layer::flush(dir)
}

/// Bytes used under `dir`: the blocks of its entries, each inode once, walked by descriptor
/// without following links nor crossing mounts (a tenant swapping a directory for a link
/// cannot send the walk elsewhere), counting at most [`USAGE_MAX_ENTRIES`] entries.
fn used_bytes(dir: &Path) -> u64 {
    mayfly_image::tree_usage(dir, USAGE_MAX_ENTRIES)
}

/// At start-up, after the disk images are settled: removes the directories of volumes the
/// catalogue does not know (a creation or removal interrupted between its steps). Best effort.
pub(crate) fn sweep(store: &Store, layout: &Layout) -> Result<(), StoreError> {
    let known: std::collections::HashSet<String> =
        store.volumes()?.into_iter().map(|v| v.id).collect();
    let Ok(entries) = std::fs::read_dir(layout.volumes()) else {
        return Ok(());
    };
    let mut quotas = None;
    let images = mayfly_driver::disk_image::DiskImages::at(layout.root());
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if known.contains(&name) {
            continue;
        }
        let path = e.path();
        tracing::info!(
            "removing {} (a volume the catalogue does not know)",
            path.display()
        );
        // What `release_disk` does: the image, or the project quota.
        if let Err(err) = images.release(&path) {
            tracing::warn!(
                "cannot release the disk image of {}: {}",
                path.display(),
                mayfly_driver::error_chain(&err)
            );
        }
        let quotas =
            quotas.get_or_insert_with(|| mayfly_driver::quota::DiskQuotas::probe(layout.root()));
        if quotas.unsupported().is_none()
            && let Err(err) = quotas.set(&path, None)
        {
            tracing::warn!(
                "cannot lift the disk quota of {}: {}",
                path.display(),
                mayfly_driver::error_chain(&err)
            );
        }
        if let Err(err) = mayfly_driver::container::move_to_trash(&path, &layout.trash()) {
            tracing::warn!(
                "cannot remove {}: {}",
                path.display(),
                mayfly_driver::error_chain(&err)
            );
        }
    }
    Ok(())
}

impl Engine {
    /// Checks a launch's `--volume` list before anything is made: names exist, paths are
    /// absolute, distinct and not where mayfly mounts its own filesystems. (Whether another
    /// instance holds one is decided by the insert of the instance, atomically.) Returns
    /// them with normalised paths, as attach stores them.
    pub(crate) async fn check_volume_mounts(
        &self,
        mounts: &[VolumeMount],
    ) -> Result<Vec<VolumeMount>, EngineError> {
        if mounts.is_empty() {
            return Ok(Vec::new());
        }
        let checked = check_mounts(mounts)?;
        let names: Vec<String> = mounts.iter().map(|m| m.volume.clone()).collect();
        self.db(move |s| {
            for n in &names {
                s.volume(n)?;
            }
            Ok(())
        })
        .await?;
        Ok(checked)
    }

    /// The bind mounts of instance `rec`'s volumes for a start.
    pub(crate) async fn volume_binds(
        &self,
        rec: &InstanceRecord,
    ) -> Result<Vec<BindMount>, EngineError> {
        if rec.config.volumes.is_empty() {
            return Ok(Vec::new());
        }
        let mounts = rec.config.volumes.clone();
        let id = rec.id.clone();
        let records = self
            .db(move |s| {
                mounts
                    .iter()
                    .map(|m| s.volume(&m.volume).map(|v| (m.clone(), v)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut binds = Vec::with_capacity(records.len());
        for (m, v) in records {
            if v.instance_id.as_deref() != Some(id.as_str()) {
                return Err(EngineError::Internal(format!(
                    "instance `{}` names volume `{}`, which the catalogue does not attach to it",
                    rec.name, m.volume
                )));
            }
            let data = self.layout.volume_data(&v.id);
            if !data.is_dir()
                && let Some(bytes) = v.size
            {
                // A disk image whose mount was lost while the daemon ran: mounted again
                // (setting the same limit mounts it and changes nothing else).
                let (dir, driver) = (self.layout.volume_dir(&v.id), self.driver.clone());
                let remounted = self
                    .blocking(move || {
                        driver
                            .set_disk_quota(&dir, Some(bytes))
                            .map_err(crate::error::from_driver)
                    })
                    .await;
                if let Err(e) = remounted {
                    tracing::warn!(
                        "cannot mount the disk image of volume `{}` again: {}",
                        m.volume,
                        mayfly_driver::error_chain(&e)
                    );
                }
            }
            if !data.is_dir() {
                return Err(EngineError::Unavailable(format!(
                    "the data of volume `{}` is missing ({}): its disk image may not be mounted; restart the daemon or see its log",
                    m.volume,
                    data.display()
                )));
            }
            binds.push(BindMount {
                source: data,
                target: m.path.clone(),
                readonly: m.readonly,
                only_over_file: false,
            });
        }
        Ok(binds)
    }

    /// The API view of volume `v` (`used`: with the bytes it uses).
    async fn volume_view(&self, v: VolumeRecord, used: bool) -> Result<VolumeInfo, EngineError> {
        let holder = match &v.instance_id {
            Some(id) => {
                let id = id.clone();
                self.db(move |s| s.instance_name_of(&id)).await?
            }
            None => None,
        };
        let used = if used {
            // The blocks of its files (an image's own ext4 metadata not counted).
            let data = self.layout.volume_data(&v.id);
            Some(self.blocking(move || Ok(used_bytes(&data))).await?)
        } else {
            None
        };
        Ok(VolumeInfo {
            name: v.name,
            id: v.id,
            size: v.size,
            used,
            created_at: crate::rfc3339(v.created_at),
            attached: holder.map(|instance| VolumeAttachment {
                instance,
                path: v.path.unwrap_or_default(),
                readonly: v.readonly,
            }),
        })
    }

    /// Creates volume `req.name` (empty, owned by root inside).
    pub(crate) async fn create_volume_unrecorded(
        &self,
        req: CreateVolume,
    ) -> Result<VolumeInfo, EngineError> {
        check_volume_name(&req.name)?;
        if let Some(size) = req.size {
            if size < MIN_VOLUME_SIZE {
                return Err(EngineError::invalid(
                    format!(
                        "volume `{}`: a size of {size} bytes is too small (the least is {} MiB)",
                        req.name,
                        MIN_VOLUME_SIZE >> 20
                    ),
                    "e.g. `--size 1G`",
                ));
            }
            let max = self.largest_disk_limit();
            if size > max {
                return Err(EngineError::invalid(
                    format!(
                        "volume `{}`: a size of {size} bytes is too large (the most is {} MiB: the state filesystem's size, at most 15 TiB)",
                        req.name,
                        max >> 20
                    ),
                    "give a smaller --size, e.g. `--size 10G`",
                ));
            }
            if let Some(why) = self.driver.disk_quota_unsupported() {
                return Err(EngineError::invalid(
                    format!(
                        "volume `{}`: --size cannot be enforced on this host: {why}",
                        req.name
                    ),
                    "leave --size out, or see docs/quotas.md for what a disk limit needs",
                ));
            }
        }
        let n = req.name.clone();
        if self.db(move |s| Ok(s.volume(&n).is_ok())).await? {
            return Err(EngineError::Store(StoreError::AlreadyExists {
                kind: "volume",
                name: req.name,
            }));
        }
        let rec = VolumeRecord {
            id: crate::random_hex(8),
            name: req.name.clone(),
            size: req.size,
            created_at: mayfly_store::now(),
            instance_id: None,
            path: None,
            readonly: false,
        };
        self.add_volume(rec.clone(), None).await?;
        self.volume_view(rec, false).await
    }

    /// Makes volume `rec`'s directory (empty, or a copy of `from`) and catalogues it; on
    /// failure nothing of it is left.
    async fn add_volume(
        &self,
        rec: VolumeRecord,
        from: Option<std::path::PathBuf>,
    ) -> Result<(), EngineError> {
        let dir = self.layout.volume_dir(&rec.id);
        let made = self.make_volume_dir(&dir, rec.size, from).await;
        let inserted = match made {
            Ok(()) => {
                crate::failpoint("volume:made");
                match crate::inject("volume:made") {
                    Ok(()) => {
                        let r = rec.clone();
                        self.db(move |s| s.insert_volume(&r)).await
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = inserted {
            self.discard_volume_dir(&dir).await;
            return Err(e);
        }
        Ok(())
    }

    /// Makes volume directory `dir` with its size limit.
    async fn make_volume_dir(
        &self,
        dir: &Path,
        size: Option<u64>,
        from: Option<std::path::PathBuf>,
    ) -> Result<(), EngineError> {
        let d = dir.to_owned();
        self.blocking(move || {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&d)
                .map_err(|source| EngineError::Io {
                    action: "create",
                    path: d.clone(),
                    source,
                })
        })
        .await?;
        if let Some(bytes) = size {
            let (d, driver) = (dir.to_owned(), self.driver.clone());
            self.blocking(move || {
                driver
                    .set_disk_quota(&d, Some(bytes))
                    .map_err(crate::error::from_driver)
            })
            .await?;
        }
        let d = dir.to_owned();
        self.blocking(move || match from {
            // A copy keeps the owner and mode of the source's top directory too.
            Some(from) => {
                let options = mayfly_image::CopyOptions {
                    xattrs: mayfly_image::XattrPolicy::All,
                    one_file_system: true,
                };
                mayfly_image::copy_tree(&from, &d.join("data"), options, &mayfly_image::NoProgress)
                    .map_err(EngineError::Image)?;
                crate::layer::flush(&d)
            }
            None => make_dirs(&d),
        })
        .await
    }

    /// Removes a volume directory (its disk image first: a mount cannot go to the trash).
    async fn discard_volume_dir(&self, dir: &Path) {
        let (d, driver) = (dir.to_owned(), self.driver.clone());
        let released = self
            .blocking(move || driver.release_disk(&d).map_err(crate::error::from_driver))
            .await;
        if let Err(e) = released {
            tracing::warn!(
                "cannot release the disk of {}: {}",
                dir.display(),
                mayfly_driver::error_chain(&e)
            );
        }
        if let Err(e) = self.trash.discard(dir) {
            tracing::warn!(
                "cannot remove {}: {}",
                dir.display(),
                mayfly_driver::error_chain(&e)
            );
        }
    }

    /// Every volume, by name.
    pub async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, EngineError> {
        let vols = self.db(|s| s.volumes()).await?;
        let mut out = Vec::with_capacity(vols.len());
        for v in vols {
            out.push(self.volume_view(v, false).await?);
        }
        Ok(out)
    }

    /// Volume `name`, with the bytes it uses.
    pub async fn volume_info(&self, name: &str) -> Result<VolumeInfo, EngineError> {
        let n = name.to_owned();
        let v = self.db(move |s| s.volume(&n)).await?;
        self.volume_view(v, true).await
    }

    /// Removes volume `name` and its data; refused while it is attached.
    pub(crate) async fn remove_volume_unrecorded(&self, name: &str) -> Result<(), EngineError> {
        let n = name.to_owned();
        let rec = self.db(move |s| s.delete_volume(&n)).await?;
        // A crash from here leaves an uncatalogued directory: swept at the next start.
        crate::failpoint("volume:removed");
        self.discard_volume_dir(&self.layout.volume_dir(&rec.id))
            .await;
        Ok(())
    }

    /// Takes instance `instance`'s operation lock and checks that it is stopped (a volume is
    /// mounted by the start, in the instance's own mount namespace).
    async fn stopped_for_volume<'a>(
        self: &Arc<Self>,
        slot: &'a Arc<crate::slot::Slot>,
        action: &'static str,
    ) -> Result<crate::slot::OpGuard<'a>, EngineError> {
        let guard = slot.acquire(action).await?;
        self.settle(slot).await;
        let state = lock(&slot.rt).state;
        if state != InstanceState::Stopped {
            return Err(EngineError::WrongState {
                name: slot.name.clone(),
                state: state.as_str(),
                action,
                hint: Some(format!(
                    "stop it first (`mayfly stop {}`): a volume is mounted when an instance starts, inside its own mount namespace",
                    slot.name
                )),
            });
        }
        Ok(guard)
    }

    /// Attaches volume `name` to the stopped instance `req.instance` at `req.path`.
    pub(crate) async fn attach_volume_unrecorded(
        self: &Arc<Self>,
        name: &str,
        req: AttachVolume,
    ) -> Result<VolumeInfo, EngineError> {
        let path = targets::check_target(name, &req.path)?;
        let slot = self.slot(&req.instance)?;
        let _guard = self.stopped_for_volume(&slot, "attach a volume").await?;
        let id = slot.id.clone();
        let mount = VolumeMount {
            volume: name.to_owned(),
            path,
            readonly: req.readonly,
        };
        let i = id.clone();
        let rec = self.db(move |s| s.instance_by_id(&i)).await?;
        let (i, m) = (id.clone(), mount.clone());
        let mut all = rec.config.volumes.clone();
        all.retain(|v| v.volume != name);
        all.push(mount.clone());
        check_mounts(&all)?;
        self.db(move |s| {
            s.volume(&m.volume)?;
            s.attach_volume(&i, &m)
        })
        .await?;
        self.volume_info(name).await
    }

    /// Detaches volume `name` from the stopped instance `req.instance` (its data stays).
    pub(crate) async fn detach_volume_unrecorded(
        self: &Arc<Self>,
        name: &str,
        req: DetachVolume,
    ) -> Result<VolumeInfo, EngineError> {
        let n = name.to_owned();
        let v = self.db(move |s| s.volume(&n)).await?;
        let slot = self.slot(&req.instance)?;
        let _guard = self.stopped_for_volume(&slot, "detach a volume").await?;
        let (id, n) = (slot.id.clone(), name.to_owned());
        if !self.db(move |s| s.detach_volume(&id, &n)).await? {
            let now = self.volume_view(v, false).await?;
            // It is not where the request says (409, as an attach to a held volume).
            return Err(EngineError::Conflict {
                message: match now.attached {
                    Some(a) => format!(
                        "volume `{name}` is attached to instance `{}`, not `{}`",
                        a.instance, req.instance
                    ),
                    None => format!("volume `{name}` is not attached to any instance"),
                },
                hint: Some(format!("see where it is with `mayfly volume info {name}`")),
            });
        }
        self.volume_info(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::used_bytes;
    use std::sync::atomic::{AtomicBool, Ordering};

    const MIB: u64 = 1 << 20;

    #[test]
    fn used_bytes_count_a_hard_linked_file_once() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a"), vec![7u8; 4 << 20]).unwrap();
        for i in 0..4 {
            std::fs::hard_link(dir.join("a"), dir.join(format!("link{i}"))).unwrap();
        }
        let used = used_bytes(&dir);
        assert!((4 * MIB..5 * MIB).contains(&used), "{used}");
    }

    #[test]
    fn a_directory_swapped_for_a_link_does_not_send_the_walk_elsewhere() {
        let t = tempfile::tempdir().unwrap();
        // "The host": 8 MiB the walk must never count.
        let host = t.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("big"), vec![1u8; 8 << 20]).unwrap();
        let dir = t.path().join("data");
        std::fs::create_dir_all(dir.join("d")).unwrap();
        for i in 0..64 {
            std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
        }
        std::fs::create_dir(t.path().join("real")).unwrap();
        std::os::unix::fs::symlink(&host, t.path().join("link")).unwrap();
        // The tenant swaps `d` between a directory and a link to the host, again and again.
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let (d, real, link) = (dir.join("d"), t.path().join("real"), t.path().join("link"));
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::fs::rename(&d, &real);
                    let _ = std::fs::rename(&link, &d);
                    let _ = std::fs::rename(&d, &link);
                    let _ = std::fs::rename(&real, &d);
                }
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            let mut walks = 0;
            while std::time::Instant::now() < deadline {
                let used = used_bytes(&dir);
                walks += 1;
                if used >= 8 * MIB {
                    stop.store(true, Ordering::Relaxed);
                    panic!("walk {walks} counted the host: {used} bytes");
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
}
