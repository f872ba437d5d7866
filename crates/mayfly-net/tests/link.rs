//! Bridges and veths over netlink, in a network namespace of the test's own.

mod common;

use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use common::{Container, iface, isolate, link_names, plan};
use mayfly_net::link;

#[test]
fn bridge_is_created_idempotently_and_removed() {
    isolate();
    let p = plan("n1", "mf-0123456789ab", "10.77.0.0/24", false);
    link::ensure_bridge(&p).unwrap();
    link::ensure_bridge(&p).unwrap();
    assert_eq!(
        link::links_with_prefix("mf-").unwrap(),
        vec![p.bridge.clone()]
    );
    let used = link::used_ipv4_nets().unwrap();
    assert!(used.contains(&p.subnet), "{used:?}");
    let show = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", &p.bridge])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("inet 10.77.0.1/24"), "{show}");
    let gateway6 = p.gateway6().unwrap();
    assert!(show.contains(&format!("inet6 {gateway6}/64")), "{show}");
    for (key, value) in [("accept_ra", "0"), ("autoconf", "0"), ("disable_ipv6", "0")] {
        let path = format!("/proc/sys/net/ipv6/conf/{}/{key}", p.bridge);
        assert_eq!(
            std::fs::read_to_string(path).unwrap().trim(),
            value,
            "{key}"
        );
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string(format!(
            "/proc/sys/net/ipv4/conf/{}/route_localnet",
            p.bridge
        ))
        .unwrap()
        .trim(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );

    // A changed plan replaces the address; a plan without IPv6 turns it off.
    let mut q = plan("n1", "mf-0123456789ab", "10.78.0.0/16", false);
    link::ensure_bridge(&q).unwrap();
    let show = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", &p.bridge])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout).into_owned();
    let gateway6_q = q.gateway6().unwrap();
    assert!(
        show.contains(&format!("inet6 {gateway6_q}/64")) && !show.contains(&gateway6.to_string()),
        "{show}"
    );
    q.subnet6 = None;
    link::ensure_bridge(&q).unwrap();
    let show = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", &p.bridge])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout).into_owned();
    assert!(!show.contains("inet6"), "IPv6 left on the bridge: {show}");
    let used = link::used_ipv4_nets().unwrap();
    assert!(
        used.contains(&q.subnet) && !used.contains(&p.subnet),
        "{used:?}"
    );

    link::remove_bridge(&p.bridge).unwrap();
    link::remove_bridge(&p.bridge).unwrap();
    assert!(link::links_with_prefix("mf-").unwrap().is_empty());
    assert_eq!(link_names(), vec!["lo".to_owned()]);
}

#[test]
fn a_name_taken_by_another_kind_of_interface_is_refused() {
    isolate();
    let p = plan("n1", "mf-aaaaaaaaaaaa", "10.77.0.0/24", false);
    let st = std::process::Command::new("ip")
        .args([
            "link", "add", &p.bridge, "type", "veth", "peer", "name", "x0",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let e = link::ensure_bridge(&p).unwrap_err().to_string();
    assert!(e.contains("not a bridge") && e.contains("n1"), "{e}");
}

#[test]
fn two_containers_reach_each_other_through_the_bridge() {
    isolate();
    let p = plan("lan", "mf-000000000001", "10.77.0.0/24", false);
    link::ensure_bridge(&p).unwrap();
    let (a, b) = (Container::new(), Container::new());
    let (ia, ib) = (iface(&p, 0, 0), iface(&p, 1, 0));
    // A distribution defaulting to random link-local addresses (addr_gen_mode 3): mayfly's
    // interface still gets the EUI-64 one, which the firewall expects.
    let random = a.run(&[
        "sh",
        "-c",
        "echo 3 > /proc/sys/net/ipv6/conf/default/addr_gen_mode",
    ]);
    assert!(random.status.success(), "{random:?}");
    link::attach(a.netns().as_fd(), &ia).unwrap();
    link::attach(b.netns().as_fd(), &ib).unwrap();
    assert!(a.pings(ib.ipv4), "a cannot reach b");
    assert!(b.pings(ia.ipv4), "b cannot reach a");
    assert!(a.pings(p.gateway), "a cannot reach the gateway");

    let inside = String::from_utf8_lossy(&a.run(&["ip", "-o", "addr"]).stdout).into_owned();
    assert!(
        inside.contains(&format!("eth0    inet {}/24", ia.ipv4)),
        "{inside}"
    );
    assert!(
        inside.contains("lo    inet6 ::1"),
        "lo keeps IPv6: {inside}"
    );
    let ipv6 = ia.ipv6.unwrap();
    assert!(
        inside.contains(&format!("eth0    inet6 {ipv6}/64")),
        "{inside}"
    );
    let ll = mayfly_net::addr6::link_local(ia.mac.0);
    assert!(
        inside.contains(&format!("eth0    inet6 {ll}/64")),
        "link-local kept, the EUI-64 one {ll}: {inside}"
    );
    assert_eq!(
        inside.matches("eth0    inet6 fe80::").count(),
        1,
        "{inside}"
    );
    let ipv6_b = ib.ipv6.unwrap();
    let ping6 = a.run(&[
        "busybox",
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "2",
        &ipv6_b.to_string(),
    ]);
    assert!(
        ping6.status.success(),
        "a cannot reach b over IPv6: {ping6:?}"
    );
    let gw6 = p.gateway6().unwrap().to_string();
    let ping6 = b.run(&["busybox", "ping", "-6", "-c", "1", "-W", "2", &gw6]);
    assert!(
        ping6.status.success(),
        "b cannot reach the IPv6 gateway: {ping6:?}"
    );
    let route6 = String::from_utf8_lossy(&a.run(&["ip", "-6", "route"]).stdout).into_owned();
    assert!(
        route6.contains(&format!("default via {gw6} dev eth0")),
        "{route6}"
    );
    for (key, value) in [("accept_ra", "0"), ("autoconf", "0")] {
        let out = a.run(&["cat", &format!("/proc/sys/net/ipv6/conf/eth0/{key}")]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), value, "{key}");
    }
    // The host ends stay without IPv6 (bridge ports need none).
    let host_end = std::fs::read_to_string(format!(
        "/proc/sys/net/ipv6/conf/{}/disable_ipv6",
        ia.host_name
    ))
    .unwrap();
    assert_eq!(host_end.trim(), "1");
    let link =
        String::from_utf8_lossy(&a.run(&["ip", "-o", "link", "show", "eth0"]).stdout).into_owned();
    assert!(link.contains(&ia.mac.to_string()), "{link}");
    let route = String::from_utf8_lossy(&a.run(&["ip", "route"]).stdout).into_owned();
    assert!(route.contains("default via 10.77.0.1 dev eth0"), "{route}");
    let range = a.run(&["cat", "/proc/sys/net/ipv4/ping_group_range"]);
    assert_eq!(
        String::from_utf8_lossy(&range.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "2147483647"]
    );

    // The host ends are on the bridge; they go with the containers' namespaces.
    let ports = link::links_with_prefix("mv").unwrap();
    assert_eq!(ports, vec![ia.host_name.clone(), ib.host_name.clone()]);
    drop(a);
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !link::links_with_prefix("mv").unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "host ends outlived their namespaces"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    link::remove_bridge(&p.bridge).unwrap();
}

#[test]
fn isolated_ports_reach_the_gateway_only() {
    isolate();
    let p = plan("iso", "mf-000000000002", "10.77.0.0/24", true);
    link::ensure_bridge(&p).unwrap();
    let (a, b) = (Container::new(), Container::new());
    let (ia, ib) = (iface(&p, 0, 0), iface(&p, 1, 0));
    link::attach(a.netns().as_fd(), &ia).unwrap();
    link::attach(b.netns().as_fd(), &ib).unwrap();
    assert!(a.pings(p.gateway) && b.pings(p.gateway));
    assert!(!a.pings(ib.ipv4), "isolated ports reached each other");
    assert!(!b.pings(ia.ipv4), "isolated ports reached each other");
    let detail = std::process::Command::new("ip")
        .args(["-d", "link", "show", &ia.host_name])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&detail.stdout).contains("isolated on"));
}

#[test]
fn a_second_interface_gets_no_default_route_and_a_failure_leaves_no_veth() {
    isolate();
    let p = plan("one", "mf-000000000003", "10.77.0.0/24", false);
    let q = plan("two", "mf-000000000004", "10.78.0.0/24", false);
    link::ensure_bridge(&p).unwrap();
    link::ensure_bridge(&q).unwrap();
    let a = Container::new();
    link::attach(a.netns().as_fd(), &iface(&p, 0, 0)).unwrap();
    link::attach(a.netns().as_fd(), &iface(&q, 0, 1)).unwrap();
    let route = String::from_utf8_lossy(&a.run(&["ip", "route"]).stdout).into_owned();
    assert_eq!(route.matches("default").count(), 1, "{route}");
    assert!(a.pings(q.gateway));

    // A gateway outside the subnet: the route fails after the pair exists.
    let mut bad = iface(&p, 5, 2);
    bad.gateway = Some(Ipv4Addr::new(192, 0, 2, 1));
    let e = link::attach(a.netns().as_fd(), &bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("eth2") && e.contains("network one") && e.contains(&bad.host_name),
        "{e}"
    );
    assert!(
        !link::links_with_prefix("mv")
            .unwrap()
            .contains(&bad.host_name)
    );
    let inside = String::from_utf8_lossy(&a.run(&["ip", "-o", "link"]).stdout).into_owned();
    assert!(!inside.contains("eth2"), "{inside}");

    // A missing bridge is said.
    let mut gone = iface(&p, 6, 3);
    gone.bridge = "mf-ffffffffffff".into();
    let e = link::attach(a.netns().as_fd(), &gone)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mf-ffffffffffff") && e.contains("missing"),
        "{e}"
    );
    assert_eq!(link::links_with_prefix("mv").unwrap().len(), 2);
}

#[test]
fn a_namespace_owned_by_a_user_namespace_is_configured_too() {
    isolate();
    let p = plan("lan", "mf-000000000005", "10.77.0.0/24", false);
    link::ensure_bridge(&p).unwrap();
    let (a, b) = (Container::with_user_namespace(), Container::new());
    let (ia, ib) = (iface(&p, 0, 0), iface(&p, 1, 0));
    link::attach(a.netns().as_fd(), &ia).unwrap();
    link::attach(b.netns().as_fd(), &ib).unwrap();
    assert!(b.pings(ia.ipv4));
    let range = a.run(&["cat", "/proc/sys/net/ipv4/ping_group_range"]);
    let range = String::from_utf8_lossy(&range.stdout).into_owned();
    assert_eq!(range.split_whitespace().next(), Some("0"), "{range}");
}
