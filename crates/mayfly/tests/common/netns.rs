//! The network tests' view of namespaces: commands run in the daemon's network namespace
//! (`nsenter --net=/run/netns/<d.netns()>`), an "outside world" namespace joined to it by a
//! veth, what mayfly left there (links, nft tables, dnsmasq processes), and the small tool the
//! tests put into instances (`usock`, built from `tests/fixtures/usock.c`).
//!
//! THE NETWORK RULE: every address, link and packet of these helpers lives in namespaces the
//! test created (the daemon's `mft-…` and the outside `mfo-…`); nothing here touches the
//! machine's own namespace, and the outside namespace has no route beyond its veth.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// How long one command in a namespace may take.
pub const NS_TIMEOUT: Duration = Duration::from_secs(20);

/// The outside namespace's address (and the upstream name server and web server it runs).
pub const OUTSIDE_IP: &str = "192.0.2.2";
/// The daemon's end of the link to the outside.
pub const UPLINK_IP: &str = "192.0.2.1";
/// The name of the daemon namespace's end of the veth to the outside (no mayfly prefix).
pub const UPLINK: &str = "tup0";

fn nsenter(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .args(args);
    cmd
}

/// Runs `args` in network namespace `ns` (bounded by [`NS_TIMEOUT`]).
pub fn in_ns(ns: &str, args: &[&str]) -> Output {
    run_command(nsenter(ns, args), None, NS_TIMEOUT)
}

/// Runs `args` in `ns` and fails the test unless it exits 0; returns its stdout.
pub fn in_ns_ok(ns: &str, args: &[&str]) -> String {
    let out = in_ns(ns, args);
    assert!(
        out.success(),
        "`{}` in namespace {ns} failed: {out}",
        args.join(" ")
    );
    out.stdout
}

/// Runs `args` in the daemon's network namespace.
pub fn in_daemon_ns(d: &TestDaemon, args: &[&str]) -> Output {
    in_ns(d.netns(), args)
}

/// Spawns `args` in `ns` in the background (kill it with [`Background`]'s drop).
pub fn spawn_in_ns(ns: &str, args: &[&str]) -> Background {
    let child = nsenter(ns, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn `{}` in {ns}: {e}", args.join(" ")));
    Background {
        child,
        what: args.join(" "),
    }
}

/// A process a test started in a namespace; killed and reaped when dropped.
#[derive(Debug)]
pub struct Background {
    child: Child,
    what: String,
}

impl Background {
    /// Waits until its stdout shows `needle` (e.g. `listening`), failing the test after
    /// `within`.
    pub fn expect_stdout(&mut self, needle: &str, within: Duration) {
        let out = self.child.stdout.take().expect("stdout taken twice");
        let lines = line_reader(out);
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!("`{}` never printed `{needle}`", self.what),
            }
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Link names (`ip -o link`, without `@peer`) in `ns`.
pub fn links(ns: &str) -> Vec<String> {
    in_ns_ok(ns, &["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// The links of the daemon's namespace whose name starts with `prefix` (`mv`: instance
/// veths, `mf-`: bridges).
pub fn mayfly_links(d: &TestDaemon, prefix: &str) -> Vec<String> {
    links(d.netns())
        .into_iter()
        .filter(|l| l.starts_with(prefix))
        .collect()
}

/// `nft -j list table FAMILY mayfly` in the daemon's namespace, `None` when it does not
/// exist.
pub fn nft_table(d: &TestDaemon, family: &str) -> Option<Value> {
    let out = in_daemon_ns(d, &["nft", "-j", "list", "table", family, "mayfly"]);
    if !out.success() {
        return None;
    }
    Some(
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("nft printed no JSON ({e}): {out}")),
    )
}

/// The whole `nft list ruleset` (text) of the daemon's namespace, for failure messages and
/// for searching an address or a port in it.
pub fn nft_text(d: &TestDaemon) -> String {
    in_daemon_ns(d, &["nft", "list", "ruleset"]).stdout
}

/// The tables of the daemon's namespace (`inet mayfly`, `bridge mayfly`, …).
pub fn nft_tables(d: &TestDaemon) -> Vec<String> {
    in_daemon_ns(d, &["nft", "list", "tables"])
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_owned)
        .collect()
}

/// The dnsmasq processes serving networks of this test's daemon (by the `--conf-file=` of
/// the contract), as (pid, network name).
pub fn dnsmasqs(d: &TestDaemon) -> Vec<(i32, String)> {
    let prefix = format!("--conf-file={}/net/", d.state.display());
    processes_mentioning(&prefix)
        .into_iter()
        .filter_map(|(pid, cmd)| {
            let rest = cmd.split(&prefix).nth(1)?;
            let net = rest.split('/').next()?.to_owned();
            Some((pid, net))
        })
        .collect()
}

/// Asks name server `server` (from namespace `ns`) for `name`'s IPv4 addresses (busybox
/// nslookup); empty when it does not know it or does not answer.
pub fn resolve(ns: &str, name: &str, server: &str) -> Vec<Ipv4Addr> {
    let out = in_ns(
        ns,
        &[
            "busybox", "timeout", "5", "busybox", "nslookup", "-type=a", name, server,
        ],
    );
    nslookup_addresses(&out.stdout)
}

/// The answers of busybox nslookup's output (the `Address:` lines after `Name:`).
pub fn nslookup_addresses(out: &str) -> Vec<Ipv4Addr> {
    let mut answers = Vec::new();
    let mut in_answer = false;
    for l in out.lines() {
        if l.starts_with("Name:") {
            in_answer = true;
        } else if let (true, Some(a)) = (in_answer, l.strip_prefix("Address:"))
            && let Ok(ip) = a.trim().parse()
        {
            answers.push(ip);
        }
    }
    answers
}

/// `GET url` from namespace `ns` with busybox wget (5 s at most): the body, or what failed.
pub fn http_get_in_ns(ns: &str, url: &str) -> Result<String, String> {
    let out = in_ns(
        ns,
        &[
            "busybox", "timeout", "5", "busybox", "wget", "-q", "-O-", url,
        ],
    );
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(out.to_string())
    }
}

/// `GET url` from inside instance `name` (busybox wget, 5 s at most).
pub fn http_get_in(d: &TestDaemon, name: &str, url: &str) -> Result<String, String> {
    let out = d.mayfly(&["exec", name, "--", "timeout", "5", "wget", "-q", "-O-", url]);
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(out.to_string())
    }
}

// ---- networks and interfaces as the CLI shows them -----------------------------------------

/// `network info NAME --json`.
pub fn network_info(d: &TestDaemon, name: &str) -> Value {
    d.json(&["network", "info", name, "--json"])
}

/// The gateway (and name server) of network `name`.
pub fn gateway(d: &TestDaemon, name: &str) -> String {
    let info = network_info(d, name);
    info["gateway"]
        .as_str()
        .unwrap_or_else(|| panic!("network {name} has no gateway: {info}"))
        .to_owned()
}

/// The interfaces of network `net` as `network info` lists them (the catalogue's leases).
pub fn leases(d: &TestDaemon, net: &str) -> Vec<Value> {
    network_info(d, net)["interfaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// One interface of an instance (`info --json`'s `interfaces`), by its name inside (`eth0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// The network.
    pub network: String,
    /// `eth0`, `eth1`…
    pub name: String,
    /// IPv4 address.
    pub ipv4: String,
    /// IPv6 address (empty on a network without IPv6).
    pub ipv6: String,
    /// MAC address.
    pub mac: String,
    /// The host end.
    pub host_name: String,
}

/// The interfaces of instance `name`.
pub fn ifaces(d: &TestDaemon, name: &str) -> Vec<Iface> {
    let info = d.info(name);
    // Absent when empty (skip_serializing_if).
    info["interfaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap_or_default().to_owned();
            Iface {
                network: s("network"),
                name: s("name"),
                ipv4: s("ipv4"),
                ipv6: s("ipv6"),
                mac: s("mac"),
                host_name: s("host_name"),
            }
        })
        .collect()
}

/// The interfaces an instance sees (`ip -o link` inside), by name.
pub fn links_inside(d: &TestDaemon, name: &str) -> Vec<String> {
    d.sh(name, "ip -o link show")
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// The eth0 of instance `name`.
pub fn eth0(d: &TestDaemon, name: &str) -> Iface {
    ifaces(d, name)
        .into_iter()
        .find(|i| i.name == "eth0")
        .unwrap_or_else(|| panic!("instance {name} has no eth0: {}", d.info(name)))
}

/// What instance `name` itself sees of `dev` (`ip -o -4 addr` and its MAC), as
/// (address/prefix, mac).
pub fn seen_inside(d: &TestDaemon, name: &str, dev: &str) -> (String, String) {
    let addr = d.sh(
        name,
        &format!("ip -o -4 addr show dev {dev} | awk '{{print $4}}'"),
    );
    let mac = d.sh(
        name,
        &format!("ip -o link show dev {dev} | sed 's/.*link\\/ether \\([0-9a-f:]*\\).*/\\1/'"),
    );
    (addr.trim().to_owned(), mac.trim().to_owned())
}

// ---- the outside world -------------------------------------------------------------------

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique, short namespace name (`mfo-<pid>-<n>`).
pub fn unique_ns(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Another namespace ("outside", the uplink's far end) joined to the daemon's by a veth:
/// `tup0` 192.0.2.1/24 in the daemon's namespace, `eth0` 192.0.2.2/24 outside. Instances
/// reach it through NAT (the daemon's namespace routes 192.0.2.0/24 to `tup0`); it has no
/// route anywhere else. Call [`Outside::close`] before `d.finish()` (whose check wants no
/// link but `lo` in the daemon's namespace); dropping it removes it too.
#[derive(Debug)]
pub struct Outside {
    /// Its name under /run/netns.
    pub ns: String,
    daemon_ns: String,
    servers: Vec<Background>,
    closed: bool,
}

impl Outside {
    /// Creates it, joined to `d`'s namespace.
    pub fn new(d: &TestDaemon) -> Outside {
        let ns = unique_ns("mfo");
        let ip = |args: &[&str]| {
            let mut cmd = Command::new("ip");
            cmd.args(args);
            let out = run_command(cmd, None, NS_TIMEOUT);
            assert!(out.success(), "`ip {}` failed: {out}", args.join(" "));
        };
        ip(&["netns", "add", &ns]);
        let o = Outside {
            ns: ns.clone(),
            daemon_ns: d.netns().to_owned(),
            servers: Vec::new(),
            closed: false,
        };
        let peer = "tout0";
        // Created in the daemon's namespace, the far end moved out (never in the machine's).
        in_ns_ok(
            d.netns(),
            &[
                "ip", "link", "add", UPLINK, "type", "veth", "peer", "name", peer,
            ],
        );
        in_ns_ok(d.netns(), &["ip", "link", "set", peer, "netns", &ns]);
        in_ns_ok(
            d.netns(),
            &[
                "ip",
                "addr",
                "add",
                &format!("{UPLINK_IP}/24"),
                "dev",
                UPLINK,
            ],
        );
        in_ns_ok(d.netns(), &["ip", "link", "set", UPLINK, "up"]);
        in_ns_ok(&ns, &["ip", "link", "set", peer, "name", "eth0"]);
        in_ns_ok(
            &ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{OUTSIDE_IP}/24"),
                "dev",
                "eth0",
            ],
        );
        in_ns_ok(&ns, &["ip", "link", "set", "eth0", "up"]);
        in_ns_ok(&ns, &["ip", "link", "set", "lo", "up"]);
        o
    }

    /// Runs `args` in it.
    pub fn run(&self, args: &[&str]) -> Output {
        in_ns(&self.ns, args)
    }

    /// Starts busybox httpd on port 80 serving `body` as `/index.html`, logging every
    /// client's address to its stdout (`-v`, foreground); returns when it listens.
    pub fn serve_http(&mut self, dir: &Path, body: &str) {
        std::fs::create_dir_all(dir).expect("mkdir the outside's web root");
        std::fs::write(dir.join("index.html"), body).expect("write the outside's page");
        let www = dir.to_str().expect("a UTF-8 path").to_owned();
        let bg = spawn_in_ns(
            &self.ns,
            &["busybox", "httpd", "-f", "-vv", "-p", "80", "-h", &www],
        );
        self.servers.push(bg);
        let ok = poll_until(Duration::from_secs(10), || {
            http_get_in_ns(&self.ns, &format!("http://{OUTSIDE_IP}/")).is_ok()
        });
        assert!(ok, "the outside web server did not answer within 10 s");
    }

    /// Starts a dnsmasq name server on 192.0.2.2 that answers `name` with `addr` and
    /// refuses everything else (no upstream), in the foreground with its queries logged.
    pub fn serve_dns(&mut self, dir: &Path, name: &str, addr: &str) {
        std::fs::create_dir_all(dir).expect("mkdir the outside's dns dir");
        let pid = dir.join("dnsmasq.pid");
        let bg = spawn_in_ns(
            &self.ns,
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                &format!("--pid-file={}", pid.display()),
                &format!("--listen-address={OUTSIDE_IP}"),
                "--bind-interfaces",
                "--log-queries",
                "--log-facility=-",
                &format!("--address=/{name}/{addr}"),
            ],
        );
        self.servers.push(bg);
        let ok = poll_until(Duration::from_secs(10), || {
            resolve(&self.ns, name, OUTSIDE_IP)
                .iter()
                .any(|a| a.to_string() == addr)
        });
        assert!(ok, "the outside name server did not answer within 10 s");
    }

    /// Starts `args` in it in the background (killed at close).
    pub fn spawn(&mut self, args: &[&str]) -> &mut Background {
        self.servers.push(spawn_in_ns(&self.ns, args));
        self.servers.last_mut().expect("just pushed")
    }

    /// Stops its servers, removes it (its veth goes with it) and checks that the daemon's
    /// end went too.
    pub fn close(mut self) {
        self.remove();
        assert!(
            !links(&self.daemon_ns).iter().any(|l| l == UPLINK),
            "the uplink {UPLINK} remains in the daemon's namespace"
        );
    }

    fn remove(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.servers.clear();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "del", &self.ns]);
        let _ = try_run_command(cmd, None, NS_TIMEOUT);
        // The veth's daemon end disappears with its peer; make sure even if not.
        let _ = try_run_command(
            nsenter(&self.daemon_ns, &["ip", "link", "del", UPLINK]),
            None,
            NS_TIMEOUT,
        );
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.remove();
    }
}

// ---- the usock tool -----------------------------------------------------------------------

/// Lays `tests/fixtures/usock.c`, built, over the busybox template as `/bin/usock`.
pub fn install_usock(d: &TestDaemon) {
    super::install_fixture(d, "usock");
}

/// The host's copy of usock (built by [`install_usock`]), to run in a namespace.
pub fn usock_on_host(d: &TestDaemon) -> String {
    let p = d.dir.join("usock-tree/bin/usock");
    assert!(p.is_file(), "install_usock(&d) first");
    p.to_str().expect("a UTF-8 path").to_owned()
}

/// Network and instance names unique enough for one test.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Whether the leases of network `net` (`network info`) name instance `inst`.
pub fn has_lease(d: &TestDaemon, net: &str, inst: &str) -> bool {
    leases(d, net).iter().any(|l| l["instance"] == inst)
}

/// Asserts that nothing of instance `inst` (whose eth0 was `iface`) is left in the daemon's
/// namespace: no host veth, no nft element or rule naming its address or MAC, no DNS
/// answer for its name on `gateway`.
pub fn assert_no_trace(d: &TestDaemon, inst: &str, iface: &Iface, gateway: &str, why: &str) {
    let gone = poll_until(Duration::from_secs(5), || {
        !links(d.netns()).contains(&iface.host_name)
    });
    assert!(
        gone,
        "{why}: the host end {} of {inst} remains: {:?}",
        iface.host_name,
        links(d.netns())
    );
    let rules = nft_text(d).to_lowercase();
    assert!(
        !mentions_address(&rules, &iface.ipv4),
        "{why}: the firewall still names {inst}'s address {}:\n{rules}",
        iface.ipv4
    );
    assert!(
        !rules.contains(&iface.mac.to_lowercase()),
        "{why}: the firewall still names {inst}'s MAC {}:\n{rules}",
        iface.mac
    );
    assert!(
        !rules.contains(&iface.host_name),
        "{why}: the firewall still names {inst}'s host end {}:\n{rules}",
        iface.host_name
    );
    let answered = resolve(d.netns(), inst, gateway);
    assert!(
        answered.is_empty(),
        "{why}: the name {inst} still resolves on {gateway}: {answered:?}"
    );
}

/// Whether `text` contains IPv4 address `ip` as a whole token (`10.77.0.2` is not in
/// `10.77.0.23`).
pub fn mentions_address(text: &str, ip: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .any(|t| t == ip)
}
