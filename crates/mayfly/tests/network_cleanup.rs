//! Clean-up and recovery of networks (issue 21, point 7): stopping, removing or crashing
//! instances, kill -9 of the daemon or of the forker, and daemon restarts leave no veth
//! (`ip -o link`), no lease (`network info --json`'s interfaces: the catalogue's allocation
//! table), no firewall element (`nft list ruleset`) and no DNS record of a gone instance;
//! start-up reconciles what it finds with the catalogue. `d.finish()` then proves that
//! removing every network leaves no link but `lo`, no table and no dnsmasq.

mod common;

use std::time::Duration;

use common::netns::*;
use common::*;
use rustix::process::Signal;

/// How long a clean-up that follows an event (an init's end, a restart) may take.
const CLEANUP: Duration = Duration::from_secs(10);

fn wait_no_lease(d: &TestDaemon, net: &str, inst: &str, why: &str) {
    let ok = poll_until(CLEANUP, || !has_lease(d, net, inst));
    assert!(
        ok,
        "{why}: {inst}'s lease remains: {}",
        network_info(d, net)
    );
}

#[test]
fn stop_and_rm_leave_no_veth_rule_or_record_and_rm_frees_the_lease() {
    let d = TestDaemon::start();
    launch(&d, "gone", &["--publish", "18086:80"], Some(IDLE));
    launch(&d, "stays", &[], Some(IDLE));
    let gw = gateway(&d, "default");
    let i = eth0(&d, "gone");
    let rules = nft_text(&d).to_lowercase();
    assert!(
        mentions_address(&rules, &i.ipv4) && rules.contains("18086"),
        "a running instance's address and port are in the firewall:\n{rules}"
    );
    assert!(
        links(d.netns()).contains(&i.host_name),
        "its veth exists while it runs"
    );

    d.ok(&["stop", "gone"]);
    assert_no_trace(&d, "gone", &i, &gw, "after stop");
    assert!(
        !nft_text(&d).contains("18086"),
        "after stop: the published port is not forwarded"
    );
    assert!(
        has_lease(&d, "default", "gone"),
        "a stopped instance keeps its lease: {}",
        network_info(&d, "default")
    );
    d.ok(&["rm", "gone"]);
    wait_no_lease(&d, "default", "gone", "after rm");
    // The other one is intact.
    let s = eth0(&d, "stays");
    assert!(
        links(d.netns()).contains(&s.host_name),
        "stays keeps its veth"
    );
    assert_eq!(
        resolve(d.netns(), "stays", &gw)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![s.ipv4.clone()]
    );
    d.finish();
}

#[test]
fn an_ephemeral_instance_leaves_nothing_when_its_init_ends() {
    let d = TestDaemon::start();
    launch(&d, "blip", &["--ephemeral"], Some("sleep 2"));
    let gw = gateway(&d, "default");
    let i = eth0(&d, "blip");
    wait_until(CLEANUP, "the ephemeral instance to go", || {
        is_gone(&d, "blip")
    });
    assert_no_trace(&d, "blip", &i, &gw, "after an ephemeral instance ended");
    wait_no_lease(&d, "default", "blip", "after an ephemeral instance ended");
    d.finish();
}

#[test]
fn a_crashed_instance_leaves_no_veth_rule_or_record() {
    let d = TestDaemon::start();
    launch(&d, "crash", &[], Some(IDLE));
    let gw = gateway(&d, "default");
    let i = eth0(&d, "crash");
    signal(d.pid_of("crash"), Signal::KILL);
    wait_stopped(&d, "crash", CLEANUP);
    assert_no_trace(&d, "crash", &i, &gw, "after the init was killed");
    // It starts again with the same address.
    d.ok(&["start", "crash"]);
    assert_eq!(
        eth0(&d, "crash").ipv4,
        i.ipv4,
        "the same address after a crash"
    );
    d.finish();
}

#[test]
fn kill_9_of_the_daemon_while_instances_end_is_reconciled_at_start_up() {
    let mut d = TestDaemon::start();
    launch(&d, "keeper", &[], Some(IDLE));
    launch(&d, "dies", &[], Some(IDLE));
    launch(&d, "eph", &["--ephemeral"], Some(IDLE));
    let gw = gateway(&d, "default");
    let keeper = eth0(&d, "keeper");
    let dies = eth0(&d, "dies");
    let eph = eth0(&d, "eph");
    let dies_pid = d.pid_of("dies");
    let eph_pid = d.pid_of("eph");

    d.kill_daemon();
    signal(dies_pid, Signal::KILL);
    signal(eph_pid, Signal::KILL);
    wait_until(CLEANUP, "the killed inits to end", || {
        !pid_alive(dies_pid) && !pid_alive(eph_pid)
    });
    // Stale: a host end left with the name of an instance that no longer runs (the kernel
    // takes a veth away with its namespace, so only a crash in the middle of an attach, or
    // a namespace something else holds, leaves one). Host ends that are not this daemon's
    // instances' are another daemon's in the same namespace: left alone.
    let stale = dies.host_name.clone();
    // The kernel takes the dead instance's veth away asynchronously.
    wait_until(CLEANUP, "the killed instance's veth to go", || {
        !links(d.netns()).contains(&stale)
    });
    in_ns_ok(
        d.netns(),
        &[
            "ip", "link", "add", &stale, "type", "veth", "peer", "name", "tstale0",
        ],
    );
    in_ns_ok(
        d.netns(),
        &[
            "ip",
            "link",
            "add",
            "mvdeadbeef00010",
            "type",
            "veth",
            "peer",
            "name",
            "tother0",
        ],
    );
    d.restart();

    wait_until(CLEANUP, "the ephemeral instance removed", || {
        is_gone(&d, "eph")
    });
    wait_stopped(&d, "dies", CLEANUP);
    assert_no_trace(
        &d,
        "dies",
        &dies,
        &gw,
        "after a daemon restart (init died meanwhile)",
    );
    assert_no_trace(
        &d,
        "eph",
        &eph,
        &gw,
        "after a daemon restart (ephemeral died)",
    );
    wait_no_lease(
        &d,
        "default",
        "eph",
        "after a daemon restart (ephemeral died)",
    );
    let ok = poll_until(CLEANUP, || !links(d.netns()).contains(&stale));
    assert!(
        ok,
        "start-up removes the host end of an instance that does not run: {:?}",
        links(d.netns())
    );
    assert!(
        links(d.netns()).iter().any(|l| l == "mvdeadbeef00010"),
        "a host end of no instance of this daemon is left alone: {:?}",
        links(d.netns())
    );
    in_ns_ok(d.netns(), &["ip", "link", "del", "mvdeadbeef00010"]);
    // The survivor is untouched: its veth, its name, its traffic.
    assert!(
        links(d.netns()).contains(&keeper.host_name),
        "keeper's veth survived the daemon's restart"
    );
    assert!(
        !resolve(d.netns(), "keeper", &gw).is_empty(),
        "keeper's name survived the daemon's restart"
    );
    assert_eq!(
        links(d.netns())
            .iter()
            .filter(|l| l.starts_with("mv"))
            .count(),
        1,
        "exactly keeper's veth: {:?}",
        links(d.netns())
    );
    d.sh("keeper", &format!("ping -c 1 -W 2 {gw}"));
    d.ok(&["start", "dies"]);
    d.sh("dies", &format!("ping -c 1 -W 2 {}", keeper.ipv4));
    d.finish();
}

#[test]
fn a_graceful_daemon_restart_keeps_networks_and_duplicates_nothing() {
    let mut d = TestDaemon::start();
    d.ok(&["network", "create", "lab", "--subnet", "10.231.0.0/24"]);
    launch(
        &d,
        "a",
        &["--network", "lab", "--publish", "18087:80"],
        Some(IDLE),
    );
    launch(&d, "b", &["--network", "lab"], Some(IDLE));
    let links_before = {
        let mut l = links(d.netns());
        l.sort();
        l
    };
    let tables_before = without_counters(&nft_text(&d));
    let dns_before = dnsmasqs(&d);
    d.stop_daemon();
    d.restart();
    let mut links_after = links(d.netns());
    links_after.sort();
    assert_eq!(links_after, links_before, "the same links after a restart");
    assert_eq!(dnsmasqs(&d), dns_before, "the same dnsmasq after a restart");
    assert_eq!(
        without_counters(&nft_text(&d)),
        tables_before,
        "the same firewall after a restart (rendered from the same state)"
    );
    let b = eth0(&d, "b");
    d.sh("a", &format!("ping -c 1 -W 2 {}", b.ipv4));
    d.finish();
}

#[test]
fn kill_9_of_the_forker_keeps_the_network_and_later_stops_clean_up() {
    let d = TestDaemon::start();
    launch(&d, "a", &[], Some(IDLE));
    launch(&d, "b", &[], Some(IDLE));
    let gw = gateway(&d, "default");
    let a = eth0(&d, "a");
    let b = eth0(&d, "b");
    let old = d.forker_pid().expect("a forker pid");
    signal(old, Signal::KILL);
    wait_until(CLEANUP, "a new forker", || {
        d.forker_pid().is_some_and(|p| p != old && pid_alive(p))
    });
    // The instances were adopted with their networks intact.
    d.sh("a", &format!("ping -c 1 -W 2 {}", b.ipv4));
    assert!(!resolve(d.netns(), "b", &gw).is_empty(), "b still resolves");
    // And a stop through the new forker cleans up as usual.
    d.ok(&["stop", "a"]);
    assert_no_trace(
        &d,
        "a",
        &a,
        &gw,
        "after a stop following the forker's death",
    );
    d.ok(&["start", "a"]);
    assert_eq!(eth0(&d, "a").ipv4, a.ipv4);
    d.sh("a", &format!("ping -c 1 -W 2 {}", b.ipv4));
    d.finish();
}

#[test]
fn removing_the_last_network_removes_tables_bridge_and_dnsmasq() {
    let d = TestDaemon::start();
    d.ok(&["network", "create", "tmp", "--subnet", "10.232.0.0/24"]);
    launch(&d, "x", &["--network", "tmp"], Some(IDLE));
    let bridge = network_info(&d, "tmp")["bridge"]
        .as_str()
        .expect("a bridge")
        .to_owned();
    assert_eq!(dnsmasqs(&d).len(), 1, "one dnsmasq: {:?}", dnsmasqs(&d));
    d.ok(&["rm", "--force", "x"]);
    d.ok(&["network", "rm", "tmp"]);
    assert!(
        !links(d.netns()).contains(&bridge),
        "the bridge {bridge} is removed with its network"
    );
    assert!(
        nft_tables(&d).is_empty(),
        "no network: no table: {:?}",
        nft_tables(&d)
    );
    let gone = poll_until(CLEANUP, || dnsmasqs(&d).is_empty());
    assert!(gone, "the network's dnsmasq is stopped: {:?}", dnsmasqs(&d));
    assert!(
        !d.state.join("net/tmp").exists(),
        "the network's directory is removed"
    );
    let out = d.fails(&["network", "info", "tmp"]);
    assert_refused_with(&out, &["tmp"]);
    d.finish();
}

/// A ruleset's words, sorted, without the values of its counters (traffic changes them):
/// the same rules and elements in any order compare equal, a duplicated one does not.
fn without_counters(rules: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for w in rules.split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}') {
        if w.is_empty() {
            continue;
        }
        if skip {
            skip = false;
            continue;
        }
        skip = w == "packets" || w == "bytes";
        out.push(w.to_owned());
    }
    out.sort();
    out
}
