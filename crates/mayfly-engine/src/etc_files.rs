//! The files mayfly writes for every container at every start: `/etc/hostname`, `/etc/hosts`,
//! `/etc/resolv.conf` and `/etc/machine-id`. An instance's name, resolvers and machine id are
//! its own, never a template's (nor the build host's, which debootstrap copies into a new
//! root).
//!
//! The machine id (systemd's `machine-id(5)`, which journald, D-Bus and DHCP clients key on) is
//! drawn at random once per instance and kept in its directory (`<instance dir>/machine-id`):
//! it stays across restarts and resets of a transient instance (its identity stays, its
//! changes go), and a clone, a new instance, gets a new one. It is not derived from the
//! instance's id, which `mayfly info` shows: a machine id is meant to stay private. The same id,
//! as a UUID, is `container_uuid` in the init's environment (systemd's Container Interface).
//!
//! As Docker does, they are files in the container's run directory on the host
//! (`<instance dir>/run/`, rewritten at every start) bind-mounted read-write over their
//! targets: whatever the instance writes to them stays there, and never reaches its writable
//! layer, snapshots, clones or published templates. The driver mounts them only over an
//! existing regular file and never follows a symlink there (`BindMount::only_over_file`): a
//! tenant who replaced `/etc/hosts` by a symlink keeps it. Where the template lacks a target but
//! has its directory, an empty mount point is provided by a small layer stacked right under
//! the writable layer ([`mayfly_image::mount_points`], kept in the run's directory as
//! `mounts-<key>/`), so the writable layer stays clean there too.
//!
//! This module is the one place that decides the content. An instance with networks asks its
//! first network's name server (the gateway of `eth0`, which knows the other instances by
//! name and forwards the rest) and has its own name on its `eth0` address; one without
//! (`--network none`) gets the host's resolvers and its name on 127.0.1.1.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mayfly_driver::{BindMount, NetworkMode};

use crate::error::io_err;
use crate::{Engine, EngineError};

/// The files: their name in the run directory and their path inside the container.
/// The directories every instance gets mounted that a template may lack (relative to its
/// root): made in the mount-point layer, so that they never land in a writable layer (and from
/// there in snapshots and published templates). A start adds its own (volume targets, the
/// NoCloud seed).
const DIRS: [&str; 1] = ["run/mayfly"];

pub(crate) const FILES: [(&str, &str); 4] = [
    ("hostname", "/etc/hostname"),
    ("hosts", "/etc/hosts"),
    ("resolv.conf", "/etc/resolv.conf"),
    ("machine-id", "/etc/machine-id"),
];

/// Where an instance's machine id is kept, in its directory.
const MACHINE_ID_FILE: &str = "machine-id";

/// Whether `s` is a machine id: 32 lowercase hex digits, not all zero.
fn is_machine_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && s.bytes().any(|b| b != b'0')
}

/// The machine id of the instance whose directory is `dir`: the one kept there, or a new
/// random one, kept from now on. Blocking.
pub(crate) fn machine_id(dir: &Path) -> Result<String, EngineError> {
    let path = dir.join(MACHINE_ID_FILE);
    if let Ok(kept) = std::fs::read_to_string(&path)
        && is_machine_id(kept.trim())
    {
        return Ok(kept.trim().to_owned());
    }
    let id = crate::random_hex(16);
    write_file(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// The machine id `id` written as a UUID (what `container_uuid` holds).
pub(crate) fn as_uuid(id: &str) -> String {
    if id.len() != 32 {
        return id.to_owned();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..]
    )
}

/// The host's resolver configuration.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// systemd-resolved's list of the servers it forwards to, for hosts whose own resolv.conf
/// names only its local stub (127.0.0.53), which an instance cannot reach.
const UPSTREAM_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// `/etc/hostname`: the container's name (which is also its UTS hostname).
pub(crate) fn hostname_file(name: &str) -> String {
    format!("{name}\n")
}

/// The network facts of a container's files: its `eth0` address and that network's gateway
/// (its name server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EtcNet {
    /// The address of `eth0`.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address, on a network with IPv6.
    pub ipv6: Option<Ipv6Addr>,
    /// The gateway of `eth0`'s network.
    pub gateway: Ipv4Addr,
}

impl EtcNet {
    /// The facts of a container with `interfaces` (`None` without any).
    pub(crate) fn of(interfaces: &[mayfly_net::Interface]) -> Option<EtcNet> {
        let eth0 = interfaces.first()?;
        Some(EtcNet {
            ipv4: eth0.ipv4,
            ipv6: eth0.ipv6,
            gateway: eth0.gateway?,
        })
    }
}

/// `/etc/resolv.conf` of a container with a network: its network's name server, and the
/// instances' domain to search.
pub(crate) fn network_resolv_conf(net: EtcNet) -> String {
    format!(
        "# Written by mayfly at every start: the network's name server.\n\
         nameserver {}\n\
         search {}\n",
        net.gateway,
        mayfly_net::dns::DOMAIN
    )
}

/// `/etc/hosts`: localhost, the container's own name on its `eth0` addresses (IPv4, and IPv6
/// where its network has it: resolvers that ask for IPv6 first find it here, not from the
/// name server under `NAME.mayfly`), or on 127.0.1.1 without a network (as Debian installs
/// do, so that `hostname -f` and `getent hosts NAME` work without a network), and the usual
/// IPv6 names.
pub(crate) fn hosts_file(name: &str, own: Option<Ipv4Addr>, own6: Option<Ipv6Addr>) -> String {
    let own = own.unwrap_or(Ipv4Addr::new(127, 0, 1, 1));
    let own6 = own6.map(|a| format!("{a}\t{name}\n")).unwrap_or_default();
    format!(
        "127.0.0.1\tlocalhost\n\
         {own}\t{name}\n\
         {own6}\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n"
    )
}

/// `/etc/resolv.conf` for a container on `network`, from the host's files.
pub(crate) fn resolv_conf(network: NetworkMode) -> String {
    let host = std::fs::read_to_string(HOST_RESOLV_CONF).ok();
    let upstream = match network {
        NetworkMode::Host => None,
        NetworkMode::Isolated => std::fs::read_to_string(UPSTREAM_RESOLV_CONF).ok(),
    };
    resolv_conf_from(network, host.as_deref(), upstream.as_deref())
}

fn nameserver(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    (words.next() == Some("nameserver"))
        .then(|| words.next())
        .flatten()
}

fn is_loopback(server: &str) -> bool {
    server.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// [`resolv_conf`] from the host's `resolv.conf` (`host`) and systemd-resolved's upstream list
/// (`upstream`). A container sharing the host's network gets the host's file as it is. Any
/// other gets it without loopback name servers (the host's 127.0.0.53 is not the container's);
/// if that leaves none, with systemd-resolved's upstream servers instead.
fn resolv_conf_from(network: NetworkMode, host: Option<&str>, upstream: Option<&str>) -> String {
    let host = host.unwrap_or_default();
    if network == NetworkMode::Host {
        return host.to_owned();
    }
    let mut out = String::from("# Written by mayfly at every start: the host's name servers.\n");
    let mut servers = 0;
    for line in host.lines() {
        match nameserver(line) {
            Some(s) if is_loopback(s) => {
                out.push_str(&format!(
                    "# {line} (the host's own, unreachable from here)\n"
                ));
            }
            Some(_) => {
                servers += 1;
                out.push_str(line);
                out.push('\n');
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if servers == 0 {
        let upstream: Vec<&str> = upstream
            .unwrap_or_default()
            .lines()
            .filter(|l| nameserver(l).is_some_and(|s| !is_loopback(s)))
            .collect();
        if !upstream.is_empty() {
            out.push_str("# The servers the host's resolver forwards to:\n");
            for line in upstream {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// What a container needs for its files.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The mounts of the files over their targets.
    pub binds: Vec<BindMount>,
    /// A layer of mount points to stack on top of the container's layers, when the template
    /// lacks some of the targets.
    pub mount_points: Option<PathBuf>,
    /// The instance's machine id (see [`machine_id`]).
    pub machine_id: String,
}

/// Writes the files of container `hostname` on `network` into `<dir>/run/`, and finds (or
/// makes) the mount points that `layers` (its stack, lowest first) lack. Blocking.
pub(crate) fn prepare(
    dir: &Path,
    hostname: &str,
    network: NetworkMode,
    layers: &[PathBuf],
    net: Option<EtcNet>,
    dirs: &[String],
) -> Result<Prepared, EngineError> {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).map_err(io_err("create", &run))?;
    let mut binds = Vec::with_capacity(FILES.len());
    let machine_id = machine_id(dir)?;
    for (name, target) in FILES {
        let content = match name {
            "hostname" => hostname_file(hostname),
            "hosts" => hosts_file(hostname, net.map(|n| n.ipv4), net.and_then(|n| n.ipv6)),
            "machine-id" => format!("{machine_id}\n"),
            _ => match net {
                Some(n) => network_resolv_conf(n),
                None => resolv_conf(network),
            },
        };
        let path = run.join(name);
        write_file(&path, content.as_bytes())?;
        binds.push(BindMount {
            source: path,
            target: target.to_owned(),
            readonly: false,
            only_over_file: true,
        });
    }
    let mount_points = mount_point_layer(dir, layers, dirs)?;
    Ok(Prepared {
        binds,
        mount_points,
        machine_id,
    })
}

impl Engine {
    /// Writes the files of container `hostname` (see [`prepare`]) into `dir` and finds the
    /// mount points its stack `layers` lacks (the files, [`DIRS`] and `dirs`), off the async
    /// runtime.
    pub(crate) async fn etc_files(
        &self,
        dir: PathBuf,
        hostname: String,
        network: NetworkMode,
        layers: Vec<PathBuf>,
        net: Option<EtcNet>,
        dirs: Vec<String>,
    ) -> Result<Prepared, EngineError> {
        self.blocking(move || prepare(&dir, &hostname, network, &layers, net, &dirs))
            .await
    }
}

/// Replaces `path` by a root-owned 0644 file holding `content` (written aside, then renamed).
fn write_file(path: &Path, content: &[u8]) -> Result<(), EngineError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(content).map_err(io_err("write", &tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io_err("set permissions of", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err("create", path))
}

/// The layer of mount points for `layers` under `dir` (`mounts-<key>`, named after the stack,
/// made once and kept while the stack stays the same), `None` when the stack lacks nothing.
fn mount_point_layer(
    dir: &Path,
    layers: &[PathBuf],
    extra_dirs: &[String],
) -> Result<Option<PathBuf>, EngineError> {
    let dirs: Vec<&str> = DIRS
        .iter()
        .copied()
        .chain(extra_dirs.iter().map(|d| d.trim_start_matches('/')))
        .filter(|d| !d.is_empty())
        .collect();
    let mut key_source: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
    // The set of mount points is part of the key: a layer made for fewer is remade.
    key_source.extend(dirs.iter().map(|d| format!("dir:{d}")));
    let key = crate::apps::short_hash(&key_source.join("|"));
    let layer = dir.join(format!("mounts-{key}"));
    if layer.is_dir() {
        return Ok(Some(layer));
    }
    // Mount points of an earlier stack are stale (and a half-made one is of no use).
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("mounts-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let targets: Vec<&str> = FILES
        .iter()
        .map(|(_, t)| t.trim_start_matches('/'))
        .collect();
    let tmp = layer.with_extension("new");
    let made = mayfly_image::mount_points(layers, &tmp, &targets, &dirs)?;
    if made.is_empty() {
        return Ok(None);
    }
    tracing::debug!(
        "mount points {} for {}: {}",
        layer.display(),
        dir.display(),
        made.join(", ")
    );
    std::fs::rename(&tmp, &layer).map_err(io_err("create", &layer))?;
    Ok(Some(layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_map_the_name_to_itself_and_localhost() {
        let hosts = hosts_file("web-1", None, None);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n127.0.1.1\tweb-1\n"));
        assert!(hosts.contains("::1\tlocalhost ip6-localhost ip6-loopback\n"));
        assert_eq!(hostname_file("web-1"), "web-1\n");
    }

    #[test]
    fn an_instance_on_a_network_asks_its_gateway_and_has_its_name_on_eth0() {
        let iface = mayfly_net::Interface {
            network: "default".into(),
            bridge: "mf-0123456789ab".into(),
            host_name: "mv0123456789ab0".into(),
            name: "eth0".into(),
            mac: mayfly_net::Mac([2, 0, 0, 0, 0, 1]),
            ipv4: Ipv4Addr::new(10, 77, 0, 5),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 77, 0, 1)),
            isolated: false,
            ipv6: None,
            gateway6: None,
        };
        let net = EtcNet::of(std::slice::from_ref(&iface)).unwrap();
        let resolv = network_resolv_conf(net);
        let servers: Vec<&str> = resolv.lines().filter_map(nameserver).collect();
        assert_eq!(servers, ["10.77.0.1"], "{resolv}");
        assert!(resolv.contains("\nsearch mayfly\n"), "{resolv}");
        let hosts = hosts_file("web", Some(net.ipv4), net.ipv6);
        assert!(hosts.contains("\n10.77.0.5\tweb\n"), "{hosts}");
        let six: Ipv6Addr = "fd00:1:2::a4d:5".parse().unwrap();
        let hosts = hosts_file("web", Some(net.ipv4), Some(six));
        assert!(
            hosts.contains("\n10.77.0.5\tweb\nfd00:1:2::a4d:5\tweb\n"),
            "{hosts}"
        );
        assert!(!hosts.contains("127.0.1.1"), "{hosts}");
        assert_eq!(EtcNet::of(&[]), None);
    }

    #[test]
    fn loopback_resolvers_of_the_host_are_not_given_to_an_isolated_container() {
        let host = "# comment\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        let upstream = "nameserver 192.0.2.1\nnameserver ::1\nnameserver 2001:db8::1\n";
        let isolated = resolv_conf_from(NetworkMode::Isolated, Some(host), Some(upstream));
        let servers: Vec<&str> = isolated.lines().filter_map(nameserver).collect();
        assert_eq!(servers, vec!["192.0.2.1", "2001:db8::1"], "{isolated}");
        assert!(isolated.contains("\noptions edns0 trust-ad\nsearch lan\n"));
        assert!(isolated.contains("# nameserver 127.0.0.53 (the host's own"));

        // Real servers on the host: those, and not the upstream list.
        let direct = "nameserver 198.51.100.7\nnameserver 127.0.0.1\n";
        let isolated = resolv_conf_from(NetworkMode::Isolated, Some(direct), Some(upstream));
        let servers: Vec<&str> = isolated.lines().filter_map(nameserver).collect();
        assert_eq!(servers, vec!["198.51.100.7"]);

        // The host's network: the host's file as it is (its stub is reachable there).
        assert_eq!(
            resolv_conf_from(NetworkMode::Host, Some(host), Some(upstream)),
            host
        );
        // Nothing known: no server rather than an invented one.
        let none = resolv_conf_from(NetworkMode::Isolated, None, None);
        assert!(none.lines().all(|l| nameserver(l).is_none()), "{none}");
    }
}
