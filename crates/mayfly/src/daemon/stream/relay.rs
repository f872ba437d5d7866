//! The relay of one stream, once upgraded: a task per direction, stdin under credit-based flow
//! control, and the hang-up of a process whose client went away (see the `Stream flow
//! control` section of docs/architecture.md).

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use mayfly_api::stream::{Frame, FrameDecoder, STDIN_WINDOW};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::tee::LogTee;
use super::{HostStdio, Target, resize};

/// How long a process whose client went away has, after SIGHUP, before it is killed (an
/// attached run's instance: before the forced stop).
const HANGUP_GRACE: Duration = Duration::from_secs(3);

/// Bytes read from an output pipe or the socket at once (at most one frame's payload).
const CHUNK: usize = 64 * 1024;

/// Frames queued for the client's socket: with [`CHUNK`], at most half a MiB of output is
/// buffered in the daemon per stream.
const QUEUE: usize = 8;

/// Why the client side of a stream ended before the process did.
#[derive(Debug)]
enum ClientEnd {
    /// The connection closed or broke: hang the process up, like a closed terminal.
    Gone,
    /// The client broke the protocol (this message says how): end the process at once.
    Broke(String),
}

/// The stdin credit of one stream. The socket reader checks what the client sends against
/// `granted`; the stdin writer grants what it has written into the process; the socket writer
/// announces what was granted (coalesced) in `Credit` frames.
struct Credit {
    granted: AtomicU64,
    unannounced: AtomicU64,
    announce: Notify,
}

impl Credit {
    fn new() -> Credit {
        let c = Credit {
            granted: AtomicU64::new(u64::from(STDIN_WINDOW)),
            unannounced: AtomicU64::new(u64::from(STDIN_WINDOW)),
            announce: Notify::new(),
        };
        c.announce.notify_one();
        c
    }

    fn granted(&self) -> u64 {
        self.granted.load(Ordering::SeqCst)
    }

    /// Allows `n` more bytes; `granted` grows before the client can learn of it.
    fn grant(&self, n: u64) {
        self.granted.fetch_add(n, Ordering::SeqCst);
        self.unannounced.fetch_add(n, Ordering::SeqCst);
        self.announce.notify_one();
    }

    /// What to announce now (0: nothing).
    fn take_unannounced(&self) -> u32 {
        let n = self.unannounced.swap(0, Ordering::SeqCst);
        match u32::try_from(n) {
            Ok(n) => n,
            Err(_) => {
                self.unannounced
                    .fetch_add(n - u64::from(u32::MAX), Ordering::SeqCst);
                self.announce.notify_one();
                u32::MAX
            }
        }
    }
}

/// Relays one stream until the process has ended and its last output and status are sent.
///
/// Every direction has a task of its own, so that nothing in the output path waits for the
/// input path or the reverse: the socket reader (control frames and stdin into a bounded
/// inbox, never blocked, see `mayfly_api::stream`), the stdin writer (inbox into the process,
/// granting credit as it goes), one pump per output pipe, and the socket writer (the only
/// owner of the socket's write half, fed by a bounded queue). This task waits for the
/// process's end and for the client's, and hangs up the process when the client goes away.
/// With `log` (an attached run), the output is appended to the instance's console log too.
pub(super) async fn relay(
    on_upgrade: hyper::upgrade::OnUpgrade,
    host: HostStdio,
    target: Target,
    exit: impl Future<Output = Option<i32>>,
    log: Option<LogTee>,
) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("stream upgrade failed: {e}");
            target.kill().await;
            return;
        }
    };
    let (rd, wr) = tokio::io::split(TokioIo::new(upgraded));
    let HostStdio {
        stdin,
        stdout,
        stderr,
        pty,
    } = host;

    let credit = Arc::new(Credit::new());
    let (events_tx, mut events) = mpsc::channel::<ClientEnd>(2);
    let (frames_tx, frames_rx) = mpsc::channel::<Frame>(QUEUE);
    let writer = tokio::spawn(write_frames(
        wr,
        frames_rx,
        Arc::clone(&credit),
        events_tx.clone(),
    ));
    // The inbox holds at most the window: the reader checks the credit before it writes.
    let window = usize::try_from(STDIN_WINDOW).unwrap_or(usize::MAX);
    let (inbox_w, inbox_r) = tokio::io::duplex(window);
    let stdin_writer = tokio::spawn(write_stdin(stdin, inbox_r, Arc::clone(&credit)));
    let reader = tokio::spawn(read_client(
        rd,
        inbox_w,
        credit,
        pty,
        target.clone(),
        events_tx,
    ));
    let (exited_tx, exited_rx) = watch::channel(false);
    let mut pumps = vec![tokio::spawn(pump(
        stdout,
        Frame::Stdout,
        frames_tx.clone(),
        exited_rx.clone(),
        log.clone(),
    ))];
    if let Some(stderr) = stderr {
        pumps.push(tokio::spawn(pump(
            stderr,
            Frame::Stderr,
            frames_tx.clone(),
            exited_rx,
            log,
        )));
    }

    let mut failure: Option<String> = None;
    let mut client_ended = false;
    let mut kill_at: Option<Instant> = None;
    tokio::pin!(exit);
    let code = loop {
        tokio::select! {
            code = &mut exit => break code,
            end = events.recv(), if !client_ended => {
                client_ended = true;
                match end {
                    Some(ClientEnd::Broke(why)) => {
                        tracing::warn!("ending a streamed process: {why}");
                        failure = Some(why);
                        target.kill().await;
                    }
                    Some(ClientEnd::Gone) | None if target.detaches() => target.kill().await,
                    Some(ClientEnd::Gone) | None => {
                        // Like a closed terminal: SIGHUP, and SIGKILL if that was not enough.
                        tracing::debug!("the client of a stream went away; hanging up its process");
                        target.signal(libc::SIGHUP).await;
                        kill_at = Some(Instant::now() + HANGUP_GRACE);
                    }
                }
            }
            () = sleep_until_opt(kill_at) => {
                kill_at = None;
                target.kill().await;
            }
        }
    };
    if code.is_none() {
        // Its end was not learnt (the forker's connection was lost): it may still run, and
        // nobody would follow it any more.
        target.kill().await;
    }
    // What the process wrote is in the pipes already: the pumps send it and stop, without
    // waiting for background children that keep the pipes open.
    let _ = exited_tx.send(true);
    for p in pumps {
        let _ = p.await;
    }
    reader.abort();
    stdin_writer.abort();
    let last = match (failure, code) {
        (Some(why), _) => Frame::Error(why),
        (None, Some(c)) => Frame::Exit(c),
        // A console client that detached (with a Kill frame) and still listens.
        (None, None) if target.detaches() => Frame::Exit(0),
        (None, None) => Frame::Error("the process ended but its exit status was lost".into()),
    };
    let _ = frames_tx.send(last).await;
    drop(frames_tx);
    // Ends once the client has everything, or is gone.
    let _ = writer.await;
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The socket reader: decodes the client's frames and acts on them at once. It never waits
/// for the process: stdin goes into the inbox, which always has room for what the client was
/// allowed to send.
async fn read_client<R: AsyncRead + Unpin>(
    mut rd: R,
    inbox: DuplexStream,
    credit: Arc<Credit>,
    pty: Option<OwnedFd>,
    target: Target,
    events: mpsc::Sender<ClientEnd>,
) {
    let mut inbox = Some(inbox);
    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; CHUNK];
    let mut received: u64 = 0;
    let end = 'read: loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break ClientEnd::Gone,
            Ok(n) => dec.push(&buf[..n]),
        }
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'read ClientEnd::Broke(format!("bad stream from the client: {e}")),
            };
            match frame {
                Frame::Stdin(bytes) => {
                    received = received.saturating_add(bytes.len() as u64);
                    let granted = credit.granted();
                    if received > granted {
                        break 'read ClientEnd::Broke(format!(
                            "the client sent {} bytes of standard input beyond its window \
                             (a client may send only what Credit frames granted)",
                            received - granted
                        ));
                    }
                    // An error: the process closed its stdin; what comes is dropped.
                    if let Some(w) = inbox.as_mut()
                        && w.write_all(&bytes).await.is_err()
                    {
                        inbox = None;
                    }
                }
                Frame::StdinEof => {
                    if let Some(mut w) = inbox.take() {
                        let _ = w.shutdown().await;
                    }
                }
                Frame::Resize { rows, cols } => {
                    if let Some(m) = &pty {
                        resize(m, rows, cols);
                    }
                }
                Frame::Signal(sig) => target.signal(sig).await,
                Frame::Kill => {
                    // The client gives up on the process: end it now (a forced stop may wait
                    // for another action on the instance; the reader goes on meanwhile).
                    tracing::debug!("the client of a stream asked to end its process");
                    let target = target.clone();
                    tokio::spawn(async move { target.kill().await });
                }
                // Frames only the daemon sends.
                Frame::Stdout(_)
                | Frame::Stderr(_)
                | Frame::Exit(_)
                | Frame::Error(_)
                | Frame::Credit(_) => {}
            }
        }
    };
    let _ = events.send(end).await;
}

/// The stdin writer: moves the inbox into the process and grants what it wrote. It ends (and
/// so closes the process's stdin) at the client's EOF, when the client goes away, or when the
/// process closes its stdin (then no more credit comes, and the client's stdin simply waits).
async fn write_stdin(stdin: Option<pipe::Sender>, mut inbox: DuplexStream, credit: Arc<Credit>) {
    let Some(mut stdin) = stdin else { return };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match inbox.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stdin.write_all(&buf[..n]).await.is_err() {
            return;
        }
        credit.grant(n as u64);
    }
}

/// One output pipe to the socket writer's queue (and the console log, with `log`). When the
/// process has ended, it sends what the pipe holds right then and stops (see [`drain`]).
async fn pump(
    mut r: pipe::Receiver,
    frame: fn(Vec<u8>) -> Frame,
    frames: mpsc::Sender<Frame>,
    mut exited: watch::Receiver<bool>,
    log: Option<LogTee>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if *exited.borrow_and_update() {
            drain(&mut r, frame, &frames, &mut buf, log.as_ref()).await;
            return;
        }
        let n = tokio::select! {
            read = r.read(&mut buf) => match read {
                // EIO: a terminal whose other side is closed.
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = exited.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        if let Some(log) = &log {
            log.write(&buf[..n]).await;
        }
        // An error: the client is gone; dropping the pipe gives the process EPIPE.
        if frames.send(frame(buf[..n].to_vec())).await.is_err() {
            return;
        }
    }
}

/// The socket writer: the only owner of the socket's write half. Credit goes first, so that
/// the client's stdin never waits behind queued output longer than one frame.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut frames: mpsc::Receiver<Frame>,
    credit: Arc<Credit>,
    events: mpsc::Sender<ClientEnd>,
) {
    let mut bytes = Vec::with_capacity(CHUNK + 16);
    loop {
        bytes.clear();
        tokio::select! {
            biased;
            () = credit.announce.notified() => match credit.take_unannounced() {
                0 => continue,
                n => Frame::Credit(n).encode(&mut bytes),
            },
            frame = frames.recv() => match frame {
                Some(f) => f.encode(&mut bytes),
                None => break,
            },
        }
        if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
            let _ = events.try_send(ClientEnd::Gone);
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// Sends what `r` holds right now, without waiting for more.
///
/// This reads the descriptor itself (it is non-blocking) instead of `try_read`: tokio's
/// `try_read` answers "would block" without reading while it has not yet seen the pipe
/// become readable, which dropped the whole output of a short process whose exit arrived
/// before that readiness did.
async fn drain(
    r: &mut pipe::Receiver,
    frame: fn(Vec<u8>) -> Frame,
    frames: &mpsc::Sender<Frame>,
    buf: &mut [u8],
    log: Option<&LogTee>,
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
                if let Some(log) = log {
                    log.write(&buf[..n]).await;
                }
                if frames.send(frame(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}
