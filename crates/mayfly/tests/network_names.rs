//! Names (issue 21, point 2): instances resolve each other by name (`NAME` and
//! `NAME.mayfly`) through their network's dnsmasq, updated within a second of a start, stop,
//! restart, reset or rename; other names are forwarded upstream (here to a name server in
//! the test's "outside" namespace, never to the machine's resolvers); resolution keeps
//! working while the daemon is stopped or killed; the host resolves names by asking the
//! gateway.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::netns::*;
use common::*;

/// How long a name change may take to show: the second, plus what one busybox
/// nslookup and the polling cost.
const NAME_DELAY: Duration = Duration::from_millis(1500);

fn ip(s: &str) -> Ipv4Addr {
    s.parse()
        .unwrap_or_else(|_| panic!("`{s}` is no IPv4 address"))
}

/// Waits (at most [`NAME_DELAY`] from `since`) until `name` resolves on `gw` to exactly
/// `want` (`None`: does not resolve); fails the test saying `after` what.
fn expect_name(d: &TestDaemon, gw: &str, name: &str, want: Option<&str>, after: &str) {
    let since = Instant::now();
    let want: Vec<Ipv4Addr> = want.map(ip).into_iter().collect();
    let mut last = Vec::new();
    let ok = poll_until(NAME_DELAY, || {
        last = resolve(d.netns(), name, gw);
        last == want
    });
    assert!(
        ok,
        "{after}: `{name}` on {gw} should answer {want:?} within {NAME_DELAY:?}, \
         answered {last:?} after {:?}\n{}",
        since.elapsed(),
        d.logs()
    );
}

#[test]
fn names_follow_starts_stops_restarts_resets_and_renames_within_a_second() {
    let d = TestDaemon::start();
    launch(
        &d,
        "web",
        &[],
        Some("mkdir -p /www && echo by-name > /www/index.html && exec httpd -f -p 80 -h /www"),
    );
    launch(&d, "cli", &[], Some(IDLE));
    let gw = gateway(&d, "default");
    let web = eth0(&d, "web").ipv4;

    expect_name(&d, &gw, "web", Some(&web), "after launch");
    expect_name(&d, &gw, "web.mayfly", Some(&web), "after launch (FQDN)");
    expect_name(&d, &gw, "nosuch", None, "a name nobody has");

    // Inside: the instance's resolver, ping and wget by name.
    let looked = d.sh("cli", "nslookup web");
    assert_eq!(
        nslookup_addresses(&looked),
        vec![ip(&web)],
        "cli resolves web through its resolv.conf: {looked}"
    );
    d.sh("cli", "ping -c 1 -W 2 web");
    let page = http_get_in(&d, "cli", "http://web/")
        .unwrap_or_else(|e| panic!("wget http://web/ from cli failed: {e}"));
    assert_eq!(page.trim(), "by-name");
    let page = http_get_in(&d, "cli", "http://web.mayfly/")
        .unwrap_or_else(|e| panic!("wget http://web.mayfly/ from cli failed: {e}"));
    assert_eq!(page.trim(), "by-name");

    d.ok(&["stop", "web"]);
    expect_name(&d, &gw, "web", None, "after stop");
    d.ok(&["start", "web"]);
    expect_name(&d, &gw, "web", Some(&web), "after start");
    d.ok(&["restart", "web"]);
    expect_name(&d, &gw, "web", Some(&web), "after restart");
    d.ok(&["reset", "web"]);
    expect_name(&d, &gw, "web", Some(&web), "after reset");

    d.ok(&["rename", "web", "www"]);
    expect_name(&d, &gw, "web", None, "after rename (old name)");
    expect_name(&d, &gw, "www", Some(&web), "after rename (new name)");
    expect_name(&d, &gw, "www.mayfly", Some(&web), "after rename (new FQDN)");
    assert_eq!(
        d.state_of("www").as_deref(),
        Some("running"),
        "a rename keeps the instance running"
    );
    let page = http_get_in(&d, "cli", "http://www/")
        .unwrap_or_else(|e| panic!("wget http://www/ after the rename failed: {e}"));
    assert_eq!(page.trim(), "by-name");

    // A stopped instance's rename: no record until it starts, under the new name.
    d.ok(&["stop", "www"]);
    expect_name(&d, &gw, "www", None, "after stop of the renamed one");
    d.ok(&["rename", "www", "web3"]);
    expect_name(&d, &gw, "web3", None, "a stopped instance's new name");
    d.ok(&["start", "web3"]);
    expect_name(
        &d,
        &gw,
        "web3",
        Some(&web),
        "after start under the new name",
    );
    assert!(
        d.sh("web3", "cat /etc/hosts").contains("web3"),
        "/etc/hosts carries the new name at the next start"
    );

    // Removal: gone.
    d.ok(&["rm", "--force", "web3"]);
    expect_name(&d, &gw, "web3", None, "after rm");
    d.finish();
}

#[test]
fn instance_records_have_a_ttl_of_at_most_one_second() {
    let d = TestDaemon::start();
    install_usock(&d);
    let usock = usock_on_host(&d);
    launch(&d, "web", &[], Some(IDLE));
    let gw = gateway(&d, "default");
    let web = eth0(&d, "web").ipv4;
    for name in ["web", "web.mayfly"] {
        let out = in_daemon_ns(&d, &[&usock, "dns-ttl", &gw, name]);
        assert!(out.success(), "no answer for {name} on {gw}: {out}");
        let (ttl, addr) = out
            .stdout
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix("ttl=")?;
                let (ttl, addr) = rest.split_once(" addr=")?;
                Some((ttl.parse::<u32>().ok()?, addr.to_owned()))
            })
            .unwrap_or_else(|| panic!("no A record in {out}"));
        assert_eq!(addr, web, "{name} answers web's address");
        assert!(
            ttl <= 1,
            "{name}'s record has a TTL of {ttl} s: caches would keep a stale name longer than a second"
        );
    }
    d.finish();
}

#[test]
fn rename_refuses_a_taken_name_and_keeps_the_old_record() {
    let d = TestDaemon::start();
    launch(&d, "one", &[], Some(IDLE));
    launch(&d, "two", &[], Some(IDLE));
    let gw = gateway(&d, "default");
    let one = eth0(&d, "one").ipv4;
    let out = d.fails(&["rename", "one", "two"]);
    assert_refused_with(&out, &["two"]);
    let out = d.fails(&["rename", "one", "Not_A_Label"]);
    assert_refused_with(&out, &["Not_A_Label"]);
    expect_name(&d, &gw, "one", Some(&one), "after refused renames");
    d.finish();
}

#[test]
fn other_names_are_forwarded_to_the_networks_upstream() {
    let d = TestDaemon::start();
    let mut out = Outside::new(&d);
    out.serve_dns(
        &d.dir.join("outside-dns"),
        "service.outside.test",
        "192.0.2.77",
    );
    d.ok(&[
        "network",
        "create",
        "up",
        "--subnet",
        "10.203.0.0/24",
        "--dns-upstream",
        OUTSIDE_IP,
    ]);
    let info = network_info(&d, "up");
    assert_eq!(
        info["dns_upstream"],
        serde_json::json!([OUTSIDE_IP]),
        "network info shows the upstream: {info}"
    );
    launch(&d, "cli", &["--network", "up"], Some(IDLE));
    launch(&d, "peer", &["--network", "up"], Some(IDLE));
    let looked = d.sh("cli", "nslookup -type=a service.outside.test");
    assert_eq!(
        nslookup_addresses(&looked),
        vec![ip("192.0.2.77")],
        "an outside name is answered by the upstream through the network's dnsmasq: {looked}"
    );
    // And instance names are still answered locally, not forwarded.
    let looked = d.sh("cli", "nslookup -type=a peer");
    assert_eq!(
        nslookup_addresses(&looked),
        vec![ip(&eth0(&d, "peer").ipv4)],
        "instance names are answered by the network's dnsmasq: {looked}"
    );
    // The host, asking the gateway, gets the same.
    assert_eq!(
        resolve(d.netns(), "service.outside.test", "10.203.0.1"),
        vec![ip("192.0.2.77")],
        "the gateway forwards the host's queries too"
    );
    d.ok(&["rm", "--force", "cli", "peer"]);
    d.ok(&["network", "rm", "up"]);
    out.close();
    d.finish();
}

#[test]
fn names_are_answered_while_the_daemon_is_stopped_or_killed() {
    let mut d = TestDaemon::start();
    launch(&d, "web", &[], Some(IDLE));
    launch(&d, "cli", &[], Some(IDLE));
    let gw = gateway(&d, "default");
    let web = eth0(&d, "web").ipv4;
    expect_name(&d, &gw, "web", Some(&web), "before the daemon stops");
    let servers = dnsmasqs(&d);
    assert_eq!(
        servers.len(),
        1,
        "one dnsmasq for the default network: {servers:?}"
    );

    let pid = d.pid_of("cli");
    d.stop_daemon();
    expect_name(&d, &gw, "web", Some(&web), "while the daemon is stopped");
    // The host's nslookup in the instance's network namespace, asking its name server (the
    // host's /etc/resolv.conf is not the instance's: name the server).
    let inside = in_instance_netns(
        pid,
        &[
            "busybox", "timeout", "5", "busybox", "nslookup", "-type=a", "web", &gw,
        ],
    );
    assert_eq!(
        nslookup_addresses(&inside.stdout),
        vec![ip(&web)],
        "an instance resolves a peer while the daemon is stopped: {inside}"
    );
    d.restart();
    assert_eq!(
        dnsmasqs(&d),
        servers,
        "the restarted daemon adopts the running dnsmasq (same pid, no second one)"
    );
    expect_name(&d, &gw, "web", Some(&web), "after the daemon's restart");

    d.kill_daemon();
    expect_name(&d, &gw, "web", Some(&web), "after kill -9 of the daemon");
    d.restart();
    assert_eq!(
        dnsmasqs(&d),
        servers,
        "after kill -9, the daemon adopts the running dnsmasq"
    );
    // And the records follow changes again.
    d.ok(&["stop", "web"]);
    expect_name(&d, &gw, "web", None, "a stop after the daemon's restart");
    d.finish();
}

/// Runs `args` (host binaries) in the network namespace of process `pid`.
fn in_instance_netns(pid: i32, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("--")
        .args(args);
    run_command(cmd, None, NS_TIMEOUT)
}

#[test]
fn the_host_resolves_instance_names_by_asking_the_gateway() {
    let d = TestDaemon::start();
    d.ok(&["network", "create", "lab", "--subnet", "10.204.0.0/24"]);
    launch(&d, "db", &["--network", "lab"], Some(IDLE));
    let db = eth0(&d, "db").ipv4;
    assert_eq!(
        gateway(&d, "lab"),
        "10.204.0.1",
        "the gateway is the first address"
    );
    // What docs/networks.md tells users: `nslookup db 10.204.0.1`.
    assert_eq!(resolve(d.netns(), "db", "10.204.0.1"), vec![ip(&db)]);
    assert_eq!(resolve(d.netns(), "db.mayfly", "10.204.0.1"), vec![ip(&db)]);
    // A name of another network is not answered here.
    launch(&d, "elsewhere", &[], Some(IDLE));
    assert!(
        resolve(d.netns(), "elsewhere", "10.204.0.1").is_empty(),
        "lab's dnsmasq does not answer for an instance of the default network"
    );
    d.finish();
}
