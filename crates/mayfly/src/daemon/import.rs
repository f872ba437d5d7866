//! `POST /v1/templates`: a template imported from a path on this host (JSON body) or from the
//! body itself (an archive; `?name=` names the template).
//!
//! The HTTP status is the import's outcome. By default the answer waits for the import to end:
//! `201 Created` with the template, or the error's status (4xx for whatever is wrong with the
//! request, the source or the image, 5xx for the host's own failures) with the error body. A
//! client that asks for progress (`Accept: application/x-ndjson`) is answered as soon as the
//! import is under way (see [`mayfly_engine::OnAccepted`]): failures found before that still
//! get their status; after it, `200` and [`ImportEvent`] lines whose last one is the outcome.
//!
//! An upload is read while it is unpacked; when the import stops early (a refused name, entry
//! or limit), the answer goes out at once and at most [`AFTER_REFUSAL`] more of the upload
//! (for at most [`DRAIN_DEADLINE`]) is read and dropped meanwhile, so that a client still
//! sending reads the answer rather than a connection closed under it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use mayfly_api::{ApiError, ErrorCode, ImportEvent, ImportQuery, ImportTemplate, TemplateInfo};
use mayfly_engine::{ChannelReader, Engine, EngineError, ImportOptions, OnAccepted};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::api::{ApiFailure, bad_request, dropped_lines, json_body, query};
use super::events::EventSink;

/// What is read of an upload after its import was refused, at most, before the connection
/// is let go.
const AFTER_REFUSAL: usize = 256 << 20;

/// How long the rest of a refused upload is read, at most.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Progress of an import, as events on a channel, at most ten a second.
struct ChannelProgress {
    events: EventSink<ImportEvent>,
    state: std::sync::Mutex<(u64, u64, Instant)>,
}

impl mayfly_image::Progress for ChannelProgress {
    fn advance(&self, entries: u64, bytes: u64) {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.0 += entries;
        st.1 += bytes;
        if st.2.elapsed() >= Duration::from_millis(100) {
            st.2 = Instant::now();
            self.events.lossy(ImportEvent::Progress {
                entries: st.0,
                bytes: st.1,
            });
        }
    }
}

/// Whether the client asked for the events of the import rather than its outcome alone.
fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            item.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(mayfly_api::NDJSON))
        })
}

/// The outcome of a spawned import.
fn joined(
    result: Result<Result<TemplateInfo, EngineError>, tokio::task::JoinError>,
) -> Result<TemplateInfo, ApiFailure> {
    match result {
        Ok(result) => result.map_err(ApiFailure::from),
        Err(e) => Err(ApiFailure(ApiError::new(
            ErrorCode::Internal,
            format!("the import failed inside the daemon: {e}"),
        ))),
    }
}

/// `201 Created` with the template.
fn created(info: TemplateInfo) -> Response {
    let location = mayfly_api::Action::TemplateInfo.path(&[&info.name]);
    let mut response = (StatusCode::CREATED, Json(info)).into_response();
    if let Ok(value) = header::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `POST /v1/templates`: see the module documentation.
pub(super) async fn import_template(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiFailure> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let streaming = wants_events(&headers);
    let (events, response) = EventSink::new(dropped_lines);
    let progress: Arc<dyn mayfly_image::Progress + Send> = if streaming {
        Arc::new(ChannelProgress {
            events: events.clone(),
            state: std::sync::Mutex::new((0, 0, Instant::now())),
        })
    } else {
        Arc::new(mayfly_image::NoProgress)
    };
    let (accepted_tx, accepted_rx) = oneshot::channel::<()>();
    let on_accepted: Option<OnAccepted> = streaming.then(|| {
        Box::new(move || {
            let _ = accepted_tx.send(());
        }) as OnAccepted
    });
    let (job, upload): (JoinHandle<Result<TemplateInfo, EngineError>>, _) = if is_json {
        let body: ImportTemplate = json_body(req.into_body()).await?;
        let options = ImportOptions {
            tag: body.tag,
            command: body.command,
            message: body.message,
        };
        let job = mayfly_engine::events::spawn(async move {
            engine
                .import_template_path(&body.name, &body.path, options, progress, on_accepted)
                .await
        });
        (job, None)
    } else {
        let q: ImportQuery = query(req.uri())?;
        let command = match &q.command {
            Some(c) => Some(serde_json::from_str::<Vec<String>>(c).map_err(|e| {
                bad_request(
                    format!("invalid `command` query: {e}"),
                    "give a JSON array of strings",
                )
            })?),
            None => None,
        };
        let (chunks, reader) = ChannelReader::new(16);
        // While a streamed answer is open, the upload keeps it open until it is read.
        let keep_open = streaming.then(|| events.clone());
        let upload = tokio::spawn(feed_upload(req.into_body(), chunks, keep_open));
        let options = ImportOptions {
            tag: q.tag,
            command,
            message: q.message,
        };
        let job = mayfly_engine::events::spawn(async move {
            engine
                .import_template_archive(&q.name, reader, options, progress, on_accepted)
                .await
        });
        (job, Some(upload))
    };
    // The upload, if any, is read on by its own task (see `feed_upload`) whatever the answer.
    drop(upload);
    if !streaming {
        drop(events);
        return joined(job.await).map(created);
    }
    let mut job = job;
    let under_way = tokio::select! {
        result = &mut job => Err(result),
        accepted = accepted_rx => match accepted {
            Ok(()) => Ok(()),
            // The import ended without getting under way.
            Err(_) => Err((&mut job).await),
        },
    };
    match under_way {
        Ok(()) => {
            tokio::spawn(async move {
                let outcome = match joined(job.await) {
                    Ok(info) => ImportEvent::Done(Box::new(info)),
                    Err(failure) => ImportEvent::Error(failure.0),
                };
                events.finish(Some(outcome)).await;
            });
            Ok(response)
        }
        Err(result) => {
            match joined(result) {
                // Not expected (success comes after acceptance), but a stream was asked for.
                Ok(info) => {
                    events.finish(Some(ImportEvent::Done(Box::new(info)))).await;
                    Ok(response)
                }
                Err(failure) => Err(failure),
            }
        }
    }
}

/// Feeds the upload to the blocking unpacker chunk by chunk; back-pressure comes from the
/// bounded channel (16 chunks of at most a few hundred KiB, as hyper reads them; the unpacker
/// counts the bytes against --import-max-upload). Once the unpacker stops reading, at most
/// [`AFTER_REFUSAL`] more is read and dropped, for at most [`DRAIN_DEADLINE`]: while the body
/// is read, the connection stays open for the answer to reach a client that is still
/// sending. `keep_open` (a streamed answer) is held until then.
async fn feed_upload(
    mut body: axum::body::Body,
    chunks: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    keep_open: Option<EventSink<ImportEvent>>,
) {
    let mut sink = Some(chunks);
    let mut after_refusal = AFTER_REFUSAL;
    let mut refused_at: Option<tokio::time::Instant> = None;
    loop {
        let frame = match refused_at {
            None => body.frame().await,
            Some(at) => match tokio::time::timeout_at(at + DRAIN_DEADLINE, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => break,
            },
        };
        let Some(frame) = frame else { break };
        let item = match frame {
            Ok(f) => match f.into_data() {
                Ok(data) => Ok(data.to_vec()),
                Err(_) => continue,
            },
            Err(e) => Err(std::io::Error::other(format!("upload interrupted: {e}"))),
        };
        let stop = item.is_err();
        if let Some(c) = &sink {
            if c.send(item).await.is_err() {
                sink = None;
                refused_at = Some(tokio::time::Instant::now());
            }
        } else {
            let n = item.as_ref().map_or(0, Vec::len);
            after_refusal = after_refusal.saturating_sub(n);
            if after_refusal == 0 {
                break;
            }
        }
        if stop {
            break;
        }
    }
    drop(keep_open);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_asked_for_by_the_accept_header() {
        let with = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, accept.parse().unwrap());
            wants_events(&headers)
        };
        assert!(!wants_events(&HeaderMap::new()));
        assert!(with("application/x-ndjson"));
        assert!(with("application/json, application/x-ndjson;q=0.9"));
        assert!(with("Application/X-NDJSON"));
        assert!(!with("application/json"));
        assert!(!with("*/*"));
    }
}
