//! Interactive streams: `exec` and attached `run`.
//!
//! The request is an ordinary POST with a JSON body and `Upgrade: mayfly-stream`. The daemon
//! creates the process's stdio (three pipes, or a pseudo-terminal), asks the engine to start
//! the process, and only then answers `101 Switching Protocols` (so a failure to start is an
//! ordinary HTTP error). From then on it relays frames (see `mayfly_api::stream`): stdin from
//! the client, stdout/stderr to it, and the exit status last. A client that disconnects
//! takes its process with it.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use mayfly_api::stream::{Frame, FrameDecoder, UPGRADE_PROTOCOL};
use mayfly_api::{ApiError, CreateInstance, ErrorCode, ExecRequest, StopRequest};
use mayfly_engine::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

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

fn switching() -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        .body(Body::empty())
        .unwrap_or_default()
}

/// What the stream controls: an exec'd process, or an attached instance's init.
#[derive(Clone)]
enum Target {
    Exec { engine: Arc<Engine>, exec_id: u64 },
    Run { engine: Arc<Engine>, name: String },
}

impl Target {
    async fn signal(&self, sig: i32) {
        let _ = match self {
            Target::Exec { engine, exec_id } => engine.signal_exec(*exec_id, sig).await,
            Target::Run { engine, name } => engine.signal_instance(name, sig).await,
        };
    }

    async fn kill(&self) {
        match self {
            Target::Exec { engine, exec_id } => {
                let _ = engine.signal_exec(*exec_id, libc::SIGKILL).await;
            }
            Target::Run { engine, name } => {
                let req = StopRequest {
                    timeout: Some(0),
                    force: true,
                };
                let _ = engine.stop_instance(name, req).await;
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
    check_upgrade(&req)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body: ExecRequest = json_body(req.into_body()).await?;
    let (mut host, fds) = make_stdio(body.tty, body.term_size)?;
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
    tokio::spawn(relay(on_upgrade, host, target, exit));
    Ok(switching())
}

/// `POST /v1/run`.
pub(crate) async fn run(
    State(engine): State<Arc<Engine>>,
    mut req: Request,
) -> Result<Response, ApiFailure> {
    check_upgrade(&req)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body: CreateInstance = json_body(req.into_body()).await?;
    let (host, fds) = make_stdio(body.tty, body.term_size)?;
    let handle = engine.run_attached(body, fds).await?;
    let target = Target::Run {
        engine,
        name: handle.name.clone(),
    };
    let exit = async move { handle.exit.await.ok().flatten().map(|s| s.code) };
    tokio::spawn(relay(on_upgrade, host, target, exit));
    Ok(switching())
}

enum FromClient {
    Frame(Frame),
    Gone,
}

async fn relay(
    on_upgrade: hyper::upgrade::OnUpgrade,
    host: HostStdio,
    target: Target,
    exit: impl Future<Output = Option<i32>>,
) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("stream upgrade failed: {e}");
            target.kill().await;
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
    let HostStdio {
        stdin,
        mut stdout,
        stderr,
        pty,
    } = host;

    // Client → process, in its own tasks so that a process that does not read its stdin
    // cannot stall its output.
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Option<Vec<u8>>>(16);
    tokio::spawn(async move {
        let Some(mut stdin) = stdin else { return };
        while let Some(chunk) = stdin_rx.recv().await {
            match chunk {
                Some(bytes) => {
                    if stdin.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => break, // EOF: dropping the writer closes the pipe
            }
        }
    });
    let (client_tx, mut client_rx) = mpsc::channel::<FromClient>(16);
    tokio::spawn(async move {
        let mut dec = FrameDecoder::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dec.push(&buf[..n]),
            }
            loop {
                match dec.next_frame() {
                    Ok(Some(f)) => {
                        if client_tx.send(FromClient::Frame(f)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        let _ = client_tx.send(FromClient::Gone).await;
                        return;
                    }
                }
            }
        }
        let _ = client_tx.send(FromClient::Gone).await;
    });

    let mut stderr = stderr;
    let mut out_done = false;
    let mut err_done = stderr.is_none();
    let mut code: Option<Option<i32>> = None;
    let mut client_gone = false;
    let mut killed = false;
    let mut stdin_tx = Some(stdin_tx);
    let mut out_buf = vec![0u8; 32 * 1024];
    let mut err_buf = vec![0u8; 32 * 1024];
    tokio::pin!(exit);
    loop {
        if code.is_some() {
            // The process ended: what it wrote is in the pipes already; take it and finish.
            // (Its background children may keep the pipes open; they are not waited for.)
            if !out_done {
                drain(&mut stdout, Frame::Stdout, &mut wr, &mut out_buf).await;
            }
            if let (false, Some(e)) = (err_done, stderr.as_mut()) {
                drain(e, Frame::Stderr, &mut wr, &mut err_buf).await;
            }
            break;
        }
        tokio::select! {
            r = stdout.read(&mut out_buf), if !out_done => match r {
                Ok(0) | Err(_) => out_done = true,
                Ok(n) => {
                    if send(&mut wr, Frame::Stdout(out_buf[..n].to_vec())).await.is_err() {
                        client_gone = true;
                    }
                }
            },
            r = read_opt(&mut stderr, &mut err_buf), if !err_done => match r {
                Ok(0) | Err(_) => err_done = true,
                Ok(n) => {
                    if send(&mut wr, Frame::Stderr(err_buf[..n].to_vec())).await.is_err() {
                        client_gone = true;
                    }
                }
            },
            c = &mut exit => code = Some(c),
            msg = client_rx.recv(), if !client_gone => match msg {
                Some(FromClient::Frame(Frame::Stdin(bytes))) => {
                    if let Some(tx) = &stdin_tx {
                        let _ = tx.send(Some(bytes)).await;
                    }
                }
                Some(FromClient::Frame(Frame::StdinEof)) => {
                    if let Some(tx) = stdin_tx.take() {
                        let _ = tx.send(None).await;
                    }
                }
                Some(FromClient::Frame(Frame::Resize { rows, cols })) => {
                    if let Some(m) = &pty {
                        resize(m, rows, cols);
                    }
                }
                Some(FromClient::Frame(Frame::Signal(sig))) => target.signal(sig).await,
                Some(FromClient::Frame(_)) => {}
                Some(FromClient::Gone) | None => client_gone = true,
            },
        }
        if client_gone && !killed {
            // Nobody is listening any more: end the process instead of leaving it orphaned.
            killed = true;
            target.kill().await;
            out_done = true;
            err_done = true;
        }
    }
    let last = match code.flatten() {
        Some(c) => Frame::Exit(c),
        None => Frame::Error("the process ended but its exit status was lost".into()),
    };
    let _ = send(&mut wr, last).await;
    let _ = wr.shutdown().await;
}

async fn read_opt(r: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Sends what `r` holds right now, without waiting for more.
///
/// This reads the descriptor itself (it is non-blocking) instead of `try_read`: tokio's
/// `try_read` answers "would block" without reading while it has not yet seen the pipe
/// become readable, which dropped the whole output of a short process whose exit arrived
/// before that readiness did.
async fn drain<W: tokio::io::AsyncWrite + Unpin>(
    r: &mut pipe::Receiver,
    frame: fn(Vec<u8>) -> Frame,
    wr: &mut W,
    buf: &mut [u8],
) {
    use std::os::fd::AsFd;
    // What the process left is at most a pipe's capacity; a background child that keeps
    // writing must not keep the stream open forever.
    let mut budget: usize = 4 << 20;
    while budget > 0 {
        // EAGAIN: nothing more right now; EIO: a terminal whose other side is closed.
        match rustix::io::read(r.as_fd(), &mut *buf) {
            Err(rustix::io::Errno::INTR) => {}
            Ok(0) | Err(_) => return,
            Ok(n) => {
                budget = budget.saturating_sub(n);
                if send(wr, frame(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn send<W: tokio::io::AsyncWrite + Unpin>(wr: &mut W, frame: Frame) -> std::io::Result<()> {
    wr.write_all(&frame.to_bytes()).await?;
    wr.flush().await
}
