//! `GET /v1/events`: the event log, then live events (part E of issue 24).

use axum::response::Response;

use super::api::ApiFailure;

/// `GET /v1/events?since=&after=&follow=`: NDJSON [`mayfly_api::Event`] lines.
pub(crate) async fn events() -> Result<Response, ApiFailure> {
    Err(ApiFailure(mayfly_api::ApiError::new(
        mayfly_api::ErrorCode::Unavailable,
        "not implemented yet",
    )))
}
