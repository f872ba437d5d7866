//! The engine's fault paths of networks (issue 21): a start that fails after the firewall
//! took the instance in leaves no rule, no host end and no lease; an exhausted subnet refuses
//! the instance whole; a kill -9 of the daemon leaves nothing stale once it is back.
//!
//! Every daemon here runs in its own network namespace (the test harness's), where the nft
//! tables and links are looked at through `nsenter --net=/proc/<daemon>/ns/net`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{CLI_TIMEOUT, TestDaemon, is_gone, launch, run_command, wait_state};

const IDLE: &str = "while true; do sleep 1; done";

/// Runs `args` in the daemon's network namespace; its standard output.
fn in_daemon_netns(d: &TestDaemon, args: &[&str]) -> String {
    let pid = d.daemon_pid().expect("the daemon runs");
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/proc/{pid}/ns/net")).args(args);
    run_command(cmd, None, CLI_TIMEOUT).stdout
}

/// mayfly's `inet` table as nft prints it (empty when there is none).
fn inet_table(d: &TestDaemon) -> String {
    in_daemon_netns(d, &["nft", "list", "table", "inet", "mayfly"])
}

/// The links whose name starts with `mv` (instances' host ends).
fn host_ends(d: &TestDaemon) -> Vec<String> {
    in_daemon_netns(d, &["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("mv"))
        .collect()
}

/// The addresses of network `net`'s interfaces, by instance name.
fn leases(d: &TestDaemon, net: &str) -> Vec<(String, String)> {
    let info = d.json(&["network", "info", net, "--json"]);
    info["interfaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    (
                        i["instance"].as_str().unwrap_or_default().to_owned(),
                        i["ipv4"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_start_that_fails_after_the_firewall_apply_leaves_no_rule_no_host_end_and_no_lease() {
    let mut d = TestDaemon::start_with_env(&[], &[("MAYFLY_FAIL_AT", "start:networked")]);
    d.ok(&["network", "create", "n1", "--subnet", "10.99.0.0/24"]);
    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "a",
        "--network",
        "n1",
        "-p",
        "18080:80",
        "--",
        "sh",
        "-c",
        IDLE,
    ]);
    assert!(out.stderr.contains("injected failure"), "{out}");
    assert!(is_gone(&d, "a"), "the failed launch was not undone");
    assert!(leases(&d, "n1").is_empty(), "{:?}", leases(&d, "n1"));
    let table = inet_table(&d);
    assert!(!table.contains("18080"), "the forward stayed:\n{table}");
    // Host ends appear by name in the anti-spoofing sets (the `mv*` pattern is every port's).
    let bridge = in_daemon_netns(&d, &["nft", "list", "table", "bridge", "mayfly"]);
    for t in [&table, &bridge] {
        assert!(
            !t.replace("\"mv*\"", "").contains("mv"),
            "a host end's rule stayed:\n{t}"
        );
    }
    assert!(host_ends(&d).is_empty(), "{:?}", host_ends(&d));

    // The same launch without the fault gets the subnet's first address: nothing leaked.
    d.stop_daemon();
    d.set_env(&[]);
    d.restart();
    launch(&d, "a", &["--network", "n1", "-p", "18080:80"], Some(IDLE));
    assert_eq!(leases(&d, "n1"), [("a".to_owned(), "10.99.0.2".to_owned())]);
    let table = inet_table(&d);
    assert!(table.contains("18080"), "the forward is missing:\n{table}");
    d.ok(&["rm", "--force", "a"]);
    assert!(!inet_table(&d).contains("18080"));
    assert!(host_ends(&d).is_empty(), "{:?}", host_ends(&d));
    d.finish();
}

#[test]
fn an_exhausted_subnet_refuses_the_instance_whole_and_a_used_network_stays() {
    let d = TestDaemon::start();
    d.ok(&["network", "create", "tiny", "--subnet", "10.98.0.0/30"]);
    launch(&d, "a", &["--network", "tiny"], Some(IDLE));
    let out = d.fails(&["launch", "busybox", "--name", "b", "--network", "tiny"]);
    assert!(
        out.stderr
            .contains("no free address in 10.98.0.0/30 (1 in use)"),
        "{out}"
    );
    assert!(is_gone(&d, "b"));
    let out = d.fails(&["network", "rm", "tiny"]);
    assert!(
        out.stderr.contains("`a`") || out.stderr.contains(" a"),
        "{out}"
    );
    d.ok(&["rm", "--force", "a"]);
    d.ok(&["network", "rm", "tiny"]);
    d.finish();
}

#[test]
fn after_a_kill_9_of_the_daemon_nothing_of_a_gone_instance_is_left() {
    let mut d = TestDaemon::start();
    d.ok(&["network", "create", "n2", "--subnet", "10.97.0.0/24"]);
    launch(&d, "keep", &["--network", "n2"], Some(IDLE));
    launch(
        &d,
        "gone",
        &["--network", "n2", "-p", "18081:80"],
        Some(IDLE),
    );
    let gone_pid = d.pid_of("gone");
    d.kill_daemon();
    // The instance dies while no daemon watches.
    let _ = Command::new("kill")
        .args(["-9", &gone_pid.to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(200));
    d.restart();
    wait_state(&d, "keep", "running");
    // The end of the gone run is settled in the background after the restart.
    let settled = common::poll_until(Duration::from_secs(10), || {
        !inet_table(&d).contains("18081") && host_ends(&d).len() == 1
    });
    assert!(
        settled,
        "the gone run left its forward or host end (only keep's may stay):\n{}\n{:?}",
        inet_table(&d),
        host_ends(&d)
    );
    wait_state(&d, "gone", "stopped");
    // Names: keep resolves on the network, gone does not.
    let gw = d.json(&["network", "info", "n2", "--json"])["gateway"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let keep = d.sh("keep", &format!("nslookup keep {gw} 2>&1 || true"));
    // busybox prints the server's address too: the answer is what follows `Name:`.
    assert!(
        keep.contains("Name:") && keep.contains("10.97.0.2"),
        "{keep}"
    );
    let gone = d.sh("keep", &format!("nslookup gone {gw} 2>&1 || true"));
    assert!(
        !gone.contains("Name:") && gone.contains("NXDOMAIN"),
        "{gone}"
    );
    d.ok(&["rm", "--force", "keep"]);
    d.ok(&["rm", "--force", "gone"]);
    d.finish();
}

/// Creates instance `name` through the API with `extra` fields; the status and answer.
fn create(d: &TestDaemon, name: &str, extra: serde_json::Value) -> (u16, serde_json::Value) {
    let mut body = serde_json::json!({
        "template": "busybox", "name": name, "command": ["sh", "-c", IDLE],
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    d.api("POST", "/v1/instances", Some(&body))
}

/// The addresses of instance `name`'s interfaces.
fn addresses(d: &TestDaemon, name: &str) -> Vec<(String, String)> {
    d.info(name)["interfaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    (
                        i["ipv4"].as_str().unwrap_or_default().to_owned(),
                        i["mac"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn addresses_stay_with_an_instance_a_clone_gets_new_ones_and_bad_choices_change_nothing() {
    let d = TestDaemon::start();
    // The default network, at first use; addresses in order, kept across restarts and
    // resets, released by rm.
    let (status, body) = create(&d, "a", serde_json::json!({"publish": ["18090:80"]}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["publish"],
        serde_json::json!(["127.0.0.1:18090:80/tcp"])
    );
    let (status, body) = create(&d, "b", serde_json::json!({}));
    assert_eq!(status, 201, "{body}");
    let a = addresses(&d, "a");
    let b = addresses(&d, "b");
    assert_eq!(a.len(), 1);
    assert!(a[0].0.starts_with("10.") && a[0].0.ends_with(".2"), "{a:?}");
    assert!(b[0].0.ends_with(".3"), "{b:?}");
    assert_ne!(a[0].1, b[0].1, "MACs differ");
    d.ok(&["restart", "a"]);
    d.ok(&["reset", "a"]);
    assert_eq!(addresses(&d, "a"), a, "kept across restart and reset");
    d.ok(&["clone", "a", "a2"]);
    let a2 = addresses(&d, "a2");
    assert_eq!(a2.len(), 1);
    assert!(a2[0].0 != a[0].0 && a2[0].1 != a[0].1, "{a2:?} {a:?}");
    let published = d.info("a2")["publish"].clone();
    assert!(
        published.is_null(),
        "a clone does not take the host port: {published}"
    );

    // Bad choices: clear errors, and no instance, no address taken.
    let cases = [
        (
            serde_json::json!({"networks": ["none", "default"]}),
            400,
            "cannot be combined",
        ),
        (
            serde_json::json!({"networks": ["Bad_Name"]}),
            400,
            "not a valid network name",
        ),
        (serde_json::json!({"networks": ["nosuch"]}), 404, "nosuch"),
        (
            serde_json::json!({"networks": (0..11).map(|i| format!("n{i}")).collect::<Vec<_>>()}),
            400,
            "at most 10",
        ),
        (
            serde_json::json!({"networks": ["none"], "publish": ["18091:80"]}),
            400,
            "need a network",
        ),
        (
            serde_json::json!({"publish": ["0.0.0.0:18090:81"]}),
            409,
            "instance `a`",
        ),
    ];
    for (extra, code, says) in cases {
        let (status, body) = create(&d, "bad", extra.clone());
        assert_eq!(status, code, "{extra}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{extra}: {body}");
        assert!(is_gone(&d, "bad"), "{extra}");
    }
    let (_, body) = create(&d, "bad", serde_json::json!({"networks": ["nosuch"]}));
    let hint = body["error"]["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("mayfly network create"), "{body}");
    // The next instance gets the first free address: the refusals took none.
    d.ok(&["rm", "--force", "b"]);
    let (status, body) = create(&d, "c", serde_json::json!({}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(addresses(&d, "c")[0].0, b[0].0, "b's address is free again");
    for n in ["a", "a2", "c"] {
        d.ok(&["rm", "--force", n]);
    }
    d.finish();
}

#[test]
fn a_renamed_instance_is_found_by_its_new_name_at_once_and_its_hostname_follows_at_its_next_start()
{
    let d = TestDaemon::start();
    launch(&d, "a", &[], Some(IDLE));
    launch(&d, "b", &[], Some(IDLE));
    let ip = addresses(&d, "a")[0].0.clone();
    let gw = d.json(&["network", "info", "default", "--json"])["gateway"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let resolves = |name: &str| {
        d.sh("b", &format!("nslookup {name} {gw} 2>&1 || true"))
            .contains(&ip)
    };
    assert!(resolves("a"));
    d.ok(&["rename", "a", "web"]);
    assert!(
        common::poll_until(Duration::from_secs(1), || resolves("web") && !resolves("a")),
        "the record did not follow the rename within a second"
    );
    // Refusals: a taken name, an invalid one; nothing changes.
    let out = d.fails(&["rename", "b", "web"]);
    assert!(out.stderr.contains("already exists"), "{out}");
    let out = d.fails(&["rename", "b", "Bad Name"]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(d.state_of("b").as_deref(), Some("running"));
    // The hostname inside follows at the next start; the address stays.
    assert_eq!(d.sh("web", "hostname").trim(), "a");
    d.ok(&["restart", "web"]);
    assert_eq!(d.sh("web", "hostname").trim(), "web");
    assert_eq!(addresses(&d, "web")[0].0, ip);
    d.ok(&["rm", "--force", "web", "b"]);
    d.finish();
}

/// The pids of the dnsmasq of network `net` of daemon `d`.
fn dnsmasq_pids(d: &TestDaemon, net: &str) -> Vec<String> {
    let conf = d.state.join("net").join(net).join("dnsmasq.conf");
    let mut cmd = Command::new("pgrep");
    cmd.args(["-f", &format!("conf-file={}", conf.display())]);
    run_command(cmd, None, CLI_TIMEOUT)
        .stdout
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn starts_at_once_on_a_network_whose_name_server_died_all_succeed_with_one_server() {
    let d = TestDaemon::start();
    d.ok(&["network", "create", "n4", "--subnet", "10.96.0.0/24"]);
    let names = ["s1", "s2", "s3", "s4"];
    for n in names {
        launch(&d, n, &["--network", "n4"], Some(IDLE));
        d.ok(&["stop", n]);
    }
    let pids = dnsmasq_pids(&d, "n4");
    assert_eq!(pids.len(), 1, "{pids:?}");
    let _ = Command::new("kill").args(["-9", &pids[0]]).status();
    assert!(common::poll_until(Duration::from_secs(5), || dnsmasq_pids(
        &d, "n4"
    )
    .is_empty()));
    // Every start finds the name server missing at once.
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            d.command(&["start", n])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (n, c) in names.iter().zip(children) {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "start {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(dnsmasq_pids(&d, "n4").len(), 1);
    let gw = "10.96.0.1";
    let answer = d.sh("s1", &format!("nslookup s4 {gw} 2>&1 || true"));
    assert!(answer.contains("Name:"), "{answer}");
    for n in names {
        d.ok(&["rm", "--force", n]);
    }
    d.finish();
}

#[test]
fn a_firewall_failure_at_start_up_does_not_keep_stale_names_from_going() {
    let mut d = TestDaemon::start();
    d.ok(&["network", "create", "n5", "--subnet", "10.95.0.0/24"]);
    launch(&d, "keep", &["--network", "n5"], Some(IDLE));
    d.stop_daemon();
    // A record left by a crash between an instance's removal and its name's.
    let stale = d.state.join("net/n5/hosts/0123456789abcdef");
    std::fs::write(&stale, "10.95.0.9 ghost ghost.mayfly\n").unwrap();
    d.set_env(&[("MAYFLY_FAIL_AT", "recover:firewall")]);
    d.restart();
    wait_state(&d, "keep", "running");
    assert!(
        common::poll_until(Duration::from_secs(5), || !stale.exists()),
        "a stale name stayed after a firewall failure at start-up"
    );
    d.stop_daemon();
    d.set_env(&[]);
    d.restart();
    d.ok(&["rm", "--force", "keep"]);
    d.finish();
}

#[test]
fn a_name_server_that_will_not_stop_does_not_keep_network_rm_from_removing_the_bridge() {
    let mut d = TestDaemon::start_with_env(&[], &[("MAYFLY_FAIL_AT", "network-down:dns")]);
    let info: serde_json::Value = serde_json::from_str(&d.ok(&[
        "network",
        "create",
        "n6",
        "--subnet",
        "10.94.0.0/24",
        "--json",
    ]))
    .unwrap_or_default();
    let bridge = d.json(&["network", "info", "n6", "--json"])["bridge"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(bridge.starts_with("mf-"), "{info}");
    let links = || in_daemon_netns(&d, &["ip", "-o", "link", "show"]);
    assert!(links().contains(&bridge));
    d.ok(&["network", "rm", "n6"]);
    assert!(
        !links().contains(&bridge),
        "the bridge of a removed network stayed:\n{}",
        links()
    );
    // The name server left running goes at the next start-up.
    d.stop_daemon();
    d.set_env(&[]);
    d.restart();
    assert!(common::poll_until(Duration::from_secs(5), || {
        dnsmasq_pids(&d, "n6").is_empty()
    }));
    d.finish();
}
