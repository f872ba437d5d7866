//! Isolation and firewall (issue 21, point 3): instances on different networks cannot reach
//! each other; on an `--isolated` network they reach only the gateway (and published
//! services); an instance cannot spoof another's address or MAC (tenants keep CAP_NET_RAW,
//! docs/security.md, so they can forge frames with a packet socket: the bridge table must
//! drop them, and every ethertype but IPv4, ARP and IPv6); mayfly's rules live in its two tables and never touch another table.

mod common;

use std::time::Duration;

use common::netns::*;
use common::*;

fn httpd_init(page: &str) -> String {
    format!("mkdir -p /www && echo {page} > /www/index.html && exec httpd -f -p 80 -h /www")
}

/// Whether `from` can ping `ip` (one echo, 1 s).
fn pings(d: &TestDaemon, from: &str, ip: &str) -> bool {
    d.mayfly(&["exec", from, "--", "ping", "-c", "1", "-W", "1", ip])
        .success()
}

#[test]
fn instances_on_different_networks_cannot_reach_each_other() {
    let d = TestDaemon::start();
    d.ok(&["network", "create", "red", "--subnet", "10.211.0.0/24"]);
    d.ok(&["network", "create", "blue", "--subnet", "10.212.0.0/24"]);
    launch(&d, "r1", &["--network", "red"], Some(&httpd_init("red")));
    launch(&d, "r2", &["--network", "red"], Some(IDLE));
    launch(&d, "b1", &["--network", "blue"], Some(IDLE));
    let r1 = eth0(&d, "r1").ipv4;
    let b1 = eth0(&d, "b1").ipv4;

    // The control: on the same network, it works.
    assert!(pings(&d, "r2", &r1), "r2 pings r1 on the same network");
    assert_eq!(
        http_get_in(&d, "r2", &format!("http://{r1}/"))
            .expect("r2 fetches r1's page")
            .trim(),
        "red"
    );
    // Across networks: nothing, either way.
    assert!(!pings(&d, "b1", &r1), "b1 (blue) must not reach r1 (red)");
    assert!(!pings(&d, "r1", &b1), "r1 (red) must not reach b1 (blue)");
    let got = http_get_in(&d, "b1", &format!("http://{r1}/"));
    assert!(
        got.is_err(),
        "b1 (blue) must not fetch r1's page (red): {got:?}"
    );
    // Names stay on their network.
    assert!(
        resolve(d.netns(), "r1", &gateway(&d, "blue")).is_empty(),
        "blue's name server does not answer for red's r1"
    );
    d.finish();
}

#[test]
fn an_isolated_network_lets_instances_reach_only_the_gateway_and_published_services() {
    let d = TestDaemon::start();
    let out = d.ok(&[
        "network",
        "create",
        "iso",
        "--isolated",
        "--subnet",
        "10.213.0.0/24",
    ]);
    assert!(out.contains("iso"), "create prints the network: {out}");
    assert_eq!(network_info(&d, "iso")["isolated"], true);
    launch(
        &d,
        "p",
        &["--network", "iso", "--publish", "18080:80"],
        Some(&httpd_init("isolated-page")),
    );
    launch(&d, "q", &["--network", "iso"], Some(IDLE));
    let p = eth0(&d, "p");
    let q = eth0(&d, "q");

    assert!(pings(&d, "q", "10.213.0.1"), "q reaches the gateway");
    let looked = d.sh("q", "nslookup p");
    assert_eq!(
        nslookup_addresses(&looked)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![p.ipv4.clone()],
        "q resolves p through the gateway's name server: {looked}"
    );
    assert!(!pings(&d, "q", &p.ipv4), "q must not reach p directly");
    assert!(!pings(&d, "p", &q.ipv4), "p must not reach q directly");
    let got = http_get_in(&d, "q", &format!("http://{}/", p.ipv4));
    assert!(got.is_err(), "q must not fetch p's page directly: {got:?}");

    // Every instance port of the bridge is isolated.
    for i in [&p, &q] {
        let port = in_ns_ok(
            d.netns(),
            &["bridge", "-d", "link", "show", "dev", &i.host_name],
        );
        assert!(
            port.contains("isolated on"),
            "the bridge port {} is isolated: {port}",
            i.host_name
        );
    }
    // The published service is reachable from the host.
    let page = http_get_in_ns(d.netns(), "http://127.0.0.1:18080/")
        .unwrap_or_else(|e| panic!("the host cannot reach p's published port: {e}"));
    assert_eq!(page.trim(), "isolated-page");
    d.finish();
}

#[test]
fn an_instance_cannot_spoof_another_address_or_mac() {
    let d = TestDaemon::start();
    install_usock(&d);
    launch(
        &d,
        "observer",
        &[],
        Some("usock udp-recv 9999 300000 > /tmp/udp 2>&1; exec sleep 3600"),
    );
    launch(&d, "victim", &[], Some(IDLE));
    launch(&d, "attacker", &[], Some(IDLE));
    let obs = eth0(&d, "observer");
    let vic = eth0(&d, "victim");
    let att = eth0(&d, "attacker");
    wait_until(Duration::from_secs(10), "the observer listens", || {
        d.sh("observer", "cat /tmp/udp 2>/dev/null || true")
            .contains("listening")
    });
    // The observer knows the victim's real MAC.
    assert!(pings(&d, "observer", &vic.ipv4), "observer pings victim");
    let arp_of = |ip: &str| -> String {
        d.sh(
            "observer",
            &format!("awk '$1 == \"{ip}\" {{print $4}}' /proc/net/arp"),
        )
        .trim()
        .to_lowercase()
    };
    assert_eq!(
        arp_of(&vic.ipv4),
        vic.mac.to_lowercase(),
        "the observer's ARP entry"
    );

    // Without CAP_NET_ADMIN, the tenant's `ip` cannot take the address or the MAC; should it
    // succeed, the forged traffic below is what must not pass anyway.
    let _ = d.mayfly(&[
        "exec",
        "attacker",
        "--",
        "ip",
        "addr",
        "add",
        &format!("{}/24", vic.ipv4),
        "dev",
        "eth0",
    ]);
    let _ = d.mayfly(&[
        "exec", "attacker", "--", "ip", "link", "set", "eth0", "address", &vic.mac,
    ]);
    let _ = d.mayfly(&[
        "exec",
        "attacker",
        "--",
        "sh",
        "-c",
        &format!("ping -c 1 -W 1 -I {} {} || true", vic.ipv4, obs.ipv4),
    ]);

    let spoof = |src_mac: &str, src_ip: &str, msg: &str| -> Output {
        d.mayfly(&[
            "exec", "attacker", "--", "usock", "spoof", "eth0", &obs.mac, src_mac, src_ip,
            &obs.ipv4, "9999", msg,
        ])
    };
    let forged_ip = spoof(&att.mac, &vic.ipv4, "forged-ip");
    let forged_mac = spoof("02:00:00:00:be:ef", &att.ipv4, "forged-mac");
    let forged_both = spoof(&vic.mac, &vic.ipv4, "forged-both");
    let honest = spoof(&att.mac, &att.ipv4, "honest");
    if honest.code == 2 {
        // No packet socket for tenants at all: nothing can be forged this way. Then `ip`
        // must not have taken the victim's address either.
        let addrs = d.sh("attacker", "ip -o -4 addr show dev eth0");
        assert!(
            !mentions_address(&addrs, &vic.ipv4),
            "the attacker took the victim's address: {addrs}"
        );
        d.finish();
        return;
    }
    for (what, o) in [
        ("forged address", &forged_ip),
        ("forged MAC", &forged_mac),
        ("forged both", &forged_both),
        ("honest", &honest),
    ] {
        assert!(o.success(), "usock spoof ({what}) could not send: {o}");
    }
    // The honest datagram, sent last, arrives: the path works, so the forged ones, sent
    // before it on the same path, were dropped rather than late.
    wait_until(
        Duration::from_secs(5),
        "the honest datagram arrives",
        || d.sh("observer", "cat /tmp/udp").contains("honest"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let got = d.sh("observer", "cat /tmp/udp");
    for forged in ["forged-ip", "forged-mac", "forged-both"] {
        assert!(
            !got.contains(forged),
            "a {forged} datagram from the attacker reached the observer:\n{got}\n{}",
            nft_text(&d)
        );
    }
    assert!(
        got.contains(&format!("from {}: honest", att.ipv4)),
        "the honest datagram carries the attacker's own address: {got}"
    );
    // ARP: the forged requests claimed the victim's address; the observer still has the
    // victim's MAC for it.
    assert_eq!(
        arp_of(&vic.ipv4),
        vic.mac.to_lowercase(),
        "the observer's ARP entry for the victim was poisoned"
    );
    assert!(
        pings(&d, "observer", &vic.ipv4),
        "the victim is still reached"
    );
    d.finish();
}

#[test]
fn only_ipv4_arp_and_its_own_ipv6_leave_an_instance() {
    let d = TestDaemon::start();
    install_usock(&d);
    launch(&d, "attacker", &[], Some(IDLE));
    let att = eth0(&d, "attacker");
    launch(
        &d,
        "sniffer",
        &[],
        Some(&format!(
            "usock sniff eth0 {} 300000 > /tmp/sniff 2>&1; exec sleep 3600",
            att.mac
        )),
    );
    let sn = eth0(&d, "sniffer");
    wait_until(Duration::from_secs(10), "the sniffer listens", || {
        let got = d.sh("sniffer", "cat /tmp/sniff 2>/dev/null || true");
        got.contains("listening") || got.contains("refused")
    });
    if d.sh("sniffer", "cat /tmp/sniff").contains("refused") {
        panic!(
            "tenants have no packet socket (CAP_NET_RAW, docs/security.md): {}",
            d.sh("sniffer", "cat /tmp/sniff")
        );
    }
    // IPv6 is on inside, configured by mayfly alone: its derived address and the link-local
    // one. A frame of ethertype 86dd that is not from its own address (below: garbage, whose
    // "source" is the padding's zeros) is dropped like any other forgery.
    let v6 = d.sh("attacker", "ip -o -6 addr show dev eth0");
    assert!(
        !att.ipv6.is_empty() && v6.contains(&format!("inet6 {}/64", att.ipv6)),
        "eth0 has its IPv6 address: {v6}"
    );
    let disabled = d.sh(
        "attacker",
        "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6 2>/dev/null || echo 1",
    );
    assert_eq!(disabled.trim(), "0", "IPv6 is on on eth0");

    for (ethertype, msg) in [
        ("88b5", "experimental"),
        ("86dd", "ipv6-ish"),
        ("8100", "vlan"),
    ] {
        let out = d.mayfly(&[
            "exec", "attacker", "--", "usock", "frame", "eth0", &sn.mac, &att.mac, ethertype, msg,
        ]);
        assert!(
            out.success(),
            "usock frame {ethertype} could not send: {out}"
        );
    }
    // The control, sent after them: IPv4 (and ARP) pass.
    assert!(
        d.mayfly(&[
            "exec", "attacker", "--", "ping", "-c", "1", "-W", "2", &sn.ipv4
        ])
        .success(),
        "the attacker pings the sniffer"
    );
    wait_until(Duration::from_secs(5), "the sniffer sees IPv4", || {
        d.sh("sniffer", "cat /tmp/sniff").contains("type=0800")
    });
    let seen = d.sh("sniffer", "cat /tmp/sniff");
    // The forged frames are 60 bytes long (the minimum); the attacker's kernel may send real
    // IPv6 from its own addresses meanwhile (multicast listener reports, neighbour
    // solicitations: 78 bytes and more), which pass.
    for ethertype in ["88b5", "86dd", "8100"] {
        let forged = if ethertype == "86dd" {
            format!("type={ethertype} len=60\n")
        } else {
            format!("type={ethertype}")
        };
        assert!(
            !seen.contains(&forged),
            "a forged frame of ethertype {ethertype} from an instance crossed the bridge:\n{seen}"
        );
    }
    d.finish();
}

#[test]
fn mayfly_owns_two_tables_and_never_touches_another() {
    let d = TestDaemon::start();
    // A table of someone else, in the daemon's namespace, with a rule and a set.
    in_ns_ok(d.netns(), &["nft", "add", "table", "inet", "guest"]);
    in_ns_ok(
        d.netns(),
        &[
            "nft", "add", "chain", "inet", "guest", "input", "{", "type", "filter", "hook",
            "input", "priority", "10", ";", "}",
        ],
    );
    in_ns_ok(
        d.netns(),
        &[
            "nft", "add", "rule", "inet", "guest", "input", "tcp", "dport", "4242", "counter",
            "accept",
        ],
    );
    let guest_before = in_ns_ok(d.netns(), &["nft", "list", "table", "inet", "guest"]);

    d.ok(&["network", "create", "one", "--subnet", "10.214.0.0/24"]);
    launch(
        &d,
        "x",
        &["--network", "one", "--publish", "18081:80"],
        Some(IDLE),
    );
    let mut tables = nft_tables(&d);
    tables.sort();
    assert_eq!(
        tables,
        ["bridge mayfly", "inet guest", "inet mayfly"],
        "mayfly adds exactly its two tables"
    );
    assert!(nft_table(&d, "inet").is_some() && nft_table(&d, "bridge").is_some());
    d.ok(&["rm", "--force", "x"]);
    d.ok(&["network", "rm", "one"]);
    assert_eq!(
        nft_tables(&d),
        ["inet guest"],
        "no network left: both mayfly tables are gone, the guest's stays"
    );
    assert_eq!(
        in_ns_ok(d.netns(), &["nft", "list", "table", "inet", "guest"]),
        guest_before,
        "the other table is untouched"
    );
    in_ns_ok(d.netns(), &["nft", "delete", "table", "inet", "guest"]);
    d.finish();
}
