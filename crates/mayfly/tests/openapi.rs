//! The OpenAPI document matches the live router: the daemon serves the generated document,
//! every operation it lists reaches a handler (not the router's 404 or 405 fallbacks), every
//! action of the table is in it, and no path of it takes a method the document does not list.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::TestDaemon;
use serde_json::Value;

/// A path of the document with its placeholders filled by names that exist nowhere.
fn filled(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{id}" => "4242",
            s if s.starts_with('{') => "oa-missing",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether an answer is the router's own: a 405, or the 404 of a path it does not know.
fn router_fallback(status: u16, body: &Value) -> bool {
    status == 405
        || (status == 404
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no API endpoint")))
}

#[test]
fn the_document_matches_the_router() {
    let d = TestDaemon::start();

    // The daemon serves the document generated from the table.
    let r = d.api_raw("GET", "/v1/openapi.json", "application/json", b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let served = r.json();
    let generated: Value =
        serde_json::from_str(&mayfly_api::openapi::json()).expect("the document is JSON");
    assert_eq!(
        served, generated,
        "the served document is the generated one"
    );
    assert!(
        served["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{}",
        served["openapi"]
    );

    // Every action of the table is an operation, under its id, and nothing else is.
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let paths = served["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("a path item") {
            if !["get", "post", "patch", "delete", "put", "head", "options"]
                .contains(&method.as_str())
            {
                continue;
            }
            documented
                .entry(path.clone())
                .or_default()
                .insert(method.to_uppercase());
            ids.insert(op["operationId"].as_str().unwrap_or_default().to_owned());
        }
    }
    let operations: usize = documented.values().map(BTreeSet::len).sum();
    assert_eq!(
        operations,
        mayfly_api::ACTIONS.len(),
        "one operation per action: {documented:#?}"
    );
    for spec in mayfly_api::ACTIONS {
        assert!(
            documented
                .get(spec.path)
                .is_some_and(|m| m.contains(spec.method.as_str())),
            "{} {} ({}) is not in the document",
            spec.method.as_str(),
            spec.path,
            spec.id
        );
        assert!(ids.contains(spec.id), "no operation `{}`", spec.id);
    }

    // Every documented operation reaches its handler: what answers is the action (its own
    // refusal of a missing name or an empty body, or its answer), never the fallbacks.
    let mut reached = 0;
    for (path, methods) in &documented {
        let concrete = filled(path);
        for method in methods {
            let r = d.api_raw(method, &concrete, "application/json", b"");
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            assert!(
                !router_fallback(r.status, &body),
                "{method} {concrete} ({path}) did not reach a handler: {} {body}",
                r.status
            );
            assert!(
                r.status < 500 || r.status == 503,
                "{method} {concrete}: {} {body}",
                r.status
            );
            reached += 1;
        }
        // And the path takes no method the document does not list: the others are 405s
        // whose Allow header names exactly the documented ones.
        for method in ["GET", "POST", "PATCH", "DELETE", "PUT"] {
            if methods.contains(method) {
                continue;
            }
            let r = d.api_raw(method, &concrete, "application/json", b"");
            assert_eq!(
                r.status,
                405,
                "{method} {concrete} is not documented but answered: {}",
                String::from_utf8_lossy(&r.body)
            );
            let allow: BTreeSet<String> = r
                .header("allow")
                .unwrap_or_default()
                .split(',')
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty() && m != "HEAD")
                .collect();
            assert_eq!(&allow, methods, "Allow of {concrete}");
        }
    }
    assert_eq!(reached, mayfly_api::ACTIONS.len());

    // Every action went through `audit::around`: the metrics count each one by its id, and
    // each that changes state left its `api.<id>` record in the audit log.
    let r = d.api_raw("GET", "/metrics", "application/json", b"");
    assert_eq!(r.status, 200);
    let metrics = String::from_utf8_lossy(&r.body).into_owned();
    let r = d.api_raw("GET", "/v1/events", "application/json", b"");
    assert_eq!(r.status, 200);
    let kinds: BTreeSet<String> = String::from_utf8_lossy(&r.body)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect();
    for spec in mayfly_api::ACTIONS {
        assert!(
            metrics.contains(&format!("action=\"{}\"", spec.id)),
            "no metrics for `{}`:\n{metrics}",
            spec.id
        );
        let audited = kinds.contains(&format!("api.{}", spec.id));
        assert_eq!(
            audited, spec.changes,
            "`{}` (changes: {}) in the audit log: {audited}; kinds: {kinds:?}",
            spec.id, spec.changes
        );
    }
    d.finish();
}

/// An answer given without reading the request's body (the 404 and 405 answers, a handler that
/// takes no body) still reaches a client that sends one: the daemon reads a body of JSON size
/// before it answers, instead of closing the connection under it.
#[test]
fn an_answer_that_needs_no_body_reaches_a_client_that_sends_one() {
    let d = TestDaemon::start();
    let body =
        serde_json::to_vec(&serde_json::json!({"padding": "x".repeat(200_000)})).expect("json");
    for (method, path, status) in [
        ("PATCH", "/v1/instances/oa-missing/publish", 405),
        ("POST", "/v1/nothing", 404),
        ("POST", "/v1/instances/oa-missing/start", 404),
        ("PUT", "/v1/info", 405),
    ] {
        for _ in 0..5 {
            let r = d.api_raw(method, path, "application/json", &body);
            assert_eq!(
                r.status,
                status,
                "{method} {path}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert!(r.json()["error"]["code"].is_string(), "{method} {path}");
        }
    }
    d.finish();
}

#[test]
fn a_path_outside_the_document_is_the_routers_404() {
    let d = TestDaemon::start();
    for path in [
        "/v1/instances/a/b/c/d",
        "/v1/nothing",
        "/v2/info",
        "/v1/templates/x/y",
    ] {
        let r = d.api_raw("GET", path, "application/json", b"");
        let body = r.json();
        assert!(
            r.status == 404 && router_fallback(r.status, &body),
            "GET {path}: {} {body}",
            r.status
        );
    }
    d.finish();
}
