//! What the engine asks a driver to run: a container's layers, writable layer, identity,
//! isolation and process. Plain data, serialisable so that it can cross to the forker.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A contiguous range of host uids and gids that a container's ids 0..count map onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// Host id that container id 0 maps to.
    pub host_base: u32,
    /// Number of ids mapped.
    pub count: u32,
}

impl IdMap {
    /// The host id of container id `id`, if it is mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        (id < self.count).then(|| self.host_base + id)
    }
}

/// A process to run inside an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Program and arguments; a program without `/` is looked up in `PATH` from `env`.
    pub args: Vec<String>,
    /// Complete environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory inside the instance.
    pub cwd: String,
    /// Who runs it: `USER[:GROUP]` (a name or uid, optionally a group name or gid), resolved
    /// inside the instance, in its own `/etc/passwd` and `/etc/group`, just before the
    /// program runs (rules in [`crate::user`]); empty is root. A user that is not root gets
    /// no capabilities; `HOME` comes from the passwd entry when `env` has none.
    #[serde(default)]
    pub user: String,
    /// Whether standard input/output/error is one terminal (passed as a single descriptor).
    pub tty: bool,
}

/// Where a container's init writes its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StdioSpec {
    /// Into a log file kept by the forker, rotated at `max_bytes` (one previous file kept as
    /// `<path>.1`); standard input is `/dev/null`.
    Log {
        /// The log file.
        path: PathBuf,
        /// Size at which the file is rotated.
        max_bytes: u64,
    },
    /// To descriptors passed along with the request: stdin, stdout, stderr; or one terminal
    /// when the process has `tty`.
    Passed,
}

/// Which network a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NetworkMode {
    /// Its own network namespace with `lo` and the spec's interfaces (none: `lo` only).
    #[default]
    Isolated,
    /// The host's network namespace (template builds that download packages).
    Host,
}

/// A host directory or file mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Host path (owned by ids as the instance's root sees them: 0-based; the mount is
    /// idmapped through the instance's user namespace).
    pub source: PathBuf,
    /// Absolute path inside the container; created (as a directory or empty file, like the
    /// source) when missing, unless `only_over_file`.
    pub target: String,
    /// Mount it read-only.
    pub readonly: bool,
    /// Mount it only over an existing regular file at `target`, which is never created and
    /// whose own symlink is never followed (its parent directories resolve inside the root):
    /// otherwise the mount is skipped, with a line in the forker's log. For the files mayfly
    /// writes for every container (`/etc/hosts`…), which a tenant may have replaced.
    #[serde(default)]
    pub only_over_file: bool,
}

/// User data that the container's first process runs before the init (mayfly's own runner,
/// for templates without cloud-init).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDataRun {
    /// Host path of the program to run (a `#!` script), read by the forker's child before it
    /// enters the container; inside, it runs from a memory file, as root in the instance's
    /// namespaces and confinement, with the init's output.
    pub script: PathBuf,
    /// Host path of an existing file the child writes the run's status into, as JSON (see
    /// [`UserDataOutcome`]): `running` when it starts, the outcome when it ends.
    pub status: PathBuf,
    /// How long it may run; then its process group is killed and the init starts anyway.
    pub timeout_secs: u64,
}

/// What [`UserDataRun::status`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDataOutcome {
    /// `running`, `done` (exit 0) or `failed`.
    pub state: String,
    /// Shell-style exit code, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Unix seconds when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
    /// What went wrong, when something did (a timeout, a program that could not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything needed to start one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Instance id, unique on the host; names the cgroup.
    pub id: String,
    /// Hostname inside.
    pub hostname: String,
    /// Template layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    /// The writable layer (overlayfs upper directory).
    pub upper: PathBuf,
    /// overlayfs work directory, on the same filesystem as `upper`.
    pub work: PathBuf,
    /// An empty host directory used as the mount point of the root inside the container's
    /// own mount namespace (the host never sees the mount).
    pub rootfs: PathBuf,
    /// User namespace mapping; `None` runs without a user namespace.
    pub idmap: Option<IdMap>,
    /// Cgroup path relative to each hierarchy's root.
    pub cgroup: String,
    /// The init process.
    pub process: ProcessSpec,
    /// Where the init's output goes.
    pub stdio: StdioSpec,
    /// Regenerate the machine identity inside before the init runs (a clone's first start).
    #[serde(default)]
    pub new_identity: bool,
    /// Network.
    #[serde(default)]
    pub network: NetworkMode,
    /// Network interfaces (veths on mayfly bridges) the forker attaches before the init
    /// runs; only with [`NetworkMode::Isolated`].
    #[serde(default)]
    pub interfaces: Vec<mayfly_net::Interface>,
    /// Host paths mounted inside.
    #[serde(default)]
    pub binds: Vec<BindMount>,
    /// Run mayfly's init as PID 1, with the process as its child (`mayfly_sys::init`).
    #[serde(default)]
    pub init: bool,
    /// Cgroup limits, written into the instance's group before its first process joins.
    #[serde(default)]
    pub limits: mayfly_api::Limits,
    /// User data to run before the init.
    #[serde(default)]
    pub user_data: Option<UserDataRun>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Shell-style code: the exit status, or 128 + signal.
    pub code: i32,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// Status of a process that exited with `code`.
    pub fn exited(code: i32) -> Self {
        ExitStatus { code, signal: None }
    }

    /// Status of a process killed by `signal`.
    pub fn killed(signal: i32) -> Self {
        ExitStatus {
            code: 128 + signal,
            signal: Some(signal),
        }
    }
}
