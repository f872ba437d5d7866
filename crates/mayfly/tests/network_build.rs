//! Builds on the default network (issue 21, point 6): `template build --from` and
//! `template patch --run` run their container in a network namespace of its own with an
//! interface on the default network and NAT, not in the host's (here: the daemon's)
//! namespace; they reach the test's "outside" namespace (never the internet), and leave no
//! veth or lease behind.

mod common;

use common::netns::*;
use common::*;

#[test]
fn build_containers_use_the_default_network_with_nat() {
    let d = TestDaemon::start();
    let mut out = Outside::new(&d);
    out.serve_http(&d.dir.join("outside-www"), "fetched-by-the-build");
    let built = d.mayfly(&[
        "template",
        "build",
        "fetched",
        "--from",
        "busybox",
        "--run",
        &format!("wget -q -O /fetched http://{OUTSIDE_IP}/ && ip -o link > /links"),
    ]);
    assert!(
        built.success(),
        "the build could not reach the outside: {built}\n{}",
        d.logs()
    );
    launch_from(&d, "fetched", "check");
    let got = d.sh("check", "cat /fetched");
    assert_eq!(
        got.trim(),
        "fetched-by-the-build",
        "the build fetched through NAT"
    );
    let links = d.sh("check", "cat /links");
    assert!(
        links.contains("eth0"),
        "the build had an interface of its own (not the host's namespace): {links}"
    );
    assert!(
        !links.contains(UPLINK),
        "the build ran in its own namespace, not the daemon's: {links}"
    );
    // The build's interface and lease are gone.
    assert!(
        mayfly_links(&d, "mv").is_empty(),
        "no veth left after the build: {:?}",
        links_of(&d)
    );
    assert!(
        leases(&d, "default").is_empty(),
        "no lease left after the build: {}",
        network_info(&d, "default")
    );
    // patch --run too.
    d.ok(&[
        "template",
        "patch",
        "fetched",
        "--run",
        &format!("wget -q -O /fetched2 http://{OUTSIDE_IP}/"),
    ]);
    d.ok(&["rm", "--force", "check"]);
    launch_from(&d, "fetched", "check2");
    assert_eq!(
        d.sh("check2", "cat /fetched2").trim(),
        "fetched-by-the-build"
    );
    d.ok(&["rm", "--force", "check2"]);
    d.ok(&["network", "rm", "default"]);
    out.close();
    d.finish();
}

fn links_of(d: &TestDaemon) -> Vec<String> {
    links(d.netns())
}

/// Launches `name` from `template`, without network, idling.
fn launch_from(d: &TestDaemon, template: &str, name: &str) {
    d.ok(&[
        "launch",
        template,
        "--name",
        name,
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        IDLE,
    ]);
}
