//! Where a test daemon's networking happens, and the teardown's network checks.
//!
//! Every test daemon runs in a network namespace of its own (`ip netns add mft-XXXXXX`, the
//! daemon started through `nsenter --net=/run/netns/mft-XXXXXX`: never `ip netns exec`, which
//! remounts /sys and hides the cgroups), so that its bridges, veths, nft tables and name
//! servers are the test's alone and no packet of a test can leave the machine. At the end the
//! namespace must hold nothing but `lo` and no nft table; then it is deleted.
//!
//! The Debian build tests' daemon runs in the machine's namespace instead (its builds download
//! packages through NAT): there the checks are that no bridge or veth of mayfly appeared that
//! was not there before it started (names are unique per network and instance id), and that
//! mayfly's two nft tables are gone (those tests are serialised by a machine-wide lock).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{CLI_TIMEOUT, Output, TestDaemon, try_run_command};

/// How long one `ip`, `nft` or `nsenter` call may take.
const NET_TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// The network namespace a test daemon runs in.
#[derive(Debug)]
pub(crate) enum DaemonNet {
    /// Its own namespace, `/run/netns/<name>`.
    Own(String),
    /// The machine's namespace, with what of mayfly was there before the daemon started.
    Host {
        /// Links named like mayfly's bridges (`mf-`) and veths (`mv`).
        links_before: Vec<String>,
        /// Whether one of mayfly's nft tables existed already.
        tables_before: bool,
    },
}

/// Runs a networking tool; an error (never a panic) when it cannot run, fails or hangs.
pub(crate) fn net_tool(program: &str, args: &[&str]) -> Result<Output, String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = try_run_command(cmd, None, NET_TOOL_TIMEOUT)?;
    if out.success() {
        Ok(out)
    } else {
        Err(format!("`{program} {}` failed: {out}", args.join(" ")))
    }
}

/// `nsenter --net=/run/netns/<ns> <program> <args>`.
pub(crate) fn in_netns(ns: &str, program: &str, args: &[&str]) -> Result<Output, String> {
    let net = format!("--net=/run/netns/{ns}");
    let mut all = vec![net.as_str(), program];
    all.extend_from_slice(args);
    net_tool("nsenter", &all)
}

/// The link names `ip -o link` prints (without the `@peer` suffix of a veth).
fn link_names(ip_o_link: &str) -> Vec<String> {
    ip_o_link
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}

/// mayfly's bridges and instance veths among `links`.
fn mayfly_links(links: Vec<String>) -> Vec<String> {
    links
        .into_iter()
        .filter(|n| n.starts_with("mf-") || n.starts_with("mv"))
        .collect()
}

/// Whether `nft list tables` shows one of mayfly's two tables.
fn has_mayfly_table(tables: &str) -> bool {
    tables
        .lines()
        .any(|l| matches!(l.trim(), "table inet mayfly" | "table bridge mayfly"))
}

impl DaemonNet {
    /// A new namespace `name` with `lo` up.
    pub(crate) fn own(name: &str) -> Result<DaemonNet, String> {
        net_tool("ip", &["netns", "add", name])?;
        let net = DaemonNet::Own(name.to_owned());
        if let Err(e) = in_netns(name, "ip", &["link", "set", "lo", "up"]) {
            net.delete();
            return Err(e);
        }
        Ok(net)
    }

    /// The machine's namespace, as it is now.
    pub(crate) fn host() -> DaemonNet {
        let links_before = net_tool("ip", &["-o", "link"])
            .map(|o| mayfly_links(link_names(&o.stdout)))
            .unwrap_or_default();
        let tables_before =
            net_tool("nft", &["list", "tables"]).is_ok_and(|o| has_mayfly_table(&o.stdout));
        DaemonNet::Host {
            links_before,
            tables_before,
        }
    }

    /// The namespace's name (`None`: the machine's).
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            DaemonNet::Own(n) => Some(n),
            DaemonNet::Host { .. } => None,
        }
    }

    /// How to start `program` in this namespace.
    pub(crate) fn command(&self, program: &str) -> Command {
        match self {
            DaemonNet::Own(ns) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net=/run/netns/{ns}")).arg(program);
                cmd
            }
            DaemonNet::Host { .. } => Command::new(program),
        }
    }

    /// What mayfly left in the namespace after its networks were removed and the daemon
    /// stopped: links, nft tables. Never panics.
    pub(crate) fn leaks(&self, problems: &mut Vec<String>) {
        match self {
            DaemonNet::Own(ns) => {
                match in_netns(ns, "ip", &["-o", "link"]) {
                    Ok(o) => {
                        let left: Vec<String> = link_names(&o.stdout)
                            .into_iter()
                            .filter(|n| n != "lo")
                            .collect();
                        if !left.is_empty() {
                            problems.push(format!(
                                "links remain in the daemon's namespace {ns}: {left:?}\n{}",
                                o.stdout
                            ));
                        }
                    }
                    Err(e) => problems.push(e),
                }
                match in_netns(ns, "nft", &["list", "tables"]) {
                    Ok(o) if o.stdout.trim().is_empty() => {}
                    Ok(o) => problems.push(format!(
                        "nft tables remain in the daemon's namespace {ns}:\n{}",
                        o.stdout
                    )),
                    Err(e) => problems.push(e),
                }
            }
            DaemonNet::Host {
                links_before,
                tables_before,
            } => {
                match net_tool("ip", &["-o", "link"]) {
                    Ok(o) => {
                        let new: Vec<String> = mayfly_links(link_names(&o.stdout))
                            .into_iter()
                            .filter(|n| !links_before.contains(n))
                            .collect();
                        if !new.is_empty() {
                            problems.push(format!("mayfly's links remain on the host: {new:?}"));
                        }
                    }
                    Err(e) => problems.push(e),
                }
                if !tables_before {
                    match net_tool("nft", &["list", "tables"]) {
                        Ok(o) if has_mayfly_table(&o.stdout) => problems.push(format!(
                            "mayfly's nft tables remain on the host:\n{}",
                            o.stdout
                        )),
                        Ok(_) => {}
                        Err(e) => problems.push(e),
                    }
                }
            }
        }
    }

    /// Removes by force what [`Self::leaks`] would find in the machine's namespace (a test's
    /// own namespace goes whole with [`Self::delete`]).
    pub(crate) fn force_cleanup(&self) {
        if let DaemonNet::Host {
            links_before,
            tables_before,
        } = self
        {
            if let Ok(o) = net_tool("ip", &["-o", "link"]) {
                for link in mayfly_links(link_names(&o.stdout)) {
                    if !links_before.contains(&link) {
                        let _ = net_tool("ip", &["link", "del", &link]);
                    }
                }
            }
            if !tables_before {
                for family in ["inet", "bridge"] {
                    let _ = net_tool("nft", &["delete", "table", family, "mayfly"]);
                }
            }
        }
    }

    /// Deletes the test's own namespace (with whatever links are left in it); a problem when
    /// that fails. Nothing to do for the machine's.
    pub(crate) fn delete(&self) -> Option<String> {
        let DaemonNet::Own(ns) = self else {
            return None;
        };
        net_tool("ip", &["netns", "del", ns]).err()
    }
}

impl TestDaemon {
    /// With the daemon running and the instances gone: removes every network with `mayfly
    /// network rm` (each must succeed: that proves removal works), then checks that no
    /// network and no channel is left. Never panics.
    pub(crate) fn remove_all_networks(&mut self, problems: &mut Vec<String>) {
        let list = |what: &str| -> Result<Vec<String>, String> {
            let out = self.try_mayfly(&[what, "list", "--json"], None, CLI_TIMEOUT)?;
            match serde_json::from_str::<Value>(&out.stdout) {
                Ok(Value::Array(all)) if out.success() => Ok(all
                    .iter()
                    .filter_map(|n| n["name"].as_str().map(str::to_owned))
                    .collect()),
                _ => Err(format!("`mayfly {what} list --json` failed: {out}")),
            }
        };
        let networks = match list("network") {
            Ok(names) => names,
            Err(e) => {
                problems.push(e);
                return;
            }
        };
        for name in networks {
            match self.try_mayfly(&["network", "rm", &name], None, CLI_TIMEOUT) {
                Ok(out) if out.success() => {}
                Ok(out) => problems.push(format!("`mayfly network rm {name}` failed: {out}")),
                Err(e) => problems.push(e),
            }
        }
        for what in ["network", "channel"] {
            match list(what) {
                Ok(left) if !left.is_empty() => {
                    problems.push(format!("{what}s remain after the teardown: {left:?}"));
                }
                Ok(_) => {}
                Err(e) => problems.push(e),
            }
        }
    }
}
