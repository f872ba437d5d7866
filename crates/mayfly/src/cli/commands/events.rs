//! `mayfly events`: the event log, then with `--follow` events as they happen.

use std::io::Write;

use bytes::Bytes;
use http_body_util::BodyExt;
use mayfly_api::{Action, Event, Outcome};

use crate::cli::args::events::EventsArgs;
use crate::cli::client::{Client, ClientError, full, method};

/// The path of `GET /v1/events` for `args`.
fn events_path(args: &EventsArgs) -> String {
    let mut path = format!("{}?follow={}", Action::Events.path(&[]), args.follow);
    if let Some(since) = &args.since {
        path.push_str("&since=");
        path.push_str(&mayfly_api::actions::encode(since));
    }
    path
}

/// One line of the table: time, number, kind, subject, actor, outcome, details.
fn format_event(ev: &Event) -> String {
    let subject = ev
        .subject
        .as_ref()
        .map_or_else(|| "-".to_owned(), |s| format!("{} {}", s.kind, s.name));
    let outcome = match &ev.outcome {
        Outcome::Ok => "ok".to_owned(),
        Outcome::Failed { code, message } => format!("failed ({code}: {message})"),
    };
    let mut line = format!(
        "{}  {:>6}  {:<24} {:<28} {:<16} {outcome}",
        ev.time, ev.seq, ev.kind, subject, ev.actor
    );
    if !ev.details.is_null() {
        line.push_str("  ");
        line.push_str(&ev.details.to_string());
    }
    line
}

pub(super) async fn events(client: &Client, args: EventsArgs) -> Result<i32, ClientError> {
    let req = Client::request(
        method(Action::Events),
        &events_path(&args),
        "application/json",
        full(Bytes::new()),
    )?;
    let response = client.send(req).await?;
    if !response.status().is_success() {
        return Err(Client::error_of(response).await);
    }
    let mut body = response.into_body();
    let mut out = std::io::stdout();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ClientError::Protocol(format!("the event stream broke: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            if line.is_empty() {
                continue;
            }
            let written = if args.json {
                out.write_all(line).and_then(|()| out.write_all(b"\n"))
            } else {
                let ev: Event = serde_json::from_slice(line).map_err(|e| {
                    ClientError::Protocol(format!("the daemon sent an unreadable event: {e}"))
                })?;
                if ev.seq == 0
                    && let Outcome::Failed { message, .. } = &ev.outcome
                {
                    eprintln!("warning: {message}");
                    continue;
                }
                writeln!(out, "{}", format_event(&ev))
            };
            // A closed pipe (`| head`) ends the command quietly.
            if written.and_then(|()| out.flush()).is_err() {
                return Ok(0);
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_when_what_on_what_who_and_how() {
        let ev = Event {
            seq: 7,
            time: "2026-12-07T05:00:00.000Z".to_owned(),
            kind: "api.instance.stop".to_owned(),
            subject: Some(mayfly_api::EventSubject {
                kind: "instance".to_owned(),
                name: "web".to_owned(),
            }),
            actor: "token:ci".to_owned(),
            outcome: Outcome::Failed {
                code: "busy".to_owned(),
                message: "instance `web` is busy".to_owned(),
            },
            details: serde_json::json!({"status": 409}),
        };
        let line = format_event(&ev);
        for part in [
            "2026-12-07T05:00:00.000Z",
            " 7 ",
            "api.instance.stop",
            "instance web",
            "token:ci",
            "failed (busy: instance `web` is busy)",
            "{\"status\":409}",
        ] {
            assert!(line.contains(part), "{part} missing in {line}");
        }
        let args = EventsArgs {
            follow: true,
            json: false,
            since: Some("2026-12-07T05:00:00Z".to_owned()),
        };
        assert_eq!(
            events_path(&args),
            "/v1/events?follow=true&since=2026-12-07T05%3A00%3A00Z"
        );
    }
}
