//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`: every container's own, written by
//! mayfly at every start and mounted over the template's (or over an empty mount point when
//! the template has none), never part of a writable layer, snapshot or published layer, never
//! mounted through a tenant's symlink. Build containers get them too.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use common::{TestDaemon, digests, layer_dir_name, template_info, top_layer, version};
use serde_json::json;

/// What mayfly mounts over or into every instance (its files, and the directory of its
/// metadata), relative to the root.
const TARGETS: [&str; 4] = ["etc/hostname", "etc/hosts", "etc/resolv.conf", "run/mayfly"];

/// The `/etc/hosts` mayfly writes for `name` whose own address is `own` (its `eth0`'s, or
/// 127.0.1.1 without a network).
fn expected_hosts(name: &str, own: &str, own6: Option<&str>) -> String {
    let own6 = own6.map(|a| format!("{a}\t{name}\n")).unwrap_or_default();
    format!(
        "127.0.0.1\tlocalhost\n{own}\t{name}\n{own6}::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
}

fn nameservers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next().map(str::to_owned))
                .flatten()
        })
        .collect()
}

fn loopback(server: &str) -> bool {
    server.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The name servers an isolated instance must be given: the host's, without its loopback
/// ones; systemd-resolved's upstream ones when that leaves none.
fn expected_servers() -> Vec<String> {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let direct: Vec<String> = nameservers(&host)
        .into_iter()
        .filter(|s| !loopback(s))
        .collect();
    if !direct.is_empty() {
        return direct;
    }
    let upstream = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").unwrap_or_default();
    nameservers(&upstream)
        .into_iter()
        .filter(|s| !loopback(s))
        .collect()
}

/// The gateway of the /24 default network that `ipv4` is on (its name server).
fn gateway_of(ipv4: &str) -> String {
    let (net, _) = ipv4.rsplit_once('.').expect("an IPv4 address");
    format!("{net}.1")
}

/// Asserts that instance `name` sees its own name, hosts and resolvers: on a network, its
/// `eth0` address and the network's name server; without one (`--network none`), 127.0.1.1
/// and the host's resolvers.
fn assert_own_files(d: &TestDaemon, name: &str) {
    assert_eq!(d.sh(name, "hostname").trim(), name, "the UTS hostname");
    assert_eq!(d.sh(name, "cat /etc/hostname"), format!("{name}\n"));
    let info = d.info(name);
    let eth0 = info["interfaces"][0]["ipv4"].as_str().map(str::to_owned);
    let own = eth0.clone().unwrap_or_else(|| "127.0.1.1".to_owned());
    let own6 = info["interfaces"][0]["ipv6"].as_str();
    assert_eq!(eth0.is_some(), own6.is_some(), "IPv6 beside IPv4: {info}");
    assert_eq!(
        d.sh(name, "cat /etc/hosts"),
        expected_hosts(name, &own, own6)
    );
    // The name resolves to the instance itself through /etc/hosts.
    assert_eq!(d.sh(name, "hostname -i").trim(), own);
    let resolv = d.sh(name, "cat /etc/resolv.conf");
    match &eth0 {
        Some(ip) => {
            assert_eq!(nameservers(&resolv), [gateway_of(ip)], "{resolv}");
            assert!(resolv.contains("\nsearch mayfly\n"), "{resolv}");
        }
        None => assert_eq!(nameservers(&resolv), expected_servers(), "{resolv}"),
    }
    assert!(
        resolv.starts_with("# Written by mayfly"),
        "mayfly's resolv.conf: {resolv}"
    );
}

/// Paths of `TARGETS` present in the tree at `root` (none expected in layers and copies).
fn targets_in(root: &Path) -> Vec<&'static str> {
    TARGETS
        .iter()
        .copied()
        .filter(|t| std::fs::symlink_metadata(root.join(t)).is_ok())
        .collect()
}

fn only_entry(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read a state directory")
        .map(|e| e.expect("an entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

#[test]
fn every_instance_has_its_own_name_hosts_and_resolvers_and_never_keeps_them() {
    let d = TestDaemon::start();
    // Through the CLI and through the API.
    d.ok(&["launch", "busybox", "--name", "web-1", "--persistent"]);
    assert_own_files(&d, "web-1");
    let (status, body) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "busybox", "name": "api-made"})),
    );
    assert_eq!(status, 201, "{body}");
    assert_own_files(&d, "api-made");
    let (status, body) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "busybox", "name": "alone", "networks": ["none"]})),
    );
    assert_eq!(status, 201, "{body}");
    let none = d.info("alone")["interfaces"].clone();
    assert!(none.as_array().is_none_or(Vec::is_empty), "{none}");
    assert_own_files(&d, "alone");
    let once = d.ok(&["run", "--rm", "busybox", "--", "cat", "/etc/hostname"]);
    assert!(once.trim().starts_with("busybox-"), "{once}");

    // What the instance writes there stays out of its writable layer, and is replaced at
    // the next start.
    d.sh(
        "web-1",
        "echo 10.0.0.9 intruder >> /etc/hosts && echo other > /etc/hostname && echo x > /root/kept",
    );
    assert!(d.sh("web-1", "cat /etc/hosts").contains("intruder"));
    let upper = d
        .state
        .join("instances")
        .join(d.info("web-1")["id"].as_str().unwrap());
    d.ok(&["snapshot", "create", "web-1", "s1"]);
    d.ok(&["publish", "web-1", "--as", "golden"]);
    let snapshot = only_entry(&d.state.join("snapshots"));
    assert!(
        snapshot.join("root/kept").exists(),
        "the snapshot has the change"
    );
    assert_eq!(targets_in(&snapshot), Vec::<&str>::new(), "snapshot");
    let golden = template_info(&d, "golden");
    let layer = d.state.join("layers").join(layer_dir_name(
        &digests(&version(&golden, 1)).last().cloned().unwrap(),
    ));
    assert!(layer.join("root/kept").exists());
    assert_eq!(targets_in(&layer), Vec::<&str>::new(), "published layer");
    for entry in std::fs::read_dir(&upper).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("upper-") {
            assert_eq!(
                targets_in(&entry.path()),
                Vec::<&str>::new(),
                "writable layer"
            );
        }
    }
    d.ok(&["restart", "web-1"]);
    assert_own_files(&d, "web-1");
    assert!(d.sh("web-1", "cat /root/kept").contains('x'), "persistent");

    // A clone and an instance of the published template are themselves.
    d.ok(&["clone", "web-1", "web-2", "--start"]);
    assert_own_files(&d, "web-2");
    d.ok(&["launch", "golden", "--name", "gold-1"]);
    assert_own_files(&d, "gold-1");
    d.finish();
}

#[test]
fn a_tenant_symlink_at_a_target_is_never_followed() {
    let d = TestDaemon::start();
    let victim = d.dir.join("victim");
    std::fs::write(&victim, "host file\n").unwrap();
    let patch = d.dir.join("patch");
    std::fs::create_dir_all(patch.join("etc")).unwrap();
    // Absolute to the host's file, relative climbing out, and to another file of the root.
    std::os::unix::fs::symlink(&victim, patch.join("etc/hosts")).unwrap();
    let climb = format!("../../../../../../../..{}", victim.display());
    std::os::unix::fs::symlink(&climb, patch.join("etc/resolv.conf")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", patch.join("etc/hostname")).unwrap();
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--from",
        patch.to_str().unwrap(),
    ]);
    d.ok(&["launch", "busybox", "--name", "linked"]);

    let links = d.sh(
        "linked",
        "readlink /etc/hosts; readlink /etc/resolv.conf; readlink /etc/hostname",
    );
    assert_eq!(
        links,
        format!("{}\n{climb}\n/etc/passwd\n", victim.display()),
        "the symlinks are the tenant's"
    );
    assert!(
        d.sh("linked", "cat /etc/passwd").starts_with("root:x:0:0:"),
        "nothing was mounted over the symlink's target inside the root"
    );
    assert_eq!(d.sh("linked", "hostname").trim(), "linked");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file\n");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(victim.to_str().unwrap()),
        "a mount landed on the host's file: {mountinfo}"
    );
    let log = std::fs::read_to_string(d.state.join("forker.log")).unwrap_or_default();
    assert!(
        log.contains("/etc/hosts left as the instance has it (it is a symlink)"),
        "the skip is logged: {log}"
    );
    d.finish();
}

#[test]
fn build_containers_get_the_files_and_their_layers_keep_neither_them_nor_build_logs() {
    let d = TestDaemon::start();
    let script = "cat /etc/hostname > /seen-hostname; cat /etc/resolv.conf > /seen-resolv; \
                  hostname > /seen-uts; mkdir -p /var/log/apt /var/lib/apt/lists/partial; \
                  echo log > /var/log/apt/history.log; echo log > /var/log/dpkg.log; \
                  echo list > /var/lib/apt/lists/deb_Packages; echo 1 > /srv-marker";
    d.ok(&[
        "template", "build", "app", "--from", "busybox", "--run", script,
    ]);
    let app = template_info(&d, "app");
    let layer = d.state.join("layers").join(layer_dir_name(
        top_layer(&version(&app, 1))["digest"].as_str().unwrap(),
    ));
    let read = |p: &str| std::fs::read_to_string(layer.join(p)).unwrap();
    assert_eq!(read("seen-hostname"), "mayfly-build\n");
    assert_eq!(read("seen-uts"), "mayfly-build\n");
    // A build is on the default network: it asks that network's name server.
    let resolv = read("seen-resolv");
    let servers = nameservers(&resolv);
    assert_eq!(servers.len(), 1, "{resolv}");
    assert!(
        servers[0].starts_with("10.") && servers[0].ends_with(".0.1"),
        "{resolv}"
    );
    assert_eq!(targets_in(&layer), Vec::<&str>::new(), "the build's layer");
    assert!(layer.join("srv-marker").exists());
    for gone in [
        "var/log/apt/history.log",
        "var/log/dpkg.log",
        "var/lib/apt/lists/deb_Packages",
    ] {
        assert!(
            !layer.join(gone).exists(),
            "{gone} is cleaned from the layer"
        );
    }
    for kept in ["var/log/apt", "var/lib/apt/lists/partial"] {
        assert!(layer.join(kept).is_dir(), "the directory {kept} stays");
    }
    d.ok(&["launch", "app", "--name", "from-app"]);
    assert_own_files(&d, "from-app");

    // A script that ends early with `exit 0` is still cleaned after; a failing one fails.
    d.ok(&[
        "template",
        "build",
        "early",
        "--from",
        "busybox",
        "--run",
        "echo log > /var/log/dpkg.log; echo 1 > /done; exit 0; echo 2 > /never",
    ]);
    let early = d.state.join("layers").join(layer_dir_name(
        top_layer(&version(&template_info(&d, "early"), 1))["digest"]
            .as_str()
            .unwrap(),
    ));
    assert!(early.join("done").exists() && !early.join("never").exists());
    assert!(
        !early.join("var/log/dpkg.log").exists(),
        "cleaned after exit 0"
    );
    let failed = d.fails(&[
        "template",
        "build",
        "failed",
        "--from",
        "busybox",
        "--run",
        "echo x; exit 3",
    ]);
    assert!(failed.stderr.contains("exited with code 3"), "{failed}");
    d.finish();
}

/// An application's own `/run` (a directory its image made there, as postgres' does for its
/// socket) is kept: the tmpfs an init needs at `/run` is mounted only for an init (issue 20).
#[test]
fn run_is_the_templates_for_applications_and_a_fresh_tmpfs_for_an_init() {
    let d = TestDaemon::start();
    d.ok(&[
        "template",
        "build",
        "runapp",
        "--from",
        "busybox",
        "--run",
        "mkdir -p /run/app && echo kept > /run/app/f",
    ]);
    let app = d.ok(&["run", "--rm", "runapp", "--", "cat", "/run/app/f"]);
    assert_eq!(app.trim(), "kept");
    let fs = d.ok(&[
        "run",
        "--rm",
        "runapp",
        "--",
        "sh",
        "-c",
        "grep ' /run ' /proc/mounts || echo none",
    ]);
    assert_eq!(fs.trim(), "none", "no tmpfs for an application: {fs}");

    // An init (busybox's here) gets the tmpfs at /run and /run/lock.
    d.ok(&[
        "launch",
        "runapp",
        "--name",
        "runinit",
        "--",
        "/bin/busybox",
        "init",
    ]);
    let mut mounts = String::new();
    common::wait_until(
        std::time::Duration::from_secs(10),
        "the init to run",
        || {
            mounts = d
                .mayfly(&["exec", "runinit", "--", "cat", "/proc/mounts"])
                .stdout;
            !mounts.is_empty()
        },
    );
    assert!(
        mounts.contains("tmpfs /run tmpfs rw,nosuid,nodev"),
        "{mounts}"
    );
    assert!(mounts.contains("tmpfs /run/lock tmpfs"), "{mounts}");
    let gone = d.mayfly(&["exec", "runinit", "--", "cat", "/run/app/f"]);
    assert!(!gone.success(), "an init's /run starts empty: {gone}");
    d.ok(&["rm", "--force", "runinit"]);
    d.finish();
}
