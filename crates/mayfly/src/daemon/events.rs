//! The newline-delimited JSON answers of long jobs (import, build, patch, rollout), through a
//! bounded channel: a client that stops reading costs the daemon at most [`CAPACITY`] events,
//! however much the job has to say.
//!
//! What happens when the channel is full depends on the event: progress is dropped (the next
//! one carries the totals); output lines are dropped and counted, and the count is reported as
//! soon as there is room again; the final event (the result) always waits for room, up to
//! [`FINAL_DEADLINE`], so a slow client still learns how its job ended.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc::{self, error::TrySendError};

/// Events buffered for a client that does not read.
pub(crate) const CAPACITY: usize = 256;

/// How long the final event waits for a client that does not read before it is given up (the
/// job's result is in the catalogue either way).
pub(crate) const FINAL_DEADLINE: Duration = Duration::from_secs(600);

/// The sending side of one answer. Clones share the channel and the count of dropped events.
pub(crate) struct EventSink<T> {
    tx: mpsc::Sender<T>,
    state: Arc<Mutex<SinkState<T>>>,
    /// The event that reports `n` dropped events.
    notice: fn(u64) -> T,
}

struct SinkState<T> {
    dropped: u64,
    /// A final event handed over by synchronous code, delivered by [`EventSink::finish`].
    last: Option<T>,
}

impl<T> Clone for EventSink<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            state: self.state.clone(),
            notice: self.notice,
        }
    }
}

impl<T: Serialize + Send + 'static> EventSink<T> {
    /// A sink and the answer that streams what it is sent, until every clone is dropped.
    pub(crate) fn new(notice: fn(u64) -> T) -> (Self, Response) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let sink = Self {
            tx,
            state: Arc::new(Mutex::new(SinkState {
                dropped: 0,
                last: None,
            })),
            notice,
        };
        (sink, ndjson(rx))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SinkState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends an event that a later one supersedes (progress): dropped if there is no room.
    pub(crate) fn lossy(&self, event: T) {
        let _ = self.tx.try_send(event);
    }

    /// Sends an event that should not be lost silently (an output line): if there is no room
    /// it is dropped and counted; once the client has caught up (half the buffer free), the
    /// count goes out, then events again. Waiting for half keeps a client that trickles from
    /// getting a count between every two lines.
    pub(crate) fn counted(&self, event: T) {
        let mut state = self.state();
        if state.dropped > 0 {
            if self.tx.capacity() < CAPACITY / 2 {
                state.dropped += 1;
                return;
            }
            match self.tx.try_send((self.notice)(state.dropped)) {
                Ok(()) => state.dropped = 0,
                Err(TrySendError::Full(_)) => {
                    state.dropped += 1;
                    return;
                }
                Err(TrySendError::Closed(_)) => return,
            }
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(event) {
            state.dropped += 1;
        }
    }

    /// Keeps the final event, given by synchronous code, for [`Self::finish`] to deliver.
    pub(crate) fn keep_last(&self, event: T) {
        self.state().last = Some(event);
    }

    /// Delivers the final event: the one kept by [`Self::keep_last`] if there is one, else
    /// `event`; first says how many were dropped. Waits for room, up to [`FINAL_DEADLINE`].
    pub(crate) async fn finish(self, event: Option<T>) {
        let (dropped, kept) = {
            let mut state = self.state();
            (std::mem::take(&mut state.dropped), state.last.take())
        };
        let send = async {
            if dropped > 0 && self.tx.send((self.notice)(dropped)).await.is_err() {
                return;
            }
            if let Some(event) = kept.or(event) {
                let _ = self.tx.send(event).await;
            }
        };
        if tokio::time::timeout(FINAL_DEADLINE, send).await.is_err() {
            tracing::warn!(
                "a client read nothing for {} s: its job's result was not delivered",
                FINAL_DEADLINE.as_secs()
            );
        }
    }
}

fn ndjson_line<T: Serialize>(v: &T) -> Bytes {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// A response that streams each event of `rx` as one JSON line, until every sender is gone.
fn ndjson<T: Serialize + Send + 'static>(rx: mpsc::Receiver<T>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|ev| (Ok::<Bytes, std::io::Error>(ndjson_line(&ev)), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(n: u64) -> String {
        format!("dropped {n}")
    }

    fn drain(rx: &mut mpsc::Receiver<String>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            out.push(ev);
        }
        out
    }

    fn sink() -> (EventSink<String>, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let sink = EventSink {
            tx,
            state: Arc::new(Mutex::new(SinkState {
                dropped: 0,
                last: None,
            })),
            notice,
        };
        (sink, rx)
    }

    #[tokio::test]
    async fn a_slow_reader_costs_a_bounded_buffer_and_learns_what_it_missed() {
        let (sink, mut rx) = sink();
        for i in 0..10_000 {
            sink.counted(format!("line {i}"));
            sink.lossy(format!("progress {i}"));
        }
        // A little room is not enough to start again: the client trickles.
        let mut first = Vec::new();
        for _ in 0..10 {
            first.push(rx.try_recv().unwrap());
        }
        sink.counted("early".to_owned());
        first.extend(drain(&mut rx));
        assert_eq!(first.len(), CAPACITY);
        assert_eq!(first[0], "line 0");
        assert!(!first.contains(&"early".to_owned()));
        // Caught up: the count comes first, then what fits.
        sink.counted("after".to_owned());
        let second = drain(&mut rx);
        assert_eq!(second, ["dropped 9873".to_owned(), "after".to_owned()]);
        // The final event waits for room and says what was dropped before it.
        for i in 0..CAPACITY + 5 {
            sink.counted(format!("more {i}"));
        }
        let finishing = tokio::spawn(sink.finish(Some("done".to_owned())));
        let mut rest = Vec::new();
        while let Some(ev) = rx.recv().await {
            rest.push(ev);
        }
        finishing.await.unwrap();
        assert_eq!(rest.len(), CAPACITY + 2, "{rest:?}");
        assert_eq!(rest[CAPACITY], "dropped 5");
        assert_eq!(rest[CAPACITY + 1], "done");
    }

    #[tokio::test]
    async fn a_kept_final_event_wins_and_a_gone_client_costs_nothing() {
        let (sink, mut rx) = sink();
        sink.keep_last("kept".to_owned());
        sink.clone().finish(Some("fallback".to_owned())).await;
        assert_eq!(drain(&mut rx), ["kept".to_owned()]);
        drop(rx);
        sink.counted("nobody".to_owned());
        sink.finish(Some("nobody".to_owned())).await;
    }
}
