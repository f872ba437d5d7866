//! `mayfly daemon`: the engine behind a REST API on a unix socket, and on TCP listeners with
//! TLS and authentication (`--listen`, default `127.0.0.1:8443`; see docs/remote.md and
//! `serve.rs`, `tls.rs`, `auth.rs`).
//!
//! The socket is created with mode 0600 (root only) inside a 0755 directory; a second daemon
//! on the same state directory is refused by an exclusive lock. SIGTERM or SIGINT stop the
//! daemon but not the instances: the forker keeps them (and their logs) running, and the next
//! daemon re-attaches.

mod api;
mod api_events;
mod api_logs;
mod api_network;
mod api_resources;
mod api_schedules;
mod api_volumes;
mod audit;
mod auth;
mod events;
mod import;
mod metrics;
pub(crate) mod notify;
mod openapi;
mod serve;
mod stream;
mod tls;
mod web;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use mayfly_engine::{Engine, EngineConfig};

/// Settings of `mayfly daemon`.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// State directory.
    pub state_dir: PathBuf,
    /// API socket.
    pub socket: PathBuf,
    /// Host busybox for the built-in template.
    pub busybox: PathBuf,
    /// Console log rotation size.
    pub log_max_bytes: u64,
    /// Package cache of builds (default `<state>/cache`).
    pub cache_dir: Option<PathBuf>,
    /// Which cgroup hierarchies to drive.
    pub cgroup_layout: mayfly_driver::cgroup::CgroupLayout,
    /// Whether instances get user namespaces.
    pub user_namespaces: mayfly_engine::UserNamespaces,
    /// What one template import may cost the host.
    pub import_limits: mayfly_image::ImportLimits,
    /// Memory reservations may sum to the host's memory times this.
    pub memory_overcommit: f64,
    /// TCP listeners (`ADDR:PORT`, or `none`), served with TLS and authentication; empty:
    /// [`DEFAULT_LISTEN`], if it can be bound.
    pub listen: Vec<String>,
}

/// Where the daemon listens over TCP when not told (the web page's address).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// The TCP addresses to serve: `(addresses, whether failing to bind them is fatal)`.
fn listen_addresses(listen: &[String]) -> anyhow::Result<(Vec<String>, bool)> {
    if listen.is_empty() {
        return Ok((vec![DEFAULT_LISTEN.to_owned()], false));
    }
    if listen.iter().any(|l| l == "none") {
        if listen.len() > 1 {
            bail!(
                "--listen none cannot be combined with addresses (give either `none` or ADDR:PORT ...)"
            );
        }
        return Ok((Vec::new(), true));
    }
    for l in listen {
        if l.contains("://") {
            bail!(
                "--listen {l}: give ADDR:PORT (e.g. 0.0.0.0:8443); the TCP listener always serves TLS with authentication"
            );
        }
    }
    Ok((listen.to_vec(), true))
}

/// Binds the TCP listeners; one that cannot be bound is fatal unless `fatal` is false (the
/// default address), then it is skipped with a warning.
async fn bind_tcp(addrs: &[String], fatal: bool) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        match tokio::net::TcpListener::bind(a.as_str()).await {
            Ok(l) => out.push(l),
            Err(e) if fatal => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot listen on {a} (give another --listen ADDR:PORT, or --listen none)"
                    )
                });
            }
            Err(e) => tracing::warn!(
                "cannot listen on {a}: {e}; the web page and remote access are off (give --listen ADDR:PORT)"
            ),
        }
    }
    Ok(out)
}

fn lock_state_dir(state_dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(state_dir.join("run"))
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let path = state_dir.join("run/daemon.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        bail!(
            "another mayfly daemon uses state directory {} (stop it, or give another --state-dir)",
            state_dir.display()
        );
    }
    Ok(file)
}

fn bind_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // We hold the state directory's lock, but the socket path is the user's choice: do not
    // steal a socket another live daemon answers on.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "another daemon listens on {} (stop it, or give another --socket)",
            path.display()
        );
    }
    let _ = std::fs::remove_file(path);
    // Create the socket 0600 from the start: no window in which others could connect.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = tokio::net::UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = listener.with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    Ok(listener)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(options: DaemonOptions) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("the daemon must run as root (it creates namespaces, mounts and cgroups)");
    }
    let state_dir = if options.state_dir.is_absolute() {
        options.state_dir.clone()
    } else {
        std::env::current_dir()?.join(&options.state_dir)
    };
    let _lock = lock_state_dir(&state_dir)?;
    let (tcp_addrs, tcp_fatal) = listen_addresses(&options.listen)?;
    // Before the engine starts: a listener that cannot be had stops the daemon before it
    // has started anything (the forker, cgroups).
    let tcp = bind_tcp(&tcp_addrs, tcp_fatal).await?;
    let tls = if tcp.is_empty() {
        None
    } else {
        Some(tls::load_or_create(&state_dir)?)
    };
    let exe = std::env::current_exe().context("cannot find the mayfly executable")?;
    let engine = Engine::start(EngineConfig {
        state_dir: state_dir.clone(),
        exe,
        busybox: Some(options.busybox.clone()),
        log_max_bytes: options.log_max_bytes,
        cache_dir: options
            .cache_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("cache")),
        cgroup_layout: options.cgroup_layout,
        user_namespaces: options.user_namespaces,
        import_limits: options.import_limits,
        memory_overcommit: options.memory_overcommit,
    })
    .await
    .map_err(|e| anyhow::anyhow!(mayfly_driver::error_chain(&e)))
    .context("cannot start the engine")?;
    let listener = bind_socket(&options.socket)?;
    let info = engine
        .info()
        .await
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    tracing::info!(
        socket = %options.socket.display(),
        state_dir = %state_dir.display(),
        cgroups = %info.cgroup_mode,
        user_namespaces = info.user_namespaces,
        "mayfly daemon ready ({} templates, {} instances, {} running)",
        info.templates,
        info.instances,
        info.running
    );
    let auth = Arc::new(auth::Auth::new(
        Arc::clone(&engine),
        tls.as_ref().map(|t| t.fingerprint.clone()),
    ));
    let app = api::router(Arc::clone(&engine)).layer(axum::middleware::from_fn_with_state(
        Arc::clone(&auth),
        auth::authenticate,
    ));
    // Handled from before the first request is served: a SIGTERM must never find the default
    // action (which would leave the socket behind).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(serve::serve_unix(listener, app.clone(), stop.clone()));
    if let Some(tls) = &tls {
        for l in tcp {
            let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(
                address = %addr,
                fingerprint = %tls.fingerprint,
                "serving the API over TLS (bearer tokens or the web login)"
            );
            servers.spawn(serve::serve_tcp(
                l,
                Arc::clone(&tls.config),
                app.clone(),
                stop.clone(),
            ));
        }
        match engine.list_tokens().await {
            Ok(t) if t.is_empty() => tracing::warn!(
                "no API token exists yet: nobody can use the TCP listener (make one with `mayfly token create NAME`)"
            ),
            _ => {}
        }
    }
    notify::ready();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("stopping the daemon; instances keep running");
    notify::stopping();
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&options.socket);
    // The last requests' events (their audit records) go into the log before the end.
    if !engine
        .event_bus()
        .flush(std::time::Duration::from_secs(5))
        .await
    {
        tracing::warn!("the event log did not take the last events within 5 s");
    }
    Ok(())
}
