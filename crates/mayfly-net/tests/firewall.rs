//! mayfly's nftables tables, for real, in a network namespace of the test's own.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Container, iface, isolate, plan};
use mayfly_net::{FirewallState, Forward, Proto, addr6, firewall, link};

fn tables() -> String {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?}");
}

#[test]
fn tables_are_applied_replaced_and_removed_leaving_others_alone() {
    isolate();
    sh(&["nft", "add", "table", "inet", "other"]);
    let mut p = plan("a", "mf-aaaaaaaaaaaa", "10.77.0.0/24", false);
    p.nat = true;
    let mut state = FirewallState {
        networks: vec![p.clone()],
        ..Default::default()
    };
    firewall::apply(&state).unwrap();
    let t = tables();
    assert!(
        t.contains("table inet mayfly") && t.contains("table bridge mayfly"),
        "{t}"
    );
    let ruleset = String::from_utf8_lossy(
        &Command::new("nft")
            .args(["list", "table", "inet", "mayfly"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        ruleset.contains("ip saddr 10.77.0.0/24 oifname != \"mf-*\" masquerade"),
        "{ruleset}"
    );

    // Replaced whole: the old network's rule is gone.
    state.networks[0].subnet = "10.88.0.0/24".parse().unwrap();
    firewall::apply(&state).unwrap();
    let ruleset = String::from_utf8_lossy(
        &Command::new("nft")
            .args(["list", "table", "inet", "mayfly"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !ruleset.contains("10.77.0.0") && ruleset.contains("10.88.0.0/24"),
        "{ruleset}"
    );

    firewall::apply(&FirewallState::default()).unwrap();
    assert_eq!(tables().trim(), "table inet other");
    firewall::apply(&state).unwrap();
    firewall::remove().unwrap();
    firewall::remove().unwrap();
    assert_eq!(tables().trim(), "table inet other");
}

#[test]
fn a_refused_batch_says_why_and_changes_nothing() {
    isolate();
    let p = plan("a", "mf-aaaaaaaaaaaa", "10.77.0.0/24", false);
    let state = FirewallState {
        networks: vec![p],
        ..Default::default()
    };
    firewall::apply(&state).unwrap();
    let before = String::from_utf8_lossy(
        &Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    // An interface name too long for nftables' ifname type.
    let mut bad = state.clone();
    bad.networks[0].bridge = "x".repeat(40);
    let e = firewall::apply(&bad).unwrap_err().to_string();
    assert!(
        e.contains("nft -j -f -") && e.contains("apply mayfly's firewall"),
        "{e}"
    );
    let after = String::from_utf8_lossy(
        &Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert_eq!(before, after);
}

#[test]
fn ports_in_use_are_seen() {
    isolate();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    assert!(firewall::port_in_use(Ipv4Addr::LOCALHOST, port, Proto::Tcp));
    assert!(firewall::port_in_use(
        Ipv4Addr::UNSPECIFIED,
        port,
        Proto::Tcp
    ));
    drop(l);
    assert!(!firewall::port_in_use(
        Ipv4Addr::LOCALHOST,
        port,
        Proto::Tcp
    ));
    let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = u.local_addr().unwrap().port();
    assert!(firewall::port_in_use(Ipv4Addr::LOCALHOST, port, Proto::Udp));
    assert!(!firewall::port_in_use(Ipv4Addr::LOCALHOST, port, Proto::Tcp) || port == 0);
}

#[test]
fn spoofed_addresses_and_macs_are_dropped_and_unknown_ports_pass_nothing() {
    isolate();
    let p = plan("lan", "mf-000000000001", "10.77.0.0/24", false);
    link::ensure_bridge(&p).unwrap();
    let (a, b, c) = (Container::new(), Container::new(), Container::new());
    let (ia, ib, ic) = (iface(&p, 0, 0), iface(&p, 1, 0), iface(&p, 2, 0));
    link::attach(a.netns().as_fd(), &ia).unwrap();
    link::attach(b.netns().as_fd(), &ib).unwrap();
    link::attach(c.netns().as_fd(), &ic).unwrap();
    let spoof = |ip: &str| {
        assert!(
            a.run(&["ip", "addr", "flush", "dev", "eth0"])
                .status
                .success()
        );
        assert!(
            a.run(&["ip", "addr", "add", ip, "dev", "eth0"])
                .status
                .success()
        );
    };
    // Without the firewall, a stolen address works (so the test below can fail).
    spoof("10.77.0.50/24");
    assert!(a.pings(ib.ipv4), "spoofing fails even without the firewall");
    let state = FirewallState {
        networks: vec![p.clone()],
        interfaces: vec![ia.clone(), ib.clone()],
        forwards: vec![],
        rates: Default::default(),
    };
    firewall::apply(&state).unwrap();
    assert!(!a.pings(ib.ipv4), "a spoofed address got through");
    spoof(&format!("{}/24", ia.ipv4));
    assert!(a.pings_soon(ib.ipv4), "the own address is refused");
    // Another MAC on the own address.
    assert!(
        a.run(&["ip", "link", "set", "eth0", "address", "02:11:22:33:44:55"])
            .status
            .success()
    );
    assert!(!a.pings(ib.ipv4), "a spoofed MAC got through");
    assert!(
        a.run(&["ip", "link", "set", "eth0", "address", &ia.mac.to_string()])
            .status
            .success()
    );
    assert!(a.pings(ib.ipv4));
    // An instance port the state does not know passes nothing.
    assert!(!c.pings(p.gateway), "an unknown port passed traffic");
    firewall::remove().unwrap();
    assert!(c.pings_soon(p.gateway));
}

/// A namespace joined to the test's by a veth: 10.200.0.1 on the test's side, 10.200.0.2 on
/// its own, and no route back to the instances' subnets.
fn outside() -> Container {
    let o = Container::new();
    sh(&[
        "ip",
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &o.ns_path(),
    ]);
    sh(&["ip", "addr", "add", "10.200.0.1/24", "dev", "up0"]);
    sh(&["ip", "link", "set", "up0", "up"]);
    assert!(
        o.run(&["ip", "addr", "add", "10.200.0.2/24", "dev", "eth0"])
            .status
            .success()
    );
    assert!(o.run(&["ip", "link", "set", "eth0", "up"]).status.success());
    assert!(o.run(&["ip", "link", "set", "lo", "up"]).status.success());
    o
}

#[test]
fn instances_of_an_isolated_network_cannot_route_to_each_other_through_the_host() {
    isolate();
    let p = plan("iso", "mf-000000000001", "10.77.0.0/24", true);
    link::ensure_bridge(&p).unwrap();
    let (a, b) = (Container::new(), Container::new());
    let (ia, ib) = (iface(&p, 0, 0), iface(&p, 1, 0));
    link::attach(a.netns().as_fd(), &ia).unwrap();
    link::attach(b.netns().as_fd(), &ib).unwrap();
    for (c, other) in [(&a, &ib), (&b, &ia)] {
        let to = format!("{}/32", other.ipv4);
        let via = p.gateway.to_string();
        assert!(
            c.run(&["ip", "route", "add", &to, "via", &via])
                .status
                .success()
        );
    }
    assert!(
        a.pings(ib.ipv4),
        "routing through the host does not work to begin with"
    );
    let state = FirewallState {
        networks: vec![p.clone()],
        interfaces: vec![ia.clone(), ib.clone()],
        forwards: vec![],
        rates: Default::default(),
    };
    firewall::apply(&state).unwrap();
    assert!(
        !a.pings(ib.ipv4),
        "isolated instances reached each other through the host"
    );
    assert!(a.pings(p.gateway));
    firewall::remove().unwrap();
}

#[test]
fn networks_cannot_reach_each_other_and_nat_reaches_the_outside() {
    isolate();
    let mut p = plan("one", "mf-000000000001", "10.77.0.0/24", false);
    p.nat = true;
    let q = plan("two", "mf-000000000002", "10.78.0.0/24", false);
    link::ensure_bridge(&p).unwrap();
    link::ensure_bridge(&q).unwrap();
    let (a, b) = (Container::new(), Container::new());
    let (ia, ib) = (iface(&p, 0, 0), iface(&q, 0, 0));
    link::attach(a.netns().as_fd(), &ia).unwrap();
    link::attach(b.netns().as_fd(), &ib).unwrap();
    let o = outside();
    assert!(
        a.pings(q.gateway),
        "another gateway is unreachable to begin with"
    );
    // Routed by the host, without the firewall.
    assert!(
        a.pings(ib.ipv4),
        "routing between networks does not work to begin with"
    );
    assert!(
        !a.pings(Ipv4Addr::new(10, 200, 0, 2)),
        "the outside answered without NAT"
    );
    let state = FirewallState {
        networks: vec![p.clone(), q.clone()],
        interfaces: vec![ia.clone(), ib.clone()],
        forwards: vec![],
        rates: Default::default(),
    };
    firewall::apply(&state).unwrap();
    assert!(!a.pings(ib.ipv4), "network one reached network two");
    assert!(!b.pings(ia.ipv4), "network two reached network one");
    assert!(a.pings(p.gateway) && b.pings(q.gateway));
    // Nor another network's gateway (its name server knows that network's instances).
    assert!(
        !a.pings(q.gateway),
        "network one reached network two's gateway"
    );
    assert!(
        !b.pings(p.gateway),
        "network two reached network one's gateway"
    );
    assert!(
        a.pings(Ipv4Addr::new(10, 200, 0, 2)),
        "NAT does not reach the outside"
    );
    assert!(
        !b.pings(Ipv4Addr::new(10, 200, 0, 2)),
        "a network without NAT got out masqueraded"
    );
    drop(o);
    firewall::remove().unwrap();
}

fn serve(c: &Container, port: &str, text: &str) -> Child {
    Command::new("nsenter")
        .arg(format!("--net={}", c.ns_path()))
        .args(["busybox", "nc", "-ll", "-p", port, "-e", "echo", text])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn fetch(ns: Option<&Container>, ip: &str, port: &str) -> String {
    let mut cmd = Command::new("timeout");
    cmd.arg("5");
    if let Some(c) = ns {
        cmd.arg("nsenter").arg(format!("--net={}", c.ns_path()));
    }
    let out = cmd
        .args(["busybox", "nc", "-w", "2", ip, port])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn published_ports_answer_on_localhost_and_from_outside() {
    isolate();
    let p = plan("web", "mf-000000000001", "10.77.0.0/24", false);
    link::ensure_bridge(&p).unwrap();
    let a = Container::new();
    let ia = iface(&p, 0, 0);
    link::attach(a.netns().as_fd(), &ia).unwrap();
    let mut server = serve(&a, "80", "hello");
    let o = outside();
    let state = FirewallState {
        networks: vec![p.clone()],
        interfaces: vec![ia.clone()],
        forwards: vec![
            Forward {
                proto: Proto::Tcp,
                host_ip: Ipv4Addr::LOCALHOST,
                host_port: 8080,
                ipv4: ia.ipv4,
                port: 80,
            },
            Forward {
                proto: Proto::Tcp,
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 8081,
                ipv4: ia.ipv4,
                port: 80,
            },
            // An address that is not the host's (the outside's).
            Forward {
                proto: Proto::Tcp,
                host_ip: Ipv4Addr::new(10, 200, 0, 2),
                host_port: 81,
                ipv4: ia.ipv4,
                port: 80,
            },
        ],
        rates: Default::default(),
    };
    assert!(
        eventually(|| fetch(None, &ia.ipv4.to_string(), "80") == "hello"),
        "the server does not answer"
    );
    assert_eq!(
        fetch(None, "127.0.0.1", "8080"),
        "",
        "answered before publishing"
    );
    firewall::apply(&state).unwrap();
    assert_eq!(fetch(None, "127.0.0.1", "8080"), "hello");
    assert_eq!(fetch(None, "127.0.0.1", "8081"), "hello");
    assert_eq!(
        fetch(Some(&o), "10.200.0.1", "8081"),
        "hello",
        "0.0.0.0 is not reachable from outside"
    );
    assert_eq!(
        fetch(Some(&o), "10.200.0.1", "8080"),
        "",
        "a 127.0.0.1 port answered outside"
    );
    // A machine of the outside that routes the subnet to the host reaches only what is
    // published, but the instance's own connections out get their answers.
    assert!(
        o.run(&["ip", "route", "add", "10.77.0.0/24", "via", "10.200.0.1"])
            .status
            .success()
    );
    assert_eq!(
        fetch(Some(&o), &ia.ipv4.to_string(), "80"),
        "",
        "the outside reached an unpublished port of an instance"
    );
    assert!(
        !o.pings(p.gateway),
        "the outside reached the gateway's address (its name server)"
    );
    let mut outside_server = serve(&o, "81", "out");
    assert!(
        eventually(|| fetch(Some(&a), "10.200.0.2", "81") == "out"),
        "an instance's own connection to the outside got no answer"
    );
    assert_eq!(
        fetch(None, "10.200.0.2", "81"),
        "out",
        "a forward from an address that is not the host's took over the host's connections"
    );
    let _ = outside_server.kill();
    let _ = outside_server.wait();
    // A neighbour on the same bridge (hairpin), and an instance of another network.
    let (b, c) = (Container::new(), Container::new());
    let ib = iface(&p, 1, 0);
    link::attach(b.netns().as_fd(), &ib).unwrap();
    let q = plan("other", "mf-000000000002", "10.78.0.0/24", false);
    link::ensure_bridge(&q).unwrap();
    let ic = iface(&q, 0, 0);
    link::attach(c.netns().as_fd(), &ic).unwrap();
    let mut state = state;
    state.networks.push(q.clone());
    state.interfaces.extend([ib, ic]);
    firewall::apply(&state).unwrap();
    assert_eq!(
        fetch(Some(&b), &p.gateway.to_string(), "8081"),
        "hello",
        "hairpin"
    );
    assert_eq!(
        fetch(Some(&c), &q.gateway.to_string(), "8081"),
        "hello",
        "from another network"
    );
    assert_eq!(
        fetch(Some(&c), &ia.ipv4.to_string(), "80"),
        "",
        "another network reached the instance"
    );
    firewall::remove().unwrap();
    assert_eq!(fetch(None, "127.0.0.1", "8080"), "");
    let _ = server.kill();
    let _ = server.wait();
}

/// The elements of the bridge table's set `name`, as `nft` lists them.
fn set_elements(name: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "set", "bridge", "mayfly", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_start_or_an_end_changes_only_set_elements_and_a_changed_table_is_replaced_whole() {
    isolate();
    let p = plan("a", "mf-aaaaaaaaaaab", "10.78.0.0/24", false);
    let a = iface(&p, 0, 0);
    let b = iface(&p, 1, 0);
    let only_a = FirewallState {
        networks: vec![p.clone()],
        interfaces: vec![a.clone()],
        ..Default::default()
    };
    let both = FirewallState {
        interfaces: vec![a.clone(), b.clone()],
        ..only_a.clone()
    };
    let only_b = FirewallState {
        interfaces: vec![b.clone()],
        ..only_a.clone()
    };
    firewall::apply_change(None, &only_a).unwrap();
    let chain_before = String::from_utf8_lossy(
        &Command::new("nft")
            .args(["-a", "list", "chain", "bridge", "mayfly", "ports"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();

    // A start: b's elements are added; the chain (its rules' handles) stays as it was.
    firewall::apply_change(Some(&only_a), &both).unwrap();
    let addrs = set_elements("addrs");
    assert!(
        addrs.contains(&a.host_name) && addrs.contains(&b.host_name),
        "{addrs}"
    );
    assert!(set_elements("macs").contains(&b.mac.to_string()));
    let addrs6 = set_elements("addrs6");
    assert!(
        addrs6.contains(&b.ipv6.unwrap().to_string()),
        "the IPv6 sets change too: {addrs6}"
    );
    assert!(set_elements("ports6").contains(&b.host_name));
    let nd6 = set_elements("nd6");
    let ll_b = format!("0x{:032x}", u128::from(addr6::link_local(b.mac.0)));
    let ula_b = format!("0x{:032x}", u128::from(b.ipv6.unwrap()));
    assert!(
        nd6.contains(&ll_b) && nd6.contains(&ula_b),
        "the advertisement targets change too: {nd6}"
    );
    let chain_after = String::from_utf8_lossy(
        &Command::new("nft")
            .args(["-a", "list", "chain", "bridge", "mayfly", "ports"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert_eq!(chain_before, chain_after, "the tables were replaced");

    // An end: a's elements go.
    firewall::apply_change(Some(&both), &only_b).unwrap();
    let addrs = set_elements("addrs");
    assert!(
        !addrs.contains(&a.host_name) && addrs.contains(&b.host_name),
        "{addrs}"
    );
    let nd6 = set_elements("nd6");
    assert!(
        !nd6.contains(&a.host_name) && nd6.contains(&b.host_name),
        "{nd6}"
    );

    // Someone emptied the set behind our back: the change cannot delete b's element, so
    // the tables are replaced whole and end up as asked.
    sh(&["nft", "flush", "set", "bridge", "mayfly", "addrs"]);
    firewall::apply_change(Some(&only_b), &only_a).unwrap();
    let addrs = set_elements("addrs");
    assert!(
        addrs.contains(&a.host_name) && !addrs.contains(&b.host_name),
        "{addrs}"
    );
    firewall::remove().unwrap();
}

/// `route_localnet` is on for the bridges: an instance sending to 127.0.0.1 through its
/// gateway (any tenant can, with a packet socket; here the container simply routes 127/8
/// there) must not reach the host's loopback-only services.
#[test]
fn instances_cannot_reach_the_hosts_loopback_services() {
    isolate();
    let p = plan("lo", "mf-000000000001", "10.77.0.0/24", false);
    link::ensure_bridge(&p).unwrap();
    let a = Container::new();
    let ia = iface(&p, 0, 0);
    link::attach(a.netns().as_fd(), &ia).unwrap();
    // The host's loopback-only service.
    let listener = TcpListener::bind("127.0.0.1:9999").unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut conn, b"secret\n");
        }
    });
    for args in [
        vec!["ip", "addr", "del", "127.0.0.1/8", "dev", "lo"],
        vec!["ip", "route", "flush", "table", "local", "127.0.0.0/8"],
        vec!["sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"],
        vec![
            "ip",
            "route",
            "add",
            "127.0.0.0/8",
            "via",
            "10.77.0.1",
            "dev",
            "eth0",
        ],
    ] {
        let out = a.run(&args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    // Without mayfly's tables the hole is there (so that the test can fail).
    assert!(
        eventually(|| fetch(Some(&a), "127.0.0.1", "9999") == "secret"),
        "the instance cannot reach 127.0.0.1 even without the firewall"
    );
    let state = FirewallState {
        networks: vec![p.clone()],
        interfaces: vec![ia.clone()],
        forwards: vec![Forward {
            proto: Proto::Tcp,
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 8080,
            ipv4: ia.ipv4,
            port: 80,
        }],
        rates: Default::default(),
    };
    firewall::apply(&state).unwrap();
    assert_eq!(
        fetch(Some(&a), "127.0.0.1", "9999"),
        "",
        "an instance reached a loopback-only service of the host"
    );
    // The host's own 127.0.0.1 published port still works.
    let mut web = serve(&a, "80", "hello");
    assert!(eventually(|| fetch(None, "127.0.0.1", "8080") == "hello"));
    firewall::remove().unwrap();
    let _ = web.kill();
    let _ = web.wait();
}

/// An `nft` that never reads its batch (hung) is killed at the deadline, even when the batch
/// is larger than a pipe holds. Run as a child process of this test binary, whose `PATH`
/// finds a fake `nft` first.
#[test]
fn a_hung_nft_with_a_large_batch_is_killed_at_the_deadline() {
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("nft");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 60\n").unwrap();
    sh(&["chmod", "755", &fake.display().to_string()]);
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let start = Instant::now();
    let out = Command::new("timeout")
        .arg("40")
        .arg(std::env::current_exe().unwrap())
        .args(["hung_nft_child", "--exact", "--ignored", "--nocapture"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

/// The child of [`a_hung_nft_with_a_large_batch_is_killed_at_the_deadline`].
#[test]
#[ignore = "run by a_hung_nft_with_a_large_batch_is_killed_at_the_deadline"]
fn hung_nft_child() {
    isolate();
    let p = plan("big", "mf-000000000001", "10.0.0.0/16", false);
    let state = FirewallState {
        networks: vec![p.clone()],
        interfaces: (1..3000).map(|n| iface(&p, n, 0)).collect(),
        forwards: vec![],
        rates: Default::default(),
    };
    let err = firewall::apply(&state).unwrap_err().to_string();
    assert!(err.contains("did not finish"), "{err}");
}
