//! `GET /v1/instances/{name}/logs`: an instance's console log, and what is appended to it.

use std::os::fd::OwnedFd;

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use mayfly_api::{ApiError, ErrorCode, LogsQuery};
use mayfly_engine::LogFollower;

use super::api::{ApiFailure, AppState, query};

/// `GET /v1/instances/{name}/logs`: the console log (`?tail=N`), then with `?follow=true` what
/// is appended, until the client goes or the instance is removed.
pub(crate) async fn logs(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiFailure> {
    let q: LogsQuery = query(req.uri())?;
    let files = engine.log_files(&name)?;
    let id = engine.instance_id(&name)?;
    let f = files.clone();
    let (head, offset) = tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, u64)> {
        let offset = f.current_len();
        Ok((f.read(q.tail)?, offset))
    })
    .await
    .map_err(|e| ApiFailure(ApiError::new(ErrorCode::Internal, e.to_string())))?
    .map_err(|e| {
        ApiFailure(ApiError::new(
            ErrorCode::Internal,
            format!("cannot read the log of `{name}`: {e}"),
        ))
    })?;
    if !q.follow {
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(head))
            .unwrap_or_default());
    }
    let follower = tokio::task::spawn_blocking(move || LogFollower::new(files, offset))
        .await
        .map_err(|e| ApiFailure(ApiError::new(ErrorCode::Internal, e.to_string())))?
        .map_err(|e| {
            ApiFailure(ApiError::new(
                ErrorCode::Internal,
                format!("cannot follow the log: {e}"),
            ))
        })?;
    // Until the instance is gone: whether it exists is asked before each read, so the read
    // after it was gone still gets its last output (the follower holds the file open).
    // Between reads it sleeps until the log's directory changes (inotify) or an instance is
    // removed (the event bus); the watch is set before the first read, so a write between
    // the two is not missed.
    let dir = engine
        .log_files(&name)
        .ok()
        .and_then(|f| f.current.parent().map(std::path::Path::to_path_buf));
    let wake = Wake {
        watch: dir.and_then(|d| match DirWatch::new(&d) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch the log directory `{}` ({e}): following the log of `{name}` by reading it every second",
                    d.display()
                );
                None
            }
        }),
        removals: engine.event_bus().subscribe(),
    };
    let state = (Some(head), Some(follower), engine, id, wake);
    let stream =
        futures_util::stream::unfold(state, |(head, follower, engine, id, mut wake)| async move {
            if let Some(head) = head {
                return Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from(head)),
                    (None, follower, engine, id, wake),
                ));
            }
            let mut follower = follower?;
            loop {
                let alive = engine.instance_id_exists(&id);
                let read = tokio::task::spawn_blocking(move || {
                    let bytes = follower.read_new();
                    (follower, bytes)
                })
                .await;
                let Ok((f, Ok(bytes))) = read else {
                    return None;
                };
                follower = f;
                if !bytes.is_empty() {
                    return Some((
                        Ok(Bytes::from(bytes)),
                        (None, Some(follower), engine, id, wake),
                    ));
                }
                if !alive {
                    return None;
                }
                wake.next().await;
            }
        });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

/// What wakes a follower: a change in the log's directory, or the removal of an instance.
struct Wake {
    /// `None` when inotify is not available: then a one-second timer.
    watch: Option<DirWatch>,
    removals: tokio::sync::broadcast::Receiver<std::sync::Arc<mayfly_api::Event>>,
}

impl Wake {
    /// Waits until something may have changed.
    async fn next(&mut self) {
        let removed = async {
            loop {
                match self.removals.recv().await {
                    Ok(ev) if ev.kind == "instance.remove" => return,
                    Ok(_) => {}
                    // Missed some: one of them may have been the removal.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    // No bus any more: only the directory wakes us.
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        match &self.watch {
            Some(w) => {
                tokio::select! {
                    r = w.changed() => {
                        if r.is_err() {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    () = removed => {}
                }
            }
            None => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = removed => {}
                }
            }
        }
    }
}

/// An inotify watch on a directory: writes to its files, files created or moved into it
/// (a rotation), the directory itself moved or deleted (its instance removed).
struct DirWatch {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl DirWatch {
    fn new(dir: &std::path::Path) -> std::io::Result<DirWatch> {
        use rustix::fs::inotify;
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        inotify::add_watch(
            &fd,
            dir,
            inotify::WatchFlags::MODIFY
                | inotify::WatchFlags::CREATE
                | inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::CLOSE_WRITE
                | inotify::WatchFlags::DELETE_SELF
                | inotify::WatchFlags::MOVE_SELF,
        )?;
        Ok(DirWatch {
            fd: mayfly_sys::asyncfd::register(fd)?,
        })
    }

    /// Waits for the next change, then takes every change queued (one wake for a burst).
    async fn changed(&self) -> std::io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let mut ready = self.fd.readable().await?;
            match rustix::io::read(self.fd.get_ref(), &mut buf) {
                Ok(_) => {
                    while rustix::io::read(self.fd.get_ref(), &mut buf).is_ok() {}
                    ready.clear_ready();
                    return Ok(());
                }
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_wakes_on_a_write_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, b"").unwrap();
        let watch = DirWatch::new(dir.path()).unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(300), watch.changed()).await;
        assert!(quiet.is_err(), "woke without a change");
        let writer = tokio::spawn({
            let log = log.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::fs::write(&log, b"hello\n").unwrap();
            }
        });
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("a write did not wake the watch")
            .unwrap();
        writer.await.unwrap();
    }
}
