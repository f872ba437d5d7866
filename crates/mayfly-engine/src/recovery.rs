//! Start-up recovery and reconciliation.
//!
//! [`recover`] runs before anything else touches the state directory: it rolls back the
//! operations the journal says were in flight, then sweeps what the catalogue does not
//! reference (temporary trees, layers and instance directories left by a crash between a
//! rename and a commit). [`Engine::reconcile`] then matches the catalogue's instances with
//! what the forker tracks, at start-up and whenever a forker had to be replaced.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mayfly_api::InstanceState;
use mayfly_driver::{ContainerState, Started};
use mayfly_store::{Layout, Store, StoreError};

use crate::slot::Slot;
use crate::{Engine, EngineError, lock};

fn to_trash(layout: &Layout, path: &std::path::Path, why: &str) {
    tracing::info!("removing {} ({why})", path.display());
    let hidden = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    if path.parent() == Some(layout.instances().as_path()) && !hidden {
        // An instance directory may be a disk image's mount, which cannot be moved.
        let images = mayfly_driver::disk_image::DiskImages::at(layout.root());
        if let Err(e) = images.release(path) {
            tracing::warn!(
                "cannot release the disk image of {}: {}",
                path.display(),
                mayfly_driver::error_chain(&e)
            );
        }
    }
    if let Err(e) = mayfly_driver::container::move_to_trash(path, &layout.trash()) {
        tracing::warn!(
            "cannot remove {}: {}",
            path.display(),
            mayfly_driver::error_chain(&e)
        );
    }
}

/// Journal kinds, and what rolling each back means besides removing its paths.
pub(crate) mod kind {
    /// A template import or publish: its staging tree.
    pub const IMPORT: &str = "import";
    /// A snapshot: its tree. (Daemons before `FREEZE` existed also meant: the instance, the
    /// subject, may have been left frozen.)
    pub const SNAPSHOT: &str = "snapshot";
    /// An instance (the subject) is frozen for a copy: thaw it. Closed only once it is
    /// thawed, so it survives restarts until then.
    pub const FREEZE: &str = "freeze";
    /// A restore: the next writable-layer generation being staged.
    pub const RESTORE: &str = "restore";
    /// A clone: the new instance (the subject), whose row may already exist.
    pub const CLONE: &str = "clone";
    /// A rollout of `NAME@VERSION` (the subject): if interrupted, the name and the followers
    /// on that version are put back; closed only once that is done.
    pub const ROLLOUT: &str = "rollout";
    /// An operation that stops a running instance (the subject) and starts it again
    /// (restart, reset, restore): if it was interrupted, the instance is started again.
    pub const RESTART: &str = "restart";
}

/// What [`recover`] leaves to do once the forker is reachable.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Instances an interrupted operation may have left frozen, with the journal entry to
    /// close once each is thawed (0: none).
    pub thaw: Vec<(i64, String)>,
    /// Instances an interrupted restart, reset or restore may have left stopped: to start,
    /// with the journal entry to close once that is done.
    pub restart: Vec<(i64, String)>,
    /// Rollouts (`NAME@VERSION`) to put back, with the journal entry to close once done.
    pub rollouts: Vec<(i64, String)>,
}

/// Rolls back interrupted operations and sweeps unreferenced trees.
pub(crate) fn recover(store: &mut Store, layout: &Layout) -> Result<Recovered, StoreError> {
    let mut left = Recovered::default();
    // Disk images first: the directories of instances with one are their mounts (after a
    // reboot, not yet), and images of instances not in the catalogue go.
    let known: HashSet<String> = store.instances()?.into_iter().map(|i| i.id).collect();
    let volumes: HashSet<String> = store.volumes()?.into_iter().map(|v| v.id).collect();
    mayfly_driver::disk_image::recover(layout.root(), &known, &volumes);
    crate::volumes::sweep(store, layout)?;
    for entry in store.journal_pending()? {
        tracing::warn!(
            "rolling back an interrupted {} of `{}` (started at {})",
            entry.kind,
            entry.subject,
            entry.started_at
        );
        for path in &entry.paths {
            if path.starts_with(layout.root()) {
                to_trash(layout, path, "left by an interrupted operation");
            }
        }
        match entry.kind.as_str() {
            kind::FREEZE => {
                // Closed once the instance is thawed.
                left.thaw.push((entry.id, entry.subject.clone()));
                continue;
            }
            kind::SNAPSHOT => left.thaw.push((0, entry.subject.clone())),
            kind::CLONE => store.forget_instance(&entry.subject)?,
            kind::RESTART => {
                // Closed once the instance was started again (or could not be).
                left.restart.push((entry.id, entry.subject.clone()));
                continue;
            }
            kind::ROLLOUT => {
                // Closed once put back: a daemon killed while putting back does it again.
                left.rollouts.push((entry.id, entry.subject.clone()));
                continue;
            }
            _ => {}
        }
        store.journal_end(entry.id)?;
    }
    if let Ok(entries) = std::fs::read_dir(layout.tmp()) {
        for e in entries.flatten() {
            to_trash(
                layout,
                &e.path(),
                "temporary tree of an interrupted operation",
            );
        }
    }
    let layers: HashSet<String> = store.layer_digests()?;
    if let Ok(entries) = std::fs::read_dir(layout.layers()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let known = Layout::digest_of_dir(&name).is_some_and(|d| layers.contains(&d));
            if !known {
                to_trash(layout, &e.path(), "layer not in the catalogue");
            }
        }
    }
    for digest in &layers {
        if !layout.layer_dir(digest).is_dir() {
            tracing::error!(
                "layer {digest} is in the catalogue but its tree is missing: templates that use it cannot start"
            );
        }
    }
    let instances = store.instances()?;
    let ids: HashSet<String> = instances.iter().map(|i| i.id.clone()).collect();
    if let Ok(entries) = std::fs::read_dir(layout.instances()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !ids.contains(&name) {
                to_trash(layout, &e.path(), "instance not in the catalogue");
            }
        }
    }
    // Inside each instance: writable-layer generations other than the current one (a restore
    // or a start interrupted between staging and commit) and half-made upper directories.
    for rec in &instances {
        let current = format!("upper-{}", rec.writable_gen);
        let Ok(entries) = std::fs::read_dir(layout.instance_dir(&rec.id)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("upper") && name != current {
                to_trash(layout, &e.path(), "stale writable layer");
            } else if name.starts_with(mayfly_driver::container::TRASH_ASIDE) {
                // On a disk image: being deleted in place when the daemon stopped.
                let path = e.path();
                if let Err(e) = mayfly_image::remove_tree(&path) {
                    tracing::warn!(
                        "cannot delete {}: {}",
                        path.display(),
                        mayfly_driver::error_chain(&e)
                    );
                }
            }
        }
    }
    let snapshots = store.snapshot_ids()?;
    if let Ok(entries) = std::fs::read_dir(layout.snapshots()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !snapshots.contains(&name) {
                to_trash(layout, &e.path(), "snapshot not in the catalogue");
            }
        }
    }
    Ok(left)
}

/// Whether host process `pid` is still the one that started at `start_time`.
fn same_process(pid: i32, start_time: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|v| v.parse::<u64>().ok())
        == Some(start_time)
}

impl Engine {
    /// Matches every catalogued instance with what the forker tracks. At start-up
    /// (`startup`), nothing else runs yet, so an ephemeral instance found stopped is one whose
    /// run never started or whose removal failed: it is removed now.
    pub(crate) async fn reconcile(self: &Arc<Self>, startup: bool) -> Result<(), EngineError> {
        let tracked: HashMap<String, ContainerState> = self
            .driver
            .tracked()
            .await
            .map_err(EngineError::Driver)?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        let records = self.db(|s| s.instances()).await?;
        let known: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
        for rec in records {
            let slot = {
                let mut slots = lock(&self.slots);
                match slots.get(&rec.name) {
                    Some(s) => s,
                    None => {
                        let s = Slot::new(&rec.id, &rec.name);
                        slots.insert(s.clone());
                        s
                    }
                }
            };
            let version = rec.run.as_ref().map(|r| r.version);
            let started_at = rec.run.as_ref().map(|r| r.started_at);
            let ended = match tracked.get(&rec.id) {
                Some(c) if c.exited.is_none() => {
                    self.mark_running(&slot, c.pid, version, started_at);
                    let _ = self.driver.reattach(&rec.id).await;
                    if rec.paused {
                        self.repause(&slot).await;
                    }
                    None
                }
                Some(c) => Some(c.exited),
                None => match &rec.run {
                    Some(run)
                        if run.boot_id == self.boot_id && same_process(run.pid, run.start_time) =>
                    {
                        let started = Started {
                            pid: run.pid,
                            start_time: run.start_time,
                        };
                        let dir = self.layout.instance_dir(&rec.id);
                        let max = self.config.log_max_bytes;
                        match self.driver.adopt(&rec.id, started, &dir, max).await {
                            Ok(()) => {
                                tracing::warn!(
                                    instance = %rec.name,
                                    "adopted a running instance whose forker was lost; its exit status will be unknown"
                                );
                                self.mark_running(&slot, run.pid, version, started_at);
                                if rec.paused {
                                    self.repause(&slot).await;
                                }
                                None
                            }
                            Err(_) => Some(None),
                        }
                    }
                    Some(_) => Some(None),
                    None => {
                        if slot.state() == InstanceState::Running {
                            Some(None)
                        } else {
                            None
                        }
                    }
                },
            };
            let ended = match ended {
                None if startup
                    && rec.mode == mayfly_api::Mode::Ephemeral
                    && slot.state() == InstanceState::Stopped =>
                {
                    Some(None)
                }
                e => e,
            };
            if let Some(status) = ended {
                // As if the forker had just reported it: a stop waiting for this run is woken,
                // and otherwise the run is settled in the background (releasing a group that
                // is slow to empty, or a discard, must not hold up the daemon's start or a
                // reconcile for the others).
                self.on_exit(&rec.id, status);
            }
        }
        for (id, c) in tracked {
            if !known.contains(&id) {
                tracing::warn!("the forker tracks unknown instance {id}; stopping it");
                if c.exited.is_none() {
                    let _ = self.driver.kill(&id).await;
                } else {
                    let _ = self.driver.release(&id).await;
                }
            }
        }
        Ok(())
    }

    fn mark_running(
        &self,
        slot: &Arc<Slot>,
        pid: i32,
        version: Option<u32>,
        started_at: Option<i64>,
    ) {
        let mut rt = lock(&slot.rt);
        rt.state = InstanceState::Running;
        rt.pid = Some(pid);
        rt.version = version;
        rt.started_at = started_at;
    }
}
