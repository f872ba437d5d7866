//! Networks, published ports, channels and renames as the API carries them.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The network new instances join when `--network` is not given; created at first use.
pub const DEFAULT_NETWORK: &str = "default";

/// `--network none`: only `lo`.
pub const NO_NETWORK: &str = "none";

/// Where a channel appears inside both of its instances (`<this>/<name>/`).
pub const CHANNELS_DIR: &str = "/run/mayfly/channels";

/// Whether `name` can name a network: a DNS label (lowercase letters, digits and `-`, at
/// most 32 bytes, starting with a letter) other than `none` and `host`.
pub fn check_network_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(format!(
            "`{name}` is not a valid network name: use 1-32 lowercase letters, digits and `-`, \
             starting with a letter and not ending with `-` (e.g. `backend`)"
        ));
    }
    if name == NO_NETWORK || name == "host" {
        return Err(format!(
            "`{name}` is reserved (`--network none` means no network): choose another name"
        ));
    }
    Ok(())
}

/// `POST /v1/networks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// The network's name ([`check_network_name`]).
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$")]
    pub name: String,
    /// IPv4 subnet (`10.20.0.0/24`); absent: a free /24 in 10.0.0.0/8 that overlaps no other
    /// network and no route of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Instances reach only the gateway and published services, not each other.
    #[serde(default)]
    pub isolated: bool,
    /// Masquerade outbound traffic to the host's addresses (default true).
    #[serde(default = "yes")]
    pub nat: bool,
    /// Name servers that other names are forwarded to (IPv4 addresses); empty: the host's
    /// `/etc/resolv.conf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_upstream: Vec<String>,
    /// Give the network an IPv6 ULA /64 too (default true; instances' IPv6 addresses derive
    /// from their IPv4 ones).
    #[serde(default = "yes")]
    pub ipv6: bool,
}

fn yes() -> bool {
    true
}

/// A network as `network list` and `network info` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkInfo {
    /// Its name.
    pub name: String,
    /// The host bridge.
    pub bridge: String,
    /// IPv4 subnet.
    pub subnet: String,
    /// The bridge's address: the instances' gateway and name server (the host resolves
    /// instance names by asking it).
    pub gateway: String,
    /// The IPv6 ULA /64 (absent: IPv4 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    /// The bridge's IPv6 address (`prefix::1`), the instances' IPv6 gateway and name server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// Instances reach only the gateway, not each other.
    pub isolated: bool,
    /// Outbound traffic is masqueraded.
    pub nat: bool,
    /// Name servers other names go to (empty: the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_upstream: Vec<String>,
    /// The instances with an interface on it (by name), and their addresses.
    #[serde(default)]
    pub interfaces: Vec<InterfaceInfo>,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

/// One interface of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InterfaceInfo {
    /// The instance's name.
    pub instance: String,
    /// The network's name.
    pub network: String,
    /// The name inside (`eth0`).
    pub name: String,
    /// MAC address.
    pub mac: String,
    /// IPv4 address.
    pub ipv4: String,
    /// IPv6 address (`prefix::` and the IPv4 address's 32 bits), on a network with IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// The host end (a veth on the bridge while the instance runs).
    pub host_name: String,
}

/// A transport protocol of a published port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PortProto {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A published port, `[HOST_IP:]HOST_PORT:PORT[/tcp|udp]` (as `docker run -p`): connections to
/// `HOST_IP:HOST_PORT` on the host (127.0.0.1 when not given) go to `PORT` of the instance.
/// Carried as that string in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublishPort {
    /// The host address it listens on (`0.0.0.0`: all).
    pub host_ip: Ipv4Addr,
    /// The host port (1-65535).
    pub host_port: u16,
    /// The instance's port (1-65535).
    pub port: u16,
    /// TCP or UDP.
    pub proto: PortProto,
}

impl FromStr for PublishPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!(
                "`{s}` is not a published port ({why}): write [HOST_IP:]HOST_PORT:PORT[/tcp|udp], \
                 e.g. 8080:80, 0.0.0.0:8053:53/udp"
            )
        };
        let (ports, proto) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, PortProto::Tcp),
            Some((p, "udp")) => (p, PortProto::Udp),
            Some(_) => return Err(bad("the protocol is tcp or udp")),
            None => (s, PortProto::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (ip, host, inner) = match parts.as_slice() {
            [h, p] => (None, *h, *p),
            [ip, h, p] => (Some(*ip), *h, *p),
            _ => return Err(bad("two or three fields separated by `:`")),
        };
        let host_ip = match ip {
            Some(ip) => ip
                .parse::<Ipv4Addr>()
                .map_err(|_| bad("the host address is an IPv4 address"))?,
            None => Ipv4Addr::LOCALHOST,
        };
        let port = |p: &str| {
            (!p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("ports are numbers from 1 to 65535"))
        };
        Ok(PublishPort {
            host_ip,
            host_port: port(host)?,
            port: port(inner)?,
            proto,
        })
    }
}

impl fmt::Display for PublishPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
        };
        write!(
            f,
            "{}:{}:{}/{proto}",
            self.host_ip, self.host_port, self.port
        )
    }
}

impl Serialize for PublishPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublishPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// On the wire a string, `[HOST_IP:]HOST_PORT:PORT[/PROTO]`.
impl utoipa::PartialSchema for PublishPort {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::string_schema(
            "A published port: `[HOST_IP:]HOST_PORT:PORT[/tcp|/udp]`, e.g. `8080:80`",
            Some("8080:80"),
        )
    }
}

impl utoipa::ToSchema for PublishPort {}

/// `POST /v1/channels`: a unix-socket channel from a service in `server` to `client`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    /// The channel's name (same rules as a network's).
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$")]
    pub name: String,
    /// The instance whose service listens (it may create sockets in the channel).
    pub server: String,
    /// The instance that connects (it sees the channel read-only).
    pub client: String,
}

/// A channel as `channel list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelInfo {
    /// Its name.
    pub name: String,
    /// The listening instance.
    pub server: String,
    /// The connecting instance.
    pub client: String,
    /// The directory inside both (`/run/mayfly/channels/NAME`).
    pub path: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// What the creation did besides the obvious (e.g. that a running instance sees it at
    /// its next start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `POST /v1/instances/{name}/rename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// The new name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_parse_like_docker_and_round_trip() {
        let p: PublishPort = "8080:80".parse().unwrap();
        assert_eq!(p.host_ip, Ipv4Addr::LOCALHOST);
        assert_eq!((p.host_port, p.port, p.proto), (8080, 80, PortProto::Tcp));
        let u: PublishPort = "0.0.0.0:5353:53/udp".parse().unwrap();
        assert_eq!(u.to_string(), "0.0.0.0:5353:53/udp");
        assert_eq!(u.to_string().parse::<PublishPort>().unwrap(), u);
        for bad in [
            "80",
            "0:80",
            "8080:80/sctp",
            "x:1:2",
            "1:2:3:4",
            "70000:80",
            "8080:+80",
        ] {
            let e = bad.parse::<PublishPort>().unwrap_err();
            assert!(e.contains("[HOST_IP:]HOST_PORT:PORT"), "{e}");
        }
    }

    #[test]
    fn network_names_are_labels_and_none_is_reserved() {
        assert!(check_network_name("backend-2").is_ok());
        for bad in [
            "",
            "None",
            "2net",
            "a_b",
            "none",
            "host",
            "x-",
            &"a".repeat(33),
        ] {
            assert!(check_network_name(bad).is_err(), "{bad}");
        }
    }
}
