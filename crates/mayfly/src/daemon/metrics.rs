//! `GET /metrics`: Prometheus text (part E of issue 24).

use axum::response::Response;

use super::api::ApiFailure;

/// `GET /metrics`.
pub(crate) async fn metrics() -> Result<Response, ApiFailure> {
    Err(ApiFailure(mayfly_api::ApiError::new(
        mayfly_api::ErrorCode::Unavailable,
        "not implemented yet",
    )))
}
