//! `mayfly`: one binary for the CLI (a thin client of the daemon's REST API), the daemon
//! (`mayfly daemon`) and the hidden single-threaded `mayfly forker` helper.
//!
//! The forker is dispatched before any runtime or thread exists: it forks, and forking is
//! only sound in a single-threaded process.
#![forbid(unsafe_code)]

mod cli;
mod daemon;

use clap::Parser;

use cli::{Cli, Command};

fn main() {
    // Whatever descriptors the caller left open (a terminal multiplexer's pipes, a CI
    // runner's sockets) must not reach the forker or, through it, anything else.
    let _ = mayfly_sys::process::cloexec_from(3);
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cli = Cli::parse_from(&argv);
    if let Command::Daemon(args) = &cli.command {
        // The configuration file fills what the command line and the environment leave at
        // their defaults (docs/config.md).
        match cli::config::apply(&argv, args.config.as_deref()) {
            Ok(full) => cli = Cli::parse_from(full),
            Err(e) => {
                eprintln!("error: {e}");
                #[allow(clippy::exit)]
                std::process::exit(2);
            }
        }
    }
    let socket = cli.socket;
    cli::output::set_quiet(cli.quiet);
    let code = match cli.command {
        Command::Forker(args) => {
            raise_open_files_limit();
            // No tokio, no tracing subscriber threads: this process forks.
            match mayfly_driver::forker::run(
                &args.state_dir,
                &args.cgroup_parent,
                args.cgroup_layout,
            ) {
                Ok(()) => 0,
                Err(mayfly_driver::forker::ForkerError::AlreadyRunning) => 0,
                Err(e) => {
                    eprintln!("mayfly forker: {}", mayfly_driver::error_chain(&e));
                    1
                }
            }
        }
        Command::Daemon(args) => daemon_main(args, socket),
        command => cli::run(socket, cli.remote, command),
    };
    #[allow(clippy::exit)]
    std::process::exit(code);
}

/// Raises the soft limit of open descriptors to the hard one: the forker holds a pidfd and a
/// log pipe per instance and the daemon a socket per client, so the usual soft limit of 1024
/// would cap a host at a few hundred instances.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
}

fn daemon_main(args: cli::DaemonArgs, socket: std::path::PathBuf) -> i32 {
    // Before any thread or child exists: nothing the daemon starts may inherit it.
    if let Err(e) = daemon::notify::take_socket_from_environment() {
        eprintln!("error: cannot take NOTIFY_SOCKET out of the environment: {e}");
        return 1;
    }
    raise_open_files_limit();
    let level = args
        .log_level
        .parse::<tracing::Level>()
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mayfly")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let options = daemon::DaemonOptions {
        state_dir: args.state_dir,
        socket,
        busybox: args.busybox,
        log_max_bytes: args.log_max_size,
        cache_dir: args.cache_dir,
        cgroup_layout: args.cgroup_layout,
        user_namespaces: args.user_namespaces,
        import_limits: args.import.limits(),
        memory_overcommit: args.memory_overcommit,
        listen: args.listen,
    };
    match runtime.block_on(daemon::run(options)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
