//! `GET /v1/openapi.json`: the OpenAPI 3 document, generated from the action table
//! ([`mayfly_api::openapi`]) once, on first request.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// `GET /v1/openapi.json`.
pub(crate) async fn document() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let json = DOCUMENT.get_or_init(mayfly_api::openapi::json);
    ([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response()
}
