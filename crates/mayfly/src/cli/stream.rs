//! The client side of `exec` and `run`: relays the terminal (or pipes) to the daemon's stream
//! and returns the program's exit code.
//!
//! With `-t` and a terminal on stdin, the terminal is put in raw mode for the session (and
//! restored however it ends) and size changes are forwarded. SIGINT, SIGTERM, SIGHUP and
//! SIGQUIT are forwarded to the program, as `docker run` does; if the program has not ended
//! [`SIGNAL_GRACE`] after the first, or at a second, the client has the daemon end it
//! (`Frame::Kill`: SIGKILL, or a forced stop of a run's instance), waits up to
//! [`KILL_WAIT`] for it to be gone (a third signal does not wait), and exits with 128 + the
//! signal's number (see `mayfly exec --help`).
//!
//! A stream that breaks before the exit status came means the daemon was lost: the client
//! says so, and what to look at (the run's instance, by the name and id the daemon gave in
//! its answer), and exits with 3.
//!
//! Every direction is a task of its own, so that none waits for another: stdin is read only
//! as far as the daemon granted credit (`mayfly_api::stream`), the socket is always read, and
//! output is written by a thread of its own, so a slow reader of our stdout never blocks the
//! runtime (signals, credit, the exit status).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mayfly_api::stream::{Frame, FrameDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::client::{Client, ClientError};

/// Puts stdin's terminal in raw mode until dropped.
pub(crate) struct RawMode {
    saved: Option<rustix::termios::Termios>,
}

impl RawMode {
    pub(crate) fn enable() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

/// The size of the terminal on stdout (or stdin), `[rows, cols]`.
pub fn terminal_size() -> Option<[u16; 2]> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()))
        .ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some([ws.ws_row, ws.ws_col])
}

/// Whether stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    rustix::termios::isatty(std::io::stdin())
}

/// How long the client waits, after forwarding SIGINT, SIGTERM, SIGHUP or SIGQUIT, for the
/// program to end before it has it ended (documented in `mayfly exec --help` and `run --help`).
pub const SIGNAL_GRACE: Duration = Duration::from_secs(5);

/// How long the client waits for the daemon to end the program it gave up on.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// Bytes of stdin read at once (at most one frame).
pub(crate) const CHUNK: usize = 64 * 1024;

/// Frames queued for the daemon, and output frames queued for the output thread.
pub(crate) const QUEUE: usize = 16;

/// Stdin bytes the daemon allows us to send now.
#[derive(Default)]
pub(crate) struct Credit {
    available: AtomicU64,
    more: Notify,
}

impl Credit {
    fn add(&self, n: u32) {
        self.available.fetch_add(u64::from(n), Ordering::SeqCst);
        self.more.notify_one();
    }

    /// Waits until some credit is available; returns how much.
    pub(crate) async fn wait(&self) -> u64 {
        loop {
            let n = self.available.load(Ordering::SeqCst);
            if n > 0 {
                return n;
            }
            self.more.notified().await;
        }
    }

    pub(crate) fn spend(&self, n: u64) {
        self.available.fetch_sub(n, Ordering::SeqCst);
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => "a signal",
    }
}

/// How a session ended.
enum Ending {
    /// The program ended (its code) or the stream failed.
    Stream(Result<i32, ClientError>),
    /// We give up on the program after `signal` (this says why): the daemon ends it.
    GiveUp { signal: i32, why: String },
}

/// Opens the stream at `path` with `body` and relays until the program ends; returns its code.
/// `instance` is the instance an `exec` runs in (a run's comes from the daemon's answer): a
/// lost daemon is reported with what to look at there.
pub async fn interactive(
    client: &Client,
    path: &str,
    body: &impl serde::Serialize,
    tty: bool,
    instance: Option<&str>,
) -> Result<i32, ClientError> {
    let (io, created) = client.upgrade(path, body).await?;
    let result = relay_session(io, tty).await;
    match result {
        Err(ClientError::Lost(why)) => Err(ClientError::Lost(lost_daemon(
            &why,
            instance,
            created.as_ref(),
        ))),
        other => other,
    }
}

/// What a client that lost its daemon says: what broke, and where the result may be found.
fn lost_daemon(why: &str, exec_in: Option<&str>, run: Option<&(String, String)>) -> String {
    match (exec_in, run) {
        (_, Some((name, id))) => format!(
            "lost the mayfly daemon ({why}): the instance {name} (id {id}) may still be running\n  \
             hint: see `mayfly info {name}` and `mayfly logs {name}` once the daemon is back \
             (an ephemeral instance is gone once its command ended)"
        ),
        (Some(name), None) => format!(
            "lost the mayfly daemon ({why}): the command may still be running in instance {name}\n  \
             hint: see `mayfly info {name}` once the daemon is back, and `mayfly exec {name} -- ps` for its processes"
        ),
        (None, None) => {
            format!("lost the mayfly daemon ({why})\n  hint: check that it runs (`mayfly info`)")
        }
    }
}

/// Relays an upgraded stream until the program ends.
async fn relay_session(
    io: hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>,
    tty: bool,
) -> Result<i32, ClientError> {
    let raw = (tty && stdin_is_terminal()).then(RawMode::enable);
    let (rd, mut wr) = tokio::io::split(io);

    let (tx, mut rx) = mpsc::channel::<Frame>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame.to_bytes()).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let credit = Arc::new(Credit::default());
    let stdin = tokio::spawn(send_stdin(tx.clone(), Arc::clone(&credit)));
    let (signals_tx, mut signals) = mpsc::channel::<i32>(8);
    // The handlers are in place before anything of the program can reach the user: a signal
    // that came before them would end this client at once, without a word.
    let handlers = signal_handlers(tty);
    let control = tokio::spawn(forward_signals(tx.clone(), signals_tx, handlers));

    let relay = receive(rd, credit);
    tokio::pin!(relay);
    let mut first: Option<(i32, Instant)> = None;
    let ending = loop {
        tokio::select! {
            result = &mut relay => break Ending::Stream(result),
            Some(sig) = signals.recv() => match first {
                None => first = Some((sig, Instant::now() + SIGNAL_GRACE)),
                Some((earlier, _)) => break Ending::GiveUp {
                    signal: sig,
                    why: format!("{} after {}", signal_name(sig), signal_name(earlier)),
                },
            },
            () = sleep_until_opt(first.map(|(_, at)| at)) => {
                let sig = first.map_or(libc::SIGTERM, |(s, _)| s);
                break Ending::GiveUp {
                    signal: sig,
                    why: format!(
                        "the program has not ended {} s after {}",
                        SIGNAL_GRACE.as_secs(),
                        signal_name(sig)
                    ),
                };
            }
        }
    };
    stdin.abort();
    let result = match ending {
        Ending::Stream(result) => result,
        Ending::GiveUp { signal, why } => {
            // Have the daemon end it, and wait (bounded) until it is gone: a script that runs
            // the same thing again right after must not find it still there.
            let asked = tokio::time::timeout(KILL_WAIT, tx.send(Frame::Kill)).await;
            let ended = match asked {
                Ok(Ok(())) => {
                    tokio::select! {
                        r = tokio::time::timeout(KILL_WAIT, &mut relay) => match r {
                            Ok(Ok(_)) => "ended the program",
                            Ok(Err(_)) => "asked the daemon to end the program, and lost it",
                            Err(_) => "asked the daemon to end the program; it has not ended yet",
                        },
                        Some(_) = signals.recv() => "asked the daemon to end the program, and did not wait",
                    }
                }
                _ => {
                    "could not ask the daemon to end the program (it hangs it up when the client leaves)"
                }
            };
            eprintln!("error: {why}: {ended}");
            Ok(128 + signal)
        }
    };
    drop(tx);
    writer.abort();
    control.abort();
    drop(raw);
    result
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads stdin, never more than the daemon granted, and sends it; then stdin's EOF.
async fn send_stdin(tx: mpsc::Sender<Frame>, credit: Arc<Credit>) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let allowed = credit.wait().await;
        let want = usize::try_from(allowed).map_or(CHUNK, |a| a.min(CHUNK));
        match stdin.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(Frame::StdinEof).await;
                return;
            }
            Ok(n) => {
                credit.spend(n as u64);
                if tx.send(Frame::Stdin(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The signals a session forwards (and, with `-t`, terminal size changes), with their
/// numbers; installed at once.
fn signal_handlers(tty: bool) -> Vec<(tokio::signal::unix::Signal, i32)> {
    let mut kinds = vec![
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
        (SignalKind::quit(), libc::SIGQUIT),
    ];
    if tty {
        kinds.push((SignalKind::window_change(), libc::SIGWINCH));
    }
    kinds
        .into_iter()
        .filter_map(|(kind, number)| signal(kind).ok().map(|s| (s, number)))
        .collect()
}

/// Forwards terminal size changes (with `-t`) and signals to the daemon, and tells the
/// session about each signal (for its grace period).
async fn forward_signals(
    tx: mpsc::Sender<Frame>,
    seen: mpsc::Sender<i32>,
    handlers: Vec<(tokio::signal::unix::Signal, i32)>,
) {
    let (fwd_tx, mut fwd_rx) = mpsc::channel::<i32>(8);
    for (mut s, number) in handlers {
        let fwd_tx = fwd_tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if fwd_tx.send(number).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(fwd_tx);
    while let Some(sig) = fwd_rx.recv().await {
        let frame = if sig == libc::SIGWINCH {
            let Some([rows, cols]) = terminal_size() else {
                continue;
            };
            Frame::Resize { rows, cols }
        } else {
            let _ = seen.try_send(sig);
            Frame::Signal(sig)
        };
        if tx.send(frame).await.is_err() {
            break;
        }
    }
}

/// Reads the daemon's frames until the exit status: output to the output thread, credit to
/// the stdin sender. Returns once the output is written.
pub(crate) async fn receive<R: AsyncRead + Unpin>(
    mut rd: R,
    credit: Arc<Credit>,
) -> Result<i32, ClientError> {
    let (output, written) = spawn_output()?;
    let mut output = Some(output);
    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; CHUNK];
    let result = 'relay: loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => {
                break Err(ClientError::Lost(
                    "it closed the stream before the program ended".into(),
                ));
            }
            Ok(n) => n,
            Err(e) => break Err(ClientError::Lost(format!("the stream broke: {e}"))),
        };
        dec.push(&buf[..n]);
        loop {
            match dec.next_frame() {
                Ok(Some(f @ (Frame::Stdout(_) | Frame::Stderr(_)))) => {
                    // An error: the output thread is gone (it cannot write); drop the rest.
                    if let Some(o) = &output
                        && o.send(f).await.is_err()
                    {
                        output = None;
                    }
                }
                Ok(Some(Frame::Credit(n))) => credit.add(n),
                Ok(Some(Frame::Exit(code))) => break 'relay Ok(code),
                Ok(Some(Frame::Error(m))) => break 'relay Err(ClientError::Protocol(m)),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    break 'relay Err(ClientError::Protocol(format!(
                        "bad stream from the daemon: {e}"
                    )));
                }
            }
        }
    };
    // Everything received is written before the exit code is returned.
    drop(output);
    let _ = written.await;
    result
}

/// The output thread: writes stdout and stderr frames in order with blocking writes, off the
/// runtime. The receiver resolves when it has written everything it was sent.
fn spawn_output() -> Result<(mpsc::Sender<Frame>, oneshot::Receiver<()>), ClientError> {
    let (tx, mut rx) = mpsc::channel::<Frame>(QUEUE);
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("mayfly-output".into())
        .spawn(move || {
            // After a failed write (a closed pipe) that stream's output is dropped, and the
            // stream is still read to its end, as a local program's would be.
            let (mut out_ok, mut err_ok) = (true, true);
            while let Some(frame) = rx.blocking_recv() {
                match frame {
                    Frame::Stdout(b) if out_ok => {
                        let mut out = std::io::stdout();
                        out_ok = out.write_all(&b).and_then(|()| out.flush()).is_ok();
                    }
                    Frame::Stderr(b) if err_ok => {
                        let mut err = std::io::stderr();
                        err_ok = err.write_all(&b).and_then(|()| err.flush()).is_ok();
                    }
                    _ => {}
                }
            }
            let _ = done_tx.send(());
        })
        .map_err(|e| ClientError::Protocol(format!("cannot start the output thread: {e}")))?;
    Ok((tx, done_rx))
}
