//! The client side of `exec` and `run`: relays the terminal (or pipes) to the daemon's stream
//! and returns the program's exit code.
//!
//! With `-t` and a terminal on stdin, the terminal is put in raw mode for the session (and
//! restored however it ends) and size changes are forwarded. Without `-t`, SIGINT, SIGTERM,
//! SIGHUP and SIGQUIT are forwarded to the program, as `docker run` does.

use std::io::Write;

use mayfly_api::stream::{Frame, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::client::{Client, ClientError};

/// Puts stdin's terminal in raw mode until dropped.
struct RawMode {
    saved: Option<rustix::termios::Termios>,
}

impl RawMode {
    fn enable() -> RawMode {
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

/// Opens the stream at `path` with `body` and relays until the program ends; returns its code.
pub async fn interactive(
    client: &Client,
    path: &str,
    body: &impl serde::Serialize,
    tty: bool,
) -> Result<i32, ClientError> {
    let io = client.upgrade(path, body).await?;
    let _raw = (tty && stdin_is_terminal()).then(RawMode::enable);
    let (mut rd, mut wr) = tokio::io::split(io);

    let (tx, mut rx) = mpsc::channel::<Frame>(32);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame.to_bytes()).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let stdin_tx = tx.clone();
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = stdin_tx.send(Frame::StdinEof).await;
                    break;
                }
                Ok(n) => {
                    if stdin_tx
                        .send(Frame::Stdin(buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    let signal_tx = tx.clone();
    tokio::spawn(async move {
        if tty {
            let Ok(mut winch) = signal(SignalKind::window_change()) else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some([rows, cols]) = terminal_size()
                    && signal_tx.send(Frame::Resize { rows, cols }).await.is_err()
                {
                    break;
                }
            }
        } else {
            let kinds = [
                (SignalKind::interrupt(), libc::SIGINT),
                (SignalKind::terminate(), libc::SIGTERM),
                (SignalKind::hangup(), libc::SIGHUP),
                (SignalKind::quit(), libc::SIGQUIT),
            ];
            let (fwd_tx, mut fwd_rx) = mpsc::channel::<i32>(8);
            for (kind, number) in kinds {
                let Ok(mut s) = signal(kind) else { continue };
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
                if signal_tx.send(Frame::Signal(sig)).await.is_err() {
                    break;
                }
            }
        }
    });
    drop(tx);

    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let result = 'relay: loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => {
                break Err(ClientError::Protocol(
                    "the daemon closed the stream before the program ended".into(),
                ));
            }
            Ok(n) => n,
            Err(e) => {
                break Err(ClientError::Protocol(format!(
                    "stream from the daemon broke: {e}"
                )));
            }
        };
        dec.push(&buf[..n]);
        loop {
            match dec.next_frame() {
                Ok(Some(Frame::Stdout(b))) => {
                    let _ = stdout.write_all(&b);
                    let _ = stdout.flush();
                }
                Ok(Some(Frame::Stderr(b))) => {
                    let _ = stderr.write_all(&b);
                    let _ = stderr.flush();
                }
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
    writer.abort();
    result
}
