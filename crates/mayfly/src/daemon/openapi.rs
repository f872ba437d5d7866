//! `GET /v1/openapi.json`: the OpenAPI 3 document, generated from the action table (part A
//! of issue 24).

use axum::response::Response;

use super::api::ApiFailure;

/// `GET /v1/openapi.json`.
pub(crate) async fn document() -> Result<Response, ApiFailure> {
    Err(ApiFailure(mayfly_api::ApiError::new(
        mayfly_api::ErrorCode::Unavailable,
        "not implemented yet",
    )))
}
