//! Host networking of mayfly, independent of the driver that runs instances.
//!
//! - [`addr`]: IPv4 subnets and MAC addresses (pure; the catalogue allocates with them);
//! - [`link`]: bridges, veths, addresses and routes over netlink (synchronous; the forker
//!   attaches a container's interfaces with [`link::attach`] before its init runs);
//! - [`firewall`]: mayfly's own nftables tables, rendered whole from the desired state and
//!   applied atomically with `nft --json`;
//! - [`dns`]: one dnsmasq per network for instance names, outliving the daemon.
//!
//! A VM driver hands the same [`Interface`] (address, MAC, gateway) to its guest through a tap
//! device on the same bridge, and the same firewall and names apply.

pub mod addr;
pub mod addr6;
pub mod dns;
pub mod firewall;
pub mod link;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

pub use addr::{Ipv4Net, Mac};

/// What can go wrong; every message says what failed and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A system call or a file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a netlink request.
    #[error("{what}: {message}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The kernel's answer (errno text).
        message: String,
        /// The errno (positive), when known.
        errno: Option<i32>,
    },
    /// A helper program (`nft`, `dnsmasq`) failed or is missing.
    #[error("{what}: {message}")]
    Tool {
        /// What was being done.
        what: String,
        /// What the tool said, or why it could not run, and what to do.
        message: String,
    },
    /// Bad input (a subnet, a name).
    #[error("{0}")]
    Invalid(String),
}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, NetError>;

/// One network as the host realises it: a bridge with the gateway address, its firewall
/// rules and its name server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPlan {
    /// The network's name (`default`, or a user's DNS label).
    pub name: String,
    /// The bridge's interface name (at most 15 bytes; `mf-` and 12 hex digits of the id).
    pub bridge: String,
    /// The IPv4 subnet; the gateway is its first host address.
    pub subnet: Ipv4Net,
    /// The bridge's own address (the instances' gateway and name server).
    pub gateway: Ipv4Addr,
    /// Instances reach only the gateway (and published services), not each other (bridge
    /// port isolation).
    pub isolated: bool,
    /// Outbound traffic is masqueraded to the host's address.
    pub nat: bool,
    /// Name servers dnsmasq forwards other names to; empty: the host's `/etc/resolv.conf`.
    #[serde(default)]
    pub upstream: Vec<Ipv4Addr>,
    /// The IPv6 ULA /64 (its gateway is `prefix::1` on the bridge); `None`: IPv4 only.
    #[serde(default)]
    pub subnet6: Option<Ipv6Addr>,
}

impl NetworkPlan {
    /// The bridge's IPv6 address, when the network has IPv6.
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.subnet6.map(addr6::gateway6)
    }
}

/// One network interface of an instance, as allocated in the catalogue: what the forker
/// creates (a veth pair, one end on the bridge, the other moved into the container) and what a
/// VM driver would hand to its guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The network's name.
    pub network: String,
    /// The bridge the host end joins.
    pub bridge: String,
    /// The host end's name (at most 15 bytes; `mv`, 12 hex digits of the instance id and the
    /// interface's index).
    pub host_name: String,
    /// The name inside (`eth0`, `eth1`…).
    pub name: String,
    /// The MAC address inside (locally administered, unicast).
    pub mac: Mac,
    /// The address inside.
    pub ipv4: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The default route's gateway: set for the first interface only.
    pub gateway: Option<Ipv4Addr>,
    /// Isolate the bridge port (an `--isolated` network).
    pub isolated: bool,
    /// The IPv6 address inside (/64), derived from `ipv4`; `None`: IPv6 stays off inside.
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    /// The IPv6 default route's gateway: for the first interface of a network with IPv6.
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
}

/// One published port: `host_ip:host_port` on the host forwarded to `ipv4:port` of an
/// instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// `tcp` or `udp`.
    pub proto: Proto,
    /// The host address it listens on (`127.0.0.1` by default; `0.0.0.0`: every address).
    pub host_ip: Ipv4Addr,
    /// The host port.
    pub host_port: u16,
    /// The instance's address.
    pub ipv4: Ipv4Addr,
    /// The instance's port.
    pub port: u16,
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Everything mayfly's firewall holds: rendered whole into its own tables by
/// [`firewall::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallState {
    /// Every network that exists.
    pub networks: Vec<NetworkPlan>,
    /// The interfaces of running instances (anti-spoofing: only their own MAC and address
    /// may leave their host end).
    pub interfaces: Vec<Interface>,
    /// Published ports of running instances.
    pub forwards: Vec<Forward>,
    /// Bandwidth limits of running instances' interfaces: host end (`mv…`) to bytes per
    /// second, each way (policed in `bridge mayfly`, see [`firewall::rate`]).
    pub rates: BTreeMap<String, u64>,
}
