//! `GET /v1/events`: the event log, then (`follow=true`) live events, as NDJSON
//! [`mayfly_api::Event`] lines.
//!
//! The live subscription is taken before the log is read, and live events already sent from
//! the log are skipped by their number: nothing falls between the two. The log is read a
//! page at a time as the client takes it. A follower that falls more than the bus's buffer
//! behind gets one `events.lagged` line (not a log entry: `seq` 0) saying how many it missed,
//! and then the missed events themselves, from the log (those the log still holds; the line
//! is left out when the log has nothing it has not sent). Nothing
//! polls: a follower sleeps until the bus has an event.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use mayfly_api::{Event, EventsQuery, Outcome};
use mayfly_engine::EngineError;
use mayfly_engine::events::{DAEMON_ACTOR, EventFilter, now_ms, rfc3339_ms};
use tokio::sync::broadcast;

use super::api::{ApiFailure, AppState, bad_request, query};

/// Events read from the log at a time.
const PAGE: usize = 500;

/// The kind of the line that tells a follower it fell behind.
pub(crate) const LAGGED: &str = "events.lagged";

/// A time's trailing UTC offset (`+01:00`, `-05:30`): the time without it, and the offset in
/// milliseconds (humantime reads only `Z` times).
fn split_offset(s: &str) -> Option<(&str, i64)> {
    let (head, tail) = s.split_at_checked(s.len().checked_sub(6)?)?;
    let b = tail.as_bytes();
    let sign = match b.first()? {
        // A `+` a query left unencoded arrives as a space.
        b'+' | b' ' => 1,
        b'-' => -1,
        _ => return None,
    };
    if !tail.is_ascii() || b[3] != b':' || !head.contains(['T', 't', ' ']) {
        return None;
    }
    let (h, m): (i64, i64) = (tail[1..3].parse().ok()?, tail[4..6].parse().ok()?);
    (h < 24 && m < 60).then_some((head, sign * (h * 3_600_000 + m * 60_000)))
}

/// `since=`: an RFC 3339 time (`Z` or an offset; without either, UTC), or a duration back
/// from now (`10m`, `2h`).
fn parse_since(s: &str) -> Result<i64, ApiFailure> {
    let (time, offset_ms) = split_offset(s).unwrap_or((s, 0));
    if let Ok(t) = humantime::parse_rfc3339_weak(time) {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        return Ok(ms.saturating_sub(offset_ms));
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

/// Where a reader gets logged events: the engine, or a test's list.
trait EventSource: Send + Sync {
    fn read(&self, filter: EventFilter, limit: usize) -> LogRead;
}

type LogRead = Pin<Box<dyn Future<Output = Result<Vec<Event>, EngineError>> + Send>>;

/// The engine's event log.
struct EngineLog(AppState);

impl EventSource for EngineLog {
    fn read(&self, filter: EventFilter, limit: usize) -> LogRead {
        let engine = self.0.clone();
        Box::pin(async move { engine.event_log(filter, limit).await })
    }
}

struct Reader {
    source: Arc<dyn EventSource>,
    since_ms: Option<i64>,
    last: u64,
    live: Option<broadcast::Receiver<Arc<Event>>>,
    phase: Phase,
    /// Live events the bus dropped for this reader, not told yet (told only if the log
    /// then has events this reader has not sent: the dropped ones may have been sent from
    /// the log already).
    lagged: Option<u64>,
    /// A live event taken while skipping the sent ones, to go out next.
    pending: Option<Arc<Event>>,
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
    /// Skips the live events already sent (from the log), so that they do not fill this
    /// reader's share of the bus. Returns how many the bus dropped for this reader meanwhile
    /// (they are in the log: the reader reads it again).
    fn drain_sent(&mut self) -> Option<u64> {
        let rx = self.live.as_mut()?;
        loop {
            match rx.try_recv() {
                // Not sent yet: it goes out next, in order.
                Ok(ev) if ev.seq > self.last => {
                    self.pending = Some(ev);
                    return None;
                }
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(n)) => return Some(n),
                Err(_) => return None,
            }
        }
    }

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
                    let page = match self.source.read(filter, PAGE).await {
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
                        self.lagged = None;
                        if let Some(n) = self.drain_sent() {
                            // Events went by while the log was read (more than the bus
                            // holds): they are in the log by now.
                            self.lagged = Some(n);
                            self.phase = Phase::Log;
                        }
                        continue;
                    }
                    let mut out = Vec::new();
                    if let Some(n) = self.lagged.take() {
                        line(&lagged(n, self.last), &mut out);
                    }
                    for ev in &page {
                        line(ev, &mut out);
                    }
                    self.last = page.last().map_or(self.last, |e| e.seq);
                    return Some(Bytes::from(out));
                }
                Phase::Live => {
                    let next = match self.pending.take() {
                        Some(ev) => Ok(ev),
                        None => self.live.as_mut()?.recv().await,
                    };
                    let rx = self.live.as_mut()?;
                    match next {
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
                                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                        self.phase = Phase::Log;
                                        self.lagged = Some(self.lagged.unwrap_or(0) + n);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            return Some(Bytes::from(out));
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            // The missed events are in the log: read them from there.
                            self.phase = Phase::Log;
                            self.lagged = Some(self.lagged.unwrap_or(0) + n);
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
        source: Arc::new(EngineLog(engine)),
        since_ms,
        last: q.after.unwrap_or(0),
        live,
        phase: Phase::Log,
        lagged: None,
        pending: None,
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

    /// A log in memory: `events`, filtered like the store does.
    struct ListLog(Vec<Event>);

    impl EventSource for ListLog {
        fn read(&self, filter: EventFilter, limit: usize) -> LogRead {
            let out: Vec<Event> = self
                .0
                .iter()
                .filter(|e| e.seq > filter.after.unwrap_or(0))
                .take(limit)
                .cloned()
                .collect();
            Box::pin(async move { Ok(out) })
        }
    }

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            time: rfc3339_ms(1000),
            kind: "test.event".to_owned(),
            subject: None,
            actor: DAEMON_ACTOR.to_owned(),
            outcome: Outcome::Ok,
            details: serde_json::Value::Null,
        }
    }

    async fn lines(r: &mut Reader, n: usize) -> Vec<Event> {
        let mut out = Vec::new();
        while out.len() < n {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), r.next())
                .await
                .expect("the reader stalled")
                .expect("the reader ended");
            for l in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.push(serde_json::from_slice(l).unwrap());
            }
        }
        out
    }

    #[tokio::test]
    async fn a_follower_gets_the_log_then_live_events_and_a_lagging_one_is_told_and_refilled() {
        // Two events logged before the request; the subscription is taken first, so the
        // live copies of the logged ones are skipped.
        let (tx, rx) = broadcast::channel(4);
        let mut log: Vec<Event> = (1..=2).map(ev).collect();
        for e in &log {
            tx.send(Arc::new(e.clone())).unwrap();
        }
        let mut reader = Reader {
            source: Arc::new(ListLog(log.clone())),
            since_ms: None,
            last: 0,
            live: Some(rx),
            phase: Phase::Log,
            lagged: None,
            pending: None,
        };
        let first = lines(&mut reader, 2).await;
        assert_eq!(first, log);
        tx.send(Arc::new(ev(3))).unwrap();
        let live = lines(&mut reader, 1).await;
        assert_eq!(live, [ev(3)], "live events, without the logged ones again");

        // Ten more while the reader does not read: it lags behind the four it can hold.
        log.push(ev(3));
        for seq in 4..=13 {
            log.push(ev(seq));
            tx.send(Arc::new(ev(seq))).unwrap();
        }
        reader.source = Arc::new(ListLog(log.clone()));
        let rest = lines(&mut reader, 11).await;
        assert_eq!(rest[0].kind, LAGGED, "{rest:?}");
        assert_eq!(rest[0].seq, 0);
        assert_eq!(rest[0].details["missed"], 6);
        assert_eq!(rest[0].details["after"], 3);
        let seqs: Vec<u64> = rest[1..].iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (4..=13).collect::<Vec<_>>(),
            "refilled from the log, once each"
        );
        // Then live again.
        tx.send(Arc::new(ev(14))).unwrap();
        assert_eq!(lines(&mut reader, 1).await, [ev(14)]);
        drop(tx);
        assert!(reader.next().await.is_none(), "ends with the bus");
    }

    /// A log that shows its first `first` events to the first read, then all of them (events
    /// written while that read ran).
    struct GrowingLog {
        events: Vec<Event>,
        first: usize,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl EventSource for GrowingLog {
        fn read(&self, filter: EventFilter, limit: usize) -> LogRead {
            let n = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let visible = if n == 0 {
                self.first
            } else {
                self.events.len()
            };
            let out: Vec<Event> = self.events[..visible]
                .iter()
                .filter(|e| e.seq > filter.after.unwrap_or(0))
                .take(limit)
                .cloned()
                .collect();
            Box::pin(async move { Ok(out) })
        }
    }

    #[tokio::test]
    async fn events_that_overflow_the_bus_while_the_log_is_read_come_from_the_log() {
        // The client has seen 1..=2; while its log read finds nothing newer, 3..=10 are
        // written and sent live, more than its share of the bus (4) holds.
        let (tx, rx) = broadcast::channel(4);
        let all: Vec<Event> = (1..=10).map(ev).collect();
        for e in &all[2..] {
            tx.send(Arc::new(e.clone())).unwrap();
        }
        let mut reader = Reader {
            source: Arc::new(GrowingLog {
                events: all.clone(),
                first: 2,
                reads: std::sync::atomic::AtomicUsize::new(0),
            }),
            since_ms: None,
            last: 2,
            live: Some(rx),
            phase: Phase::Log,
            lagged: None,
            pending: None,
        };
        let mut got = Vec::new();
        while got.last().is_none_or(|e: &Event| e.seq < 10) {
            got.extend(lines(&mut reader, 1).await);
        }
        let seqs: Vec<u64> = got.iter().map(|e| e.seq).filter(|s| *s > 0).collect();
        assert_eq!(seqs, (3..=10).collect::<Vec<_>>(), "{got:?}");
        drop(tx);
    }

    #[test]
    fn since_takes_a_time_or_a_duration_back() {
        assert_eq!(parse_since("1970-01-01T00:00:01Z").unwrap(), 1000);
        // An offset: the same instant as in UTC.
        assert_eq!(parse_since("1970-01-01T01:00:01+01:00").unwrap(), 1000);
        assert_eq!(
            parse_since("1970-01-01T00:00:01.500-00:30").unwrap(),
            1500 + 1_800_000
        );
        assert!(parse_since("1970-01-01T00:00:01+25:00").is_err());
        assert_eq!(parse_since("1970-01-01T01:00:01 01:00").unwrap(), 1000);
        let ten_min_ago = parse_since("10m").unwrap();
        let expected = now_ms() - 600_000;
        assert!((ten_min_ago - expected).abs() < 5_000);
        let err = parse_since("yesterday").unwrap_err();
        assert!(err.0.message.contains("yesterday"), "{}", err.0.message);
    }
}
