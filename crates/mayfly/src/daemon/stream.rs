//! Interactive streams: `exec` and attached `run`.
//!
//! The request is an ordinary POST with a JSON body and `Upgrade: mayfly-stream`. The daemon
//! creates the process's stdio (three pipes, or a pseudo-terminal), asks the engine to start
//! the process, and only then answers `101 Switching Protocols` (so a failure to start is an
//! ordinary HTTP error). From then on it relays frames (see `mayfly_api::stream`): stdin from
//! the client under credit-based flow control, stdout/stderr to it, and the exit status last.
//! A client that disconnects takes its process with it: SIGHUP, then SIGKILL after a grace
//! period, as a closed terminal would (an attached run's instance: SIGHUP, then a forced
//! stop).

mod console;
mod relay;
mod tee;

pub(crate) use console::console;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use mayfly_api::stream::UPGRADE_PROTOCOL;
use mayfly_api::{ApiError, CreateInstance, ErrorCode, ExecRequest, StopRequest};
use mayfly_engine::Engine;
use tokio::net::unix::pipe;

use self::relay::relay;
use self::tee::LogTee;
use super::api::{ApiFailure, bad_request, json_body};

/// The daemon's ends of a process's stdio.
struct HostStdio {
    stdin: Option<pipe::Sender>,
    stdout: pipe::Receiver,
    stderr: Option<pipe::Receiver>,
    /// The terminal's master side, for window-size changes.
    pty: Option<OwnedFd>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiFailure {
    ApiFailure(ApiError::new(ErrorCode::Internal, format!("{what}: {e}")))
}

fn nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    rustix::io::ioctl_fionbio(fd, true).map_err(Into::into)
}

/// Creates the stdio of a process: our ends, and the descriptors to pass to it.
fn make_stdio(tty: bool, size: Option<[u16; 2]>) -> Result<(HostStdio, Vec<OwnedFd>), ApiFailure> {
    use rustix::pty::OpenptFlags;
    if tty {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = rustix::pty::openpt(flags).map_err(|e| internal("open a terminal", e))?;
        rustix::pty::grantpt(&master).map_err(|e| internal("open a terminal", e))?;
        rustix::pty::unlockpt(&master).map_err(|e| internal("open a terminal", e))?;
        let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)
            .map_err(|e| internal("open a terminal", e))?;
        if let Some([rows, cols]) = size {
            resize(&master, rows, cols);
        }
        let host = terminal_host(master)?;
        return Ok((host, vec![slave]));
    }
    let pair = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| internal("create pipes", e))
    };
    let (in_r, in_w) = pair()?;
    let (out_r, out_w) = pair()?;
    let (err_r, err_w) = pair()?;
    for fd in [&in_w, &out_r, &err_r] {
        nonblocking(fd).map_err(|e| internal("create pipes", e))?;
    }
    let host = HostStdio {
        stdin: Some(
            pipe::Sender::from_owned_fd_unchecked(in_w).map_err(|e| internal("create pipes", e))?,
        ),
        stdout: pipe::Receiver::from_owned_fd_unchecked(out_r)
            .map_err(|e| internal("create pipes", e))?,
        stderr: Some(
            pipe::Receiver::from_owned_fd_unchecked(err_r)
                .map_err(|e| internal("create pipes", e))?,
        ),
        pty: None,
    };
    Ok((host, vec![in_r, out_w, err_w]))
}

/// Our ends of a terminal whose master side is `master`.
fn terminal_host(master: OwnedFd) -> Result<HostStdio, ApiFailure> {
    let fail = |e| internal("open a terminal", e);
    let reader = master.try_clone().map_err(fail)?;
    let writer = master.try_clone().map_err(fail)?;
    nonblocking(&master).map_err(fail)?;
    Ok(HostStdio {
        stdin: Some(pipe::Sender::from_owned_fd_unchecked(writer).map_err(fail)?),
        stdout: pipe::Receiver::from_owned_fd_unchecked(reader).map_err(fail)?,
        stderr: None,
        pty: Some(master),
    })
}

fn resize(master: &OwnedFd, rows: u16, cols: u16) {
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let _ = rustix::termios::tcsetwinsize(master, size);
}

fn check_upgrade(req: &Request) -> Result<(), ApiFailure> {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL));
    if wants {
        Ok(())
    } else {
        Err(bad_request(
            format!(
                "this endpoint streams: send `Connection: Upgrade` and `Upgrade: {UPGRADE_PROTOCOL}`"
            ),
            "use `mayfly exec` or `mayfly run`",
        ))
    }
}

/// `101 Switching Protocols`; an attached run's answer names the instance it created
/// (`Mayfly-Instance`, `Mayfly-Instance-Id`), so that a client that loses the stream can say
/// what to look at.
fn switching(instance: Option<(&str, &str)>) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, UPGRADE_PROTOCOL);
    if let Some((name, id)) = instance {
        response = response
            .header(mayfly_api::stream::INSTANCE_HEADER, name)
            .header(mayfly_api::stream::INSTANCE_ID_HEADER, id);
    }
    response.body(Body::empty()).unwrap_or_default()
}

/// What the stream controls: an exec'd process, or an attached instance's init (followed by
/// its id: another instance may take the name once this one is gone).
#[derive(Clone)]
enum Target {
    Exec {
        engine: Arc<Engine>,
        exec_id: u64,
    },
    Run {
        engine: Arc<Engine>,
        name: String,
        id: String,
    },
    /// A client attached to an instance's console: signals do not apply, and ending it only
    /// detaches the client (the instance runs on).
    Console {
        detach: Arc<tokio::sync::Notify>,
    },
}

impl Target {
    async fn signal(&self, sig: i32) {
        let _ = match self {
            Target::Exec { engine, exec_id } => engine.signal_exec(*exec_id, sig).await,
            Target::Run { engine, id, .. } => engine.signal_instance_id(id, sig).await,
            Target::Console { .. } => Ok(()),
        };
    }

    /// Whether a client that goes away just detaches (no hang-up to give anyone).
    fn detaches(&self) -> bool {
        matches!(self, Target::Console { .. })
    }

    async fn kill(&self) {
        match self {
            Target::Console { detach } => detach.notify_one(),
            Target::Exec { engine, exec_id } => {
                let _ = engine.signal_exec(*exec_id, libc::SIGKILL).await;
            }
            Target::Run { engine, name, id } => {
                // Another action may hold the instance (a snapshot's copy): the run must not
                // outlive its client all the same, so ask again until it ends.
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
                loop {
                    let req = StopRequest {
                        timeout: Some(0),
                        force: true,
                        signal: None,
                    };
                    match engine.stop_instance_id(id, req).await {
                        Err(mayfly_engine::EngineError::Busy { .. })
                            if tokio::time::Instant::now() < deadline =>
                        {
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                        Err(e) if !matches!(e, mayfly_engine::EngineError::Busy { .. }) => break,
                        Err(e) => {
                            tracing::error!(
                                "cannot stop instance `{name}`, whose attached client went away: {}",
                                mayfly_driver::error_chain(&e)
                            );
                            break;
                        }
                        Ok(_) => break,
                    }
                }
            }
        }
    }
}

/// `POST /v1/instances/{name}/exec`.
pub(crate) async fn exec(
    State(engine): State<Arc<Engine>>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response, ApiFailure> {
    // The body is read (bounded) before any refusal, so that the client reads the error
    // instead of a connection closed under it.
    let upgrade = check_upgrade(&req);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body: ExecRequest = json_body(req.into_body()).await?;
    upgrade?;
    let (mut host, fds) = make_stdio(body.tty, body.term_size)?;
    // Detached from this request: a client that goes away while the process starts must not
    // leave it running unwatched (the relay ends it when the upgrade fails).
    let started = mayfly_engine::events::spawn(async move {
        let mut handle = engine.exec(&name, body, fds).await?;
        let target = Target::Exec {
            engine,
            exec_id: handle.exec_id,
        };
        // The process got a terminal of the instance's own: relay that one instead.
        if let Some(master) = handle.terminal.take() {
            host = match terminal_host(master) {
                Ok(h) => h,
                Err(e) => {
                    target.kill().await;
                    return Err(e);
                }
            };
        }
        let exit = async move { handle.exit.await.ok().map(|s| s.code) };
        tokio::spawn(relay(on_upgrade, host, target, exit, None));
        Ok::<(), ApiFailure>(())
    })
    .await;
    joined(started)?;
    Ok(switching(None))
}

/// The outcome of a detached start.
fn joined<T>(r: Result<Result<T, ApiFailure>, tokio::task::JoinError>) -> Result<T, ApiFailure> {
    match r {
        Ok(result) => result,
        Err(e) => Err(internal("start the process", e)),
    }
}

/// `POST /v1/run`.
pub(crate) async fn run(
    State(engine): State<Arc<Engine>>,
    mut req: Request,
) -> Result<Response, ApiFailure> {
    let upgrade = check_upgrade(&req);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body: CreateInstance = json_body(req.into_body()).await?;
    upgrade?;
    let (host, fds) = make_stdio(body.tty, body.term_size)?;
    let started = mayfly_engine::events::spawn(async move {
        let handle = engine.run_attached(body, fds).await?;
        let instance = (handle.name.clone(), handle.id.clone());
        let log = engine.log_files(&handle.name).ok().map(LogTee::new);
        let target = Target::Run {
            engine,
            name: handle.name.clone(),
            id: handle.id.clone(),
        };
        let exit = async move { handle.exit.await.ok().flatten().map(|s| s.code) };
        tokio::spawn(relay(on_upgrade, host, target, exit, log));
        Ok::<(String, String), ApiFailure>(instance)
    })
    .await;
    let (name, id) = joined(started)?;
    Ok(switching(Some((&name, &id))))
}
