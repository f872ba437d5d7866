//! What the network tests share: a network namespace of the test's own (never the host's),
//! "containers" (processes in their own namespaces) and commands run inside them.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mayfly_net::{Interface, Mac, NetworkPlan};

/// Moves the test's thread (and what it spawns) into a new network namespace with `lo` up.
/// nextest runs every test in a process of its own, so nothing else shares the thread.
pub fn isolate() {
    mayfly_sys::process::unshare_network_namespace().expect("unshare the network namespace");
    mayfly_sys::net::loopback_up().expect("lo up");
}

fn ns_inode(path: &str) -> Option<u64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// A process in a network namespace of its own, below the test's.
pub struct Container {
    child: Child,
}

impl Container {
    pub fn new() -> Container {
        Container::spawn(&["--net"])
    }

    /// One whose network namespace belongs to a user namespace of its own, as an instance's
    /// does.
    pub fn with_user_namespace() -> Container {
        Container::spawn(&["--user", "--map-root-user", "--net"])
    }

    fn spawn(flags: &[&str]) -> Container {
        let child = Command::new("unshare")
            .args(flags)
            .args(["sleep", "120"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare");
        let mine = ns_inode("/proc/thread-self/ns/net");
        let path = format!("/proc/{}/ns/net", child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        // `unshare` runs before it execs sleep: wait until the namespace is its own.
        while ns_inode(&path) == mine {
            assert!(
                Instant::now() < deadline,
                "unshare did not make a namespace"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Container { child }
    }

    pub fn netns(&self) -> OwnedFd {
        rustix::fs::open(
            format!("/proc/{}/ns/net", self.child.id()).as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .expect("open the container's namespace")
    }

    pub fn ns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.child.id())
    }

    /// Runs a command inside (network namespace only), with a deadline.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg("10")
            .arg("nsenter")
            .arg(format!("--net={}", self.ns_path()));
        cmd.args(args);
        cmd.output().expect("run nsenter")
    }

    /// Whether a ping from inside reaches `ip` within 3 s (neighbour entries that failed
    /// while traffic was dropped take a moment to be tried again).
    pub fn pings_soon(&self, ip: Ipv4Addr) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if self.pings(ip) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }

    /// Whether one ping from inside reaches `ip` within a second.
    pub fn pings(&self, ip: Ipv4Addr) -> bool {
        let out = self.run(&["busybox", "ping", "-c", "1", "-W", "1", &ip.to_string()]);
        out.status.success()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plan for network `name` on `subnet`.
pub fn plan(name: &str, bridge: &str, subnet: &str, isolated: bool) -> NetworkPlan {
    let subnet: mayfly_net::Ipv4Net = subnet.parse().unwrap();
    NetworkPlan {
        name: name.into(),
        bridge: bridge.into(),
        subnet,
        gateway: subnet.gateway(),
        isolated,
        nat: false,
        upstream: vec![],
        subnet6: Some(mayfly_net::addr6::random_ula64()),
    }
}

/// Interface `idx` of instance `n` on `plan` (address: the `n`th of the subnet; the host
/// end's name is unique in the test).
pub fn iface(plan: &NetworkPlan, n: u32, idx: u8) -> Interface {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n_host = NEXT.fetch_add(1, Ordering::Relaxed);
    Interface {
        network: plan.name.clone(),
        bridge: plan.bridge.clone(),
        host_name: format!("mv{n_host:012x}{idx}"),
        name: format!("eth{idx}"),
        mac: Mac::random(),
        ipv4: plan.subnet.host(n).unwrap(),
        prefix: plan.subnet.prefix(),
        gateway: (idx == 0).then_some(plan.gateway),
        isolated: plan.isolated,
        ipv6: plan
            .subnet6
            .map(|p| mayfly_net::addr6::derived6(p, plan.subnet.host(n).unwrap())),
        gateway6: plan.gateway6().filter(|_| idx == 0),
    }
}

/// `ip -o link` of the test's namespace, names only.
pub fn link_names() -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .collect()
}
