//! Networks as LANs (issue 21, point 1): the default network made at first use, real traffic
//! between instances over it (busybox httpd and wget), addresses set up before the init runs,
//! kept across restarts and resets of a transient instance, new ones for a clone,
//! `/etc/resolv.conf` and `/etc/hosts` written for the instance, several networks per
//! instance (eth0 routes), and `--network none`.
//!
//! Every daemon runs in its own network namespace (the harness); nothing here touches the
//! machine's namespace.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::netns::*;
use common::*;

/// An init serving `page` on port 80 with busybox httpd, from a directory it makes.
fn httpd_init(page: &str) -> String {
    format!("mkdir -p /www && echo {page} > /www/index.html && exec httpd -f -p 80 -h /www")
}

/// Parses `a.b.c.d/len` into the network address and length.
fn subnet_of(cidr: &str) -> (Ipv4Addr, u8) {
    let (ip, len) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("`{cidr}` is not a CIDR"));
    let ip: Ipv4Addr = ip.parse().expect("an IPv4 network");
    (ip, len.parse().expect("a prefix length"))
}

fn in_subnet(ip: &str, cidr: &str) -> bool {
    let (net, len) = subnet_of(cidr);
    let ip: Ipv4Addr = ip
        .parse()
        .unwrap_or_else(|_| panic!("`{ip}` is no IPv4 address"));
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

#[test]
fn the_default_network_is_made_at_first_use_and_carries_http_between_instances() {
    let d = TestDaemon::start();
    assert_eq!(
        d.json(&["network", "list", "--json"]),
        serde_json::json!([]),
        "no network exists before the first launch"
    );
    assert!(
        mayfly_links(&d, "mf-").is_empty(),
        "no bridge before the first launch"
    );

    launch(&d, "web", &[], Some(&httpd_init("page-of-web")));
    launch(&d, "cli", &[], Some(IDLE));

    let nets = d.json(&["network", "list", "--json"]);
    let names: Vec<&str> = nets
        .as_array()
        .expect("network list --json is an array")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["default"],
        "the first launch made `default`: {nets}"
    );
    let net = network_info(&d, "default");
    let subnet = net["subnet"].as_str().expect("a subnet").to_owned();
    assert!(
        subnet.starts_with("10.") && subnet.ends_with(".0/24"),
        "the default subnet is a 10.N.0.0/24: {net}"
    );
    let bridge = net["bridge"].as_str().expect("a bridge").to_owned();
    assert!(
        bridge.starts_with("mf-") && bridge.len() == 15,
        "the bridge is mf- + 12 hex digits: {bridge}"
    );
    assert!(
        links(d.netns()).contains(&bridge),
        "bridge {bridge} exists in the daemon's namespace: {:?}",
        links(d.netns())
    );

    let web = eth0(&d, "web");
    let cli = eth0(&d, "cli");
    for (name, i) in [("web", &web), ("cli", &cli)] {
        assert_eq!(i.network, "default", "{name} is on the default network");
        assert!(
            in_subnet(&i.ipv4, &subnet),
            "{name}'s address {} is in {subnet}",
            i.ipv4
        );
        assert!(
            i.host_name.starts_with("mv") && links(d.netns()).contains(&i.host_name),
            "{name}'s host end {} is a veth in the daemon's namespace: {:?}",
            i.host_name,
            links(d.netns())
        );
        let (inside_addr, inside_mac) = seen_inside(&d, name, "eth0");
        assert_eq!(
            inside_addr,
            format!("{}/24", i.ipv4),
            "{name} sees its allocated address on eth0"
        );
        assert_eq!(
            inside_mac.to_lowercase(),
            i.mac.to_lowercase(),
            "{name} sees its allocated MAC on eth0"
        );
    }
    assert_ne!(web.ipv4, cli.ipv4, "two instances, two addresses");
    assert_ne!(web.mac, cli.mac, "two instances, two MACs");

    // Real traffic: cli fetches web's page by address.
    let got = http_get_in(&d, "cli", &format!("http://{}/", web.ipv4))
        .unwrap_or_else(|e| panic!("cli cannot fetch web's page over the bridge: {e}"));
    assert_eq!(got.trim(), "page-of-web", "cli got web's page");

    // The files written for the instance.
    let gw = gateway(&d, "default");
    let resolv = d.sh("cli", "cat /etc/resolv.conf");
    assert!(
        resolv
            .lines()
            .any(|l| l.trim() == format!("nameserver {gw}")),
        "resolv.conf names the gateway {gw}: {resolv}"
    );
    assert!(
        resolv.lines().any(|l| l.trim() == "search mayfly"),
        "resolv.conf searches mayfly: {resolv}"
    );
    let hosts = d.sh("cli", "cat /etc/hosts");
    assert!(
        hosts.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some(cli.ipv4.as_str()) && w.any(|n| n == "cli")
        }),
        "/etc/hosts has cli on {}: {hosts}",
        cli.ipv4
    );
    let routes = d.sh("cli", "ip route");
    assert!(
        routes.contains(&format!("default via {gw} dev eth0")),
        "the default route goes through the gateway on eth0: {routes}"
    );
    assert!(
        leases(&d, "default")
            .iter()
            .any(|l| l["instance"] == "web" && l["ipv4"] == web.ipv4.as_str()),
        "network info lists web's lease: {}",
        network_info(&d, "default")
    );
    d.finish();
}

#[test]
fn the_address_is_there_before_the_init_runs_with_any_template() {
    let d = TestDaemon::start();
    // The init records what it sees as its first act: no waiting, no DHCP client.
    launch(
        &d,
        "early",
        &[],
        Some(
            "ip -o -4 addr show dev eth0 > /tmp/first; ip -o link show dev eth0 >> /tmp/first; exec sleep 3600",
        ),
    );
    let i = eth0(&d, "early");
    let first = d.sh("early", "cat /tmp/first");
    assert!(
        first.contains(&format!("{}/24", i.ipv4)),
        "the init's first look at eth0 shows {}: {first}",
        i.ipv4
    );
    assert!(
        first.contains(",UP") || first.contains("<UP"),
        "eth0 is up before the init runs: {first}"
    );
    d.finish();
}

#[test]
fn a_transient_instance_keeps_its_address_and_mac_across_restarts_and_resets() {
    let d = TestDaemon::start();
    launch(&d, "keep", &[], Some(IDLE));
    let before = eth0(&d, "keep");
    // Another instance started in between must not take the address back.
    launch(&d, "other", &[], Some(IDLE));

    d.ok(&["stop", "keep"]);
    wait_state(&d, "keep", "stopped");
    assert!(
        has_lease(&d, "default", "keep"),
        "a stopped instance keeps its lease: {}",
        network_info(&d, "default")
    );
    launch(&d, "third", &[], Some(IDLE));
    d.ok(&["start", "keep"]);
    let after_restart = eth0(&d, "keep");
    assert_eq!(
        (&after_restart.ipv4, &after_restart.mac),
        (&before.ipv4, &before.mac),
        "the same address and MAC after a restart"
    );
    assert_eq!(
        seen_inside(&d, "keep", "eth0"),
        (format!("{}/24", before.ipv4), before.mac.to_lowercase()),
        "inside too, after a restart"
    );
    assert_ne!(eth0(&d, "third").ipv4, before.ipv4, "third got another");

    d.ok(&["reset", "keep"]);
    wait_state(&d, "keep", "running");
    let after_reset = eth0(&d, "keep");
    assert_eq!(
        (&after_reset.ipv4, &after_reset.mac),
        (&before.ipv4, &before.mac),
        "the same address and MAC after a reset"
    );
    assert_eq!(
        seen_inside(&d, "keep", "eth0"),
        (format!("{}/24", before.ipv4), before.mac.to_lowercase()),
        "inside too, after a reset"
    );

    // A daemon restart keeps them as well (the catalogue holds them).
    let mut d = d;
    d.stop_daemon();
    d.restart();
    d.ok(&["restart", "keep"]);
    let after_daemon = eth0(&d, "keep");
    assert_eq!(
        (&after_daemon.ipv4, &after_daemon.mac),
        (&before.ipv4, &before.mac),
        "the same address and MAC after a daemon restart"
    );
    d.finish();
}

#[test]
fn a_clone_gets_a_new_address_and_mac_and_both_serve() {
    let d = TestDaemon::start();
    launch(&d, "orig", &["--persistent"], Some(&httpd_init("page")));
    launch(&d, "cli", &[], Some(IDLE));
    let orig = eth0(&d, "orig");
    d.ok(&["clone", "orig", "copy", "--start"]);
    wait_state(&d, "copy", "running");
    let copy = eth0(&d, "copy");
    assert_ne!(copy.ipv4, orig.ipv4, "a clone gets a new address");
    assert_ne!(copy.mac, orig.mac, "a clone gets a new MAC");
    assert_ne!(copy.host_name, orig.host_name, "a clone gets its own veth");
    assert_eq!(
        seen_inside(&d, "copy", "eth0"),
        (format!("{}/24", copy.ipv4), copy.mac.to_lowercase()),
        "the clone sees its own address, not the original's"
    );
    // A snapshot restore keeps the original's address and MAC (the running instance is
    // restarted).
    d.ok(&["snapshot", "create", "orig", "s1"]);
    d.ok(&["snapshot", "restore", "orig", "s1"]);
    wait_state(&d, "orig", "running");
    let restored = eth0(&d, "orig");
    assert_eq!(
        (&restored.ipv4, &restored.mac),
        (&orig.ipv4, &orig.mac),
        "the same address and MAC after a snapshot restore"
    );
    for (who, ip) in [("orig", &orig.ipv4), ("copy", &copy.ipv4)] {
        let page = http_get_in(&d, "cli", &format!("http://{ip}/"))
            .unwrap_or_else(|e| panic!("cli cannot reach {who} at {ip}: {e}"));
        assert_eq!(page.trim(), "page", "{who} serves");
    }
    d.finish();
}

#[test]
fn busybox_template_instances_ping_and_nc_each_other_and_the_gateway() {
    let d = TestDaemon::start();
    // a's init listens with nc, again and again, and keeps what it got.
    launch(
        &d,
        "a",
        &[],
        Some("while :; do timeout 60 nc -l -p 7001 >> /tmp/got; done"),
    );
    launch(&d, "b", &[], Some(IDLE));
    let a = eth0(&d, "a");
    let b = eth0(&d, "b");
    let gw = gateway(&d, "default");
    d.sh("a", &format!("ping -c 1 -W 2 {}", b.ipv4));
    d.sh("b", &format!("ping -c 1 -W 2 {}", a.ipv4));
    d.sh("a", &format!("ping -c 1 -W 2 {gw}"));
    // The listener may not be up at the first try: send until a has the line.
    wait_until(
        Duration::from_secs(15),
        "a receives b's line over nc",
        || {
            let _ = d.mayfly(&[
                "exec",
                "b",
                "--",
                "sh",
                "-c",
                &format!("echo line-from-b | timeout 2 nc {} 7001", a.ipv4),
            ]);
            d.sh("a", "cat /tmp/got 2>/dev/null || true")
                .contains("line-from-b")
        },
    );
    d.finish();
}

#[test]
fn several_networks_give_one_interface_each_and_eth0_has_the_default_route() {
    let d = TestDaemon::start();
    d.ok(&["network", "create", "front", "--subnet", "10.201.0.0/24"]);
    d.ok(&["network", "create", "back", "--subnet", "10.202.0.0/24"]);
    launch(
        &d,
        "both",
        &["--network", "front", "--network", "back"],
        Some(IDLE),
    );
    let all = ifaces(&d, "both");
    assert_eq!(all.len(), 2, "two interfaces: {all:?}");
    let e0 = all.iter().find(|i| i.name == "eth0").expect("eth0");
    let e1 = all.iter().find(|i| i.name == "eth1").expect("eth1");
    assert_eq!(e0.network, "front", "eth0 is on the first network given");
    assert_eq!(e1.network, "back", "eth1 is on the second");
    assert!(in_subnet(&e0.ipv4, "10.201.0.0/24"), "{e0:?}");
    assert!(in_subnet(&e1.ipv4, "10.202.0.0/24"), "{e1:?}");
    let routes = d.sh("both", "ip route");
    let defaults: Vec<&str> = routes
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("default"))
        .collect();
    assert_eq!(
        defaults,
        ["default via 10.201.0.1 dev eth0"],
        "only eth0 gets the default route: {routes}"
    );
    assert!(
        d.sh("both", "cat /etc/resolv.conf")
            .contains("nameserver 10.201.0.1"),
        "the name server is eth0's gateway"
    );
    let nets = d.json(&["network", "list", "--json"]);
    assert!(
        !nets
            .as_array()
            .expect("an array")
            .iter()
            .any(|n| n["name"] == "default"),
        "an instance given networks does not make the default one: {nets}"
    );
    d.finish();
}

#[test]
fn network_none_gives_only_lo_and_no_lease() {
    let d = TestDaemon::start();
    launch(&d, "alone", &["--network", "none"], Some(IDLE));
    assert_eq!(
        links_inside(&d, "alone"),
        ["lo"],
        "only lo with --network none"
    );
    assert!(
        ifaces(&d, "alone").is_empty(),
        "no interface in info: {}",
        d.info("alone")
    );
    assert!(
        !d.sh("alone", "cat /etc/resolv.conf")
            .contains("search mayfly"),
        "resolv.conf is not the networks' one"
    );
    assert!(
        mayfly_links(&d, "mv").is_empty(),
        "no veth for an instance without network: {:?}",
        links(d.netns())
    );
    let nets = d.json(&["network", "list", "--json"]);
    assert_eq!(
        nets,
        serde_json::json!([]),
        "--network none does not create the default network"
    );
    d.finish();
}
