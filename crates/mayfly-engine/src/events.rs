//! The engine's event bus: every life-cycle event goes through here once, into the bounded
//! event log in the store (which survives restarts) and out to live subscribers (the API's
//! event stream, the web page, the metrics, a log that is followed).
//!
//! Who caused an event travels with the work: the API runs each action inside
//! [`with_actor`], and whatever the engine emits meanwhile names that actor. Work the engine
//! starts on its own (a schedule, a restart policy, start-up) runs under its own name.
//!
//! Emitting never waits: an event goes into a bounded queue that one writer thread drains in
//! batches (one transaction each) into the log, which numbers them; only then are they sent
//! to live subscribers, so a number a subscriber saw is in the log and is never handed out
//! again, even by a daemon killed right after. When the queue is full (the disk is stuck)
//! the event is dropped and counted ([`EventBus::dropped`], a metric); the action that
//! emitted it goes on. Live subscribers get a bounded broadcast: one that falls behind
//! learns how many events it missed.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};

use mayfly_api::{Event, EventSubject, Outcome};
pub use mayfly_store::EventFilter;
use mayfly_store::{EventRecord, NewEvent, Store};
use tokio::sync::broadcast;

use crate::{EngineError, lock};

tokio::task_local! {
    static ACTOR: String;
}

/// The actor of work the daemon does on its own, outside any request.
pub const DAEMON_ACTOR: &str = "daemon";
/// The actor of what a schedule does.
pub const SCHEDULE_ACTOR: &str = "schedule";
/// The actor of what a restart policy does.
pub const RESTART_POLICY_ACTOR: &str = "restart-policy";

/// Events waiting for the writer; past this, new ones are dropped (and counted).
pub const QUEUE: usize = 4096;
/// Events buffered for each live subscriber; one that falls further behind is told how many
/// it missed.
pub const LIVE: usize = 1024;
/// Events the writer puts in one transaction.
const BATCH: usize = 256;

/// Runs `fut` as `actor`: events it causes name that actor.
pub async fn with_actor<F: Future>(actor: String, fut: F) -> F::Output {
    ACTOR.scope(actor, fut).await
}

/// Who the current work is done for ([`DAEMON_ACTOR`] outside any [`with_actor`]).
pub fn current_actor() -> String {
    ACTOR
        .try_with(Clone::clone)
        .unwrap_or_else(|_| DAEMON_ACTOR.to_owned())
}

/// Spawns `fut` as a task of the current actor (a plain `tokio::spawn` would lose it: the
/// actor is task-local): what a request starts in the background stays the caller's.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(with_actor(current_actor(), fut))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Milliseconds since the epoch as the API shows event times (RFC 3339, UTC, milliseconds).
pub fn rfc3339_ms(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// An event as the API shows it.
pub fn to_api(rec: EventRecord) -> Event {
    Event {
        seq: rec.seq,
        time: rfc3339_ms(rec.event.time_ms),
        kind: rec.event.kind,
        subject: rec.event.subject,
        actor: rec.event.actor,
        outcome: rec.event.outcome,
        details: rec.event.details,
    }
}

/// The outcome of a failed engine action.
pub fn failed(e: &EngineError) -> Outcome {
    let api = e.to_api();
    Outcome::Failed {
        code: serde_json::to_value(api.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "internal".to_owned()),
        message: api.message,
    }
}

/// An event being made: `Ev::new("instance.start").on("instance", name)`.
#[derive(Debug, Clone)]
pub struct Ev {
    kind: String,
    subject: Option<EventSubject>,
    outcome: Outcome,
    details: serde_json::Value,
    actor: Option<String>,
}

impl Ev {
    /// An event of `kind` that went well, about nothing in particular.
    pub fn new(kind: impl Into<String>) -> Self {
        Ev {
            kind: kind.into(),
            subject: None,
            outcome: Outcome::Ok,
            details: serde_json::Value::Null,
            actor: None,
        }
    }

    /// About `name`, a `kind` (`instance`, `template`, …).
    pub fn on(mut self, kind: &str, name: &str) -> Self {
        self.subject = Some(EventSubject {
            kind: kind.to_owned(),
            name: name.to_owned(),
        });
        self
    }

    /// With what the kind carries.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// With this outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Failed with `e`, if it is an error.
    pub fn result<T>(self, r: &Result<T, EngineError>) -> Self {
        match r {
            Ok(_) => self,
            Err(e) => self.outcome(failed(e)),
        }
    }

    /// Caused by `actor` rather than the current one.
    pub fn by(mut self, actor: &str) -> Self {
        self.actor = Some(actor.to_owned());
        self
    }
}

struct BusInner {
    queue: SyncSender<NewEvent>,
    live: broadcast::Sender<Arc<Event>>,
    dropped: AtomicU64,
    /// Events put in the queue.
    queued: AtomicU64,
    /// Events the writer is done with (written, or failed and counted).
    settled: tokio::sync::watch::Sender<u64>,
}

/// The event bus (one per engine; cheap to clone).
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// The bus API actions write to (the audit log), set by the engine that runs.
static CURRENT: RwLock<Option<EventBus>> = RwLock::new(None);

impl EventBus {
    /// A bus writing into `store`, keeping its newest `keep` events.
    pub fn start(store: Arc<Mutex<Store>>, keep: usize) -> EventBus {
        let (queue, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (live, _) = broadcast::channel(LIVE);
        let inner = Arc::new(BusInner {
            queue,
            live,
            dropped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            settled: tokio::sync::watch::Sender::new(0),
        });
        let weak = Arc::downgrade(&inner);
        let spawned = std::thread::Builder::new()
            .name("mayfly-events".to_owned())
            .spawn(move || writer(rx, store, keep, weak));
        if let Err(e) = spawned {
            tracing::error!("cannot start the event log's writer: {e}: events are not kept");
        }
        EventBus { inner }
    }

    /// Makes this the bus of API actions ([`emit_current`]).
    pub fn make_current(&self) {
        *CURRENT
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(self.clone());
    }

    /// Emits `ev` (never waits: dropped and counted when the queue is full).
    pub fn emit(&self, ev: Ev) {
        let event = NewEvent {
            time_ms: now_ms(),
            kind: ev.kind,
            subject: ev.subject,
            actor: ev.actor.unwrap_or_else(current_actor),
            outcome: ev.outcome,
            details: ev.details,
        };
        match self.inner.queue.try_send(event) {
            Ok(()) => {
                self.inner.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(e) | TrySendError::Disconnected(e)) => {
                let n = self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(
                        "the event log is behind: dropped event `{}` ({} dropped so far)",
                        e.kind,
                        n + 1
                    );
                }
            }
        }
    }

    /// Live events from now on (each once it is in the log).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.live.subscribe()
    }

    /// Waits until what was emitted so far is in the log (or counted as dropped), up to
    /// `deadline`: the daemon's last events are not lost when it stops. Returns whether
    /// everything was settled in time.
    pub async fn flush(&self, deadline: std::time::Duration) -> bool {
        // Queued before counted: a count read now covers at least what was emitted.
        let target = self.inner.queued.load(Ordering::Relaxed);
        let mut settled = self.inner.settled.subscribe();
        tokio::time::timeout(deadline, settled.wait_for(|n| *n >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Events dropped because the log could not keep up (or could not be written).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

/// Emits `ev` on the bus of the running engine (the audit log of API actions).
pub fn emit_current(ev: Ev) {
    let bus = CURRENT
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(bus) = bus {
        bus.emit(ev);
    }
}

/// The writer thread: drains the queue in batches into the log, then hands what it wrote to
/// live subscribers. Ends when the bus is gone.
fn writer(
    rx: Receiver<NewEvent>,
    store: Arc<Mutex<Store>>,
    keep: usize,
    bus: std::sync::Weak<BusInner>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        // `MAYFLY_FAIL_AT=events:write` fails every write (tests that a broken log fails no
        // action and counts what it lost).
        let written = match crate::inject("events:write") {
            Ok(()) => lock(&store)
                .append_events(batch, keep)
                .map_err(EngineError::Store),
            Err(e) => Err(e),
        };
        let Some(bus) = bus.upgrade() else {
            return;
        };
        bus.settled.send_modify(|s| *s += n);
        match written {
            Ok(records) => {
                for rec in records {
                    // No subscriber is fine.
                    let _ = bus.live.send(Arc::new(to_api(rec)));
                }
            }
            Err(e) => {
                bus.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::error!("cannot write {n} events to the event log: {e}");
            }
        }
    }
}

impl crate::Engine {
    /// Emits `ev` on the engine's bus.
    pub(crate) fn emit(&self, ev: Ev) {
        self.events.emit(ev);
    }

    /// The event bus.
    pub fn event_bus(&self) -> &EventBus {
        &self.events
    }

    /// At most `limit` logged events matching `filter`, oldest first.
    pub async fn event_log(
        &self,
        filter: EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, EngineError> {
        let records = self.db(move |s| s.events(filter, limit)).await?;
        Ok(records.into_iter().map(to_api).collect())
    }
}

/// How many events the log keeps: [`mayfly_store::EVENTS_KEPT`], or `MAYFLY_EVENTS_KEPT`
/// (for tests that prove the bound without making ten thousand events).
pub(crate) fn kept() -> usize {
    std::env::var("MAYFLY_EVENTS_KEPT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(mayfly_store::EVENTS_KEPT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_logged_in_order_then_sent_live_with_their_actor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Mutex::new(Store::open(dir.path()).unwrap()));
        let bus = EventBus::start(store.clone(), 100);
        let mut live = bus.subscribe();
        with_actor("token:ci".to_owned(), async {
            bus.emit(Ev::new("instance.create").on("instance", "web"));
            bus.emit(
                Ev::new("instance.exit")
                    .on("instance", "web")
                    .details(serde_json::json!({"code": 3})),
            );
        })
        .await;
        bus.emit(Ev::new("schedule.run").by(SCHEDULE_ACTOR));
        let mut got = Vec::new();
        for _ in 0..3 {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(10), live.recv())
                .await
                .unwrap()
                .unwrap();
            got.push(ev);
        }
        let kinds: Vec<_> = got.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["instance.create", "instance.exit", "schedule.run"]);
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(got[0].actor, "token:ci");
        assert_eq!(got[2].actor, SCHEDULE_ACTOR);
        assert_eq!(got[1].details["code"], 3);
        // What subscribers saw is in the log, with the same numbers.
        let logged = lock(&store).events(EventFilter::default(), 10).unwrap();
        let logged: Vec<_> = logged.into_iter().map(to_api).collect();
        let seen: Vec<_> = got.iter().map(|e| (**e).clone()).collect();
        assert_eq!(logged, seen);
        assert_eq!(bus.dropped(), 0);
        // A flush waits for what was emitted to be in the log.
        for i in 0..200 {
            bus.emit(Ev::new(format!("test.{i}")));
        }
        assert!(bus.flush(std::time::Duration::from_secs(10)).await);
        let kept = lock(&store).events(EventFilter::default(), 1000).unwrap();
        assert_eq!(kept.len(), 100, "bounded to the newest 100");
        assert_eq!(kept.last().unwrap().event.kind, "test.199");
    }

    #[tokio::test]
    async fn a_stuck_log_never_stalls_the_emitter_and_drops_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Mutex::new(Store::open(dir.path()).unwrap()));
        let bus = EventBus::start(store.clone(), 100_000);
        // The writer cannot take the store: the queue fills, and emitting still returns.
        let held = lock(&store);
        let started = std::time::Instant::now();
        for i in 0..QUEUE + 500 {
            bus.emit(Ev::new(format!("test.{i}")));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // The writer holds one batch it took before blocking on the store.
        assert!(
            bus.dropped() >= (500 - BATCH) as u64,
            "dropped {}",
            bus.dropped()
        );
        assert!(bus.dropped() <= 500, "dropped {}", bus.dropped());
        drop(held);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let n = lock(&store).event_count().unwrap();
            if n + bus.dropped() == (QUEUE + 500) as u64 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "only {n} written");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_learns_how_many_it_missed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Mutex::new(Store::open(dir.path()).unwrap()));
        let bus = EventBus::start(store.clone(), 100_000);
        let mut slow = bus.subscribe();
        let mut fast = bus.subscribe();
        let total = LIVE + 10;
        for i in 0..total {
            bus.emit(Ev::new(format!("test.{i}")));
        }
        for _ in 0..total {
            tokio::time::timeout(std::time::Duration::from_secs(10), fast.recv())
                .await
                .unwrap()
                .unwrap();
        }
        match slow.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
    }
}
