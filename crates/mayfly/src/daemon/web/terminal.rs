//! `GET /v1/instances/{name}/terminal?cols=N&rows=N[&command=...&user=...&workdir=...&env=...]`:
//! a process with a terminal in a running instance (`mayfly exec -t [--user --workdir --env]`),
//! over a WebSocket, for the web page's xterm.js: `sh -c COMMAND`, or a login shell (`sh -l`)
//! without one.
//!
//! The process is started (with the engine's exec and a pseudo-terminal, as `exec -t` does)
//! before the handshake is answered, so that a refusal (no such instance, not running, a bad
//! command) is an ordinary HTTP error. Then: binary frames carry the terminal's bytes both
//! ways; a text frame `{"resize":{"cols":C,"rows":R}}` from the page sizes the terminal; when
//! the process ends the daemon sends its output, then a text frame `{"exit":CODE}`, and closes.
//! A page that goes away hangs the process up (SIGHUP, then SIGKILL after a grace period), as
//! a closed terminal would.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use mayfly_api::{ExecRequest, TerminalQuery};
use mayfly_engine::Engine;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::daemon::api::{ApiFailure, bad_request, query};
use crate::daemon::stream::{HostStdio, make_stdio, resize, terminal_host};

/// Largest message the page may send (keystrokes and pastes).
const MAX_MESSAGE: usize = 256 * 1024;
/// Messages queued for the process's input: with [`MAX_MESSAGE`], at most 1 MiB.
const INPUT_QUEUE: usize = 4;
/// Bytes read from the terminal at once.
const CHUNK: usize = 64 * 1024;
/// How long a process whose page went away has, after SIGHUP, before SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for a killed process's end before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// The most a terminal may have of either dimension.
const MAX_SIZE: u16 = 1000;

/// A control message of the page (a text frame).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
enum Control {
    #[serde(rename = "resize")]
    Resize { cols: u16, rows: u16 },
}

fn size(value: Option<u16>, default: u16, what: &str) -> Result<u16, ApiFailure> {
    match value.unwrap_or(default) {
        n @ 1..=MAX_SIZE => Ok(n),
        n => Err(bad_request(
            format!("`{what}={n}` is out of range"),
            format!("give 1 to {MAX_SIZE} {what}"),
        )),
    }
}

/// `GET /v1/instances/{name}/terminal`: a shell over a WebSocket.
pub(crate) async fn terminal(
    State(engine): State<Arc<Engine>>,
    Path(name): Path<String>,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiFailure> {
    let q: TerminalQuery = query(&uri)?;
    let ws = ws.map_err(|e| {
        bad_request(
            format!("this endpoint is a WebSocket: {}", e.body_text()),
            "open it with a WebSocket client (the web page's terminal), or use `mayfly exec -t`",
        )
    })?;
    let cols = size(q.cols, 80, "cols")?;
    let rows = size(q.rows, 24, "rows")?;
    // A shell command line, run by the instance's `sh`; without one, a login shell.
    let command: Vec<String> = match q.command.as_deref().map(str::trim) {
        None | Some("") => vec!["sh".to_owned(), "-l".to_owned()],
        Some(c) => vec!["sh".to_owned(), "-c".to_owned(), c.to_owned()],
    };
    // `TERM` first, so that the page's own environment may change it.
    let mut env = vec!["TERM=xterm-256color".to_owned()];
    if let Some(extra) = q.env.as_deref().filter(|e| !e.trim().is_empty()) {
        let extra: Vec<String> = serde_json::from_str(extra).map_err(|e| {
            bad_request(
                format!("invalid `env`: {e}"),
                "give a JSON array of KEY=VALUE strings, e.g. env=[\"LANG=C.UTF-8\"]",
            )
        })?;
        env.extend(extra);
    }
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let (host, fds) = make_stdio(true, Some([rows, cols]))?;
    let req = ExecRequest {
        command,
        env,
        workdir: nonempty(q.workdir),
        user: nonempty(q.user),
        tty: true,
        term_size: Some([rows, cols]),
    };
    // Detached from this request: a page that goes away while the process starts must not
    // leave it running unwatched.
    let started = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let mut handle = engine.exec(&name, req, fds).await?;
            let host = match handle.terminal.take() {
                // The process got a terminal of the instance's own: relay that one instead.
                Some(master) => match terminal_host(master) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = engine.signal_exec(handle.exec_id, libc::SIGKILL).await;
                        return Err(e);
                    }
                },
                None => host,
            };
            Ok::<_, ApiFailure>((handle.exec_id, handle.exit, host))
        })
        .await
    };
    let (exec_id, exit, host) = match started {
        Ok(r) => r?,
        Err(e) => {
            return Err(ApiFailure(mayfly_api::ApiError::new(
                mayfly_api::ErrorCode::Internal,
                format!("start the process: {e}"),
            )));
        }
    };
    let process = Process { engine, exec_id };
    let on_fail = process.clone();
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_failed_upgrade(move |e| {
            tracing::warn!("terminal upgrade failed: {e}");
            tokio::spawn(async move { on_fail.signal(libc::SIGKILL).await });
        })
        .on_upgrade(move |socket| relay(socket, host, process, exit)))
}

/// The process a terminal runs.
#[derive(Clone)]
struct Process {
    engine: Arc<Engine>,
    exec_id: u64,
}

impl Process {
    async fn signal(&self, sig: i32) {
        let _ = self.engine.signal_exec(self.exec_id, sig).await;
    }
}

/// What the page sent.
enum FromPage {
    Input(Vec<u8>),
    Nothing,
    Gone,
}

/// Relays one terminal until its process has ended (and the page has its last output and
/// status) or the page has gone and the process is ended.
async fn relay(
    mut socket: WebSocket,
    host: HostStdio,
    process: Process,
    exit: oneshot::Receiver<mayfly_driver::ExitStatus>,
) {
    let HostStdio {
        stdin,
        mut stdout,
        pty,
        ..
    } = host;
    let (input_tx, input_rx) = mpsc::channel::<Vec<u8>>(INPUT_QUEUE);
    let writer = tokio::spawn(write_input(stdin, input_rx));
    let mut pending: Option<Vec<u8>> = None;
    let mut page_gone = false;
    let mut output_open = true;
    let mut kill_at: Option<Instant> = None;
    let mut give_up_at: Option<Instant> = None;
    let mut buf = vec![0u8; CHUNK];
    tokio::pin!(exit);
    let code = loop {
        tokio::select! {
            ended = &mut exit => break ended.ok().map(|s| s.code),
            permit = input_tx.reserve(), if pending.is_some() => {
                if let (Ok(permit), Some(bytes)) = (permit, pending.take()) {
                    permit.send(bytes);
                }
            }
            msg = socket.recv(), if pending.is_none() && !page_gone => {
                match from_page(msg, pty.as_ref(), &mut socket).await {
                    FromPage::Input(bytes) => pending = Some(bytes),
                    FromPage::Nothing => {}
                    FromPage::Gone => {
                        page_gone = true;
                        tracing::debug!("the page of a terminal went away; hanging up its process");
                        process.signal(libc::SIGHUP).await;
                        kill_at = Some(Instant::now() + HANGUP_GRACE);
                    }
                }
            }
            read = stdout.read(&mut buf), if output_open => match read {
                // EIO: the terminal's other side is closed; the exit comes next.
                Ok(0) | Err(_) => output_open = false,
                Ok(n) => {
                    if !page_gone && socket.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        page_gone = true;
                        process.signal(libc::SIGHUP).await;
                        kill_at = Some(Instant::now() + HANGUP_GRACE);
                    }
                }
            },
            () = sleep_until_opt(kill_at) => {
                kill_at = None;
                process.signal(libc::SIGKILL).await;
                give_up_at = Some(Instant::now() + KILL_WAIT);
            }
            () = sleep_until_opt(give_up_at) => {
                tracing::error!("a terminal's process did not end {KILL_WAIT:?} after SIGKILL; leaving it");
                break None;
            }
        }
    };
    writer.abort();
    if page_gone {
        return;
    }
    if code.is_none() {
        // Its end was not learnt: it may still run, and nobody would follow it any more.
        process.signal(libc::SIGKILL).await;
    }
    // What the process wrote last is in the terminal already: send it, without waiting for
    // background children that keep the terminal open.
    if output_open {
        drain(&stdout, &mut buf, &mut socket).await;
    }
    let last = match code {
        Some(c) => serde_json::json!({ "exit": c }),
        None => serde_json::json!({ "error": "the process ended but its exit status was lost" }),
    };
    let _ = socket.send(Message::Text(last.to_string().into())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
    // The page answers the close; a page that does not is dropped after a moment.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// Acts on one message of the page.
async fn from_page(
    msg: Option<Result<Message, axum::Error>>,
    pty: Option<&OwnedFd>,
    socket: &mut WebSocket,
) -> FromPage {
    match msg {
        Some(Ok(Message::Binary(bytes))) => FromPage::Input(bytes.to_vec()),
        Some(Ok(Message::Text(text))) => {
            match serde_json::from_str::<Control>(text.as_str()) {
                Ok(Control::Resize { cols, rows }) => {
                    if let Some(m) = pty {
                        resize(m, rows.clamp(1, MAX_SIZE), cols.clamp(1, MAX_SIZE));
                    }
                }
                Err(e) => {
                    let error = serde_json::json!({
                        "error": format!("bad control message: {e}"),
                        "hint": "send {\"resize\":{\"cols\":C,\"rows\":R}}; terminal input goes in binary frames",
                    });
                    let _ = socket.send(Message::Text(error.to_string().into())).await;
                }
            }
            FromPage::Nothing
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => FromPage::Nothing,
        Some(Ok(Message::Close(_)) | Err(_)) | None => FromPage::Gone,
    }
}

/// Moves the page's input into the process, in order; ends when the queue closes or the
/// process's input does.
async fn write_input(stdin: Option<pipe::Sender>, mut input: mpsc::Receiver<Vec<u8>>) {
    let Some(mut stdin) = stdin else { return };
    while let Some(bytes) = input.recv().await {
        if stdin.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends what the terminal holds right now, without waiting for more (a non-blocking read of
/// the descriptor itself: tokio's readiness may not have seen it yet).
async fn drain(r: &pipe::Receiver, buf: &mut [u8], socket: &mut WebSocket) {
    // At most a terminal's buffer is left; a background child that keeps writing must not
    // keep the page's terminal open forever.
    let mut budget: usize = 4 << 20;
    while budget > 0 {
        match rustix::io::read(r.as_fd(), &mut *buf) {
            Err(rustix::io::Errno::INTR) => {}
            Ok(0) | Err(_) => return,
            Ok(n) => {
                budget = budget.saturating_sub(n);
                if socket
                    .send(Message::Binary(buf[..n].to_vec().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}
