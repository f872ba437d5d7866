//! REST handlers of schedules (`/v1/schedules`, `/v1/instances/{name}/schedules`).
//!
//! (Skeleton: filled in by the schedules work.)

use std::sync::Arc;

use axum::Router;
use mayfly_engine::Engine;

/// The routes of schedules.
pub(super) fn routes() -> Router<Arc<Engine>> {
    Router::new()
}
