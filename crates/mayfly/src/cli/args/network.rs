//! The arguments of `mayfly network …`, `mayfly channel …` and `mayfly rename`, and the
//! network options of `launch` and `run` (`--network`, `--publish`).

use std::net::Ipv4Addr;

use clap::{Args, Subcommand};
use mayfly_api::{NO_NETWORK, PublishPort};

use crate::cli::JsonFlag;

/// Network subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network: a bridge on the host with a private IPv4 subnet, a name server on
    /// its gateway address, and (unless --no-nat) outbound NAT.
    #[command(after_help = "\
The network `default` is created by itself at the first launch without --network (and at
the first build); its subnet is the first free 10.N.0.0/24 from 10.77.0.0/24 on. Instances
on a network resolve each other by name (`web`, `web.mayfly`); the host can too, by asking
the gateway (`nslookup web GATEWAY`, or `resolvectl dns BRIDGE GATEWAY; resolvectl domain
BRIDGE ~mayfly`). Instances on different networks cannot reach each other.

Examples:
  mayfly network create backend
  mayfly network create lab --subnet 10.20.0.0/24 --isolated --no-nat
  mayfly network create legacy --no-ipv6
  mayfly network create dmz --dns-upstream 192.0.2.53 --dns-upstream 192.0.2.54")]
    Create(NetworkCreateArgs),
    /// List networks.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  mayfly network list\n  mayfly network list --json"
    )]
    List(JsonFlag),
    /// Show a network: bridge, subnet, gateway, and the instances' interfaces on it.
    #[command(
        after_help = "Examples:\n  mayfly network info default\n  mayfly network info backend --json"
    )]
    Info(NetworkInfoArgs),
    /// Delete networks (refused while an instance has an interface on one: remove those
    /// instances first).
    #[command(
        visible_alias = "remove",
        after_help = "Examples:\n  mayfly network rm backend"
    )]
    Rm(NetworkRmArgs),
}

/// `mayfly network create`.
#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    /// Network name: 1-32 lowercase letters, digits and `-`, starting with a letter (not
    /// `none` or `host`).
    pub name: String,
    /// IPv4 subnet, e.g. 10.20.0.0/24 (the gateway takes its first address). Default: the
    /// first free 10.N.0.0/24 (N from 77 on) that overlaps no other network and no address or
    /// route of the host.
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// Instances reach only the gateway (its name server, the host, NAT and published
    /// ports), not each other.
    #[arg(long)]
    pub isolated: bool,
    /// No outbound NAT: instances cannot reach beyond the host.
    #[arg(long)]
    pub no_nat: bool,
    /// No IPv6: without this flag the network also gets a random IPv6 ULA /64 (instances'
    /// IPv6 addresses derive from their IPv4 ones; outbound IPv6 is masqueraded with NAT).
    #[arg(long)]
    pub no_ipv6: bool,
    /// A name server (IPv4 address) for the names that are not instances' (repeatable).
    /// Default: those of the host's /etc/resolv.conf.
    #[arg(long = "dns-upstream", value_name = "IP")]
    pub dns_upstream: Vec<Ipv4Addr>,
    /// Print the new network as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly network info`.
#[derive(Debug, Args)]
pub struct NetworkInfoArgs {
    /// Network name.
    pub name: String,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly network rm`.
#[derive(Debug, Args)]
pub struct NetworkRmArgs {
    /// Network names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Channel subcommands.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Create a channel: a directory that appears in both instances at
    /// /run/mayfly/channels/NAME, writable in the server (its service creates a unix socket
    /// there), read-only in the client (it connects to that socket). No network needed.
    #[command(after_help = "\
A running instance sees a new channel at its next start (the answer says so). Removing
either instance removes the channel.

Examples:
  mayfly launch busybox --name db --network none
  mayfly launch busybox --name app --network none
  mayfly channel create dbsock --server db --client app
  mayfly restart db app          # both see /run/mayfly/channels/dbsock/ from now on
  (a service in db listens on /run/mayfly/channels/dbsock/db.sock; app connects to it)")]
    Create(ChannelCreateArgs),
    /// List channels.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  mayfly channel list\n  mayfly channel list --json"
    )]
    List(JsonFlag),
    /// Delete channels (instances that run keep the directory until their next start).
    #[command(
        visible_alias = "remove",
        after_help = "Examples:\n  mayfly channel rm dbsock"
    )]
    Rm(ChannelRmArgs),
}

/// `mayfly channel create`.
#[derive(Debug, Args)]
pub struct ChannelCreateArgs {
    /// Channel name (the rules of a network's: a lowercase DNS label).
    pub name: String,
    /// The instance whose service listens (it sees the channel read-write).
    #[arg(long, value_name = "INSTANCE")]
    pub server: String,
    /// The instance that connects (it sees the channel read-only).
    #[arg(long, value_name = "INSTANCE")]
    pub client: String,
    /// Print the new channel as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly channel rm`.
#[derive(Debug, Args)]
pub struct ChannelRmArgs {
    /// Channel names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly rename`.
#[derive(Debug, Args)]
pub struct RenameArgs {
    /// The instance's name.
    pub name: String,
    /// Its new name.
    pub new_name: String,
    /// Print the renamed instance as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--network` and `--publish` of `launch` and `run`.
#[derive(Debug, Args)]
pub struct InstanceNetworkArgs {
    /// Join this network (repeatable: one interface each, eth0, eth1, … in order; eth0 gets
    /// the default route and name server). Default: the network `default`, created at first
    /// use. `none`: no interface but lo (alone: not with another --network).
    #[arg(long = "network", value_name = "NAME|none", value_parser = network_arg)]
    pub networks: Vec<String>,
    /// Forward a port of the host to the instance while it runs (repeatable):
    /// [HOST_IP:]HOST_PORT:PORT[/tcp|udp], e.g. 8080:80 (127.0.0.1:8080 → port 80),
    /// 0.0.0.0:8053:53/udp (every host address). Default HOST_IP 127.0.0.1, protocol tcp;
    /// refused when the host port is taken. Needs a network.
    #[arg(long, short = 'p', value_name = "[IP:]HOST_PORT:PORT[/PROTO]")]
    pub publish: Vec<PublishPort>,
}

/// A `--network` value: `none` or a valid network name.
fn network_arg(value: &str) -> Result<String, String> {
    if value == NO_NETWORK {
        return Ok(value.to_owned());
    }
    mayfly_api::check_network_name(value)?;
    Ok(value.to_owned())
}

impl InstanceNetworkArgs {
    /// The networks of the request (`None`: the default network), or why the flags
    /// contradict each other.
    pub fn networks(&self) -> Result<Option<Vec<String>>, String> {
        let none = self.networks.iter().any(|n| n == NO_NETWORK);
        if none && self.networks.len() > 1 {
            return Err(
                "`--network none` means no network: it cannot be combined with another --network"
                    .to_owned(),
            );
        }
        if none && !self.publish.is_empty() {
            return Err(
                "--publish needs a network, and `--network none` has none: drop one of them"
                    .to_owned(),
            );
        }
        Ok((!self.networks.is_empty()).then(|| self.networks.clone()))
    }
}
