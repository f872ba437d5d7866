//! Who is calling: every connection's requests carry a [`Caller`] (inserted by the server
//! loop: the unix socket's peer, or the TCP client's token or certificate), which the audit
//! log and the event bus name as the actor.
//!
//! Part R of issue 24 fills in: TCP authentication (bearer tokens, client certificates), the
//! web page's session cookie (`POST /v1/login`, `/v1/logout`).

use axum::response::Response;

use super::api::ApiFailure;

/// The authenticated caller of a request.
#[allow(dead_code)] // inserted by part R's server loop
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// As events name it: `unix:uid=0`, `token:NAME`, `cert:CN`.
    pub actor: String,
}

#[allow(dead_code)]
impl Caller {
    /// The caller of a request that carries none (a test router): the local root.
    pub(crate) fn local() -> Self {
        Caller {
            actor: "unix:uid=0".to_owned(),
        }
    }
}

fn not_yet() -> ApiFailure {
    ApiFailure(mayfly_api::ApiError::new(
        mayfly_api::ErrorCode::Unavailable,
        "not implemented yet",
    ))
}

/// `POST /v1/login`.
pub(crate) async fn login() -> Result<Response, ApiFailure> {
    Err(not_yet())
}

/// `POST /v1/logout`.
pub(crate) async fn logout() -> Result<Response, ApiFailure> {
    Err(not_yet())
}

/// `GET /v1/tokens`.
pub(crate) async fn list_tokens() -> Result<Response, ApiFailure> {
    Err(not_yet())
}

/// `POST /v1/tokens`.
pub(crate) async fn create_token() -> Result<Response, ApiFailure> {
    Err(not_yet())
}

/// `DELETE /v1/tokens/{name}`.
pub(crate) async fn revoke_token() -> Result<Response, ApiFailure> {
    Err(not_yet())
}
