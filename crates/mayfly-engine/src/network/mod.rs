//! Networks, their instances' interfaces, published ports, channels and renames.
//!
//! The catalogue holds networks and the interfaces allocated on them (address and MAC, in the
//! instance's own insert transaction); the host realises them through `mayfly-net`: one
//! bridge and one dnsmasq per network, and mayfly's two nftables tables rendered whole from
//! the catalogue's networks and the instances whose network is up ([`NetState::active`]).
//!
//! - `catalogue.rs`: creating, listing and removing networks, the default network, and the
//!   checks of an instance's `--network` and `--publish`;
//! - `host.rs`: the host's side (bridges, name servers, the firewall) at an instance's start
//!   and end, for builds, and at the daemon's start-up;
//! - `names.rs`: the instances' names on their networks' name servers;
//! - `rate.rs`: the bandwidth limit of an instance's interfaces (`--net-rate`), at its start
//!   and changed live;
//! - `channels.rs`: unix-socket channels between instances;
//! - `rename.rs`: renaming an instance.

mod catalogue;
mod channels;
mod host;
mod names;
mod rate;
mod rename;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use std::sync::Arc;

use mayfly_api::{
    ChannelInfo, CreateChannel, CreateNetwork, InstanceInfo, InterfaceInfo, NetworkInfo,
};
use mayfly_net::{Forward, Interface, NetworkPlan, Proto};
use mayfly_store::{InterfaceRecord, NetworkRecord};

use crate::events::Ev;
use crate::{Engine, EngineError};

pub(crate) use catalogue::{check_publish, resolve_networks};
pub(crate) use channels::{channel_binds, channel_layer};

/// Most interfaces an instance may have (`mv<id><index>` has one digit for the index).
pub(crate) const MAX_INTERFACES: usize = 10;

/// What the daemon keeps of networking at run time.
#[derive(Debug, Default)]
pub(crate) struct NetState {
    /// Serialises firewall applies and network creations and removals (the firewall is
    /// rendered whole from the catalogue and [`NetState::active`] under it).
    pub apply: tokio::sync::Mutex<()>,
    /// Serialises the host's side of networks (bridges, name servers): two starts at once
    /// on a network whose bridge or name server is missing would otherwise both create it,
    /// and one would fail. Never held while waiting for [`NetState::apply`].
    pub host: tokio::sync::Mutex<()>,
    /// The instances (and builds) whose network is up, by id: their interfaces and
    /// forwards are in the firewall.
    pub active: Mutex<HashMap<String, Active>>,
    /// What the last successful apply put in the kernel (`None`: unknown, the next apply
    /// replaces the tables whole).
    pub applied: Mutex<Option<mayfly_net::FirewallState>>,
}

/// An instance (or build) whose interfaces are up.
#[derive(Debug, Clone, Default)]
pub(crate) struct Active {
    /// Its name (as its network's name servers know it).
    pub name: String,
    /// Its interfaces.
    pub interfaces: Vec<Interface>,
    /// Its published ports.
    pub forwards: Vec<Forward>,
    /// The bandwidth limit of each of its interfaces, each way, in bytes per second
    /// (`--net-rate`; `None`: unlimited).
    pub rate: Option<u64>,
}

impl Engine {
    /// Creates a network (bridge, firewall, name server), refusing a taken name or an
    /// overlapping subnet.
    pub async fn create_network(
        self: &Arc<Self>,
        req: CreateNetwork,
    ) -> Result<NetworkInfo, EngineError> {
        let created = self.network_create(req).await?;
        self.emit(
            Ev::new("network.create")
                .on("network", &created.name)
                .details(serde_json::json!({ "subnet": created.subnet })),
        );
        Ok(created)
    }

    /// Every network, by name.
    pub async fn networks(self: &Arc<Self>) -> Result<Vec<NetworkInfo>, EngineError> {
        self.network_list().await
    }

    /// One network.
    pub async fn network_info(self: &Arc<Self>, name: &str) -> Result<NetworkInfo, EngineError> {
        self.network_info_of(name).await
    }

    /// Removes a network; refused while instances have an interface on it (naming them).
    pub async fn remove_network(self: &Arc<Self>, name: &str) -> Result<(), EngineError> {
        self.network_remove(name).await?;
        self.emit(Ev::new("network.remove").on("network", name));
        Ok(())
    }

    /// Creates a channel between two instances.
    pub async fn create_channel(
        self: &Arc<Self>,
        req: CreateChannel,
    ) -> Result<ChannelInfo, EngineError> {
        let created = self.channel_create(req).await?;
        self.emit(
            Ev::new("channel.create")
                .on("channel", &created.name)
                .details(serde_json::json!({ "server": created.server, "client": created.client })),
        );
        Ok(created)
    }

    /// Every channel, by name.
    pub async fn channels(self: &Arc<Self>) -> Result<Vec<ChannelInfo>, EngineError> {
        self.channel_list().await
    }

    /// Removes a channel.
    pub async fn remove_channel(self: &Arc<Self>, name: &str) -> Result<(), EngineError> {
        self.channel_remove(name).await?;
        self.emit(Ev::new("channel.remove").on("channel", name));
        Ok(())
    }

    /// Renames an instance (running or not): its names on its networks follow at once, its
    /// hostname inside at its next start.
    pub async fn rename_instance(
        self: &Arc<Self>,
        name: &str,
        new_name: &str,
    ) -> Result<InstanceInfo, EngineError> {
        let info = self.instance_rename(name, new_name).await?;
        self.emit(
            Ev::new("instance.rename")
                .on("instance", &info.name)
                .details(serde_json::json!({ "from": name })),
        );
        Ok(info)
    }
}

/// The plan of network `rec` (what `mayfly-net` realises).
pub(crate) fn plan_of(rec: &NetworkRecord) -> NetworkPlan {
    NetworkPlan {
        name: rec.name.clone(),
        bridge: rec.bridge.clone(),
        subnet: rec.subnet,
        gateway: rec.subnet.gateway(),
        isolated: rec.isolated,
        nat: rec.nat,
        upstream: rec.upstream.clone(),
        subnet6: rec.subnet6,
    }
}

/// The host end of interface `idx` of instance (or build) `id`.
pub(crate) fn host_name(id: &str, idx: u8) -> String {
    let short: String = id.chars().take(12).collect();
    format!("mv{short}{idx}")
}

/// Interface `rec` on network `net`, as the driver sets it up.
pub(crate) fn interface_of(rec: &InterfaceRecord, net: &NetworkRecord) -> Interface {
    Interface {
        network: net.name.clone(),
        bridge: net.bridge.clone(),
        host_name: host_name(&rec.owner, rec.idx),
        name: format!("eth{}", rec.idx),
        mac: rec.mac,
        ipv4: rec.ipv4,
        prefix: net.subnet.prefix(),
        gateway: (rec.idx == 0).then(|| net.subnet.gateway()),
        isolated: net.isolated,
        ipv6: rec.ipv6,
        gateway6: net
            .subnet6
            .filter(|_| rec.idx == 0)
            .map(mayfly_net::addr6::gateway6),
    }
}

/// Interface `rec` of instance `name` (id `id`) as `info` shows it.
pub(crate) fn interface_info(name: &str, id: &str, rec: &InterfaceRecord) -> InterfaceInfo {
    InterfaceInfo {
        instance: name.to_owned(),
        network: rec.network.clone(),
        name: format!("eth{}", rec.idx),
        mac: rec.mac.to_string(),
        ipv4: rec.ipv4.to_string(),
        ipv6: rec.ipv6.map(|a| a.to_string()),
        host_name: host_name(id, rec.idx),
    }
}

/// The forwards of published ports `publish` to `ipv4`.
pub(crate) fn forwards_of(publish: &[mayfly_api::PublishPort], ipv4: Ipv4Addr) -> Vec<Forward> {
    publish
        .iter()
        .map(|p| Forward {
            proto: match p.proto {
                mayfly_api::PortProto::Tcp => Proto::Tcp,
                mayfly_api::PortProto::Udp => Proto::Udp,
            },
            host_ip: p.host_ip,
            host_port: p.host_port,
            ipv4,
            port: p.port,
        })
        .collect()
}

/// Whether two published ports would take the same host socket (same protocol and port, and
/// the same address or either on every address).
pub(crate) fn ports_clash(a: &mayfly_api::PublishPort, b: &mayfly_api::PublishPort) -> bool {
    a.proto == b.proto
        && a.host_port == b.host_port
        && (a.host_ip == b.host_ip || a.host_ip.is_unspecified() || b.host_ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ends_are_short_enough_and_ports_clash_on_any_address() {
        assert_eq!(host_name("0123456789abcdef", 3), "mv0123456789ab3");
        assert!(host_name("0123456789abcdef", 9).len() <= 15);
        let p = |s: &str| s.parse::<mayfly_api::PublishPort>().unwrap();
        assert!(ports_clash(&p("8080:80"), &p("127.0.0.1:8080:81")));
        assert!(ports_clash(&p("0.0.0.0:8080:80"), &p("10.0.0.1:8080:80")));
        assert!(!ports_clash(&p("8080:80"), &p("8080:80/udp")));
        assert!(!ports_clash(
            &p("127.0.0.1:8080:80"),
            &p("10.0.0.1:8080:80")
        ));
        assert!(!ports_clash(&p("8080:80"), &p("8081:80")));
    }
}
