//! The `container` driver: an instance is a set of namespaces and a cgroup around an init,
//! rooted in an overlay of the template's layers under the instance's writable layer.
//!
//! Layout of an instance directory: the writable layer where the engine says (a plain overlay
//! diff, `upper-<generation>/`), `work/` (overlayfs scratch), `rootfs/` (an empty mount point
//! used only inside the container's own mount namespace) and `console.log` (the init's output).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::cgroup::{CgroupLayout, Cgroups};
use crate::client::ForkerClient;
use crate::files;
use crate::protocol::{ContainerState, Failure, FailureKind, LogTarget, Reply, Request};
use crate::spec::{ContainerSpec, ProcessSpec, StdioSpec};
use crate::{
    BoxFuture, ConsoleAttached, Driver, DriverError, DriverEvent, ExecStarted, InitStdio,
    InstanceSpec, Started,
};

/// Runs instances as containers through a forker helper.
#[derive(Debug)]
pub struct ContainerDriver {
    client: ForkerClient,
    cgroup_parent: String,
    /// The hierarchies the forker puts instance groups in (the same layout), for live limits
    /// and usage, which are plain file accesses; `None` when none is mounted.
    cgroups: Option<Cgroups>,
    /// The disk holding the state directory, which `io-max` limits (`MAJ:MIN`).
    io_device: Option<String>,
    /// A duplicate of the read end of each detached instance's console pipe. A pipe without
    /// readers kills its writers (SIGPIPE): if the forker dies, this keeps the instances
    /// alive until a new forker adopts them and pumps the pipe again.
    log_readers: std::sync::Mutex<HashMap<String, OwnedFd>>,
    /// Project quotas of the state filesystem (probed once, here).
    quotas: crate::quota::DiskQuotas,
    /// Filesystem images per instance, for disk limits where there are no project quotas.
    images: crate::disk_image::DiskImages,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ContainerDriver {
    /// A driver whose forker (started from `exe` when needed) serves `state_dir` and puts
    /// instance cgroups under `cgroup_parent`, in the hierarchies of `cgroup_layout`.
    pub fn new(
        state_dir: &Path,
        exe: &Path,
        cgroup_parent: &str,
        cgroup_layout: CgroupLayout,
        events: mpsc::Sender<DriverEvent>,
    ) -> Self {
        ContainerDriver {
            client: ForkerClient::new(state_dir, exe, cgroup_parent, cgroup_layout, events),
            cgroup_parent: cgroup_parent.to_owned(),
            cgroups: Cgroups::detect_as(cgroup_layout).ok(),
            io_device: crate::cgroup::limits::io_device(state_dir),
            log_readers: std::sync::Mutex::new(HashMap::new()),
            quotas: crate::quota::DiskQuotas::probe(state_dir),
            images: crate::disk_image::DiskImages::probe(state_dir),
        }
    }

    /// The forker's pid, once connected.
    pub fn forker_pid(&self) -> i32 {
        self.client.forker_pid()
    }

    /// The cgroup of instance `id`, relative to each hierarchy root.
    pub fn cgroup_of(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }

    /// The hierarchies, when instance `id`'s group `rel` exists in them.
    fn running_group(&self, id: &str, rel: &str) -> Result<&Cgroups, DriverError> {
        match &self.cgroups {
            Some(cg) if cg.exists(rel) => Ok(cg),
            _ => Err(not_running(id)),
        }
    }

    /// Asks the forker for a reader of instance `id`'s console pipe and keeps it (best effort:
    /// an instance attached to a client has no console pipe).
    async fn keep_reader(&self, id: &str) {
        let request = Request::LogReader { id: id.to_owned() };
        if let Ok((_, mut fds)) = self.client.call_with_fds(request, Vec::new()).await
            && let Some(fd) = fds.pop()
        {
            lock(&self.log_readers).insert(id.to_owned(), fd);
        }
    }

    /// Whether the instance of `instance_dir` runs (its cgroup holds processes).
    fn dir_running(&self, instance_dir: &Path) -> bool {
        let id = instance_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // Processes in its group, not the group's existence: the forker removes a stopped
        // instance's group a moment after its last process is reaped, and a start may come
        // before that (a read that fails counts as running: nothing is then copied).
        self.cgroups.as_ref().is_some_and(|cg| {
            !id.is_empty()
                && cg
                    .pids(&self.cgroup_of(id))
                    .map_or(true, |pids| !pids.is_empty())
        })
    }

    async fn expect_done(&self, request: Request, fds: Vec<OwnedFd>) -> Result<(), DriverError> {
        self.client.call(request, fds).await.map(|_| ())
    }
}

/// The lower directories of an overlay for the layer stack `layers` (lowest first): each
/// directory once, at its topmost place. overlayfs refuses a directory twice (ELOOP), and a
/// stack holds one when a patch repeats an earlier layer's content (layers are named by
/// digest). Dropping the lower copy shows the same tree: every path the layer defines is
/// found in its upper copy first, and it hides nothing the upper copy does not hide.
pub fn overlay_lowers(layers: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<PathBuf> = layers
        .iter()
        .rev()
        .filter(|l| seen.insert(l.as_path()))
        .cloned()
        .collect();
    out.reverse();
    out
}

/// The prefix of a tree [`move_to_trash`] renamed next to itself (on another filesystem
/// than the trash) and is deleting there; start-up recovery deletes what is left of them.
pub const TRASH_ASIDE: &str = ".trash-";

/// Moves `path` (if it exists) into `trash` under a unique name. A path on another
/// filesystem than the trash (inside an instance directory that is a disk image's mount) is
/// renamed next to itself under a hidden name ([`TRASH_ASIDE`]) and deleted there by a
/// thread. A mount point itself cannot be moved (EBUSY): release its disk first
/// ([`Driver::release_disk`]).
pub fn move_to_trash(path: &Path, trash: &Path) -> Result<(), DriverError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    std::fs::create_dir_all(trash).map_err(files("create", trash))?;
    let mut rnd = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut rnd, rustix::rand::GetRandomFlags::empty());
    let name = format!(
        "{}-{:016x}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        u64::from_le_bytes(rnd)
    );
    match std::fs::rename(path, trash.join(&name)) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let aside = path.with_file_name(format!("{TRASH_ASIDE}{name}"));
            std::fs::rename(path, &aside).map_err(files("move to trash", path))?;
            let spawned = std::thread::Builder::new()
                .name("trash-aside".into())
                .spawn(move || {
                    if let Err(e) = mayfly_image::remove_tree(&aside) {
                        tracing::warn!(
                            "cannot delete {}: {}",
                            aside.display(),
                            crate::error_chain(&e)
                        );
                    }
                });
            spawned.map(|_| ()).map_err(files("start deleting", path))
        }
        r => r.map_err(files("move to trash", path)),
    }
}

impl Driver for ContainerDriver {
    fn kind(&self) -> &'static str {
        "container"
    }

    fn helper_pid(&self) -> Option<i32> {
        Some(self.client.forker_pid()).filter(|p| *p > 0)
    }

    fn prepare_writable(&self, spec: &InstanceSpec, trash: &Path) -> Result<(), DriverError> {
        let dir = &spec.instance_dir;
        let upper = &spec.writable;
        let work = dir.join("work");
        // The work directory is scratch space; a new one avoids overlayfs' "in use" check
        // tripping over a superblock that is still being torn down.
        move_to_trash(&work, trash)?;
        let rootfs = dir.join("rootfs");
        if !rootfs.is_dir() {
            std::fs::create_dir(&rootfs).map_err(files("create", &rootfs))?;
        }
        std::fs::create_dir(&work).map_err(files("create", &work))?;
        if !upper.is_dir() {
            // The root of the overlay takes its owner and mode from the upper directory, so
            // it mirrors the template's root (mapped into the instance's id range).
            let top = spec
                .layers
                .last()
                .map(PathBuf::as_path)
                .unwrap_or(Path::new("/nonexistent"));
            let meta = std::fs::metadata(top).ok();
            let (mode, uid, gid) = match &meta {
                Some(m) => (m.mode() & 0o7777, m.uid(), m.gid()),
                None => (0o755, 0, 0),
            };
            let map = |id: u32| spec.idmap.map_or(Some(id), |m| m.to_host(id)).unwrap_or(id);
            let mut tmp = upper.clone().into_os_string();
            tmp.push(".new");
            let tmp = PathBuf::from(tmp);
            let _ = std::fs::remove_dir(&tmp);
            std::fs::create_dir(&tmp).map_err(files("create", &tmp))?;
            std::os::unix::fs::chown(&tmp, Some(map(uid)), Some(map(gid)))
                .map_err(files("chown", &tmp))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
                .map_err(files("chmod", &tmp))?;
            if let Some(m) = &meta {
                // Same times too, so that a fresh instance's root is exactly the template's.
                let times = std::fs::FileTimes::new()
                    .set_accessed(m.accessed().unwrap_or(std::time::UNIX_EPOCH))
                    .set_modified(m.modified().unwrap_or(std::time::UNIX_EPOCH));
                std::fs::File::open(&tmp)
                    .and_then(|f| f.set_times(times))
                    .map_err(files("set times of", &tmp))?;
            }
            std::fs::rename(&tmp, upper).map_err(files("create", upper))?;
        }
        Ok(())
    }

    fn log_path(&self, instance_dir: &Path) -> PathBuf {
        instance_dir.join("console.log")
    }

    fn start(
        &self,
        spec: InstanceSpec,
        stdio: InitStdio,
    ) -> BoxFuture<'_, Result<Started, DriverError>> {
        Box::pin(async move {
            let dir = &spec.instance_dir;
            let (stdio_spec, fds) = match stdio {
                InitStdio::Log { max_bytes } => (
                    StdioSpec::Log {
                        path: self.log_path(dir),
                        max_bytes,
                    },
                    Vec::new(),
                ),
                InitStdio::Passed(fds) => (StdioSpec::Passed, fds),
            };
            let container = ContainerSpec {
                cgroup: self.cgroup_of(&spec.id),
                hostname: spec.hostname.clone(),
                layers: overlay_lowers(&spec.layers),
                upper: spec.writable.clone(),
                work: dir.join("work"),
                rootfs: dir.join("rootfs"),
                idmap: spec.idmap,
                process: spec.process.clone(),
                stdio: stdio_spec,
                id: spec.id.clone(),
                new_identity: spec.new_identity,
                network: spec.network,
                interfaces: spec.interfaces.clone(),
                binds: spec.binds.clone(),
                init: spec.init,
                limits: spec.limits.clone(),
                user_data: spec.user_data.clone(),
            };
            let id = container.id.clone();
            let answer = self
                .client
                .call_with_fds(Request::Spawn(Box::new(container)), fds)
                .await;
            if let Err(DriverError::TimedOut { .. }) = &answer {
                // The forker may still finish the start: it must not run unasked.
                let _ = self.kill(&id).await;
            }
            match answer? {
                (Reply::Spawned { pid, start_time }, mut readers) => {
                    if let Some(fd) = readers.pop() {
                        lock(&self.log_readers).insert(id, fd);
                    }
                    Ok(Started { pid, start_time })
                }
                (other, _) => Err(DriverError::Failed(crate::protocol::Failure::other(
                    format!("unexpected answer to spawn: {other:?}"),
                ))),
            }
        })
    }

    fn signal(&self, id: &str, signal: i32) -> BoxFuture<'_, Result<(), DriverError>> {
        let id = id.to_owned();
        Box::pin(self.expect_done(Request::Signal { id, signal }, Vec::new()))
    }

    fn kill(&self, id: &str) -> BoxFuture<'_, Result<(), DriverError>> {
        let id = id.to_owned();
        Box::pin(self.expect_done(Request::KillAll { id }, Vec::new()))
    }

    fn exec(
        &self,
        id: &str,
        exec_id: u64,
        process: ProcessSpec,
        fds: Vec<OwnedFd>,
    ) -> BoxFuture<'_, Result<ExecStarted, DriverError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let request = Request::Exec {
                id,
                exec_id,
                process: Box::new(process),
            };
            match self.client.call_with_fds(request, fds).await? {
                (Reply::ExecStarted { pid }, mut fds) => Ok(ExecStarted {
                    pid,
                    terminal: fds.pop(),
                }),
                (other, _) => Err(DriverError::Failed(crate::protocol::Failure::other(
                    format!("unexpected answer to exec: {other:?}"),
                ))),
            }
        })
    }

    fn console(&self, id: &str) -> BoxFuture<'_, Result<ConsoleAttached, DriverError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let (_, mut fds) = self
                .client
                .call_with_fds(Request::Console { id }, Vec::new())
                .await?;
            match (fds.pop(), fds.pop()) {
                (Some(resize), Some(stream)) => Ok(ConsoleAttached { stream, resize }),
                _ => Err(DriverError::Failed(crate::protocol::Failure::other(
                    "the forker attached to the console without passing its descriptors",
                ))),
            }
        })
    }

    fn signal_exec(&self, exec_id: u64, signal: i32) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(self.expect_done(Request::SignalExec { exec_id, signal }, Vec::new()))
    }

    fn freeze(&self, id: &str, frozen: bool) -> BoxFuture<'_, Result<(), DriverError>> {
        let id = id.to_owned();
        Box::pin(self.expect_done(Request::Freeze { id, frozen }, Vec::new()))
    }

    fn release(&self, id: &str) -> BoxFuture<'_, Result<(), DriverError>> {
        lock(&self.log_readers).remove(id);
        let id = id.to_owned();
        Box::pin(self.expect_done(Request::Release { id }, Vec::new()))
    }

    fn tracked(&self) -> BoxFuture<'_, Result<Vec<ContainerState>, DriverError>> {
        Box::pin(self.client.hello())
    }

    fn probe_user_namespaces(
        &self,
        layers_dir: &Path,
    ) -> BoxFuture<'_, Result<Option<String>, DriverError>> {
        let path = layers_dir.to_owned();
        Box::pin(async move {
            match self
                .client
                .call(Request::ProbeIdmap { path }, Vec::new())
                .await?
            {
                Reply::Probe { unsupported } => Ok(unsupported),
                other => Err(DriverError::Failed(crate::protocol::Failure::other(
                    format!("unexpected answer to probe: {other:?}"),
                ))),
            }
        })
    }

    fn adopt(
        &self,
        id: &str,
        started: Started,
        instance_dir: &Path,
        log_max_bytes: u64,
    ) -> BoxFuture<'_, Result<(), DriverError>> {
        let reader = lock(&self.log_readers).remove(id);
        let request = Request::Adopt {
            id: id.to_owned(),
            pid: started.pid,
            start_time: started.start_time,
            cgroup: self.cgroup_of(id),
            log: reader.is_some().then(|| LogTarget {
                path: self.log_path(instance_dir),
                max_bytes: log_max_bytes,
            }),
        };
        let id = id.to_owned();
        Box::pin(async move {
            let fds: Vec<OwnedFd> = reader.into_iter().collect();
            self.client.call(request, fds).await?;
            // The new forker reads the pipe now; keep a reader of our own again.
            self.keep_reader(&id).await;
            Ok(())
        })
    }

    fn reattach(&self, id: &str) -> BoxFuture<'_, Result<(), DriverError>> {
        let id = id.to_owned();
        Box::pin(async move {
            self.keep_reader(&id).await;
            Ok(())
        })
    }

    fn set_limits(
        &self,
        id: &str,
        limits: &mayfly_api::Limits,
    ) -> BoxFuture<'_, Result<crate::LimitsApplied, DriverError>> {
        let rel = self.cgroup_of(id);
        let (id, limits) = (id.to_owned(), limits.clone());
        Box::pin(async move {
            let cgroups = self.running_group(&id, &rel)?.clone();
            let io_device = self.io_device.clone();
            // Lowering a memory limit makes the kernel reclaim before the write returns.
            let refused = tokio::task::spawn_blocking(move || {
                cgroups.apply_limits(&rel, &limits, io_device.as_deref())
            })
            .await
            .map_err(|e| DriverError::Failed(Failure::other(format!("set limits of {id}: {e}"))))?;
            Ok(crate::LimitsApplied { refused })
        })
    }

    fn usage(&self, id: &str) -> BoxFuture<'_, Result<crate::Usage, DriverError>> {
        let rel = self.cgroup_of(id);
        let id = id.to_owned();
        Box::pin(async move {
            let cgroups = self.running_group(&id, &rel)?;
            cgroups.usage(&rel).map_err(|_| not_running(&id))
        })
    }

    fn check_limits(&self, limits: &mayfly_api::Limits) -> Result<(), String> {
        match &self.cgroups {
            Some(cg) => cg.check_limits(&self.cgroup_parent, limits, self.io_device.as_deref()),
            None => {
                let cgroup_keys = mayfly_api::Limits {
                    disk: None,
                    net_rate: None,
                    ..limits.clone()
                };
                if cgroup_keys.is_empty() {
                    Ok(())
                } else {
                    Err("this host has no cgroup hierarchy mounted, so no cpu, memory, pids or io limit can be enforced: mount cgroup2 (or the v1 controllers) at /sys/fs/cgroup and restart the daemon".to_owned())
                }
            }
        }
    }

    fn disk_quota_unsupported(&self) -> Option<String> {
        let quotas = self.quotas.unsupported()?;
        let images = self.images.unsupported()?;
        Some(format!(
            "{quotas}; and no filesystem image per instance can be used instead: {images}"
        ))
    }

    fn set_disk_quota(&self, instance_dir: &Path, bytes: Option<u64>) -> Result<(), DriverError> {
        // Project quotas where they work; an image where they do not (or one exists).
        let image = self.images.has_image(instance_dir);
        match bytes {
            Some(b) if image || self.quotas.unsupported().is_some() => {
                self.images
                    .set(instance_dir, b, self.dir_running(instance_dir))
            }
            None if image => self
                .images
                .unset(instance_dir, self.dir_running(instance_dir)),
            _ => self.quotas.set(instance_dir, bytes),
        }
    }

    fn disk_usage(&self, instance_dir: &Path) -> Result<Option<u64>, DriverError> {
        if self.images.has_image(instance_dir) {
            return self.images.usage(instance_dir);
        }
        self.quotas.usage(instance_dir)
    }

    fn release_disk(&self, instance_dir: &Path) -> Result<(), DriverError> {
        self.images.release(instance_dir)?;
        if self.quotas.unsupported().is_none() {
            self.quotas.set(instance_dir, None)?;
        }
        Ok(())
    }
}

fn not_running(id: &str) -> DriverError {
    DriverError::Failed(Failure {
        kind: FailureKind::UnknownContainer,
        message: format!("container {id} is not running"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_repeated_in_a_stack_is_kept_at_its_topmost_place() {
        let p = |s: &str| PathBuf::from(s);
        let stack = [p("base"), p("a"), p("b"), p("a"), p("c")];
        assert_eq!(overlay_lowers(&stack), [p("base"), p("b"), p("a"), p("c")]);
        assert_eq!(overlay_lowers(&stack[..3]), stack[..3]);
    }
}
