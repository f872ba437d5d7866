//! dnsmasq per network, for real, in a network namespace of the test's own.

mod common;

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Container, iface, isolate, plan};
use mayfly_net::{NetworkPlan, dns, link};

/// Stops the server at the end of the test, even a failed one.
struct Server(PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = dns::stop(&self.0);
    }
}

/// The pids of processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

fn ours(dir: &Path) -> Vec<i32> {
    processes_with(&dns::conf_arg(dir))
}

/// The address `name` resolves to through `server`, asked from inside `c`.
fn lookup(c: &Container, name: &str, server: Ipv4Addr) -> Option<String> {
    let out = c.run(&["busybox", "nslookup", name, &server.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // busybox prints the server first, then the answer after "Name:".
    let answer = text.split_once("Name:")?.1;
    answer
        .lines()
        .find_map(|l| l.trim().strip_prefix("Address:"))
        .map(|a| a.trim().to_owned())
}

/// Waits up to `within` for `f` to hold; how long it took.
fn within(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn setup(p: &NetworkPlan) -> Container {
    link::ensure_bridge(p).unwrap();
    let c = Container::new();
    link::attach(c.netns().as_fd(), &iface(p, 0, 0)).unwrap();
    c
}

#[test]
fn names_appear_and_vanish_within_a_second_and_stop_leaves_nothing() {
    isolate();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("net/lan");
    let _guard = Server(dir.clone());
    let p = plan("lan", "mf-000000000001", "10.77.0.0/24", false);
    let c = setup(&p);
    dns::ensure_running(&p, &dir).unwrap();
    let first = ours(&dir);
    assert_eq!(first.len(), 1, "{first:?}");
    // Idempotent: the live one is adopted.
    dns::ensure_running(&p, &dir).unwrap();
    assert_eq!(ours(&dir), first);

    dns::set_host(&dir, "id1", Ipv4Addr::new(10, 77, 0, 9), None, "web").unwrap();
    let took = within(Duration::from_secs(1), || {
        lookup(&c, "web", p.gateway).as_deref() == Some("10.77.0.9")
    });
    assert!(took.is_some(), "web did not resolve within 1 s");
    assert_eq!(
        lookup(&c, "web.mayfly", p.gateway).as_deref(),
        Some("10.77.0.9")
    );
    // Renamed (same key, new name).
    dns::set_host(&dir, "id1", Ipv4Addr::new(10, 77, 0, 9), None, "www").unwrap();
    assert!(
        within(Duration::from_secs(1), || lookup(&c, "www", p.gateway)
            .is_some())
        .is_some()
    );
    assert!(
        within(Duration::from_secs(1), || lookup(&c, "web", p.gateway)
            .is_none())
        .is_some()
    );
    dns::remove_host(&dir, "id1").unwrap();
    assert!(
        within(Duration::from_secs(1), || lookup(&c, "www", p.gateway)
            .is_none())
        .is_some(),
        "a removed name still resolves"
    );
    assert!(dns::host_keys(&dir).unwrap().is_empty());

    // A changed configuration restarts it.
    let mut q = p.clone();
    q.upstream = vec![Ipv4Addr::new(10, 99, 0, 1)];
    dns::ensure_running(&q, &dir).unwrap();
    let second = ours(&dir);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    // Killed behind our back: started again.
    let _ = Command::new("kill")
        .arg("-9")
        .arg(second[0].to_string())
        .status();
    // Gone once it is no more than a zombie (its sockets are closed by then).
    let ended = || {
        std::fs::read_to_string(format!("/proc/{}/status", second[0]))
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            })
            .unwrap_or(true)
    };
    assert!(within(Duration::from_secs(2), ended).is_some());
    dns::ensure_running(&q, &dir).unwrap();
    assert_eq!(ours(&dir).len(), 1);

    dns::stop(&dir).unwrap();
    assert!(ours(&dir).is_empty(), "dnsmasq left running");
    assert!(!dir.exists());
    dns::stop(&dir).unwrap();
}

#[test]
fn other_names_go_to_the_upstream_server() {
    isolate();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("net/lan");
    let _guard = Server(dir.clone());
    // The "upstream": another dnsmasq on a bridge of the test's namespace.
    let up = plan("up", "mf-0000000000ff", "10.99.0.0/24", false);
    link::ensure_bridge(&up).unwrap();
    let mut upstream: Child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--listen-address=10.99.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--pid-file",
            "--user=root",
            "--address=/outside.test/10.99.0.42",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut p = plan("lan", "mf-000000000001", "10.77.0.0/24", false);
    p.upstream = vec![Ipv4Addr::new(10, 99, 0, 1)];
    let c = setup(&p);
    dns::ensure_running(&p, &dir).unwrap();
    let got = within(Duration::from_secs(3), || {
        lookup(&c, "outside.test", p.gateway).as_deref() == Some("10.99.0.42")
    });
    assert!(
        got.is_some(),
        "not forwarded: {:?}",
        lookup(&c, "outside.test", p.gateway)
    );
    // Bare names are never forwarded.
    assert_eq!(lookup(&c, "outside", p.gateway), None);
    dns::stop(&dir).unwrap();
    let _ = upstream.kill();
    let _ = upstream.wait();
}

#[test]
fn with_a_reachable_state_directory_it_drops_root() {
    isolate();
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = state.path().join("net/lan");
    let _guard = Server(dir.clone());
    let p = plan("lan", "mf-000000000001", "10.77.0.0/24", false);
    let c = setup(&p);
    dns::ensure_running(&p, &dir).unwrap();
    let conf = std::fs::read_to_string(dir.join(dns::CONF)).unwrap();
    assert!(
        conf.contains("\nuser=dnsmasq\n") || conf.contains("\nuser=nobody\n"),
        "{conf}"
    );
    let pid = ours(&dir)[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(!uid.split_whitespace().skip(1).any(|u| u == "0"), "{uid}");
    dns::set_host(&dir, "id1", Ipv4Addr::new(10, 77, 0, 9), None, "web").unwrap();
    assert!(
        within(Duration::from_secs(1), || lookup(&c, "web", p.gateway)
            .is_some())
        .is_some(),
        "the unprivileged server cannot read its hosts"
    );
    dns::stop(&dir).unwrap();
    assert!(ours(&dir).is_empty());
}
