//! Drivers run instances; this crate holds the mechanism, the engine holds the policy.
//!
//! Today there is one driver, `container` (namespaces + cgroups + overlayfs), built from:
//! - [`forker`]: the single-threaded helper process that clones containers and exec'd
//!   processes, parents and reaps them, and pumps their logs;
//! - [`client`]: the daemon's async connection to it;
//! - [`cgroup`]: v1, v2 and hybrid cgroup handling;
//! - [`security`]: seccomp filter, capabilities, masked paths;
//! - [`quota`]: disk limits as project quotas on the state filesystem.
//! - [`disk_image`]: disk limits as a filesystem image per instance, where there are none.
//!
//! The engine talks to drivers through the [`Driver`] trait, so that a VM driver can serve the
//! same templates later without touching the engine.
#![forbid(unsafe_code)]

pub mod cgroup;
pub mod client;
pub mod container;
pub mod disk_image;
pub mod forker;
pub mod protocol;
pub mod quota;
pub mod security;
pub mod spec;
pub mod user;

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;

pub use protocol::{ContainerState, Event, FailureKind};
pub use spec::{
    BindMount, ExitStatus, IdMap, NetworkMode, ProcessSpec, UserDataOutcome, UserDataRun,
};
pub use user::UserSpec;

/// Whether the command `args` boots an init (`/sbin/init`, systemd, busybox `init`): only
/// then does a template's own cloud-init get to run.
pub fn boots_init(args: &[String]) -> bool {
    forker::boot_mounts::boots_init(args)
}

/// `PATH` when neither the template nor the instance sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A boxed future, so that [`Driver`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A driver operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The helper process refused or failed the request.
    #[error(transparent)]
    Failed(#[from] protocol::Failure),
    /// The helper process went away while the request was in flight.
    #[error("the forker helper exited; the daemon restarts it, retry")]
    HelperLost,
    /// The helper could not be started or reached.
    #[error("cannot reach the forker helper")]
    Helper(#[source] std::io::Error),
    /// The helper did not answer in time (it is stuck; the request was given up).
    #[error(
        "the forker helper did not answer a {request} request within {} s; see forker.log in the state directory",
        after.as_secs()
    )]
    TimedOut {
        /// What was asked.
        request: &'static str,
        /// How long was waited.
        after: std::time::Duration,
    },
    /// The request is too large for the helper's protocol (nothing was sent).
    #[error("{0}")]
    TooLarge(String),
    /// The helper speaks another protocol version (a mayfly upgrade with instances running).
    #[error("the running forker speaks protocol {found}, this daemon {expected}")]
    ProtocolMismatch {
        /// Ours.
        expected: u32,
        /// Theirs.
        found: u32,
    },
    /// The running forker drives other cgroup hierarchies than this daemon was asked for.
    #[error(
        "the running forker (pid {pid}) keeps its instances in the {forker} cgroup hierarchies, but this daemon was started for {wanted}; start the daemon with --cgroup-layout {forker} (or auto, if that is what this host has), and to switch layouts, stop every instance first: the forker leaves once it runs none"
    )]
    CgroupMismatch {
        /// The forker's pid.
        pid: i32,
        /// Where the forker's instances live (`v1` or `v2`).
        forker: &'static str,
        /// Where this daemon would look.
        wanted: &'static str,
    },
    /// Preparing or removing files of an instance failed.
    #[error("{action} `{path}`")]
    Files {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl DriverError {
    /// The failure classification, when the helper gave one.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            DriverError::Failed(f) => Some(f.kind),
            _ => None,
        }
    }
}

/// What the engine asks a driver to run (driver-neutral; each driver derives its own layout
/// inside `instance_dir`).
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Instance id (unique on the host).
    pub id: String,
    /// Hostname.
    pub hostname: String,
    /// Template layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    /// The instance's private directory (scratch space, mount point, logs).
    pub instance_dir: PathBuf,
    /// The writable layer (created by [`Driver::prepare_writable`] if missing).
    pub writable: PathBuf,
    /// Give the instance a new machine identity before its init runs (machine-id, SSH host
    /// keys, random seed, /etc/hostname): a clone's first start.
    pub new_identity: bool,
    /// Network.
    pub network: spec::NetworkMode,
    /// Network interfaces attached before the init runs (with [`NetworkMode::Isolated`]
    /// only; the engine allocates them, the driver creates them).
    pub interfaces: Vec<mayfly_net::Interface>,
    /// Host paths mounted inside.
    pub binds: Vec<spec::BindMount>,
    /// User namespace mapping, if any.
    pub idmap: Option<IdMap>,
    /// The init process.
    pub process: ProcessSpec,
    /// Run mayfly's own init as PID 1 in front of `process` (`--init`).
    pub init: bool,
    /// Limits applied before the init runs (cgroup ones by the driver; `disk` through
    /// [`Driver::set_disk_quota`] and `net_rate` by the engine's network code).
    pub limits: mayfly_api::Limits,
    /// User data mayfly runs before the init (see [`spec::UserDataRun`]).
    pub user_data: Option<spec::UserDataRun>,
}

/// What the kernel refused of a live change of limits ([`Driver::set_limits`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsApplied {
    /// `(key, reason)` for each limit (keys of [`mayfly_api::LIMIT_KEYS`]) that could not be
    /// applied to the running instance; the others were.
    pub refused: Vec<(String, String)>,
}

/// Usage figures of a running instance, read from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, bytes (without the page cache the kernel can drop at once, as `docker
    /// stats` counts it).
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
    /// Bytes read from block devices.
    pub io_read_bytes: u64,
    /// Bytes written to block devices.
    pub io_write_bytes: u64,
    /// Processes killed by the OOM killer in this group since it was made.
    pub oom_kills: u64,
}

/// Where an instance's init writes.
#[derive(Debug)]
pub enum InitStdio {
    /// Into the instance's bounded console log.
    Log {
        /// Rotation size.
        max_bytes: u64,
    },
    /// To these descriptors (one terminal, or stdin/stdout/stderr).
    Passed(Vec<OwnedFd>),
}

/// A started init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// Host pid.
    pub pid: i32,
    /// Start time in clock ticks since boot (pid reuse check).
    pub start_time: u64,
}

/// An exec'd process that runs.
#[derive(Debug)]
pub struct ExecStarted {
    /// Host pid.
    pub pid: i32,
    /// When the process got a terminal: the master side of the one it really has, made
    /// inside the instance, which replaces the one passed to [`Driver::exec`].
    pub terminal: Option<OwnedFd>,
}

/// A client attached to an instance's console ([`Driver::console`]).
#[derive(Debug)]
pub struct ConsoleAttached {
    /// A stream socket: what the console writes comes out of it, what is written into it is
    /// typed on the console. Closing it detaches.
    pub stream: OwnedFd,
    /// The console's master side, for window-size changes only (never read or written).
    pub resize: OwnedFd,
}

/// Something a driver reports unasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverEvent {
    /// An instance's init ended (`None`: the status could not be collected).
    Exited {
        /// Instance id.
        id: String,
        /// How it ended.
        status: Option<ExitStatus>,
    },
    /// An exec'd process ended.
    ExecExited {
        /// Exec id.
        exec_id: u64,
        /// How it ended.
        status: ExitStatus,
    },
    /// The helper went away: the engine must reconnect ([`Driver::tracked`] starts a new one)
    /// and reconcile its running instances.
    HelperLost,
}

/// What runs instances. Methods that touch files are synchronous (call them off the async
/// runtime); the others talk to a helper and are async.
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// `container` or, later, `vm`.
    fn kind(&self) -> &'static str;

    /// Pid of the driver's helper process, if it has one and it is connected.
    fn helper_pid(&self) -> Option<i32>;

    /// Creates the writable layer `spec.writable` if it is missing (empty, its root mirroring
    /// the template's root), and whatever scratch space the driver needs; stale scratch goes
    /// to `trash` (a directory on the same filesystem).
    fn prepare_writable(&self, spec: &InstanceSpec, trash: &Path) -> Result<(), DriverError>;

    /// The instance's console log file.
    fn log_path(&self, instance_dir: &Path) -> PathBuf;

    /// Starts the instance's init.
    fn start(
        &self,
        spec: InstanceSpec,
        stdio: InitStdio,
    ) -> BoxFuture<'_, Result<Started, DriverError>>;

    /// Sends `signal` to the init.
    fn signal(&self, id: &str, signal: i32) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Kills every process of the instance.
    fn kill(&self, id: &str) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Runs `process` in the running instance `id` with stdio `fds`.
    fn exec(
        &self,
        id: &str,
        exec_id: u64,
        process: ProcessSpec,
        fds: Vec<OwnedFd>,
    ) -> BoxFuture<'_, Result<ExecStarted, DriverError>>;

    /// Attaches a client to the console of the running instance `id` (one at a time).
    fn console(&self, id: &str) -> BoxFuture<'_, Result<ConsoleAttached, DriverError>>;

    /// Sends `signal` to an exec'd process.
    fn signal_exec(&self, exec_id: u64, signal: i32) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Freezes or thaws every process of the instance.
    fn freeze(&self, id: &str, frozen: bool) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Forgets an ended instance and frees its host resources (cgroup).
    fn release(&self, id: &str) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Instances the driver's helper tracks (running, or ended and not yet released).
    fn tracked(&self) -> BoxFuture<'_, Result<Vec<ContainerState>, DriverError>>;

    /// Why instances cannot get a user namespace with idmapped layers stored under
    /// `layers_dir`; `None` when they can.
    fn probe_user_namespaces(
        &self,
        layers_dir: &Path,
    ) -> BoxFuture<'_, Result<Option<String>, DriverError>>;

    /// Takes over an instance started by a previous, lost helper (its console log at
    /// `instance_dir` rotated at `log_max_bytes`).
    fn adopt(
        &self,
        id: &str,
        started: Started,
        instance_dir: &Path,
        log_max_bytes: u64,
    ) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Picks up what the driver keeps per running instance after a daemon restart (for the
    /// container driver: a reader of its console pipe, in case the forker dies).
    fn reattach(&self, id: &str) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Applies the cgroup limits of `limits` to the running instance `id` (every key; absent
    /// ones are lifted); what the kernel refused is answered, not an error.
    fn set_limits(
        &self,
        id: &str,
        limits: &mayfly_api::Limits,
    ) -> BoxFuture<'_, Result<LimitsApplied, DriverError>>;

    /// Usage figures of the running instance `id`.
    fn usage(&self, id: &str) -> BoxFuture<'_, Result<Usage, DriverError>>;

    /// Why some of `limits` cannot be enforced here (a controller the host's hierarchies
    /// lack, an IO limit without a block device under the state directory), as one message
    /// naming each such key and what to do; `Ok` when all can. Disk limits are checked by
    /// [`Self::disk_quota_unsupported`]. Cheap; synchronous.
    fn check_limits(&self, limits: &mayfly_api::Limits) -> Result<(), String>;

    /// Why a disk limit cannot be enforced on this host's state filesystem (`None`: it can).
    /// Checked once; cheap to call.
    fn disk_quota_unsupported(&self) -> Option<String>;

    /// Sets (`Some`) or lifts (`None`) the disk limit of the instance whose files are all under
    /// `instance_dir` (its writable layers, work directory and logs). Synchronous.
    fn set_disk_quota(&self, instance_dir: &Path, bytes: Option<u64>) -> Result<(), DriverError>;

    /// Bytes counted against the disk limit of the instance under `instance_dir`; `None` when
    /// it has none (or the host has no quotas). Synchronous.
    fn disk_usage(&self, instance_dir: &Path) -> Result<Option<u64>, DriverError>;

    /// Before the instance under `instance_dir` is removed: drops what holds its disk limit
    /// (its filesystem image is unmounted and deleted, its content discarded, nothing copied;
    /// a project quota is lifted). A no-op where there is none. Synchronous.
    fn release_disk(&self, instance_dir: &Path) -> Result<(), DriverError>;
}

/// The error of a file operation `action` on `path` (for `map_err`).
pub(crate) fn files<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> DriverError + 'a {
    move |source| DriverError::Files {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The message of `e` followed by its sources, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}
