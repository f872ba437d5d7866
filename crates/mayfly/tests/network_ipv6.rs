//! IPv6 (issue 21, point 1: "and IPv6 ULA if you can do it cleanly"): every network gets a
//! random ULA /64 unless created with `--no-ipv6`; an instance's IPv6 address is the prefix
//! and its IPv4 address's 32 bits, kept with the IPv4 one; names resolve to AAAA too; IPv6
//! is masqueraded to the outside (NAT66), isolated between networks, and anti-spoofed like
//! IPv4. Each daemon runs in a namespace of the test's own; the "outside" has a ULA of its
//! own (fd00:c0:0:2::/64) and no route to the instances' prefixes, so an answer proves the
//! masquerade.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use common::netns::*;
use common::*;

const OUTSIDE_IP6: &str = "fd00:c0:0:2::2";
const UPLINK_IP6: &str = "fd00:c0:0:2::1";

/// Whether `from` can ping `target` (an IPv6 address or a name) over IPv6 (one echo, 2 s).
fn pings6(d: &TestDaemon, from: &str, target: &str) -> bool {
    d.mayfly(&[
        "exec", from, "--", "ping", "-6", "-c", "1", "-W", "2", target,
    ])
    .success()
}

/// The network's IPv6 prefix (`subnet6` without `/64`) and gateway.
fn prefix6(d: &TestDaemon, net: &str) -> (Ipv6Addr, Ipv6Addr) {
    let info = network_info(d, net);
    let subnet6 = info["subnet6"]
        .as_str()
        .unwrap_or_else(|| panic!("network {net} has no subnet6: {info}"));
    let (p, len) = subnet6.split_once('/').expect("subnet6 is a CIDR");
    assert_eq!(len, "64", "{info}");
    let p: Ipv6Addr = p.parse().expect("an IPv6 prefix");
    let gw: Ipv6Addr = info["gateway6"].as_str().unwrap().parse().unwrap();
    (p, gw)
}

/// What the address of `ipv4` must be under `prefix`: `prefix::` and its 32 bits.
fn derived(prefix: Ipv6Addr, ipv4: &str) -> Ipv6Addr {
    let v4: Ipv4Addr = ipv4.parse().unwrap();
    Ipv6Addr::from(u128::from(prefix) | u128::from(u32::from(v4)))
}

#[test]
fn instances_reach_each_other_over_ipv6_by_address_and_name_and_keep_their_addresses() {
    let d = TestDaemon::start();
    launch(&d, "a", &[], Some(IDLE));
    launch(&d, "b", &[], Some(IDLE));
    let (prefix, gw6) = prefix6(&d, "default");
    let seg = prefix.segments();
    assert_eq!(seg[0] >> 8, 0xfd, "a ULA (fd00::/8): {prefix}");
    assert_eq!(seg[3], 0, "subnet id 0: {prefix}");
    assert_eq!(&seg[4..], [0, 0, 0, 0], "a /64: {prefix}");
    assert_eq!(gw6, Ipv6Addr::from(u128::from(prefix) | 1));
    let (a, b) = (eth0(&d, "a"), eth0(&d, "b"));
    assert_eq!(
        a.ipv6.parse::<Ipv6Addr>().unwrap(),
        derived(prefix, &a.ipv4)
    );
    assert_eq!(
        b.ipv6.parse::<Ipv6Addr>().unwrap(),
        derived(prefix, &b.ipv4)
    );
    // `info` shows it; inside it is on eth0 with the link-local address, and nothing else
    // configures it (no RA, no autoconfiguration).
    let text = d.ok(&["info", "a"]);
    assert!(text.contains(&format!("ipv6 {}", a.ipv6)), "{text}");
    let inside = d.sh("a", "ip -o -6 addr show dev eth0");
    assert!(inside.contains(&format!("inet6 {}/64", a.ipv6)), "{inside}");
    assert!(inside.contains("inet6 fe80::"), "{inside}");
    assert_eq!(inside.lines().count(), 2, "{inside}");
    for key in ["accept_ra", "autoconf"] {
        let v = d.sh("a", &format!("cat /proc/sys/net/ipv6/conf/eth0/{key}"));
        assert_eq!(v.trim(), "0", "{key}");
    }
    let route = d.sh("a", "ip -6 route show default");
    assert!(route.contains(&format!("via {gw6} dev eth0")), "{route}");

    assert!(pings6(&d, "a", &b.ipv6), "a pings b's IPv6 address");
    assert!(
        pings6(&d, "b", &gw6.to_string()),
        "b pings the IPv6 gateway"
    );
    // By name: the AAAA record (ping -6 asks for it only).
    assert!(pings6(&d, "a", "b"), "a pings b by name over IPv6");
    assert!(pings6(&d, "b", "a.mayfly"), "b pings a.mayfly over IPv6");
    // The host asks the gateway's IPv6 address: two records per instance.
    let looked = in_ns(
        d.netns(),
        &["busybox", "nslookup", "-type=AAAA", "b", &gw6.to_string()],
    );
    assert!(
        looked.stdout.contains(&b.ipv6),
        "the name server on {gw6} answers b's AAAA: {looked}"
    );

    // Kept across a restart (derived from the kept IPv4 address).
    d.ok(&["restart", "b"]);
    assert_eq!(eth0(&d, "b"), b, "b keeps its addresses");
    let inside = d.sh("b", "ip -o -6 addr show dev eth0");
    assert!(inside.contains(&format!("inet6 {}/64", b.ipv6)), "{inside}");
    assert!(pings6(&d, "a", "b"), "a pings b by name after b's restart");
    d.ok(&["rm", "--force", "a", "b"]);
    d.finish();
}

#[test]
fn nat66_reaches_the_outside_and_networks_stay_apart_over_ipv6() {
    let d = TestDaemon::start();
    let mut out = Outside::new(&d);
    // The outside's own ULA, on the test's veth (no DAD: usable at once); it has no route
    // to any instance's prefix.
    in_ns_ok(
        d.netns(),
        &[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{UPLINK_IP6}/64"),
            "dev",
            UPLINK,
            "nodad",
        ],
    );
    in_ns_ok(
        &out.ns,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{OUTSIDE_IP6}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    );
    let www = d.dir.join("outside-www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "outside-v6").unwrap();
    let server = out.spawn(&[
        "busybox",
        "httpd",
        "-f",
        "-vv",
        "-p",
        &format!("[{OUTSIDE_IP6}]:80"),
        "-h",
        www.to_str().unwrap(),
    ]);
    let _ = server;
    let url = format!("http://[{OUTSIDE_IP6}]/");
    let ok = poll_until(Duration::from_secs(10), || {
        http_get_in_ns(&out.ns, &url).is_ok()
    });
    assert!(ok, "the outside's IPv6 web server does not answer");

    d.ok(&["network", "create", "red", "--subnet", "10.231.0.0/24"]);
    d.ok(&["network", "create", "blue", "--subnet", "10.232.0.0/24"]);
    launch(&d, "r1", &["--network", "red"], Some(IDLE));
    launch(&d, "r2", &["--network", "red"], Some(IDLE));
    launch(&d, "b1", &["--network", "blue"], Some(IDLE));
    let (r1, b1) = (eth0(&d, "r1"), eth0(&d, "b1"));
    let (red6, _) = prefix6(&d, "red");
    let (blue6, blue_gw6) = prefix6(&d, "blue");
    assert_ne!(red6, blue6, "each network has its own random prefix");

    let page = http_get_in(&d, "r1", &url).unwrap_or_else(|e| {
        panic!(
            "r1 cannot reach the outside over IPv6: {e}\n{}",
            nft_text(&d)
        )
    });
    assert_eq!(page.trim(), "outside-v6");
    // The answer came back although the outside has no route to red's prefix: it went to
    // the host's address (the masquerade).
    let routes = in_ns_ok(&out.ns, &["ip", "-6", "route", "show"]);
    assert!(
        !routes.contains("default") && !routes.contains(&red6.to_string()),
        "the outside must not route to the instances: {routes}"
    );
    // The control: on the same network, IPv6 works; across networks, not either way, and
    // not to the other network's gateway (its name server).
    assert!(pings6(&d, "r2", &r1.ipv6), "r2 pings r1 over IPv6");
    assert!(
        !pings6(&d, "b1", &r1.ipv6),
        "b1 (blue) must not reach r1 (red)"
    );
    assert!(
        !pings6(&d, "r1", &b1.ipv6),
        "r1 (red) must not reach b1 (blue)"
    );
    let asked = d.mayfly(&[
        "exec",
        "r1",
        "--",
        "timeout",
        "5",
        "nslookup",
        "b1",
        &blue_gw6.to_string(),
    ]);
    assert!(
        !asked.stdout.contains(&b1.ipv6) && !asked.stdout.contains(&b1.ipv4),
        "blue's name server answered red's r1 on its IPv6 address: {asked}"
    );
    d.ok(&["rm", "--force", "r1", "r2", "b1"]);
    d.ok(&["network", "rm", "red", "blue"]);
    out.close();
    d.finish();
}

#[test]
fn an_instance_cannot_send_from_another_ipv6_address() {
    let d = TestDaemon::start();
    install_usock(&d);
    launch(&d, "attacker", &[], Some(IDLE));
    launch(&d, "victim", &[], Some(IDLE));
    let att = eth0(&d, "attacker");
    let vic = eth0(&d, "victim");
    launch(
        &d,
        "observer",
        &[],
        Some(&format!(
            "usock sniff eth0 {} 300000 > /tmp/sniff 2>&1; exec sleep 3600",
            att.mac
        )),
    );
    let obs = eth0(&d, "observer");
    wait_until(Duration::from_secs(10), "the observer listens", || {
        let got = d.sh("observer", "cat /tmp/sniff 2>/dev/null || true");
        got.contains("listening") || got.contains("refused")
    });
    // Frames of distinct lengths (14 + 40 + 8 + the message), told apart by the observer.
    let forged = "forged-source";
    let honest = "honest-source-0123456789-abc";
    let link_local = "link-local-source-0123456789-abcdefghijk";
    let seen_len = |msg: &str| format!("type=86dd len={}\n", 62 + msg.len());
    let spoof6 = |src: &str, msg: &str| {
        let o = d.mayfly(&[
            "exec", "attacker", "--", "usock", "spoof6", "eth0", &obs.mac, &att.mac, src,
            &obs.ipv6, "9999", msg,
        ]);
        assert!(o.success(), "usock spoof6 from {src} could not send: {o}");
    };
    spoof6(&vic.ipv6, forged);
    spoof6("fd00:dead::1", forged);
    spoof6("fe80::1234", forged);
    spoof6(&link_local_of(&vic.mac).to_string(), forged);
    spoof6(&link_local_of(&att.mac).to_string(), link_local);
    // A router advertisement and a redirect from its own link-local address: 94 bytes,
    // no other frame's length.
    let own_ll = link_local_of(&att.mac).to_string();
    for ty in ["134", "137"] {
        let o = d.mayfly(&[
            "exec", "attacker", "--", "usock", "na6", "eth0", &obs.mac, &att.mac, &own_ll,
            &obs.ipv6, &own_ll, &att.mac, ty,
        ]);
        assert!(o.success(), "usock na6 type {ty}: {o}");
    }
    spoof6(&att.ipv6, honest);
    let arrived = poll_until(Duration::from_secs(5), || {
        d.sh("observer", "cat /tmp/sniff")
            .contains(&seen_len(honest))
    });
    assert!(
        arrived,
        "the honest datagram did not arrive: {}\n{}",
        d.sh("observer", "cat /tmp/sniff"),
        nft_text(&d)
    );
    std::thread::sleep(Duration::from_millis(300));
    let seen = d.sh("observer", "cat /tmp/sniff");
    assert!(
        !seen.contains(&seen_len(forged)),
        "a datagram from a forged IPv6 source crossed the bridge:\n{seen}\n{}",
        nft_text(&d)
    );
    assert!(
        !seen.contains("type=86dd len=94\n"),
        "a router advertisement or redirect crossed the bridge:\n{seen}\n{}",
        nft_text(&d)
    );
    assert!(
        seen.contains(&seen_len(link_local)),
        "its own link-local source passes (neighbour discovery needs it):\n{seen}"
    );
    d.finish();
}

/// The link-local address of the interface with MAC `mac` (EUI-64, as mayfly sets it up).
fn link_local_of(mac: &str) -> Ipv6Addr {
    let m: mayfly_net::Mac = mac.parse().expect("a MAC");
    mayfly_net::addr6::link_local(m.0)
}

/// Instance `name`'s IPv6 neighbour table (`ip -6 neigh` in its namespace, entered from
/// the daemon's).
fn neighbours6(d: &TestDaemon, name: &str) -> String {
    let net = format!("--net=/proc/{}/ns/net", d.pid_of(name));
    let out = in_daemon_ns(
        d,
        &["nsenter", &net, "ip", "-6", "neigh", "show", "dev", "eth0"],
    );
    assert!(out.success(), "ip -6 neigh in {name}: {out}");
    out.stdout
}

/// The MAC that `table` (from [`neighbours6`]) has for `ip`, if any.
fn lladdr_of(table: &str, ip: &str) -> Option<String> {
    table.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(ip))
            .then(|| w.skip_while(|x| *x != "lladdr").nth(1).map(str::to_owned))
            .flatten()
    })
}

/// ARP's sender checks have an IPv6 counterpart: an instance cannot advertise another's
/// address, global or link-local, to divert its neighbours' traffic; its own it can.
#[test]
fn an_instance_cannot_advertise_another_instances_ipv6_addresses() {
    let d = TestDaemon::start();
    install_usock(&d);
    for name in ["attacker", "victim", "peer"] {
        launch(&d, name, &[], Some(IDLE));
    }
    let att = eth0(&d, "attacker");
    let vic = eth0(&d, "victim");
    let peer = eth0(&d, "peer");
    let peer_ll = link_local_of(&peer.mac).to_string();
    // The victim knows the peer (both addresses) and the attacker.
    assert!(pings6(&d, "victim", &peer.ipv6));
    assert!(pings6(&d, "victim", &att.ipv6));
    let o = d.mayfly(&[
        "exec", "victim", "--", "ping", "-6", "-c", "1", "-W", "2", "-I", "eth0", &peer_ll,
    ]);
    assert!(
        o.success(),
        "the victim cannot ping the peer's link-local: {o}"
    );
    let before = neighbours6(&d, "victim");
    for ip in [&peer.ipv6, &peer_ll, &att.ipv6] {
        assert!(lladdr_of(&before, ip).is_some(), "{ip} unknown: {before}");
    }
    const FAKE: &str = "02:00:00:00:99:99";
    let advertise = |target: &str, at: &str| {
        let o = d.mayfly(&[
            "exec", "attacker", "--", "usock", "na6", "eth0", &vic.mac, &att.mac, &att.ipv6,
            &vic.ipv6, target, at,
        ]);
        assert!(o.success(), "usock na6 for {target}: {o}");
    };
    // Its own address at another MAC: the victim takes it (so the advertisements work).
    advertise(&att.ipv6, FAKE);
    let taken = poll_until(Duration::from_secs(5), || {
        lladdr_of(&neighbours6(&d, "victim"), &att.ipv6).as_deref() == Some(FAKE)
    });
    assert!(
        taken,
        "an advertisement of the own address did not arrive: {}",
        neighbours6(&d, "victim")
    );
    // The peer's addresses at the attacker's MAC: dropped at the bridge.
    advertise(&peer.ipv6, &att.mac);
    advertise(&peer_ll, &att.mac);
    std::thread::sleep(Duration::from_millis(500));
    let after = neighbours6(&d, "victim");
    for ip in [&peer.ipv6, &peer_ll] {
        assert_eq!(
            lladdr_of(&after, ip).as_deref(),
            Some(peer.mac.as_str()),
            "a forged advertisement diverted {ip}:\n{after}\n{}",
            nft_text(&d)
        );
    }
    d.finish();
}

#[test]
fn a_network_created_with_no_ipv6_has_none() {
    let d = TestDaemon::start();
    d.ok(&[
        "network",
        "create",
        "v4only",
        "--no-ipv6",
        "--subnet",
        "10.233.0.0/24",
    ]);
    let info = network_info(&d, "v4only");
    assert!(
        info.get("subnet6").is_none() && info.get("gateway6").is_none(),
        "{info}"
    );
    assert!(d.ok(&["network", "info", "v4only"]).contains("--no-ipv6"));
    launch(&d, "old", &["--network", "v4only"], Some(IDLE));
    let old = eth0(&d, "old");
    assert!(old.ipv6.is_empty(), "{old:?}");
    let v6 = d.sh("old", "ip -6 addr show dev eth0");
    assert!(v6.trim().is_empty(), "no IPv6 on eth0: {v6}");
    let disabled = d.sh("old", "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6");
    assert_eq!(disabled.trim(), "1");
    let bridge = info["bridge"].as_str().unwrap();
    let on_bridge = in_ns_ok(d.netns(), &["ip", "-6", "addr", "show", "dev", bridge]);
    assert!(
        on_bridge.trim().is_empty(),
        "no IPv6 on the bridge: {on_bridge}"
    );
    // The API's default is IPv6 on; `ipv6: false` is what --no-ipv6 sends.
    let (status, body) = d.api(
        "POST",
        "/v1/networks",
        Some(&serde_json::json!({"name": "apinet", "subnet": "10.234.0.0/24"})),
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        body["subnet6"]
            .as_str()
            .is_some_and(|s| s.starts_with("fd")),
        "{body}"
    );
    d.ok(&["rm", "--force", "old"]);
    d.ok(&["network", "rm", "v4only", "apinet"]);
    d.finish();
}
