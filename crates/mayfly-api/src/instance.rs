//! Instances: what a client asks for and what it is told.

use serde::{Deserialize, Serialize};

/// What happens to an instance's writable layer (and the instance) when it stops.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The instance is deleted when it stops (`docker run --rm`).
    Ephemeral,
    /// The instance keeps its identity, but its writable layer is discarded at every stop:
    /// each start is the clean template.
    #[default]
    Transient,
    /// The writable layer survives restarts; `reset` discards it on demand.
    Persistent,
}

impl Mode {
    /// The lowercase name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ephemeral => "ephemeral",
            Mode::Transient => "transient",
            Mode::Persistent => "persistent",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ephemeral" => Ok(Mode::Ephemeral),
            "transient" => Ok(Mode::Transient),
            "persistent" => Ok(Mode::Persistent),
            other => Err(format!(
                "unknown mode `{other}`: use ephemeral, transient or persistent"
            )),
        }
    }
}

/// Where an instance is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Not running; it can be started.
    Stopped,
    /// Being set up.
    Starting,
    /// Its init process runs.
    Running,
    /// A stop was asked for and the init has not exited yet.
    Stopping,
    /// Running, with every process frozen (`mayfly pause`): no CPU used, memory kept.
    Paused,
}

impl InstanceState {
    /// The lowercase name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Stopped => "stopped",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Paused => "paused",
        }
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an instance's init (or an exec'd process) ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExitInfo {
    /// Exit code as a shell reports it: the status, or 128 + the signal number.
    pub code: i32,
    /// The signal that killed it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// When (RFC 3339), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// How an instance's run ended, as mayfly reads it (absent for runs recorded before
    /// mayfly told them apart, and for exec'd processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending: Option<Ending>,
    /// Processes the kernel's OOM killer ended during that run (instances only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub oom_kills: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How an instance's run ended.
///
/// The kernel reports a `reboot(2)` by a process of the instance (its own pid namespace) as
/// the death of its init by a signal: SIGHUP for a restart, SIGINT for a power-off or halt.
/// A SIGHUP or SIGINT sent from the host (`kill -HUP`) to an init without a handler for it
/// looks the same; mayfly reads it as a reboot or a halt only when it sent the init no
/// signal itself during that run (`stop`, `restart`, `reset`, the signals an attached run
/// forwards), and after its own stop signal any end is `stopped` (or `killed`, once it had
/// to kill).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The init exited (with its exit code), unasked.
    Exited,
    /// The init ended after mayfly's stop signal (a clean stop).
    Stopped,
    /// mayfly killed it (SIGKILL: `stop --force`, or a stop past its timeout).
    Killed,
    /// A signal killed it that mayfly did not send and that is no reboot.
    Signalled,
    /// `poweroff` or `halt` inside: `reboot(2)` with a power-off or halt command.
    Halted,
    /// `reboot` inside: `reboot(2)` with a restart command. The instance starts again.
    Rebooted,
}

impl Ending {
    /// The word `info` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Exited => "exited",
            Ending::Stopped => "stopped",
            Ending::Killed => "killed",
            Ending::Signalled => "signalled",
            Ending::Halted => "halted",
            Ending::Rebooted => "rebooted",
        }
    }
}

/// How the instance is isolated from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Isolation {
    /// Whether the instance runs in its own user namespace.
    pub user_namespace: bool,
    /// First host uid/gid that the instance's uid/gid 0 maps to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id_base: Option<u32>,
    /// How many ids are mapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id_count: Option<u32>,
}

/// An instance as `list` and `info` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceInfo {
    /// Stable random id (16 hex digits).
    pub id: String,
    /// Unique name, also the hostname inside.
    pub name: String,
    /// Template name.
    pub template: String,
    /// The version the instance is pinned to (`NAME@N`); `None` follows the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_version: Option<u32>,
    /// The template version the current run uses; `None` when stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<u32>,
    /// Ephemeral, transient or persistent.
    pub mode: Mode,
    /// Life-cycle state.
    pub state: InstanceState,
    /// Host pid of the init process while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The init command as it runs: the template's entrypoint (or the instance's own) then
    /// the arguments given at launch, or the template's `cmd` when none were given; for the
    /// template version the instance runs, or when stopped the one its next start would
    /// take (ignoring what its applications may hold back).
    pub command: Vec<String>,
    /// Who the init runs as (`USER[:GROUP]`, the instance's own or the template's default,
    /// resolved in the instance's `/etc/passwd` and `/etc/group` at each start); absent is
    /// root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Application templates stacked over the template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// Extra environment of the init and of `exec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Start time of the current run (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// How the last run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitInfo>,
    /// Isolation from the host.
    pub isolation: Isolation,
    /// Bytes in the writable layer (only in `info`, it costs a walk of the layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writable_bytes: Option<u64>,
    /// What went wrong cleaning up after the last run, if anything did (the next start
    /// retries it, or refuses with the reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether a mayfly init runs as PID 1 in front of the command (`--init`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// Its network interfaces (address and MAC stay with the instance across restarts and
    /// resets; a clone gets new ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<crate::InterfaceInfo>,
    /// Ports published on the host while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::PublishPort>,
    /// In the answer of `start` and `stop`: what the action did besides the obvious, e.g.
    /// `already running` or `already stopped` when there was nothing to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The flavor its limits come from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// Its effective limits: the flavor's with the instance's own over them.
    #[serde(default, skip_serializing_if = "crate::Limits::is_empty")]
    pub limits: crate::Limits,
    /// Processes the kernel's OOM killer ended in the current run (or, stopped, the last).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub oom_kills: u64,
    /// Volumes mounted into it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::VolumeMount>,
    /// Its `--meta` pairs (also in its `/run/mayfly/meta.json`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: std::collections::BTreeMap<String, String>,
    /// Its user data, if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<crate::UserDataInfo>,
    /// What happens when its init ends unasked.
    #[serde(default, skip_serializing_if = "crate::RestartPolicy::is_no")]
    pub restart: crate::RestartPolicy,
    /// Where its restart policy stands (restarts in a row, next attempt), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<crate::RestartInfo>,
}

/// `POST /v1/instances`: create an instance, and start it unless `start` is false. Its
/// command, environment and working directory together take at most [`MAX_PROCESS_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    /// `NAME` (follow the latest version) or `NAME@N` (pin version N).
    pub template: String,
    /// Instance name (DNS label); generated when absent.
    #[serde(default)]
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: Option<String>,
    /// Defaults to transient.
    #[serde(default)]
    pub mode: Mode,
    /// Init command, or the arguments of the template's entrypoint: appended to the
    /// entrypoint, replacing the template's `cmd` (see [`crate::TemplateConfig`]); empty means
    /// the template's default.
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the template's entrypoint (`[]` clears it); the template's `cmd` is then
    /// dropped, so `command` is all the arguments (as `docker run --entrypoint`).
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Run the init as this `USER[:GROUP]` instead of the template's default user (a name or
    /// uid, optionally a group name or gid, looked up in the instance's own `/etc/passwd` and
    /// `/etc/group`; a uid without an entry runs with gid 0). Exec'd processes run as this
    /// user too unless their request names another.
    #[serde(default)]
    pub user: Option<String>,
    /// Application templates (`NAME` or `NAME@N`, built over this template) stacked over it,
    /// in order.
    #[serde(default)]
    pub apps: Vec<String>,
    /// Allow application templates that change the same files: the later one wins.
    #[serde(default)]
    pub ordered_apps: bool,
    /// Extra `KEY=VALUE` environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory of the init; the template's default when absent.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Start it right away (default true).
    #[serde(default = "yes")]
    pub start: bool,
    /// Give the init a terminal (only meaningful with `POST /v1/run`).
    #[serde(default)]
    pub tty: bool,
    /// Initial terminal size `[rows, cols]` when `tty` is set.
    #[serde(default)]
    pub term_size: Option<[u16; 2]>,
    /// Run mayfly's own init as PID 1: it starts the command as its child, forwards every
    /// signal to it, reaps orphaned processes and exits with the command's status. Kept with
    /// the instance (every start uses it).
    #[serde(default)]
    pub init: bool,
    /// The networks to join, one interface each, in order (`eth0`, `eth1`…); absent: the
    /// default network; `["none"]`: none (only `lo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    /// Ports published on the host while the instance runs (needs a network).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::PublishPort>,
    /// A flavor whose limits it gets (its own `limits` go over them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// Its own limits (over the flavor's).
    #[serde(default, skip_serializing_if = "crate::Limits::is_empty")]
    pub limits: crate::Limits,
    /// User data: a script (`#!…`) or a cloud-config (`#cloud-config`), at most
    /// [`crate::MAX_USER_DATA`] bytes, carried out at every start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// `KEY=VALUE` metadata for `/run/mayfly/meta.json` (see [`crate::check_meta`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: std::collections::BTreeMap<String, String>,
    /// Volumes to mount (each attached to this instance only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::VolumeMount>,
    /// What happens when its init ends unasked (default `no`; refused for ephemeral ones).
    #[serde(default, skip_serializing_if = "crate::RestartPolicy::is_no")]
    pub restart: crate::RestartPolicy,
    /// Reset it every day at this time (`HH:MM`, local time): a reset schedule made with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/instances/{name}/stop` (and `restart`, `reset`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// Seconds to wait after the stop signal before SIGKILL (default 10).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Kill at once with SIGKILL.
    #[serde(default)]
    pub force: bool,
    /// The signal to send instead of the template's stop signal, this once (`SIGPWR`,
    /// `SIGRTMIN+3`, `15`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// Most bytes one argument or environment entry of a process may have: the kernel's own
/// limit for one string given to `execve` (`MAX_ARG_STRLEN`, 32 pages).
pub const MAX_ARG_BYTES: usize = 128 * 1024;

/// Most bytes a process's command line, environment and working directory may have together
/// (in [`CreateInstance`], [`ExecRequest`] and `run`); a request past it is refused with
/// `413 too_large` before anything starts.
pub const MAX_PROCESS_BYTES: usize = 256 * 1024;

/// Checks a process's command line, environment and working directory against
/// [`MAX_ARG_BYTES`] and [`MAX_PROCESS_BYTES`]; the error says which limit and by how much.
pub fn check_process_size(
    command: &[String],
    env: &[String],
    workdir: Option<&str>,
) -> Result<(), String> {
    if let Some((i, a)) = command
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() > MAX_ARG_BYTES)
    {
        return Err(format!(
            "argument {i} of the command is {} bytes long; one argument may have at most {MAX_ARG_BYTES}",
            a.len()
        ));
    }
    if let Some(e) = env.iter().find(|e| e.len() > MAX_ARG_BYTES) {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        let key: String = key.chars().take(40).collect();
        return Err(format!(
            "environment entry `{key}` is {} bytes long; one entry may have at most {MAX_ARG_BYTES}",
            e.len()
        ));
    }
    let total: usize = command
        .iter()
        .chain(env)
        .map(|s| s.len() + 1)
        .sum::<usize>()
        + workdir.map_or(0, str::len);
    if total > MAX_PROCESS_BYTES {
        return Err(format!(
            "the command line and environment take {total} bytes; at most {MAX_PROCESS_BYTES} are accepted"
        ));
    }
    Ok(())
}

/// `POST /v1/instances/{name}/exec` (with `Upgrade: mayfly-stream`). The command line,
/// environment and working directory together take at most [`MAX_PROCESS_BYTES`] (one
/// entry at most [`MAX_ARG_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in the instance's `PATH`.
    pub command: Vec<String>,
    /// Extra `KEY=VALUE` environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (default `/`).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Run as this `USER[:GROUP]` (a name or uid, optionally a group name or gid, looked up
    /// in the instance's own `/etc/passwd` and `/etc/group`); by default the user the
    /// instance's init runs as (its own `user`, else its template's; root when neither says).
    #[serde(default)]
    pub user: Option<String>,
    /// Allocate a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Initial terminal size `[rows, cols]` when `tty` is set.
    #[serde(default)]
    pub term_size: Option<[u16; 2]>,
}

/// Body of `POST /v1/instances/{name}/console` (a stream, see [`crate::stream`]): attaches
/// to the instance's console. Stdin frames are typed on the console, Stdout frames carry
/// what it shows from then on (earlier output is in the logs); Resize frames size it;
/// Signal frames are ignored. Closing the connection (or a Kill frame) detaches, leaving
/// the instance running; when the instance ends, the stream ends with an Exit frame (0).
/// One client at a time: another attach is refused with 409 (`busy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleRequest {
    /// The client's terminal size, `[rows, cols]`.
    #[serde(default)]
    pub term_size: Option<[u16; 2]>,
}

/// Query of `DELETE /v1/instances/{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// Stop a running instance first instead of refusing.
    #[serde(default)]
    pub force: bool,
    /// Delete the instance's snapshots too instead of refusing.
    #[serde(default)]
    pub snapshots: bool,
}

/// A snapshot as `snapshot list` and `snapshot info` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotInfo {
    /// Name, unique per instance.
    pub name: String,
    /// The instance.
    pub instance: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Template of the instance.
    pub template: String,
    /// Template version the writable layer was made on.
    pub template_version: u32,
    /// Bytes of file content in the snapshot.
    pub size: u64,
    /// Entries in it.
    pub entries: u64,
    /// How long the instance was frozen to take it (running instances only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_ms: Option<u64>,
    /// The volumes the instance had when it was taken (recorded, not copied: a restore
    /// keeps the instance's current volumes, and a clone gets none or copies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::VolumeMount>,
}

/// `POST /v1/instances/{name}/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Snapshot name; `snapN` when absent.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub name: Option<String>,
}

/// `POST /v1/instances/{name}/clone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneRequest {
    /// The new instance's name.
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Start from this snapshot of the source instead of its current writable layer.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Mode of the clone (default: the source's).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Start the clone.
    #[serde(default)]
    pub start: bool,
    /// Give the clone a copy of each volume of the source (named `<clone>-<volume>`)
    /// instead of none: a volume is attached to one instance at a time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy_volumes: bool,
}

/// `POST /v1/instances/{name}/publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Template to create, or to add a version to when it exists.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub template: String,
    /// Publish this snapshot instead of the current writable layer.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// History message.
    #[serde(default)]
    pub message: Option<String>,
    /// Make the instance's flavor and limits the new version's defaults (not copied unless
    /// asked: a template is usually published to run elsewhere, with other limits).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub limits: bool,
}

/// Query of `GET /v1/instances/{name}/logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Keep streaming new output until the client disconnects.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines.
    #[serde(default)]
    pub tail: Option<u64>,
}

/// The query of `GET /v1/instances/{name}/terminal` (the web page's terminal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminalQuery {
    /// Columns of the terminal.
    #[serde(default)]
    pub cols: Option<u16>,
    /// Rows of the terminal.
    #[serde(default)]
    pub rows: Option<u16>,
    /// The command to run, as a shell command line (default: the instance's login shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Run as this `USER[:GROUP]` (as [`ExecRequest::user`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory (as [`ExecRequest::workdir`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Extra environment, a JSON array of `KEY=VALUE` strings (as [`ExecRequest::env`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}
