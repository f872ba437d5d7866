//! Bad input to networks (issue 21, point 8 and the project's rules): overlapping subnets, an
//! exhausted subnet, a port already published, names that are not valid network names, an
//! unknown network, `network rm` while instances use it (naming them), too many interfaces.
//! Each is a clear error (CLI exit 1; API 4xx with the JSON error body, never 500) and leaves
//! nothing half-done: no instance, no lease, no veth, no network.

mod common;

use common::netns::*;
use common::*;
use serde_json::{Value, json};

/// Asserts an API refusal: `status` (one of them), a JSON error with a code other than
/// `internal`, and a message containing every one of `parts`.
fn assert_api_refusal(what: &str, got: &(u16, Value), statuses: &[u16], parts: &[&str]) {
    let (s, body) = got;
    assert!(
        statuses.contains(s),
        "{what}: status {s}, expected {statuses:?}: {body}"
    );
    let code = body["error"]["code"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty() && code != "internal",
        "{what}: the error needs a code other than internal: {body}"
    );
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    for p in parts {
        assert!(
            msg.contains(p),
            "{what}: the message should mention `{p}`: {body}"
        );
    }
}

/// Asserts that the CLI refused a malformed value, whichever side checked it: the daemon
/// (exit 1) or the CLI's own parser (exit 2, bad usage); the message names what is wrong.
fn assert_bad_value(out: &Output, parts: &[&str]) {
    assert!(
        out.code == 1 || out.code == 2,
        "expected a refusal (exit 1 or 2): {out}"
    );
    for p in parts {
        assert!(
            out.stderr.contains(p),
            "the error should mention `{p}`: {out}"
        );
    }
}

fn network_names(d: &TestDaemon) -> Vec<String> {
    d.json(&["network", "list", "--json"])
        .as_array()
        .expect("network list --json is an array")
        .iter()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn overlapping_subnets_are_refused_naming_what_they_overlap() {
    let d = TestDaemon::start();
    d.ok(&["network", "create", "first", "--subnet", "10.241.0.0/24"]);
    for sub in ["10.241.0.128/25", "10.241.0.0/24", "10.240.0.0/15"] {
        let out = d.fails(&["network", "create", "second", "--subnet", sub]);
        assert_refused_with(&out, &[sub, "first", "10.241.0.0/24"]);
    }
    let got = d.api(
        "POST",
        "/v1/networks",
        Some(&json!({"name": "second", "subnet": "10.241.0.0/26"})),
    );
    assert_api_refusal("overlap over the API", &got, &[409], &["first"]);
    // An address of the daemon's namespace (a route of the host) is taken too.
    in_ns_ok(
        d.netns(),
        &["ip", "addr", "add", "10.242.7.1/24", "dev", "lo"],
    );
    let out = d.fails(&["network", "create", "third", "--subnet", "10.242.0.0/16"]);
    assert_refused_with(&out, &["10.242.0.0/16", "10.242.7"]);
    in_ns_ok(
        d.netns(),
        &["ip", "addr", "del", "10.242.7.1/24", "dev", "lo"],
    );
    assert_eq!(network_names(&d), ["first"], "no network half-made");
    assert_eq!(
        mayfly_links(&d, "mf-").len(),
        1,
        "one bridge at most (first's): {:?}",
        links(d.netns())
    );
    // The automatic choice avoids what is taken: default skips first's subnet.
    d.ok(&["network", "create", "auto"]);
    let auto = network_info(&d, "auto")["subnet"]
        .as_str()
        .expect("a subnet")
        .to_owned();
    assert_ne!(
        auto, "10.241.0.0/24",
        "an automatic subnet overlaps no network"
    );
    d.finish();
}

#[test]
fn malformed_subnets_and_upstreams_are_refused() {
    let d = TestDaemon::start();
    for (sub, part) in [
        ("banana", "banana"),
        ("10.0.0.0/33", "/33"),
        ("10.0.0.0/31", "/31"),
        ("10.0.0.0/7", "/7"),
        ("10.0.0.1/24", "10.0.0.1/24"),
        ("300.1.1.0/24", "300.1.1.0/24"),
        ("10.250.0.0", "10.250.0.0"),
    ] {
        let out = d.fails(&["network", "create", "bad", "--subnet", sub]);
        assert_bad_value(&out, &[part]);
    }
    let out = d.fails(&["network", "create", "bad", "--dns-upstream", "not-an-ip"]);
    assert_bad_value(&out, &["not-an-ip"]);
    let got = d.api(
        "POST",
        "/v1/networks",
        Some(&json!({"name": "bad", "subnet": "10.0.0.0/99"})),
    );
    assert_api_refusal("a bad subnet over the API", &got, &[400], &["/99"]);
    assert!(network_names(&d).is_empty(), "nothing created");
    assert!(nft_tables(&d).is_empty(), "no table for refused networks");
    d.finish();
}

#[test]
fn an_exhausted_subnet_refuses_the_next_instance_and_leaves_nothing() {
    let d = TestDaemon::start();
    // A /30: the gateway .1 and one instance .2 (.0 and .3 are the network and broadcast).
    d.ok(&["network", "create", "tiny", "--subnet", "10.243.0.0/30"]);
    launch(&d, "only", &["--network", "tiny"], Some(IDLE));
    assert_eq!(eth0(&d, "only").ipv4, "10.243.0.2");
    let veths = mayfly_links(&d, "mv");

    let out = d.fails(&["launch", "busybox", "--name", "more", "--network", "tiny"]);
    assert_refused_with(&out, &["no free address", "10.243.0.0/30"]);
    assert!(is_gone(&d, "more"), "a refused launch creates no instance");
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "more",
        "--network",
        "tiny",
        "--no-start",
    ]);
    assert_refused_with(&out, &["no free address", "10.243.0.0/30"]);
    assert!(
        is_gone(&d, "more"),
        "a refused --no-start creates no instance"
    );
    let got = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "busybox", "name": "more", "networks": ["tiny"]})),
    );
    assert_api_refusal(
        "exhausted over the API",
        &got,
        &[409, 507],
        &["10.243.0.0/30"],
    );
    assert_eq!(
        mayfly_links(&d, "mv"),
        veths,
        "no veth left by the refusals"
    );
    assert_eq!(
        leases(&d, "tiny").len(),
        1,
        "one lease: {}",
        network_info(&d, "tiny")
    );

    // A clone needs an address too.
    let out = d.fails(&["clone", "only", "copy"]);
    assert_refused_with(&out, &["no free address", "10.243.0.0/30"]);
    assert!(is_gone(&d, "copy"), "a refused clone creates no instance");
    // Freed by rm: then it works.
    d.ok(&["rm", "--force", "only"]);
    launch(&d, "more", &["--network", "tiny"], Some(IDLE));
    assert_eq!(
        eth0(&d, "more").ipv4,
        "10.243.0.2",
        "the freed address is reused"
    );
    d.finish();
}

#[test]
fn invalid_and_reserved_network_names_are_refused() {
    let d = TestDaemon::start();
    for bad in ["Bad_Name", "2net", "ends-", "none", "host", &"n".repeat(33)] {
        let out = d.fails(&["network", "create", bad]);
        assert_bad_value(&out, &[bad]);
    }
    let got = d.api("POST", "/v1/networks", Some(&json!({"name": "UPPER"})));
    assert_api_refusal("a bad name over the API", &got, &[400], &["UPPER"]);
    let got = d.api(
        "POST",
        "/v1/networks",
        Some(&json!({"name": "ok", "surprise": 1})),
    );
    assert_api_refusal("an unknown field", &got, &[400], &["surprise"]);
    // A name taken.
    d.ok(&["network", "create", "lab", "--subnet", "10.244.0.0/24"]);
    let out = d.fails(&["network", "create", "lab", "--subnet", "10.245.0.0/24"]);
    assert_refused_with(&out, &["lab"]);
    let got = d.api(
        "POST",
        "/v1/networks",
        Some(&json!({"name": "lab", "subnet": "10.246.0.0/24"})),
    );
    assert_api_refusal("a taken name over the API", &got, &[409], &["lab"]);
    assert_eq!(network_names(&d), ["lab"]);
    d.finish();
}

#[test]
fn unknown_networks_are_refused_and_nothing_is_created() {
    let d = TestDaemon::start();
    let out = d.fails(&["launch", "busybox", "--name", "lost", "--network", "nosuch"]);
    assert_refused_with(&out, &["nosuch"]);
    assert!(is_gone(&d, "lost"), "no instance for an unknown network");
    for args in [
        &["network", "info", "nosuch"][..],
        &["network", "rm", "nosuch"][..],
    ] {
        let out = d.fails(args);
        assert_refused_with(&out, &["nosuch"]);
    }
    let got = d.api("GET", "/v1/networks/nosuch", None);
    assert_api_refusal("GET an unknown network", &got, &[404], &["nosuch"]);
    let got = d.api("DELETE", "/v1/networks/nosuch", None);
    assert_api_refusal("DELETE an unknown network", &got, &[404], &["nosuch"]);
    // `none` with another network makes no sense.
    d.ok(&["network", "create", "lab", "--subnet", "10.247.0.0/24"]);
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "both",
        "--network",
        "none",
        "--network",
        "lab",
    ]);
    assert_refused_with(&out, &["none"]);
    assert!(is_gone(&d, "both"));
    assert!(
        network_names(&d) == ["lab"],
        "an unknown network is not created: {:?}",
        network_names(&d)
    );
    d.finish();
}

#[test]
fn network_rm_is_refused_while_instances_use_it_naming_them() {
    let d = TestDaemon::start();
    d.ok(&["network", "create", "busy", "--subnet", "10.248.0.0/24"]);
    launch(&d, "user-one", &["--network", "busy"], Some(IDLE));
    launch(&d, "user-two", &["--network", "busy", "--no-start"], None);
    let out = d.fails(&["network", "rm", "busy"]);
    assert_refused_with(&out, &["busy", "user-one", "user-two"]);
    let got = d.api("DELETE", "/v1/networks/busy", None);
    assert_api_refusal(
        "rm in use over the API",
        &got,
        &[409],
        &["user-one", "user-two"],
    );
    // Nothing was taken down.
    d.sh("user-one", "ping -c 1 -W 2 10.248.0.1");
    d.ok(&["rm", "--force", "user-one"]);
    let out = d.fails(&["network", "rm", "busy"]);
    assert_refused_with(&out, &["user-two"]);
    d.ok(&["rm", "user-two"]);
    d.ok(&["network", "rm", "busy"]);
    assert!(network_names(&d).is_empty());
    d.finish();
}

#[test]
fn bad_published_ports_are_refused() {
    let d = TestDaemon::start();
    for bad in ["80", "0:80", "8080:80/sctp", "1.2.3:8080:80", "8080:70000"] {
        let out = d.fails(&["launch", "busybox", "--name", "p", "--publish", bad]);
        assert_bad_value(&out, &[bad, "[HOST_IP:]HOST_PORT:PORT"]);
        assert!(is_gone(&d, "p"), "no instance for --publish {bad}");
    }
    // The same host port twice in one launch.
    let out = d.fails(&[
        "launch", "busybox", "--name", "p", "-p", "18088:80", "-p", "18088:81",
    ]);
    assert_refused_with(&out, &["18088"]);
    assert!(is_gone(&d, "p"));
    // A port already published, over the API: 409.
    launch(&d, "holder", &["--publish", "18089:80"], Some(IDLE));
    let got = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "busybox", "name": "p", "publish": ["18089:80"]})),
    );
    assert_api_refusal(
        "a published port over the API",
        &got,
        &[409],
        &["18089", "holder"],
    );
    assert!(is_gone(&d, "p"));
    // An address the host does not have.
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "p",
        "-p",
        "192.0.2.77:18091:80",
    ]);
    assert_refused_with(&out, &["192.0.2.77", "not an address of this host"]);
    assert!(is_gone(&d, "p"));
    // Publishing needs a network.
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "p",
        "--network",
        "none",
        "-p",
        "18090:80",
    ]);
    assert_refused_with(&out, &["none"]);
    assert!(is_gone(&d, "p"));
    d.finish();
}

#[test]
fn more_than_ten_interfaces_are_refused() {
    let d = TestDaemon::start();
    let mut args = vec![
        "launch".to_owned(),
        "busybox".to_owned(),
        "--name".to_owned(),
        "many".to_owned(),
    ];
    for n in 0..11 {
        let name = format!("n{n}");
        d.ok(&[
            "network",
            "create",
            &name,
            "--subnet",
            &format!("10.249.{n}.0/24"),
        ]);
        args.push("--network".to_owned());
        args.push(name);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = d.fails(&args);
    assert_refused_with(&out, &["10"]);
    assert!(is_gone(&d, "many"));
    assert!(mayfly_links(&d, "mv").is_empty(), "no veth left");
    d.finish();
}
