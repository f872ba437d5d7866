//! `GET /v1/events`: the event log, then (`follow=true`) live events, as NDJSON
//! [`mayfly_api::Event`] lines.
//!
//! The live subscription is taken before the log is read, and live events already sent from
//! the log are skipped by their number: nothing falls between the two. The log is read a
//! page at a time as the client takes it. A follower that falls more than the bus's buffer
//! behind gets one `events.lagged` line (not a log entry: `seq` 0) saying how many it missed,
//! and then the missed events themselves, from the log (those the log still holds). Nothing
//! polls: a follower sleeps until the bus has an event.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use mayfly_api::{Event, EventsQuery, Outcome};
use mayfly_engine::events::{DAEMON_ACTOR, EventFilter, now_ms, rfc3339_ms};
use tokio::sync::broadcast;

use super::api::{ApiFailure, AppState, bad_request, query};

/// Events read from the log at a time.
const PAGE: usize = 500;

/// The kind of the line that tells a follower it fell behind.
pub(crate) const LAGGED: &str = "events.lagged";

/// `since=`: an RFC 3339 time, or a duration back from now (`10m`, `2h`).
fn parse_since(s: &str) -> Result<i64, ApiFailure> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        return Ok(ms);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        let back = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms().saturating_sub(back));
    }
    Err(bad_request(
        format!("invalid `since` value `{s}`: neither an RFC 3339 time nor a duration"),
        "use e.g. `since=2026-12-07T05:00:00Z` or `since=10m` (ten minutes back)",
    ))
}

enum Phase {
    /// Reading the log after `last`.
    Log,
    /// Following live events.
    Live,
    Done,
}

struct Reader {
    engine: AppState,
    since_ms: Option<i64>,
    last: u64,
    live: Option<broadcast::Receiver<Arc<Event>>>,
    phase: Phase,
}

fn line(ev: &Event, out: &mut Vec<u8>) {
    if serde_json::to_writer(&mut *out, ev).is_ok() {
        out.push(b'\n');
    }
}

fn lagged(missed: u64, after: u64) -> Event {
    Event {
        seq: 0,
        time: rfc3339_ms(now_ms()),
        kind: LAGGED.to_owned(),
        subject: None,
        actor: DAEMON_ACTOR.to_owned(),
        outcome: Outcome::Failed {
            code: "lagged".to_owned(),
            message: format!(
                "this stream fell behind: {missed} live events were not sent; those the log still holds follow"
            ),
        },
        details: serde_json::json!({ "missed": missed, "after": after }),
    }
}

impl Reader {
    /// The next chunk of lines, or `None` at the end.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::Log => {
                    let filter = EventFilter {
                        after: Some(self.last),
                        since_ms: self.since_ms,
                    };
                    let page = match self.engine.event_log(filter, PAGE).await {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!("cannot read the event log: {e}");
                            self.phase = Phase::Done;
                            return None;
                        }
                    };
                    if page.len() < PAGE {
                        self.phase = if self.live.is_some() {
                            Phase::Live
                        } else {
                            Phase::Done
                        };
                    }
                    if page.is_empty() {
                        continue;
                    }
                    let mut out = Vec::new();
                    for ev in &page {
                        line(ev, &mut out);
                    }
                    self.last = page.last().map_or(self.last, |e| e.seq);
                    return Some(Bytes::from(out));
                }
                Phase::Live => {
                    let rx = self.live.as_mut()?;
                    match rx.recv().await {
                        Ok(ev) => {
                            if ev.seq <= self.last {
                                continue;
                            }
                            self.last = ev.seq;
                            let mut out = Vec::new();
                            line(&ev, &mut out);
                            // What else is there already goes in the same chunk.
                            while out.len() < 64 * 1024 {
                                match rx.try_recv() {
                                    Ok(ev) if ev.seq > self.last => {
                                        self.last = ev.seq;
                                        line(&ev, &mut out);
                                    }
                                    Ok(_) => {}
                                    Err(_) => break,
                                }
                            }
                            return Some(Bytes::from(out));
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            // The missed events are in the log: read them from there.
                            self.phase = Phase::Log;
                            let mut out = Vec::new();
                            line(&lagged(n, self.last), &mut out);
                            return Some(Bytes::from(out));
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            self.phase = Phase::Done;
                        }
                    }
                }
            }
        }
    }
}

/// `GET /v1/events?since=&after=&follow=`: NDJSON [`mayfly_api::Event`] lines.
pub(crate) async fn events(
    State(engine): State<AppState>,
    req: Request,
) -> Result<Response, ApiFailure> {
    let q: EventsQuery = query(req.uri())?;
    let since_ms = q.since.as_deref().map(parse_since).transpose()?;
    // Before the log is read: what happens meanwhile is in one or the other.
    let live = q.follow.then(|| engine.event_bus().subscribe());
    // The first page now: a store failure is an error status, not a cut stream.
    engine
        .event_log(
            EventFilter {
                after: q.after,
                since_ms,
            },
            1,
        )
        .await?;
    let reader = Reader {
        engine,
        since_ms,
        last: q.after.unwrap_or(0),
        live,
        phase: Phase::Log,
    };
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        r.next()
            .await
            .map(|chunk| (Ok::<Bytes, std::io::Error>(chunk), r))
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_duration_back() {
        assert_eq!(parse_since("1970-01-01T00:00:01Z").unwrap(), 1000);
        let ten_min_ago = parse_since("10m").unwrap();
        let expected = now_ms() - 600_000;
        assert!((ten_min_ago - expected).abs() < 5_000);
        let err = parse_since("yesterday").unwrap_err();
        assert!(err.0.message.contains("yesterday"), "{}", err.0.message);
    }
}
