//! `GET /v1/instances/{name}/logs`: an instance's console log, and what is appended to it.

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
    let state = (Some(head), Some(follower), engine, id);
    let stream = futures_util::stream::unfold(state, |(head, follower, engine, id)| async move {
        if let Some(head) = head {
            return Some((
                Ok::<Bytes, std::io::Error>(Bytes::from(head)),
                (None, follower, engine, id),
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
                return Some((Ok(Bytes::from(bytes)), (None, Some(follower), engine, id)));
            }
            if !alive {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}
