//! Outbound NAT and published ports (issue 21, points 3 and 4), against the test's "outside"
//! namespace (192.0.2.2, joined to the daemon's namespace by a veth; it has no route to the
//! instances' subnets, so an answer proves the masquerade) and from the daemon's namespace
//! itself (the host of the test): 127.0.0.1 by default, every address with 0.0.0.0, TCP and
//! UDP, refused when a host process or another instance holds the port, removed when the
//! instance stops and restored when it starts. (Builds on the default network: network_build.rs.)

mod common;

use std::time::Duration;

use common::netns::*;
use common::*;

fn httpd_init(page: &str) -> String {
    format!("mkdir -p /www && echo {page} > /www/index.html && exec httpd -f -p 80 -h /www")
}

#[test]
fn nat_lets_instances_reach_the_outside_and_no_nat_does_not() {
    let d = TestDaemon::start();
    let mut out = Outside::new(&d);
    out.serve_http(&d.dir.join("outside-www"), "outside-page");
    launch(&d, "cli", &[], Some(IDLE));
    assert_eq!(network_info(&d, "default")["nat"], true, "default has NAT");
    let page = http_get_in(&d, "cli", &format!("http://{OUTSIDE_IP}/")).unwrap_or_else(|e| {
        panic!(
            "an instance of the default network cannot reach the outside: {e}\n{}",
            nft_text(&d)
        )
    });
    assert_eq!(page.trim(), "outside-page");

    d.ok(&[
        "network",
        "create",
        "closed",
        "--no-nat",
        "--subnet",
        "10.221.0.0/24",
    ]);
    assert_eq!(network_info(&d, "closed")["nat"], false);
    launch(&d, "shut", &["--network", "closed"], Some(IDLE));
    let got = http_get_in(&d, "shut", &format!("http://{OUTSIDE_IP}/"));
    assert!(
        got.is_err(),
        "an instance of a --no-nat network must not get an answer from the outside: {got:?}"
    );
    // The instance still reaches its gateway: only NAT is off.
    d.sh("shut", "ping -c 1 -W 2 10.221.0.1");

    d.ok(&["rm", "--force", "cli", "shut"]);
    d.ok(&["network", "rm", "closed"]);
    out.close();
    d.finish();
}

#[test]
fn published_ports_forward_from_the_host_and_from_outside() {
    let d = TestDaemon::start();
    install_usock(&d);
    let out = Outside::new(&d);
    launch(
        &d,
        "web",
        &[
            "--publish",
            "18080:80",
            "-p",
            "0.0.0.0:18090:80",
            "-p",
            "15353:5353/udp",
        ],
        Some(&format!(
            "usock udp-recv 5353 600000 > /tmp/udp 2>&1 & {}",
            httpd_init("published")
        )),
    );
    let info = d.info("web");
    let mut published = strings(&info["publish"]);
    published.sort();
    assert_eq!(
        published,
        [
            "0.0.0.0:18090:80/tcp",
            "127.0.0.1:15353:5353/udp",
            "127.0.0.1:18080:80/tcp"
        ],
        "info --json lists the published ports: {info}"
    );
    let text = d.ok(&["info", "web"]);
    assert!(
        text.contains("18080") && text.contains("18090"),
        "info shows the published ports: {text}"
    );

    // From the host itself, through 127.0.0.1 (the default address).
    let page = http_get_in_ns(d.netns(), "http://127.0.0.1:18080/")
        .unwrap_or_else(|e| panic!("127.0.0.1:18080 from the host: {e}\n{}", nft_text(&d)));
    assert_eq!(page.trim(), "published");
    // 0.0.0.0: every local address, from the host too.
    let page = http_get_in_ns(d.netns(), &format!("http://{UPLINK_IP}:18090/"))
        .unwrap_or_else(|e| panic!("{UPLINK_IP}:18090 from the host: {e}"));
    assert_eq!(page.trim(), "published");
    // From another host (the outside namespace): 0.0.0.0 yes, 127.0.0.1 only no.
    let page = http_get_in_ns(&out.ns, &format!("http://{UPLINK_IP}:18090/"))
        .unwrap_or_else(|e| panic!("{UPLINK_IP}:18090 from the outside: {e}\n{}", nft_text(&d)));
    assert_eq!(page.trim(), "published");
    let got = http_get_in_ns(&out.ns, &format!("http://{UPLINK_IP}:18080/"));
    assert!(
        got.is_err(),
        "a port published on 127.0.0.1 must not be reachable from another host: {got:?}"
    );

    // UDP from the host.
    let usock = usock_on_host(&d);
    wait_until(Duration::from_secs(10), "the datagram reaches web", || {
        let _ = in_daemon_ns(&d, &[&usock, "udp-send", "127.0.0.1", "15353", "dgram"]);
        d.sh("web", "cat /tmp/udp").contains("dgram")
    });

    // Stop: the forwarding goes; start: it comes back.
    d.ok(&["stop", "web"]);
    wait_state(&d, "web", "stopped");
    let rules = nft_text(&d);
    assert!(
        !rules.contains("18080") && !rules.contains("18090"),
        "a stopped instance's ports are not forwarded:\n{rules}"
    );
    assert!(
        http_get_in_ns(d.netns(), "http://127.0.0.1:18080/").is_err(),
        "nothing answers on a stopped instance's port"
    );
    d.ok(&["start", "web"]);
    let back = poll_until(Duration::from_secs(10), || {
        http_get_in_ns(d.netns(), "http://127.0.0.1:18080/").is_ok_and(|p| p.trim() == "published")
    });
    assert!(
        back,
        "the port is forwarded again after start:\n{}",
        nft_text(&d)
    );
    let back = poll_until(Duration::from_secs(10), || {
        http_get_in_ns(&out.ns, &format!("http://{UPLINK_IP}:18090/")).is_ok()
    });
    assert!(back, "and from the outside");

    d.ok(&["rm", "--force", "web"]);
    let rules = nft_text(&d);
    assert!(
        !rules.contains("18080") && !rules.contains("18090") && !rules.contains("15353"),
        "a removed instance's ports are gone:\n{rules}"
    );
    out.close();
    d.finish();
}

#[test]
fn a_port_held_by_a_host_process_is_refused_and_nothing_is_left() {
    let d = TestDaemon::start();
    install_usock(&d);
    let usock = usock_on_host(&d);
    let mut holder = spawn_in_ns(d.netns(), &[&usock, "serve", "tcp", "18082"]);
    holder.expect_stdout("listening", Duration::from_secs(10));
    let veths_before = mayfly_links(&d, "mv");

    let out = d.fails(&[
        "launch",
        "busybox",
        "--name",
        "late",
        "--publish",
        "18082:80",
    ]);
    assert_refused_with(&out, &["18082"]);
    assert!(is_gone(&d, "late"), "a refused launch creates no instance");
    assert_eq!(
        mayfly_links(&d, "mv"),
        veths_before,
        "a refused launch leaves no veth"
    );
    // Another port works while the holder runs.
    launch(&d, "fine", &["--publish", "18083:80"], Some(IDLE));
    drop(holder);
    d.finish();
}

#[test]
fn a_port_published_by_another_instance_is_refused_naming_it() {
    let d = TestDaemon::start();
    launch(&d, "first", &["--publish", "18084:80"], Some(IDLE));
    let before = leases(&d, "default").len();
    for spec in ["18084:80", "0.0.0.0:18084:8080", "127.0.0.1:18084:80/tcp"] {
        let out = d.fails(&["launch", "busybox", "--name", "second", "--publish", spec]);
        assert_refused_with(&out, &["18084", "first"]);
        assert!(
            is_gone(&d, "second"),
            "no instance after the refusal of {spec}"
        );
        assert_eq!(
            leases(&d, "default").len(),
            before,
            "no lease left by the refusal of {spec}"
        );
    }
    // The same number over UDP is another port.
    launch(&d, "udp", &["--publish", "18084:53/udp"], Some(IDLE));
    d.finish();
}

#[test]
fn a_clone_does_not_take_its_sources_published_ports() {
    let d = TestDaemon::start();
    launch(&d, "orig", &["--publish", "18091:80"], Some(IDLE));
    d.ok(&["clone", "orig", "copy", "--start"]);
    wait_state(&d, "copy", "running");
    assert!(
        strings(&d.info("copy")["publish"]).is_empty(),
        "a clone publishes nothing of its source's: {}",
        d.info("copy")
    );
    assert_eq!(
        strings(&d.info("orig")["publish"]),
        ["127.0.0.1:18091:80/tcp"],
        "the source keeps its port"
    );
    d.finish();
}
