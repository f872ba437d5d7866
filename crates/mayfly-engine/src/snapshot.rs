//! Snapshots, restore, clone and publish: everything that copies a writable layer.
//!
//! A writable layer is a plain overlay diff (`upper-<generation>/`), so each of these is a
//! copy of a tree proportional to the instance's changes, never to its template:
//! - **snapshot**: a copy under `snapshots/<id>/`; a running instance is frozen (cgroup
//!   freezer) and its filesystem flushed for the copy, and told how long it was frozen;
//! - **restore**: a copy of the snapshot becomes the next generation of the writable layer;
//!   one catalogue transaction switches to it (and pins the snapshot's template version for
//!   the next run); a running instance is stopped first and started again after;
//! - **clone**: a copy becomes a new instance's first generation, its owners shifted into the
//!   new instance's id range, and its first start gives it a new machine identity;
//! - **publish**: a copy is turned into a canonical layer (owners back to 0-based ids,
//!   whiteouts canonical, overlay bookkeeping dropped) stacked on the source's template version.
//!
//! Crash safety: every copy goes to a path that the catalogue does not reference until one
//! transaction commits it; an interrupted one is swept at start-up, and an instance frozen
//! for it is thawed (see `freeze`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mayfly_api::names::{check_instance_name, check_snapshot_name, check_template_name};
use mayfly_api::{
    CloneRequest, InstanceInfo, InstanceState, Mode, PublishRequest, SnapshotInfo, StopRequest,
    TemplateInfo,
};
use mayfly_image::{CopyOptions, IdRange, TreeStats, XattrPolicy};
use mayfly_store::{
    ID_RANGE, InstanceRecord, LayerRecord, NewVersion, NextRun, SnapshotRecord, StoreError,
    VersionMeta,
};

use crate::recovery::kind;
use crate::slot::Slot;
use crate::{Engine, EngineError, lock};

fn copy_options() -> CopyOptions {
    CopyOptions {
        xattrs: XattrPolicy::All,
        one_file_system: false,
    }
}

fn id_range(base: Option<u32>) -> Option<IdRange> {
    base.map(|start| IdRange {
        start,
        count: ID_RANGE,
    })
}

fn snapshot_info(instance: &str, s: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo {
        name: s.name.clone(),
        instance: instance.to_owned(),
        created_at: crate::rfc3339(s.created_at),
        template: s.template.clone(),
        template_version: s.template_version,
        size: s.size,
        entries: s.entries,
        frozen_ms: s.frozen_ms,
        volumes: s.config.volumes.clone(),
    }
}

/// What a capture copied, and how long the instance was frozen for it.
struct Captured {
    stats: TreeStats,
    frozen: Option<Duration>,
}

impl Engine {
    /// The template version an instance's current writable layer belongs to.
    async fn layer_version(&self, slot: &Slot, rec: &InstanceRecord) -> Result<u32, EngineError> {
        if let Some(v) = lock(&slot.rt).version {
            return Ok(v);
        }
        if let Some(v) = rec
            .next_run
            .as_ref()
            .and_then(|n| n.version)
            .or(rec.writable_version)
            .or(rec.pinned_version)
        {
            return Ok(v);
        }
        let t = rec.template.clone();
        Ok(self.db(move |s| s.template(&t)).await?.current_version)
    }

    /// Copies the instance's current writable layer to `dest` (which must not exist). A
    /// running instance is frozen and flushed for the copy and thawed whatever happens. The
    /// caller holds the operation lock and removes `dest` if this fails.
    async fn capture(
        &self,
        slot: &Slot,
        rec: &InstanceRecord,
        dest: &Path,
    ) -> Result<Captured, EngineError> {
        let src = self.layout.writable_dir(&rec.id, rec.writable_gen);
        let running = slot.state() == InstanceState::Running;
        if !src.is_dir() {
            // Nothing changed since the layer was discarded: an empty layer.
            let (dest, owner) = (dest.to_owned(), rec.id_base.unwrap_or(0));
            self.blocking(move || {
                std::fs::create_dir(&dest).map_err(|source| EngineError::Io {
                    action: "create",
                    path: dest.clone(),
                    source,
                })?;
                std::os::unix::fs::chown(&dest, Some(owner), Some(owner)).map_err(|source| {
                    EngineError::Io {
                        action: "chown",
                        path: dest.clone(),
                        source,
                    }
                })
            })
            .await?;
            return Ok(Captured {
                stats: TreeStats::default(),
                frozen: None,
            });
        }
        let pid = lock(&slot.rt).pid;
        let frozen = if running {
            Some((self.freeze_instance(slot).await?, Instant::now()))
        } else {
            None
        };
        let d = dest.to_owned();
        let copied = self
            .blocking(move || {
                if let Some(pid) = pid {
                    // Flush what the instance wrote through its overlay (best effort: the
                    // copy reads the same page cache either way).
                    if let Ok(root) = std::fs::File::open(format!("/proc/{pid}/root")) {
                        let _ = rustix::fs::syncfs(&root);
                    }
                }
                mayfly_image::copy_tree(&src, &d, copy_options(), &mayfly_image::NoProgress)
                    .map_err(EngineError::Image)
            })
            .await;
        let frozen = match frozen {
            Some((journal, at)) => {
                let took = at.elapsed();
                self.thaw_instance(slot, journal).await;
                Some(took)
            }
            None => None,
        };
        Ok(Captured {
            stats: copied?,
            frozen,
        })
    }

    async fn abandon_tree(&self, path: &Path, journal: Option<i64>) {
        let _ = self.trash.discard(path);
        self.trash.wake();
        if let Some(j) = journal {
            self.journal_end(j).await;
        }
    }

    // ---- snapshots -----------------------------------------------------------------------

    /// Takes a snapshot of instance `name` (running or stopped).
    pub(crate) async fn create_snapshot_unrecorded(
        self: &Arc<Self>,
        name: &str,
        snap: Option<String>,
    ) -> Result<SnapshotInfo, EngineError> {
        if let Some(s) = snap.as_deref().filter(|s| s.starts_with("sched-")) {
            return Err(EngineError::invalid(
                format!(
                    "snapshot name `{s}`: names beginning with `sched-` are kept for the snapshots of schedules (which prune them)"
                ),
                "choose another name, e.g. `mayfly snapshot create web before-upgrade`",
            ));
        }
        self.snapshot_as(name, snap).await
    }

    /// Snapshots instance `name` as `snap` (a name made up when `None`); the scheduler's
    /// `sched-…` names too.
    pub(crate) async fn snapshot_as(
        self: &Arc<Self>,
        name: &str,
        snap: Option<String>,
    ) -> Result<SnapshotInfo, EngineError> {
        if let Some(s) = &snap {
            check_snapshot_name(s).map_err(|e| {
                EngineError::invalid(e, "e.g. `mayfly snapshot create web before-upgrade`")
            })?;
        }
        let slot = self.slot(name)?;
        let _guard = slot.acquire("snapshot").await?;
        self.settle(&slot).await;
        let n = name.to_owned();
        let rec = self.db(move |s| s.instance(&n)).await?;
        if rec.mode == Mode::Ephemeral {
            return Err(EngineError::invalid(
                format!(
                    "instance `{name}` is ephemeral: its snapshots would vanish with it when it stops"
                ),
                format!(
                    "clone it (`mayfly clone {name} NEW`) or publish it (`mayfly publish {name} --as TEMPLATE`)"
                ),
            ));
        }
        let id = rec.id.clone();
        let existing = self.db(move |s| s.snapshots(&id)).await?;
        let snap_name = match snap {
            Some(s) => {
                if existing.iter().any(|e| e.name == s) {
                    return Err(EngineError::Store(StoreError::AlreadyExists {
                        kind: "snapshot",
                        name: s,
                    }));
                }
                s
            }
            None => (0..)
                .map(|i| format!("snap{i}"))
                .find(|c| !existing.iter().any(|e| &e.name == c))
                .unwrap_or_else(|| format!("snap-{}", crate::random_hex(4))),
        };
        let version = self.layer_version(&slot, &rec).await?;
        let snap_id = crate::random_hex(8);
        let dest = self.layout.snapshot_dir(&snap_id);
        let journal = self.journal(kind::SNAPSHOT, &rec.id, &dest).await?;
        let captured = match self.capture(&slot, &rec, &dest).await {
            Ok(c) => c,
            Err(e) => {
                self.abandon_tree(&dest, Some(journal)).await;
                return Err(e);
            }
        };
        crate::failpoint("snapshot:copied");
        let d = dest.clone();
        if let Err(e) = self.blocking(move || crate::layer::flush(&d)).await {
            self.abandon_tree(&dest, Some(journal)).await;
            return Err(e);
        }
        let record = SnapshotRecord {
            id: snap_id,
            instance_id: rec.id.clone(),
            name: snap_name,
            template: rec.template.clone(),
            template_version: version,
            config: rec.config.clone(),
            id_base: rec.id_base,
            size: captured.stats.bytes,
            entries: captured.stats.entries,
            frozen_ms: captured
                .frozen
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            created_at: mayfly_store::now(),
        };
        let r = record.clone();
        if let Err(e) = self.db(move |s| s.insert_snapshot(&r, Some(journal))).await {
            self.abandon_tree(&dest, Some(journal)).await;
            return Err(e);
        }
        Ok(snapshot_info(name, &record))
    }

    /// Snapshots of instance `name`, oldest first.
    pub async fn list_snapshots(&self, name: &str) -> Result<Vec<SnapshotInfo>, EngineError> {
        let n = name.to_owned();
        let rec = self.db(move |s| s.instance(&n)).await?;
        let id = rec.id.clone();
        let all = self.db(move |s| s.snapshots(&id)).await?;
        Ok(all.iter().map(|s| snapshot_info(name, s)).collect())
    }

    async fn snapshot_record(
        &self,
        name: &str,
        snap: &str,
    ) -> Result<(InstanceRecord, SnapshotRecord), EngineError> {
        let n = name.to_owned();
        let rec = self.db(move |s| s.instance(&n)).await?;
        let (id, sn) = (rec.id.clone(), snap.to_owned());
        let snapshot = self.db(move |s| s.snapshot(&id, &sn)).await?;
        Ok((rec, snapshot))
    }

    /// One snapshot.
    pub async fn snapshot_details(
        &self,
        name: &str,
        snap: &str,
    ) -> Result<SnapshotInfo, EngineError> {
        let (_, s) = self.snapshot_record(name, snap).await?;
        Ok(snapshot_info(name, &s))
    }

    /// Deletes one snapshot.
    pub(crate) async fn remove_snapshot_unrecorded(
        &self,
        name: &str,
        snap: &str,
    ) -> Result<(), EngineError> {
        let slot = self.slot(name)?;
        let _guard = slot.acquire("remove a snapshot").await?;
        let (_, s) = self.snapshot_record(name, snap).await?;
        let id = s.id.clone();
        self.db(move |st| st.delete_snapshot(&id)).await?;
        let _ = self.trash.discard(&self.layout.snapshot_dir(&s.id));
        self.trash.wake();
        Ok(())
    }

    /// Rewinds instance `name` to snapshot `snap`: a running instance is stopped, rewound and
    /// started again; a transient one runs from the snapshot for its next run.
    pub(crate) async fn restore_snapshot_unrecorded(
        self: &Arc<Self>,
        name: &str,
        snap: &str,
    ) -> Result<InstanceInfo, EngineError> {
        let slot = self.slot(name)?;
        {
            let _guard = slot.acquire("restore").await?;
            self.settle(&slot).await;
            let (rec, s) = self.snapshot_record(name, snap).await?;
            if rec.mode == Mode::Ephemeral {
                return Err(EngineError::invalid(
                    format!(
                        "instance `{name}` is ephemeral: it is deleted when it stops, so it cannot be rewound"
                    ),
                    format!(
                        "clone the snapshot instead: `mayfly clone {name} NEW --snapshot {snap}`"
                    ),
                ));
            }
            let was_running = slot.state() != InstanceState::Stopped;
            let journal = if was_running {
                Some(self.journal_restart(&slot.id).await?)
            } else {
                None
            };
            let restored = self.restore_locked(&slot, name, &s, was_running).await;
            if let Some(j) = journal {
                self.journal_end(j).await;
            }
            restored?;
        }
        self.instance_info(name).await
    }

    /// The body of [`Self::restore_snapshot`], with the instance's slot held.
    async fn restore_locked(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        name: &str,
        s: &SnapshotRecord,
        was_running: bool,
    ) -> Result<(), EngineError> {
        if was_running {
            self.stop_locked(slot, &StopRequest::default()).await?;
        }
        // The stop may have settled a transient run; read the record again.
        let n = name.to_owned();
        let rec = self.db(move |st| st.instance(&n)).await?;
        let next_gen = rec.writable_gen + 1;
        let dest = self.layout.writable_dir(&rec.id, next_gen);
        let journal = self.journal(kind::RESTORE, &rec.id, &dest).await?;
        let (src, d) = (self.layout.snapshot_dir(&s.id), dest.clone());
        let (from, to) = (id_range(s.id_base), rec.id_base);
        let staged = self
            .blocking(move || {
                mayfly_image::copy_tree(&src, &d, copy_options(), &mayfly_image::NoProgress)?;
                if let (Some(from), Some(to)) = (from, to)
                    && from.start != to
                {
                    mayfly_image::shift_owners(&d, from, to)?;
                }
                crate::layer::flush(&d)
            })
            .await;
        if let Err(e) = staged {
            self.abandon_tree(&dest, Some(journal)).await;
            return Err(e);
        }
        crate::failpoint("restore:staged");
        let next = NextRun {
            version: Some(s.template_version),
            keep_writable: rec.mode == Mode::Transient,
            new_identity: false,
        };
        let (id, version) = (rec.id.clone(), s.template_version);
        if let Err(e) = self
            .db(move |st| st.set_writable(&id, next_gen, Some(version), Some(&next), Some(journal)))
            .await
        {
            self.abandon_tree(&dest, Some(journal)).await;
            return Err(e);
        }
        self.discard_writable(&rec.id, rec.writable_gen).await?;
        crate::failpoint("restore:committed");
        if was_running {
            let max = self.config.log_max_bytes;
            self.start_locked(
                slot,
                mayfly_driver::InitStdio::Log { max_bytes: max },
                false,
            )
            .await?;
        }
        Ok(())
    }

    // ---- clone ---------------------------------------------------------------------------

    /// Creates instance `req.name` whose writable layer starts as `src`'s (or one of its
    /// snapshots'), with the same template reference and a new identity.
    pub(crate) async fn clone_instance_unrecorded(
        self: &Arc<Self>,
        src: &str,
        req: CloneRequest,
    ) -> Result<InstanceInfo, EngineError> {
        check_instance_name(&req.name)
            .map_err(|e| EngineError::invalid(e, "e.g. `mayfly clone web web-2`"))?;
        if lock(&self.slots).get(&req.name).is_some() {
            return Err(EngineError::Store(StoreError::AlreadyExists {
                kind: "instance",
                name: req.name.clone(),
            }));
        }
        let slot = self.slot(src)?;
        let new_slot;
        {
            let _guard = slot.acquire("clone").await?;
            self.settle(&slot).await;
            let s = src.to_owned();
            let src_rec = self.db(move |st| st.instance(&s)).await?;
            let snapshot = match &req.snapshot {
                Some(snap) => Some(self.snapshot_record(src, snap).await?.1),
                None => None,
            };
            let version = match &snapshot {
                Some(s) => s.template_version,
                None => self.layer_version(&slot, &src_rec).await?,
            };
            let mode = req.mode.unwrap_or(src_rec.mode);
            let new_id = crate::random_hex(8);
            let dir = self.layout.instance_dir(&new_id);
            let upper = self.layout.writable_dir(&new_id, 1);
            // Copies of its volumes first (free volumes, attached by the clone's insert).
            let copies = if req.copy_volumes {
                self.copy_volumes(&slot, &src_rec, &req.name).await?
            } else {
                Vec::new()
            };
            let copy_names: Vec<String> = copies.iter().map(|m| m.volume.clone()).collect();
            let journal = match self.journal(kind::CLONE, &new_id, &dir).await {
                Ok(j) => j,
                Err(e) => {
                    self.remove_copies(&copy_names).await;
                    return Err(e);
                }
            };
            let result: Result<InstanceRecord, EngineError> = async {
                let d = dir.clone();
                self.blocking(move || {
                    std::fs::create_dir(&d).map_err(|source| EngineError::Io {
                        action: "create",
                        path: d.clone(),
                        source,
                    })
                })
                .await?;
                let (src_ids, stats) = match &snapshot {
                    Some(s) => {
                        let (from, to) = (self.layout.snapshot_dir(&s.id), upper.clone());
                        let stats = self
                            .blocking(move || {
                                mayfly_image::copy_tree(
                                    &from,
                                    &to,
                                    copy_options(),
                                    &mayfly_image::NoProgress,
                                )
                                .map_err(EngineError::Image)
                            })
                            .await?;
                        (s.id_base, stats)
                    }
                    None => (
                        src_rec.id_base,
                        self.capture(&slot, &src_rec, &upper).await?.stats,
                    ),
                };
                let _ = stats;
                crate::failpoint("clone:copied");
                let mut rec = InstanceRecord {
                    id: new_id.clone(),
                    name: req.name.clone(),
                    template: src_rec.template.clone(),
                    pinned_version: src_rec.pinned_version,
                    mode,
                    // New interfaces (allocated with the row); the source's published host
                    // ports stay the source's, and so do its volumes (one holder at a time):
                    // the clone gets none, or the copies made above. An ephemeral clone has
                    // no restart policy (it is deleted when it stops).
                    config: mayfly_store::InstanceConfig {
                        publish: Vec::new(),
                        volumes: copies.clone(),
                        restart: if mode == Mode::Ephemeral {
                            mayfly_api::RestartPolicy::No
                        } else {
                            src_rec.config.restart
                        },
                        ..src_rec.config.clone()
                    },
                    id_base: None,
                    created_at: mayfly_store::now(),
                    run: None,
                    last_exit: None,
                    writable_gen: 1,
                    writable_version: Some(version),
                    // A copy of a live layer keeps where its changes began (a snapshot does
                    // not record it: its version is the best known).
                    layer_since: if snapshot.is_none() {
                        src_rec.layer_since.or(Some(version))
                    } else {
                        Some(version)
                    },
                    next_run: Some(NextRun {
                        version: Some(version),
                        keep_writable: true,
                        new_identity: true,
                    }),
                    // Not the source's pause: the clone starts as any stopped instance.
                    paused: false,
                    restart_state: None,
                };
                let want_ids = self.userns_off.is_none();
                let r = rec.clone();
                let src_id = src_rec.id.clone();
                rec = self
                    .db(move |st| {
                        let mut r = r;
                        st.insert_instance(&mut r, want_ids)?;
                        // Its user data too (the config names it, the bytes are apart).
                        let data = st.user_data(&src_id)?;
                        st.set_user_data(&r.id, data.as_deref())?;
                        Ok(r)
                    })
                    .await?;
                let (from, to, u) = (id_range(src_ids), rec.id_base.unwrap_or(0), upper.clone());
                self.blocking(move || {
                    if let Some(from) = from {
                        mayfly_image::shift_owners(&u, from, to)?;
                    }
                    crate::layer::flush(&u)
                })
                .await?;
                crate::failpoint("clone:shifted");
                Ok(rec)
            }
            .await;
            match result {
                Ok(rec) => {
                    self.db(move |st| st.journal_end(journal)).await?;
                    new_slot = Slot::new(&rec.id, &rec.name);
                    lock(&self.slots).insert(new_slot.clone());
                }
                Err(e) => {
                    let id = new_id.clone();
                    let _ = self.db(move |st| st.forget_instance(&id)).await;
                    self.abandon_tree(&dir, Some(journal)).await;
                    self.remove_copies(&copy_names).await;
                    return Err(e);
                }
            }
        }
        if req.start {
            let _guard = new_slot.acquire("start").await?;
            let max = self.config.log_max_bytes;
            self.start_locked(
                &new_slot,
                mayfly_driver::InitStdio::Log { max_bytes: max },
                false,
            )
            .await?;
        }
        self.instance_info(&req.name).await
    }

    // ---- publish -------------------------------------------------------------------------

    /// Turns instance `name`'s writable layer (or one of its snapshots) into a layer on top of
    /// its template version: a new template, or a new version of `req.template` if it exists.
    pub(crate) async fn publish_unrecorded(
        self: &Arc<Self>,
        name: &str,
        req: PublishRequest,
    ) -> Result<TemplateInfo, EngineError> {
        check_template_name(&req.template)
            .map_err(|e| EngineError::invalid(e, "e.g. `mayfly publish web --as web-golden`"))?;
        let slot = self.slot(name)?;
        let _guard = slot.acquire("publish").await?;
        self.settle(&slot).await;
        let n = name.to_owned();
        let rec = self.db(move |st| st.instance(&n)).await?;
        let snapshot = match &req.snapshot {
            Some(snap) => Some(self.snapshot_record(name, snap).await?.1),
            None => None,
        };
        if snapshot.is_none() && !self.layout.writable_dir(&rec.id, rec.writable_gen).is_dir() {
            return Err(EngineError::invalid(
                format!(
                    "instance `{name}` has no writable layer to publish (a stopped {} instance starts clean)",
                    rec.mode
                ),
                format!(
                    "publish it while it runs, or from a snapshot: `mayfly publish {name}/SNAPSHOT --as {}`",
                    req.template
                ),
            ));
        }
        let version = match &snapshot {
            Some(s) => s.template_version,
            None => self.layer_version(&slot, &rec).await?,
        };
        let t = rec.template.clone();
        let base = self.db(move |st| st.template(&t)).await?;
        let base_version = base.version(version).cloned().ok_or_else(|| {
            EngineError::invalid(
                format!(
                    "version {version} of template `{}` no longer exists",
                    rec.template
                ),
                "publish from an instance whose template version still exists",
            )
        })?;
        let tmp = self
            .layout
            .tmp()
            .join(format!("publish-{}", crate::random_hex(8)));
        let journal = self.journal(kind::IMPORT, &req.template, &tmp).await?;
        let ids = match &snapshot {
            Some(s) => s.id_base,
            None => rec.id_base,
        };
        let copied = match &snapshot {
            Some(s) => {
                let (from, to) = (self.layout.snapshot_dir(&s.id), tmp.clone());
                self.blocking(move || {
                    mayfly_image::copy_tree(&from, &to, copy_options(), &mayfly_image::NoProgress)
                        .map(|_| ())
                        .map_err(EngineError::Image)
                })
                .await
            }
            None => self.capture(&slot, &rec, &tmp).await.map(|_| ()),
        };
        let t = tmp.clone();
        // The layer is stacked on the base version (not on any applications the instance ran
        // with): its opaque markers are judged against that stack.
        let lowers: Vec<std::path::PathBuf> = base_version
            .layers
            .iter()
            .map(|l| self.layout.layer_dir(&l.digest))
            .collect();
        let layer = match copied {
            Ok(()) => {
                self.blocking(move || {
                    mayfly_image::upper_to_layer(&t, id_range(ids), &lowers)?;
                    crate::layer::seal(&t)
                })
                .await
            }
            Err(e) => Err(e),
        };
        let layer = match layer {
            Ok(l) => l,
            Err(e) => {
                self.abandon_tree(&tmp, Some(journal)).await;
                return Err(e);
            }
        };
        crate::failpoint("publish:layer-built");
        let mut layers: Vec<LayerRecord> = base_version.layers.clone();
        layers.push(layer.clone());
        let message = req.message.clone().unwrap_or_else(|| {
            format!(
                "published from instance {name}{}",
                req.snapshot
                    .as_ref()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            )
        });
        let commit = self.layers_lock.lock().await;
        if let Err(e) = self.place_layer(&tmp, &layer.digest).await {
            drop(commit);
            self.abandon_tree(&tmp, Some(journal)).await;
            return Err(e);
        }
        let (target, mut config) = (req.template.clone(), base_version.config.clone());
        // The instance's flavor and own limits become the version's defaults only when asked.
        if req.limits {
            config.flavor = rec.config.flavor.clone();
            config.limits = rec.config.limits.clone();
        }
        let meta = VersionMeta {
            base: Some(format!("{}@{version}", rec.template)),
            ..VersionMeta::default()
        };
        let committed = self
            .db(move |st| {
                let new = NewVersion {
                    layers: &layers,
                    config: &config,
                    message: &message,
                    meta: &meta,
                };
                match st.template(&target) {
                    Ok(_) => st
                        .add_template_version(&target, &new, Some(journal))
                        .map(|_| ()),
                    Err(StoreError::NotFound { .. }) => {
                        st.create_template(&target, false, &new, Some(journal))
                    }
                    Err(e) => Err(e),
                }
            })
            .await;
        if let Err(e) = committed {
            self.drop_layer_if_unreferenced(&layer.digest).await;
            drop(commit);
            self.abandon_tree(&tmp, Some(journal)).await;
            return Err(e);
        }
        drop(commit);
        self.template_info(&req.template).await
    }
}
