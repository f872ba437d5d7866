//! The arguments of the instance verbs: `launch` and `run` (and the options they share),
//! `start`, `stop`, `restart`, `reset`, `rm`, `exec` and `logs`.

use clap::Args;

use crate::cli::process;
use crate::cli::{InstanceNetworkArgs, LIMITS, LimitArgs};

/// Options shared by `launch` and `run`.
#[derive(Debug, Args)]
pub struct InstanceOptions {
    /// Instance name (a DNS label); generated when omitted.
    #[arg(long)]
    pub name: Option<String>,
    /// Extra environment, KEY=VALUE (repeatable).
    #[arg(long, short, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory of the command.
    #[arg(long, short, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Stack an application template (built over TEMPLATE) on it; repeatable, in order.
    #[arg(long = "app", value_name = "APP")]
    pub apps: Vec<String>,
    /// Allow applications that change the same files (the later --app wins).
    #[arg(long, requires = "apps")]
    pub ordered: bool,
    #[command(flatten)]
    pub process: process::ProcessArgs,
    #[command(flatten)]
    pub network: InstanceNetworkArgs,
    /// A flavor: a named preset of limits (`mayfly flavor list`); the limit flags go over
    /// its limits. Default: the template's, if it has one; `none` for none.
    #[arg(long, help_heading = LIMITS, value_name = "FLAVOR")]
    pub flavor: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Run mayfly's tiny init as PID 1: it forwards signals to the command, reaps orphaned
    /// processes, and exits with the command's status (kept for every start).
    #[arg(long)]
    pub init: bool,
    #[command(flatten)]
    pub state: InstanceStateArgs,
}

/// Per-instance state given at launch: user data, metadata, volumes, restart policy.
#[derive(Debug, Args)]
pub struct InstanceStateArgs {
    /// User data: a script (`#!…`) or a cloud-config (`#cloud-config`) from FILE (`-`:
    /// standard input), carried out at every start (by the template's cloud-init when it has
    /// it, else by mayfly before the init).
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<std::path::PathBuf>,
    /// Metadata KEY=VALUE for /run/mayfly/meta.json inside (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Mount a volume (`mayfly volume create`) at a path inside: NAME:/path[:ro]
    /// (repeatable). A volume is attached to one instance at a time.
    #[arg(long = "volume", short = 'v', value_name = "NAME:/PATH[:ro]")]
    pub volumes: Vec<mayfly_api::VolumeMount>,
    /// When its init ends unasked: no (default), on-failure[:N] (at most N restarts in a
    /// row) or always; with back-off. `mayfly stop` always stops it for good.
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<mayfly_api::RestartPolicy>,
    /// Reset it every day at HH:MM (local time): a reset schedule (`mayfly schedule list`).
    #[arg(long, value_name = "HH:MM")]
    pub reset_at: Option<String>,
}

/// `mayfly launch`.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Template: NAME (follow the latest version) or NAME@N (pin version N).
    pub template: String,
    /// Init command, or the arguments to the template's entrypoint if it has one (default:
    /// the template's).
    #[arg(last = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub options: InstanceOptions,
    /// Delete the instance when it stops.
    #[arg(long, conflicts_with = "persistent")]
    pub ephemeral: bool,
    /// Keep the writable layer across restarts (`reset` discards it).
    #[arg(long)]
    pub persistent: bool,
    /// Create it stopped.
    #[arg(long)]
    pub no_start: bool,
    /// Print the new instance as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Template: NAME or NAME@N.
    pub template: String,
    /// Command, or the arguments to the template's entrypoint if it has one (default: the
    /// template's).
    #[arg(last = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub options: InstanceOptions,
    /// Delete the instance when the command ends (without it, a transient instance stays).
    #[arg(long)]
    pub rm: bool,
    /// Give the command a terminal.
    #[arg(long, short)]
    pub tty: bool,
}

/// Commands that take instance names.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Instance names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `stop`, `restart`, `reset`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Instance names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Seconds to wait after the stop signal before SIGKILL.
    #[arg(long, short, default_value_t = 10)]
    pub timeout: u64,
    /// Kill at once (SIGKILL).
    #[arg(long, short, conflicts_with = "signal")]
    pub force: bool,
    /// Send this signal instead of the template's stop signal, this once (SIGPWR,
    /// SIGRTMIN+3, 15).
    #[arg(long, short, value_name = "SIGNAL")]
    pub signal: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Instance names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Stop running instances first, and delete their snapshots without asking.
    #[arg(long, short)]
    pub force: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Instance name.
    pub name: String,
    /// Command and arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    /// Give the command a terminal.
    #[arg(long, short)]
    pub tty: bool,
    /// Extra environment, KEY=VALUE (repeatable).
    #[arg(long, short, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(long, short, value_name = "DIR")]
    pub workdir: Option<String>,
    #[command(flatten)]
    pub user: process::ExecUserArg,
}

/// `mayfly logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Instance name.
    pub name: String,
    /// Keep printing new output.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<u64>,
}
