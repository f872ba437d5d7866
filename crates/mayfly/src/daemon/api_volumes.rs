//! REST handlers of volumes (`/v1/volumes`).
//!
//! (Skeleton: filled in by the volumes work.)

use std::sync::Arc;

use axum::Router;
use mayfly_engine::Engine;

/// The routes of volumes.
pub(super) fn routes() -> Router<Arc<Engine>> {
    Router::new()
}
