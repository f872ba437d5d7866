//! `mayfly console NAME`: attaches the terminal to an instance's console, as `incus console`
//! does. Ctrl-a q detaches (Ctrl-a a sends a Ctrl-a), leaving the instance running; so do
//! SIGINT, SIGTERM and SIGHUP to the client. Only what the console shows from then on is
//! seen (`mayfly logs` has what came before). Exit code 0 on detach or when the instance
//! ends, 3 when the daemon cannot be reached or was lost, 1 for other failures.

use std::sync::Arc;

use mayfly_api::stream::Frame;
use mayfly_api::{Action, ConsoleRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::cli::ConsoleArgs;
use crate::cli::client::{Client, ClientError};
use crate::cli::stream::{
    CHUNK, Credit, QUEUE, RawMode, receive, stdin_is_terminal, terminal_size,
};

/// The detach key: Ctrl-a, then `q`.
const ESCAPE: u8 = 0x01;
const DETACH: u8 = b'q';

/// Finds the detach sequence in what is typed: Ctrl-a q detaches, Ctrl-a a (or Ctrl-a
/// Ctrl-a) types one Ctrl-a, Ctrl-a followed by anything else types both.
#[derive(Debug, Default)]
struct DetachKey {
    escaped: bool,
}

impl DetachKey {
    /// What to send of `input`, and whether the user asked to detach (what follows the
    /// sequence is dropped).
    fn filter(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.escaped {
                self.escaped = false;
                match b {
                    DETACH => return (out, true),
                    b'a' | ESCAPE => out.push(ESCAPE),
                    other => out.extend_from_slice(&[ESCAPE, other]),
                }
            } else if b == ESCAPE {
                self.escaped = true;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// `mayfly console NAME`.
pub(super) async fn console(client: &Client, a: ConsoleArgs) -> i32 {
    let req = ConsoleRequest {
        term_size: terminal_size(),
    };
    let upgraded = match client.target(&a.name) {
        Ok((client, name)) => client.upgrade(&Action::Console.path(&[name]), &req).await,
        Err(e) => Err(e),
    };
    let (io, _) = match upgraded {
        Ok(up) => up,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    let terminal = stdin_is_terminal();
    eprintln!(
        "Attached to the console of {}: type Ctrl-a q to detach (the instance keeps running).",
        a.name
    );
    let raw = terminal.then(RawMode::enable);
    let (rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Frame>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame.to_bytes()).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let credit = Arc::new(Credit::default());
    let (detach_tx, detach_rx) = oneshot::channel::<()>();
    let input = tokio::spawn(send_input(tx.clone(), Arc::clone(&credit), detach_tx));
    let control = tokio::spawn(control(tx.clone()));
    let relay = receive(rd, credit);
    let ended = tokio::select! {
        r = relay => Some(r),
        _ = detach_rx => None,
        () = control_ended(control) => None,
    };
    input.abort();
    drop(tx);
    writer.abort();
    drop(raw);
    // The console's last line may be unfinished: start our words on a line of their own.
    let nl = if terminal { "\n" } else { "" };
    match ended {
        None => {
            eprintln!(
                "{nl}Detached from the console of {} (it keeps running).",
                a.name
            );
            0
        }
        Some(Ok(_)) => {
            eprintln!("{nl}The instance {} has stopped.", a.name);
            0
        }
        Some(Err(e)) => {
            eprintln!("{nl}error: {e}");
            match e {
                ClientError::Connect(..) | ClientError::Lost(_) => e.exit_code(),
                _ => 1,
            }
        }
    }
}

/// Waits for the control task (it ends on a signal that detaches).
async fn control_ended(task: tokio::task::JoinHandle<()>) {
    let _ = task.await;
}

/// Types stdin on the console, never more than the daemon granted, until the detach key.
/// At stdin's end it stops reading and the session goes on (output still shows).
async fn send_input(tx: mpsc::Sender<Frame>, credit: Arc<Credit>, detach: oneshot::Sender<()>) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; CHUNK];
    let mut key = DetachKey::default();
    loop {
        let allowed = credit.wait().await;
        let want = usize::try_from(allowed).map_or(CHUNK, |a| a.min(CHUNK));
        let n = match stdin.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (typed, detaching) = key.filter(&buf[..n]);
        if !typed.is_empty() {
            credit.spend(typed.len() as u64);
            if tx.send(Frame::Stdin(typed)).await.is_err() {
                return;
            }
        }
        if detaching {
            let _ = detach.send(());
            return;
        }
    }
}

/// Forwards window-size changes; returns (detaching) at SIGINT, SIGTERM or SIGHUP.
async fn control(tx: mpsc::Sender<Frame>) {
    let (Ok(mut winch), Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::window_change()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = winch.recv() => {
                if let Some([rows, cols]) = terminal_size() {
                    let _ = tx.send(Frame::Resize { rows, cols }).await;
                }
            }
            _ = int.recv() => return,
            _ = term.recv() => return,
            _ = hup.recv() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_a_q_detaches_and_ctrl_a_a_types_ctrl_a() {
        let mut k = DetachKey::default();
        assert_eq!(k.filter(b"ls\n"), (b"ls\n".to_vec(), false));
        assert_eq!(k.filter(b"x\x01a\x01b"), (b"x\x01\x01b".to_vec(), false));
        // Split across reads.
        assert_eq!(k.filter(b"echo\x01"), (b"echo".to_vec(), false));
        assert_eq!(k.filter(b"q rest"), (Vec::new(), true));
        let mut k = DetachKey::default();
        assert_eq!(k.filter(b"\x01\x01q"), (b"\x01q".to_vec(), false));
    }
}
