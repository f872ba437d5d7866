//! `/run/mayfly/meta.json` (issue 23 §2): what the instance is, inside every instance,
//! read-only, rewritten at every start.

mod common;

use common::TestDaemon;
use serde_json::{Value, json};

/// The JSON a running instance's command prints, once it succeeds (its user data may still
/// be running).
fn json_when_ready(d: &TestDaemon, name: &str, cmd: &str) -> Value {
    let mut last = String::new();
    let ok = common::poll_until(std::time::Duration::from_secs(20), || {
        let out = d.mayfly(&["exec", name, "--", "sh", "-c", cmd]);
        last = out.stdout.clone();
        out.success() && serde_json::from_str::<Value>(&out.stdout).is_ok()
    });
    assert!(ok, "`{cmd}` in {name} gave no JSON: {last}");
    serde_json::from_str(&last).unwrap()
}

fn meta_of(d: &TestDaemon, name: &str) -> Value {
    let text = d.sh(name, "cat /run/mayfly/meta.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("meta.json is not JSON ({e}): {text}"))
}

#[test]
fn meta_json_describes_the_instance_and_cannot_be_written() {
    let d = TestDaemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "m1",
        "--persistent",
        "--meta",
        "role=web",
        "--meta",
        "tier=front end",
    ]);
    let info = d.info("m1");
    let meta = meta_of(&d, "m1");
    assert_eq!(meta["id"], info["id"], "{meta}");
    assert_eq!(meta["name"], "m1");
    assert_eq!(meta["hostname"], "m1");
    assert_eq!(meta["mode"], "persistent");
    let version = info["running_version"].as_u64().expect("a running version");
    assert_eq!(meta["template"], format!("busybox@{version}"), "{meta}");
    assert_eq!(meta["meta"], json!({"role": "web", "tier": "front end"}));
    let ifaces = meta["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifaces.len(), 1, "{meta}");
    let ip_inside = d.sh("m1", "ip -4 -o addr show eth0 | awk '{print $4}'");
    assert_eq!(
        ifaces[0]["ipv4"].as_str().unwrap(),
        ip_inside.trim(),
        "{meta}"
    );
    assert_eq!(ifaces[0]["name"], "eth0");
    let mac = d.sh("m1", "cat /sys/class/net/eth0/address");
    assert_eq!(ifaces[0]["mac"].as_str().unwrap(), mac.trim());
    assert!(meta["limits"].is_object(), "{meta}");

    // Read-only for the tenant, root included.
    for attempt in [
        "echo '{}' > /run/mayfly/meta.json",
        "touch /run/mayfly/other",
        "rm /run/mayfly/meta.json",
    ] {
        let out = d.mayfly(&["exec", "m1", "--", "sh", "-c", attempt]);
        assert!(!out.success(), "`{attempt}` must fail: {out}");
        assert!(out.stderr.contains("Read-only"), "{attempt}: {out}");
    }
    assert_eq!(meta_of(&d, "m1")["name"], "m1");

    // Rewritten at each start: a persistent instance gets the new content, not a stale copy
    // in its writable layer.
    d.ok(&["stop", "m1"]);
    d.ok(&["start", "m1"]);
    let again = meta_of(&d, "m1");
    assert_eq!(again["id"], info["id"]);
    assert_eq!(again["meta"]["role"], "web");

    // A clone is another instance: its own id and name in its metadata, the same pairs,
    // and its user data (copied) runs in it.
    let dir = tempfile::tempdir().unwrap();
    let ud = dir.path().join("ud.sh");
    std::fs::write(&ud, "#!/bin/sh\ncat /run/mayfly/meta.json > /root/seen\n").unwrap();
    d.ok(&[
        "launch",
        "busybox",
        "--name",
        "orig",
        "--meta",
        "role=db",
        "--user-data",
        ud.to_str().unwrap(),
    ]);
    d.ok(&["stop", "orig"]);
    d.ok(&["clone", "orig", "twin", "--start"]);
    let twin = d.info("twin");
    let seen: Value = json_when_ready(&d, "twin", "cat /root/seen");
    assert_eq!(seen["id"], twin["id"], "{seen}");
    assert_ne!(seen["id"], d.info("orig")["id"]);
    assert_eq!(seen["name"], "twin");
    assert_eq!(seen["meta"]["role"], "db");
    assert!(
        common::poll_until(std::time::Duration::from_secs(20), || {
            d.info("twin")["user_data"]["status"]["state"] == "done"
        }),
        "{}",
        d.info("twin")
    );

    // Bad pairs are refused (CLI and API), nothing made.
    let out = d.fails(&["launch", "busybox", "--name", "m2", "--meta", "bad key=1"]);
    assert!(out.stderr.contains("invalid metadata key"), "{out}");
    let (status, body) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "busybox", "name": "m3", "meta": {"a/b": "x"}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("invalid metadata key"), "{body}");
    assert!(d.state_of("m2").is_none() && d.state_of("m3").is_none());
    d.finish();
}
