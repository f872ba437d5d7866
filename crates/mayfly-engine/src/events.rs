//! The engine's event bus: every life-cycle event goes through here once, into the bounded
//! event log in the store (which survives restarts) and out to live subscribers (the API's
//! event stream, the web page, the metrics).
//!
//! Who caused an event travels with the work: the API runs each action inside
//! [`with_actor`], and whatever the engine emits meanwhile names that actor. Work the engine
//! starts on its own (a schedule, a restart policy, start-up) runs under its own name.

use std::future::Future;

tokio::task_local! {
    static ACTOR: String;
}

/// The actor of work the daemon does on its own, outside any request.
pub const DAEMON_ACTOR: &str = "daemon";

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
