//! The event log as tests read it: `GET /v1/events` lines, and waits for an event.

use super::*;

/// The events `GET /v1/events?QUERY` answers (without following), in order.
pub fn events(d: &TestDaemon, query: &str) -> Vec<Value> {
    let path = if query.is_empty() {
        "/v1/events".to_owned()
    } else {
        format!("/v1/events?{query}")
    };
    let r = d.api_raw("GET", &path, "application/json", b"");
    assert_eq!(
        r.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    ndjson(&r.body)
}

/// Parses NDJSON lines.
pub fn ndjson(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}

/// The kinds of `events` about subject `name` (any kind of subject).
pub fn kinds_about(events: &[Value], name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["subject"]["name"] == name)
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until the log holds an event of `kind` about `name`; returns it.
pub fn wait_event(d: &TestDaemon, kind: &str, name: &str) -> Value {
    let mut found = None;
    let ok = poll_until(Duration::from_secs(10), || {
        found = events(d, "")
            .into_iter()
            .find(|e| e["kind"] == kind && e["subject"]["name"] == name);
        found.is_some()
    });
    assert!(ok, "no `{kind}` event about `{name}`: {:#?}", events(d, ""));
    found.unwrap_or_default()
}

/// Whether `want` appears in `have` in this order (other items may be between).
pub fn in_order(have: &[String], want: &[&str]) -> bool {
    let mut it = have.iter();
    want.iter().all(|w| it.any(|h| h == w))
}
