//! The one error shape of the API: a stable machine-readable code, a message that says what
//! failed, and a hint that says what to do.

use serde::{Deserialize, Serialize};

/// Stable error codes; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a value is invalid (400).
    InvalidArgument,
    /// The named instance, template or version does not exist (404).
    NotFound,
    /// A resource with that name exists already (409).
    AlreadyExists,
    /// The resource is in the wrong state for the action, e.g. starting a running instance (409).
    WrongState,
    /// Another operation holds the resource; retry when it finishes (409).
    Busy,
    /// The resource is still used by others, e.g. a template by instances (409).
    InUse,
    /// The path exists but does not take this method (405; the `Allow` header and the
    /// hint say which it takes).
    MethodNotAllowed,
    /// The request body is larger than the daemon accepts (413).
    TooLarge,
    /// No credentials, or unknown or revoked ones (401; over TCP only).
    Unauthenticated,
    /// The caller may not do this (403).
    Forbidden,
    /// The caller has too many requests or streams open at once (429).
    TooManyRequests,
    /// The host lacks something the action needs (e.g. a kernel feature) (503).
    Unavailable,
    /// Something failed inside the daemon (500).
    Internal,
}

impl ErrorCode {
    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists
            | ErrorCode::WrongState
            | ErrorCode::Busy
            | ErrorCode::InUse => 409,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    /// Stable code for scripts.
    pub code: ErrorCode,
    /// What failed, on what (one line, lowercase start).
    pub message: String,
    /// What to do about it, when there is something to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ApiError {
    /// An error without a hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds what the user can do about it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// The body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}
