//! The event log and the API's tokens as data.
//!
//! Every life-cycle event (launch, start, stop, exit, reset, snapshot, restore, clone,
//! publish, patch, rollout steps, rollback, import, gc, pause, …) and every API action that
//! changes state is an [`Event`]: who, what, when, and how it ended. Events are numbered in
//! the order they happened (`seq`), kept in a bounded log that survives daemon restarts, and
//! streamed live by `GET /v1/events?follow=true` (one JSON object per line).

use serde::{Deserialize, Serialize};

/// One entry of the event log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Event {
    /// Position in the log: strictly increasing, never reused (also across restarts).
    pub seq: u64,
    /// When it happened (RFC 3339, UTC, with milliseconds).
    pub time: String,
    /// What happened, dotted: `instance.start`, `instance.exit`, `template.patch`,
    /// `rollout.step`, `api.instance.reset` (an API action: its action id after `api.`), …
    pub kind: String,
    /// What it happened to: `instance`, `template`, `network`, `volume`, … with its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<EventSubject>,
    /// Who caused it: `unix:uid=0`, `token:NAME`, `cert:CN`, or `mayfly` itself (`schedule`,
    /// `restart-policy`, `daemon` for what the daemon did on its own).
    pub actor: String,
    /// How it ended.
    pub outcome: Outcome,
    /// What the kind of event carries (an exit status, a version, a step's detail).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// The object an event is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct EventSubject {
    /// `instance`, `template`, `snapshot`, `network`, `channel`, `flavor`, `volume`,
    /// `schedule`, `token`, `layer`.
    pub kind: String,
    /// Its name (`instance/snapshot` for a snapshot).
    pub name: String,
}

/// How an event's action ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It worked (or it is a fact, like an exit).
    Ok,
    /// It failed; `code` is the API error code, `message` says why.
    Failed { code: String, message: String },
}

/// The query of `GET /v1/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events at or after this time: RFC 3339, or a duration back from now (`10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only events after this sequence number (to resume a stream without loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// After the log, keep the answer open and send events as they happen.
    #[serde(default)]
    pub follow: bool,
}

/// What `GET /v1/tokens` lists (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TokenInfo {
    pub name: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last successful use (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
}

/// The answer of `POST /v1/tokens`: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CreatedToken {
    pub name: String,
    /// The bearer token (`Authorization: Bearer SECRET`).
    pub secret: String,
    /// SHA-256 fingerprint of the daemon's TLS certificate, for the client to pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// `POST /v1/login` (the web page): a token traded for a session cookie.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub token: String,
}
