//! `POST /v1/instances/{name}/console`: a client attached to an instance's console, relayed
//! like an exec'd process's terminal (the same frames, flow control and bounds, see
//! `relay`). The forker holds the console; the daemon gets a stream socket to it (and the
//! master side, for window sizes). Detaching (the connection closing, or a Kill frame)
//! leaves the instance running; the stream ends with `Exit(0)` when the instance ends.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use mayfly_api::ConsoleRequest;
use mayfly_engine::Engine;
use tokio::net::unix::pipe;
use tokio::sync::Notify;

use super::relay::relay;
use super::{HostStdio, Target, check_upgrade, internal, nonblocking, resize, switching};
use crate::daemon::api::{ApiFailure, json_body};

/// How often an attached stream looks whether its instance still runs.
const POLL: Duration = Duration::from_millis(200);

pub(crate) async fn console(
    State(engine): State<Arc<Engine>>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response, ApiFailure> {
    let upgrade = check_upgrade(&req);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body: ConsoleRequest = json_body(req.into_body()).await?;
    upgrade?;
    let (id, attached) = engine.console(&name).await?;
    if let Some([rows, cols]) = body.term_size {
        resize(&attached.resize, rows, cols);
    }
    let fail = |e| internal("attach to the console", e);
    nonblocking(&attached.stream).map_err(fail)?;
    let writer = attached.stream.try_clone().map_err(fail)?;
    let watcher = attached.stream.try_clone().map_err(fail)?;
    let host = HostStdio {
        stdin: Some(pipe::Sender::from_owned_fd_unchecked(writer).map_err(fail)?),
        stdout: pipe::Receiver::from_owned_fd_unchecked(attached.stream).map_err(fail)?,
        stderr: None,
        pty: Some(attached.resize),
    };
    let detach = Arc::new(Notify::new());
    let target = Target::Console {
        detach: Arc::clone(&detach),
    };
    // The stream ends when the client detaches (`Target::kill`), or the instance ends: the
    // forker closes the console with the init (which a quick restart would hide from a look
    // at the instance's state alone).
    let exit = async move {
        loop {
            tokio::select! {
                () = detach.notified() => return None,
                () = tokio::time::sleep(POLL) => {
                    if !engine.runs_id(&id) || peer_closed(&watcher) {
                        return Some(0);
                    }
                }
            }
        }
    };
    tokio::spawn(relay(on_upgrade, host, target, exit, None));
    Ok(switching(None))
}

/// Whether the forker closed its end of the console socket (what it sent before is still
/// read: the relay drains the socket once the stream ends).
fn peer_closed(sock: &std::os::fd::OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(sock, PollFlags::RDHUP)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&now)) {
        Ok(_) => fds[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR),
        Err(_) => false,
    }
}
