//! The web dashboard: its pages and assets, embedded in the binary, and the terminal's
//! WebSocket (part W of issue 24).

use std::sync::Arc;

use axum::Router;
use axum::response::Response;
use mayfly_engine::Engine;

use super::api::ApiFailure;

/// The page and its assets (`/`, `/ui/...`): served without authentication (they hold no
/// data; every call they make is authenticated).
pub(crate) fn routes() -> Router<Arc<Engine>> {
    Router::new()
}

/// `GET /v1/instances/{name}/terminal`: a shell over a WebSocket.
pub(crate) async fn terminal() -> Result<Response, ApiFailure> {
    Err(ApiFailure(mayfly_api::ApiError::new(
        mayfly_api::ErrorCode::Unavailable,
        "not implemented yet",
    )))
}
