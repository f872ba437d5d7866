//! The command line: argument definitions (with examples in every `--help`) and dispatch to
//! commands, each a thin client of the REST API.
//!
//! Exit codes (the table in README.md): 0 success; 1 the daemon refused or failed the request;
//! 2 bad usage; 3 the daemon cannot be reached, or was lost during the request (every
//! command, `run` and `exec` included). `run` and `exec` exit with the program's own code,
//! or 125 when mayfly failed, 126 when the program cannot be executed, 127 when it does not
//! exist, 128 + N when the client gave up on the program after signal N.

mod args;
mod client;
mod commands;
pub mod config;
mod limits;
pub(crate) mod output;
mod process;
mod remote;
mod stream;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use args::events::*;
pub use args::instance::*;
pub use args::meta::*;
pub use args::network::*;
pub use args::remote::*;
pub use args::resources::*;
pub use args::schedule::*;
pub use args::snapshot::*;
pub use args::template::*;
pub use args::token::*;
pub use args::volume::*;
pub use client::Client;

/// Default API socket.
pub const DEFAULT_SOCKET: &str = "/run/mayfly/mayfly.sock";

const TOP_HELP: &str = "\
Examples:
  mayfly daemon &                          start the daemon (as root)
  mayfly run --rm busybox -- echo hello    one-shot run, exit code passed through
  mayfly launch busybox --name web         a transient instance: clean at every start
  mayfly exec web -- ps                    run a command inside it
  mayfly reset web                         back to the clean template now
  mayfly rm --force web                    stop and delete it
  mayfly network create backend            a virtual LAN (instances join `default` otherwise)
  mayfly template import debian ./rootfs.tar.zst";

/// mayfly runs transient containers from shared read-only templates.
#[derive(Debug, Parser)]
#[command(
    name = "mayfly",
    version,
    about = "Transient containers from shared read-only templates",
    after_help = TOP_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "MAYFLY_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Talk to this remote daemon (see `mayfly remote`) instead of the local socket.
    #[arg(long, global = true, env = "MAYFLY_REMOTE", value_name = "NAME")]
    pub remote: Option<String>,
    /// No informational lines (confirmations, notes, progress): lists print their names
    /// only, `launch` the new instance's name; errors still go to stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (as root) in the foreground.
    #[command(
        after_help = "Examples:\n  mayfly daemon\n  mayfly daemon --state-dir /srv/mayfly --socket /run/mayfly-srv.sock\n  mayfly daemon --config /etc/mayfly/lab.toml --log-level debug"
    )]
    Daemon(DaemonArgs),
    /// Internal: the single-threaded helper that creates containers.
    #[command(hide = true)]
    Forker(ForkerArgs),
    /// Show the daemon (no NAME) or an instance.
    #[command(after_help = "Examples:\n  mayfly info\n  mayfly info web --json")]
    Info(InfoArgs),
    /// Manage templates.
    #[command(
        subcommand,
        after_help = "\
Examples:
  mayfly template list
  mayfly template import alpine ./rootfs.tar.zst
  mayfly template info busybox --json
  mayfly template rm alpine"
    )]
    Template(TemplateCommand),
    /// Create an instance from a template and start it.
    #[command(after_help = "\
Examples:
  mayfly launch busybox                          transient (default): clean at every start
  mayfly launch busybox --name db --persistent   keeps its changes across restarts
  mayfly launch busybox@1 --name pinned          pinned to template version 1
  mayfly launch busybox --name job --ephemeral -- sh -c 'sleep 60'
  mayfly launch busybox --init -- httpd -f       mayfly's init as PID 1, httpd its child
  mayfly launch debian --app nginx --app redis   stacked application templates
  mayfly launch nginx --user www-data            the init as another user than the image's
  mayfly launch busybox --name web -p 8080:80 --init -- httpd -f   127.0.0.1:8080 → its port 80
  mayfly launch busybox --name app --network backend --network db  eth0 on backend, eth1 on db
  mayfly launch busybox --name calc --network none                 lo only
  mayfly launch busybox --name api --flavor small --memory 2G      a flavor, one limit over it

Without --network an instance joins the network `default` (created at first use).")]
    Launch(LaunchArgs),
    /// Run a command in a new instance, attached; its exit code becomes mayfly's.
    #[command(after_help = "\
Examples:
  mayfly run --rm busybox -- /bin/true
  mayfly run --rm -t busybox -- sh
  mayfly run --rm --init busybox -- sh -c 'sleep 1 & exec sleep 60'
  echo hi | mayfly run --rm busybox -- cat
  mayfly run --rm IMAGE -- --port 8080          replaces the image's Cmd, after its Entrypoint
  mayfly run --rm -u 0 --entrypoint sh IMAGE     as root, another entrypoint (Cmd dropped)

Signals and exit codes:
  SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to the command. If it has not ended
  5 seconds after the first signal, or at a second one, mayfly has the instance stopped at
  once (forced), waits up to 10 seconds for that, and exits with 128 + the signal's number
  (130 for SIGINT, 143 for SIGTERM). A command that runs as PID 1 (without --init) does not
  get a signal it has no handler for: the kernel drops it; --init forwards every signal.
  Whenever the client goes away (killed, or disconnected), the daemon hangs the instance
  up: SIGHUP to its init, then a forced stop 3 seconds later (with --rm the instance is then
  deleted). The command's output also goes to the instance's log (`mayfly logs NAME`).
  Otherwise mayfly exits with the command's code, or 125 when mayfly failed, 126 when the
  command cannot be executed, 127 when it is not found, 3 when the daemon cannot be reached
  or was lost (the message names the instance to look at).")]
    Run(RunArgs),
    /// List instances.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  mayfly list\n  mayfly list --json"
    )]
    List(JsonFlag),
    /// Start stopped instances (one already running is left alone: "already running", exit 0).
    #[command(after_help = "Examples:\n  mayfly start web\n  mayfly start web db")]
    Start(NamesArgs),
    /// Stop running instances (the stop signal, then SIGKILL after --timeout); one already
    /// stopped is left alone ("already stopped", exit 0).
    #[command(after_help = "\
The stop signal is the template's (`mayfly template info`: an image's StopSignal, or
`template build/patch --stop-signal`), or --signal's. Give an init its own halt request:
systemd SIGRTMIN+3, busybox init SIGUSR2 (SIGUSR1 halts, SIGTERM reboots), sysvinit SIGINT
(Debian's inittab runs `shutdown` on it; SIGPWR needs a `powerwait` entry that shuts down).
An init that halts through reboot(2) shows `halted` as its last exit in `mayfly info`; one
that mayfly had to kill, `killed`.

`poweroff` or `halt` inside an instance stops it; `reboot` inside starts it again (a
transient instance with a clean writable layer: that is how it goes back to its template
from inside; an ephemeral one is deleted, as at any end).

Examples:
  mayfly stop web
  mayfly stop --timeout 30 db
  mayfly stop --signal SIGRTMIN+3 sysd
  mayfly stop --force web")]
    Stop(StopArgs),
    /// Stop and start instances.
    #[command(after_help = "Examples:\n  mayfly restart web")]
    Restart(StopArgs),
    /// Roll instances back to the clean template now (running ones are restarted).
    #[command(after_help = "Examples:\n  mayfly reset web")]
    Reset(StopArgs),
    /// Delete instances.
    #[command(
        visible_alias = "remove",
        after_help = "Examples:\n  mayfly rm web\n  mayfly rm --force web   # stop it first"
    )]
    Rm(RmArgs),
    /// Run a command inside a running instance.
    #[command(after_help = "\
Examples:
  mayfly exec web -- cat /etc/os-release
  mayfly exec -t web -- sh
  mayfly exec --env A=1 --workdir /tmp web -- sh -c 'echo $A'
  mayfly exec -u nobody web -- id                 # as another user than the init's
  mayfly exec web -- cat < big.tar | sha256sum    # streams both ways at once

Signals and exit codes:
  SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to the command (and its process group).
  If it has not ended 5 seconds after the first signal, or at a second one, mayfly has it
  killed (SIGKILL), waits up to 10 seconds for that, and exits with 128 + the signal's
  number (130 for SIGINT, 143 for SIGTERM). Whenever the client goes away (killed, or
  disconnected), the daemon hangs the command up, as a closed terminal would: SIGHUP, then
  SIGKILL 3 seconds later.
  Otherwise mayfly exits with the command's code, or 125 when mayfly failed, 126 when the
  command cannot be executed, 127 when it is not found, 3 when the daemon cannot be reached
  or was lost.")]
    Exec(ExecArgs),
    /// Manage snapshots of an instance's writable layer.
    #[command(
        subcommand,
        after_help = "\
Examples:
  mayfly snapshot create web before-upgrade
  mayfly snapshot list web
  mayfly snapshot restore web before-upgrade
  mayfly snapshot rm web before-upgrade"
    )]
    Snapshot(SnapshotCommand),
    /// Create an instance whose writable layer starts as another's (new name, hostname,
    /// machine-id, SSH host keys, random seed).
    #[command(after_help = "\
Examples:
  mayfly clone web web-2
  mayfly clone web web-old --snapshot before-upgrade --start
  mayfly clone db scratch --mode ephemeral --start")]
    Clone(CloneArgs),
    /// Turn an instance's writable layer (or a snapshot) into a template or a new version of one.
    #[command(after_help = "\
Examples:
  mayfly publish web --as web-golden
  mayfly publish web/before-upgrade --as web-golden --message 'known good'
  mayfly publish web --as busybox        # a new version of the template it came from
  mayfly publish web --as web-golden --limits   # its flavor and limits become the defaults")]
    Publish(PublishArgs),
    /// Show an instance's console output (its init's stdout and stderr, and what is written
    /// to its /dev/console).
    #[command(after_help = "Examples:\n  mayfly logs web\n  mayfly logs -f --tail 20 web")]
    Logs(LogsArgs),
    /// Attach the terminal to a running instance's console (its /dev/console), e.g. to log in
    /// on a getty. Detach with Ctrl-a q.
    #[command(after_help = "\
Examples:
  mayfly console web          # then Ctrl-a q to detach

The console is the instance's /dev/console, which an instance started by `launch` or
`start` has (one started attached, by `run`, has the client's terminal or pipes instead).
Inits such as systemd and busybox init, and the getty they start on it, write and read
there; the init's own stdout and stderr are pipes into the log, as before.

Keys: Ctrl-a q detaches, leaving the instance running; Ctrl-a a types a Ctrl-a. SIGINT,
SIGTERM and SIGHUP to mayfly detach too (with a terminal, Ctrl-c is typed on the console).
Only one client may be attached at a time: another is refused (409, busy) until it
detaches. What the console showed before attaching is in `mayfly logs NAME`; everything it
shows goes to the log, whether a client is attached or not (a client that reads too slowly
misses output, the log does not).

Exit codes: 0 when detached or when the instance stopped, 3 when the daemon cannot be
reached or was lost, 1 for other failures.")]
    Console(ConsoleArgs),
    /// Manage networks: virtual LANs (a host bridge each) that instances join.
    #[command(
        subcommand,
        after_help = "\
Examples:
  mayfly network create backend
  mayfly launch busybox --name web --network backend -p 8080:80
  mayfly network list
  mayfly network info backend
  mayfly network rm backend"
    )]
    Network(NetworkCommand),
    /// Manage channels: a directory for unix sockets shared by a server and a client
    /// instance, no network needed.
    #[command(
        subcommand,
        after_help = "\
Examples:
  mayfly channel create dbsock --server db --client app
  mayfly channel list
  mayfly channel rm dbsock"
    )]
    Channel(ChannelCommand),
    /// Rename an instance (running or not): its name on its networks changes at once, its
    /// hostname at its next start.
    #[command(after_help = "Examples:\n  mayfly rename web web-old")]
    Rename(RenameArgs),
    /// Manage flavors: named presets of limits (built-in: tiny, small, medium, large).
    #[command(
        subcommand,
        after_help = "\
Examples:
  mayfly flavor list
  mayfly flavor create web-small --cpus 0.5 --memory 512M
  mayfly launch busybox --name web --flavor small --memory 2G
  mayfly flavor rm web-small"
    )]
    Flavor(FlavorCommand),
    /// Change an instance's limits; a running instance gets what the kernel can change at
    /// once, the rest at its next start (the answer says which).
    #[command(after_help = "\
Examples:
  mayfly set web memory=1G cpus=2
  mayfly set web pids=none                 lift the instance's own pids limit
  mayfly set web --flavor medium           the flavor's limits, the instance's own over them
  mayfly set web --flavor none disk=4G

The limits are part of the instance's configuration: they stay across restarts, daemon
restarts and `clone`. Exit code 1 when the daemon refuses a value (nothing is changed).")]
    Set(SetArgs),
    /// Show instances' usage: CPU, memory, pids, disk, IO and network (refreshed every
    /// second on a terminal; Ctrl-C leaves).
    #[command(after_help = "\
Examples:
  mayfly stats                   every running instance, refreshed like `docker stats`
  mayfly stats web db --no-stream
  mayfly stats --json")]
    Stats(StatsArgs),
    /// Freeze every process of running instances (no CPU used, memory kept).
    #[command(after_help = "\
Examples:
  mayfly pause web
  mayfly resume web

A paused instance shows `paused` in `list` and `info`; it stays paused across daemon
restarts. exec and console are refused until `resume`; stop, restart, reset, rm and
snapshot work (a snapshot leaves it paused).")]
    Pause(NamesArgs),
    /// Thaw paused instances.
    #[command(after_help = "Examples:\n  mayfly resume web")]
    Resume(NamesArgs),
    /// Manage volumes: data that outlives instances, attached to one at a time.
    #[command(
        subcommand,
        after_help = "\
Examples:
  mayfly volume create data --size 1G
  mayfly launch busybox --name db --volume data:/srv/data
  mayfly volume list
  mayfly volume rm data"
    )]
    Volume(VolumeCommand),
    /// Manage schedules: reset, restart or snapshot an instance at cron times.
    #[command(
        subcommand,
        after_help = "\
Examples:
  mayfly schedule add web reset '0 3 * * *'
  mayfly schedule add db snapshot '0 * * * *' --keep 24
  mayfly schedule list
  mayfly schedule rm 3"
    )]
    Schedule(ScheduleCommand),
    /// Show the event log: what happened to instances and templates, who did it, how it
    /// ended; --follow keeps printing new events.
    #[command(after_help = "\
Examples:
  mayfly events
  mayfly events --since 10m
  mayfly events --follow --json")]
    Events(EventsArgs),
    /// Manage API tokens for remote clients and the web page.
    #[command(
        subcommand,
        after_help = "\
Examples:
  mayfly token create ci
  mayfly token list
  mayfly token revoke ci"
    )]
    Token(TokenCommand),
    /// Manage remote daemons this CLI can talk to (`--remote NAME`, or `NAME:INSTANCE`).
    #[command(
        subcommand,
        after_help = "\
Examples:
  mayfly remote add lab https://lab.example:8443 --token SECRET
  mayfly --remote lab list
  mayfly start lab:web"
    )]
    Remote(RemoteCommand),
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  mayfly completion bash > /etc/bash_completion.d/mayfly
  mayfly completion zsh > ~/.zfunc/_mayfly")]
    Completion(CompletionArgs),
    /// Print the manual page (roff), or write one per command into a directory.
    #[command(after_help = "\
Examples:
  mayfly man | man -l -
  mayfly man --dir /usr/local/share/man/man1")]
    Man(ManArgs),
}

/// `mayfly console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Instance name.
    pub name: String,
}

/// `mayfly daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The configuration file (default: /etc/mayfly/config.toml): one key per option below
    /// (`log-level = "debug"`); the command line and the environment win over it. A missing
    /// default file is fine; a missing file named here is an error. See docs/config.md.
    #[arg(long, env = "MAYFLY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// State directory (the daemon is its only writer).
    #[arg(
        long,
        env = "MAYFLY_STATE_DIR",
        default_value = "/var/lib/mayfly",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,
    /// Host busybox binary for the built-in `busybox` template.
    #[arg(long, default_value = "/bin/busybox", value_name = "PATH")]
    pub busybox: PathBuf,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "MAYFLY_LOG", default_value = "info", value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: String,
    /// Where downloaded packages are kept between template builds (default: STATE_DIR/cache).
    #[arg(long, env = "MAYFLY_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Size in bytes at which an instance's console log is rotated (one old file is kept).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub log_max_size: u64,
    /// Cgroup hierarchies to drive: auto (what the host has; a hybrid host is driven through
    /// its v1 controllers), v1, or v2 (the unified hierarchy even on a hybrid host, where it
    /// holds no controllers: freezing and killing work, resource limits do not).
    #[arg(
        long,
        env = "MAYFLY_CGROUP_LAYOUT",
        default_value = "auto",
        value_name = "LAYOUT"
    )]
    pub cgroup_layout: mayfly_driver::cgroup::CgroupLayout,
    /// User namespaces for instances: auto (when the start-up probe finds that idmapped
    /// template layers work) or off (instances run as the host's root, confined by reduced
    /// capabilities, seccomp, nodev mounts and device rules; `mayfly info` says so). Applies
    /// to instances created from now on.
    #[arg(
        long,
        env = "MAYFLY_USER_NAMESPACES",
        default_value = "auto",
        value_name = "auto|off"
    )]
    pub user_namespaces: mayfly_engine::UserNamespaces,
    /// Memory reservations (`--memory-reserve`, flavors) of running instances may sum to the
    /// host's memory times this ratio; a launch or start past it is refused.
    #[arg(
        long,
        env = "MAYFLY_MEMORY_OVERCOMMIT",
        default_value_t = 1.0,
        value_name = "RATIO",
        value_parser = limits::parse_ratio
    )]
    pub memory_overcommit: f64,
    /// Import limits.
    #[command(flatten)]
    pub import: limits::ImportLimitArgs,
    /// Also serve the API and the web page over TCP, with TLS and token authentication, on
    /// ADDR:PORT (repeatable, or comma-separated as in MAYFLY_LISTEN); `none` for the unix
    /// socket only.
    #[arg(
        long,
        env = "MAYFLY_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR:PORT",
        help_heading = "Remote access"
    )]
    pub listen: Vec<String>,
}

/// `mayfly forker`.
#[derive(Debug, Args)]
pub struct ForkerArgs {
    /// State directory served.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Cgroup under which instance groups live.
    #[arg(long)]
    pub cgroup_parent: String,
    /// Cgroup hierarchies to drive.
    #[arg(long, default_value = "auto")]
    pub cgroup_layout: mayfly_driver::cgroup::CgroupLayout,
}

/// `--json`.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Instance (omit for the daemon).
    pub name: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Checks a log level (`error`, `warn`, `info`, `debug`, `trace`).
fn parse_log_level(text: &str) -> Result<String, String> {
    text.parse::<tracing::Level>()
        .map(|_| text.to_owned())
        .map_err(|_| format!("invalid log level `{text}`: give error, warn, info, debug or trace"))
}

/// Runs a client command; returns the process exit code.
pub fn run(socket: PathBuf, remote: Option<String>, command: Command) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let client = match Client::for_command_line(socket, remote.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    let code = runtime.block_on(commands::dispatch(&client, command));
    // A blocking read of a terminal stdin (`exec -t`, `run -t`) never returns on its own;
    // waiting for it would hang the CLI after the program ended.
    runtime.shutdown_background();
    code
}
