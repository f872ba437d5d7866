//! What every API action goes through, keyed by its [`mayfly_api::Action`]: the caller
//! becomes the actor of what the engine does for it, actions that change state
//! (`changes: true` in the action table) are written to the audit log with their outcome, and
//! counts and latencies go to the metrics.
//!
//! The audit record is an event of kind `api.<action id>`: the caller, the subject (from the
//! path: `instance web`, `snapshot web/before`), and the outcome read from the response: `ok`
//! for a 1xx-3xx status, else `failed` with the error body's code and message. A streaming
//! action (an NDJSON job, an upgrade, a followed log) is recorded at its response's head: a
//! job that starts and fails later is `ok` here, and its own events (`template.patch`,
//! `rollout.done`, …) tell how it ended.

use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use mayfly_api::{Action, ActionSpec, ErrorBody, Outcome};
use mayfly_engine::events::{Ev, emit_current, with_actor};

use super::auth::Caller;

/// The largest error body read for its code and message.
const ERROR_BODY_MAX: usize = 64 * 1024;

/// The longest error message kept in an audit record.
const MESSAGE_MAX: usize = 1024;

/// The largest answer of a creation read for the name of what it made.
const CREATED_BODY_MAX: usize = 1 << 20;

/// Runs the request of `action` as its caller, records it in the audit log (when it changes
/// state) and in the metrics.
pub(crate) async fn around(action: Action, req: Request, next: Next) -> Response {
    let spec = action.spec();
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::local);
    let mut subject = subject_of(spec, req.uri().path());
    let started = Instant::now();
    let actor = caller.actor;
    let response = with_actor(actor.clone(), next.run(req)).await;
    let status = response.status();
    super::metrics::observe(spec.id, status.as_u16(), started.elapsed());
    if !spec.changes {
        return response;
    }
    let (response, outcome) = if status.is_client_error() || status.is_server_error() {
        let (response, bytes) = small_body(response, ERROR_BODY_MAX).await;
        let outcome = match bytes.and_then(|b| serde_json::from_slice::<ErrorBody>(&b).ok()) {
            Some(b) => Outcome::Failed {
                code: serde_json::to_value(b.error.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                message: bounded(&redacted(&b.error.message)),
            },
            None => Outcome::Failed {
                code: status.as_u16().to_string(),
                message: status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_owned(),
            },
        };
        (response, outcome)
    } else if status == StatusCode::CREATED
        && (subject.is_none() || spec.action == Action::CreateSnapshot)
    {
        // A creation names what it made in its answer (`{"name": …}`).
        let (response, bytes) = small_body(response, CREATED_BODY_MAX).await;
        subject = bytes
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
            .map(|name| match &subject {
                // A snapshot is named `instance/snapshot`.
                Some((_, instance)) => ("snapshot", format!("{instance}/{name}")),
                None => (noun_of(spec), name),
            })
            .or(subject);
        (response, Outcome::Ok)
    } else {
        (response, Outcome::Ok)
    };
    let mut ev = Ev::new(format!("api.{}", spec.id))
        .by(&actor)
        .outcome(outcome)
        .details(serde_json::json!({ "status": status.as_u16() }));
    if let Some((kind, name)) = subject {
        ev = ev.on(kind, &name);
    }
    emit_current(ev);
    response
}

/// The body of `response` when its length is known and at most `max` (a JSON answer), with
/// the response to send on (the same bytes); a stream or a larger answer is left untouched
/// and unread (`None`): reading it here would hold a stream's every byte back until its end,
/// and cut an answer past `max` to nothing.
async fn small_body(response: Response, max: usize) -> (Response, Option<Bytes>) {
    let known = response.body().size_hint().exact();
    if known.is_none_or(|n| n > max as u64) {
        return (response, None);
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, max).await {
        Ok(bytes) => (
            Response::from_parts(parts, Body::from(bytes.clone())),
            Some(bytes),
        ),
        // The body failed while it was read: the client would have got that failure too.
        Err(e) => {
            tracing::warn!("cannot read an answer for the audit log: {e}");
            (Response::from_parts(parts, Body::empty()), None)
        }
    }
}

/// `message` with what it quotes in double quotes left out: a request's values the JSON
/// parser quotes in its error (`invalid type: string "TOKEN=…"`) can be secrets (a token, an
/// environment value, user data), and the log is read by whoever may read events. Names the
/// daemon quotes (in backquotes) stay.
fn redacted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        // Up to the closing quote (a quote inside is escaped).
        let mut escaped = false;
        for c in chars.by_ref() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => break,
                _ => escaped = false,
            }
        }
        out.push_str("…\"");
    }
    out
}

/// `message` cut to [`MESSAGE_MAX`] bytes (on a character boundary): an error that quotes
/// a whole request does not make a huge log row.
fn bounded(message: &str) -> String {
    let mut message = message.to_owned();
    if message.len() > MESSAGE_MAX {
        let mut end = MESSAGE_MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// The values of the `{..}` placeholders of `template` in `path` (decoded), if it matches.
fn placeholders(template: &str, path: &str) -> Option<Vec<String>> {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut out = Vec::new();
    for (t, p) in t.iter().zip(&p) {
        if t.starts_with('{') && t.ends_with('}') {
            if p.is_empty() {
                return None;
            }
            out.push(decode(p));
        } else if t != p {
            return None;
        }
    }
    Some(out)
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What an action's request is about, from its path: the kind is the action id's noun
/// (`instance.start` → `instance`), the name the first placeholder (`instance/snapshot` for a
/// snapshot's two).
fn subject_of(spec: &ActionSpec, path: &str) -> Option<(&'static str, String)> {
    let values = placeholders(spec.path, path)?;
    let first = values.first()?;
    if spec.id.starts_with("snapshot.") && values.len() > 1 {
        return Some(("snapshot", format!("{first}/{}", values[1])));
    }
    Some((noun_of(spec), first.clone()))
}

/// The kind of subject an action's path (or answer) names: its id's noun (`instance.start`
/// → `instance`); a schedule's and a snapshot list's are their instance's.
fn noun_of(spec: &ActionSpec) -> &'static str {
    let noun = spec.id.split('.').next().unwrap_or(spec.id);
    match noun {
        "schedule" | "snapshot" => "instance",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_left_out_of_recorded_messages() {
        assert_eq!(
            redacted(r#"invalid type: string "PW=a\"b", expected a sequence"#),
            r#"invalid type: string "…", expected a sequence"#
        );
        assert_eq!(
            redacted("instance `web` not found"),
            "instance `web` not found"
        );
        assert_eq!(redacted(r#"cut "open"#), r#"cut "…""#);
    }

    #[test]
    fn requests_resolve_to_their_subject() {
        let spec = Action::RestoreSnapshot.spec();
        assert_eq!(
            subject_of(spec, "/v1/instances/web/snapshots/a%20b/restore"),
            Some(("snapshot", "web/a b".to_owned()))
        );
        assert_eq!(
            subject_of(Action::RemoveTemplate.spec(), "/v1/templates/debian%402"),
            Some(("template", "debian@2".to_owned()))
        );
        assert_eq!(
            subject_of(Action::AddSchedule.spec(), "/v1/instances/web/schedules"),
            Some(("instance", "web".to_owned()))
        );
        assert_eq!(
            subject_of(Action::CreateInstance.spec(), "/v1/instances"),
            None
        );
    }
}
