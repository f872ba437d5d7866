//! What every API action goes through, keyed by its [`mayfly_api::Action`]: the caller
//! becomes the actor of what the engine does for it, actions that change state are written
//! to the audit log with their outcome, and counts and latencies go to the metrics.
//!
//! Part E of issue 24 fills in the audit log and the metrics.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use mayfly_api::Action;

use super::auth::Caller;

/// Runs the request of `action` as its caller.
#[allow(dead_code)] // wired into the router by part A
pub(crate) async fn around(action: Action, req: Request, next: Next) -> Response {
    let _ = action;
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::local);
    mayfly_engine::events::with_actor(caller.actor, next.run(req)).await
}
