//! Bridges, veths, addresses and routes over rtnetlink, synchronously (the forker is
//! single-threaded and has no async runtime; the daemon calls these off its runtime).
//!
//! Every function acts on the calling thread's network namespace, except [`attach`], which
//! also configures the instance's side inside the namespace it is given.

mod attach;
mod nl;
mod sysctl;
mod v6;

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};

pub use attach::attach;
use nl::{CREATE_EXCL, Netlink, is_errno};

use crate::{Ipv4Net, Mac, NetError, NetworkPlan, Result, addr6};

/// Creates the network's bridge if it is missing and makes it what the plan says: the gateway
/// address with the subnet's prefix (and no other IPv4 address), `route_localnet`
/// (published ports reached through 127.0.0.1), up; and turns on IPv4 forwarding. With an
/// IPv6 subnet, also the IPv6 gateway `prefix::1/64` (and no other global IPv6 address; no
/// RA, no autoconfiguration) and IPv6 forwarding; without one, IPv6 off on the bridge.
/// Idempotent.
pub fn ensure_bridge(plan: &NetworkPlan) -> Result<()> {
    let ctx = format!("bridge {} of network {}", plan.bridge, plan.name);
    let mut nl = Netlink::open()?;
    let link = match find_link(&mut nl, &plan.bridge)? {
        Some(link) => link,
        None => {
            let mut msg = LinkMessage::default();
            msg.attributes
                .push(LinkAttribute::IfName(plan.bridge.clone()));
            // A fixed MAC: a bridge without one takes its lowest port's, which changes as
            // instances come and go and confuses every neighbour's ARP cache.
            msg.attributes
                .push(LinkAttribute::Address(Mac::random().0.to_vec()));
            msg.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                    InfoKind::Bridge,
                )]));
            nl.request(
                RouteNetlinkMessage::NewLink(msg),
                CREATE_EXCL,
                &format!("create {ctx}"),
            )?;
            find_link(&mut nl, &plan.bridge)?.ok_or_else(|| NetError::Netlink {
                what: format!("create {ctx}"),
                message: "the bridge vanished right after its creation".into(),
                errno: None,
            })?
        }
    };
    if link_kind(&link) != Some(InfoKind::Bridge) {
        return Err(NetError::Invalid(format!(
            "{ctx}: an interface of that name exists and is not a bridge; remove it (`ip link del {}`)",
            plan.bridge
        )));
    }
    let index = link.header.index;
    v6::switch(&plan.bridge, plan.subnet6.is_some(), &ctx)?;
    sysctl::set(
        &format!("net/ipv4/conf/{}/route_localnet", plan.bridge),
        "1",
        &ctx,
    )?;
    let mut has_gateway = false;
    for (ip, prefix) in ipv4_addresses(&mut nl, Some(index))? {
        if ip == plan.gateway && prefix == plan.subnet.prefix() {
            has_gateway = true;
            continue;
        }
        let msg = address_message(index, ip, prefix);
        nl.request(
            RouteNetlinkMessage::DelAddress(msg),
            0,
            &format!("remove the stale address {ip}/{prefix} of {ctx}"),
        )?;
    }
    if !has_gateway {
        let msg = address_message(index, plan.gateway, plan.subnet.prefix());
        nl.request(
            RouteNetlinkMessage::NewAddress(msg),
            CREATE_EXCL,
            &format!(
                "give {ctx} the address {}/{}",
                plan.gateway,
                plan.subnet.prefix()
            ),
        )?;
    }
    if let Some(gateway6) = plan.gateway6() {
        let mut has_gateway6 = false;
        for (ip, prefix) in v6::global_addresses(&mut nl, index)? {
            if ip == gateway6 && prefix == addr6::PREFIX6 {
                has_gateway6 = true;
                continue;
            }
            nl.request(
                RouteNetlinkMessage::DelAddress(v6::address_message(index, ip, prefix)),
                0,
                &format!("remove the stale address {ip}/{prefix} of {ctx}"),
            )?;
        }
        if !has_gateway6 {
            nl.request(
                RouteNetlinkMessage::NewAddress(v6::address_message(
                    index,
                    gateway6,
                    addr6::PREFIX6,
                )),
                CREATE_EXCL,
                &format!("give {ctx} the address {gateway6}/{}", addr6::PREFIX6),
            )?;
        }
    }
    set_up(&mut nl, index, &format!("bring up {ctx}"))?;
    sysctl::set("net/ipv4/ip_forward", "1", &ctx)?;
    if plan.subnet6.is_some() {
        sysctl::set("net/ipv6/conf/all/forwarding", "1", &ctx)?;
    }
    Ok(())
}

/// Whether the calling thread's network namespace has IPv6 at all (a kernel booted with
/// `ipv6.disable=1`, or built without it, has no `/proc/sys/net/ipv6`).
pub fn ipv6_available() -> bool {
    std::path::Path::new("/proc/sys/net/ipv6/conf/default").is_dir()
}

/// Removes a bridge (its ports are released by the kernel). Idempotent.
pub fn remove_bridge(name: &str) -> Result<()> {
    delete_link(name)
}

/// Deletes an interface by name (both ends of a veth go). Idempotent.
pub fn delete_link(name: &str) -> Result<()> {
    let mut nl = Netlink::open()?;
    delete_named(&mut nl, name)
}

/// The names of the interfaces whose name starts with `prefix`.
pub fn links_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let mut nl = Netlink::open()?;
    let mut out: Vec<String> = all_links(&mut nl)?
        .iter()
        .filter_map(link_name)
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    out.sort();
    Ok(out)
}

/// The IPv4 subnets that the calling thread's network namespace uses: those of its
/// addresses, and the destinations of its main table's routes (not the default route).
pub fn used_ipv4_nets() -> Result<Vec<Ipv4Net>> {
    let mut nl = Netlink::open()?;
    let mut out: Vec<Ipv4Net> = ipv4_addresses(&mut nl, None)?
        .into_iter()
        .map(|(ip, prefix)| Ipv4Net::covering(ip, prefix))
        .collect();
    let mut req = RouteMessage::default();
    req.header.address_family = AddressFamily::Inet;
    for msg in nl.dump(RouteNetlinkMessage::GetRoute(req), "list the IPv4 routes")? {
        let RouteNetlinkMessage::NewRoute(route) = msg else {
            continue;
        };
        let table = route
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(route.header.table));
        let len = route.header.destination_prefix_length;
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) || len == 0 {
            continue;
        }
        let dst = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        if let Some(dst) = dst {
            out.push(Ipv4Net::covering(dst, len));
        }
    }
    out.sort_by_key(|n| (u32::from(n.addr()), n.prefix()));
    out.dedup();
    Ok(out)
}

fn all_links(nl: &mut Netlink) -> Result<Vec<LinkMessage>> {
    Ok(nl
        .dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "list the interfaces",
        )?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .collect())
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_kind(link: &LinkMessage) -> Option<InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

/// The interface called `name`, if there is one.
fn find_link(nl: &mut Netlink, name: &str) -> Result<Option<LinkMessage>> {
    Ok(all_links(nl)?
        .into_iter()
        .find(|l| link_name(l) == Some(name)))
}

fn delete_named(nl: &mut Netlink, name: &str) -> Result<()> {
    let Some(link) = find_link(nl, name)? else {
        return Ok(());
    };
    let mut msg = LinkMessage::default();
    msg.header.index = link.header.index;
    match nl.request(
        RouteNetlinkMessage::DelLink(msg),
        0,
        &format!("delete interface {name}"),
    ) {
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
        other => other,
    }
}

fn set_up(nl: &mut Netlink, index: u32, what: &str) -> Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    nl.request(RouteNetlinkMessage::SetLink(msg), 0, what)
}

fn address_message(index: u32, ip: Ipv4Addr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V4(ip)));
    if prefix <= 30 {
        let net = Ipv4Net::covering(ip, prefix);
        msg.attributes
            .push(AddressAttribute::Broadcast(net.broadcast()));
    }
    msg
}

/// The IPv4 addresses (with their prefix length) of interface `index`, or of every one.
fn ipv4_addresses(nl: &mut Netlink, index: Option<u32>) -> Result<Vec<(Ipv4Addr, u8)>> {
    let mut req = AddressMessage::default();
    req.header.family = AddressFamily::Inet;
    let mut out = Vec::new();
    for msg in nl.dump(
        RouteNetlinkMessage::GetAddress(req),
        "list the IPv4 addresses",
    )? {
        let RouteNetlinkMessage::NewAddress(addr) = msg else {
            continue;
        };
        if addr.header.family != AddressFamily::Inet
            || index.is_some_and(|i| i != addr.header.index)
        {
            continue;
        }
        let ip = addr.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let ip = ip.or_else(|| {
            addr.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
        });
        if let Some(ip) = ip {
            out.push((ip, addr.header.prefix_len));
        }
    }
    Ok(out)
}

/// Adds the default route (IPv4 or IPv6, as `gateway` is) through `gateway` on interface
/// `index`.
pub(crate) fn default_route(
    nl: &mut Netlink,
    index: u32,
    gateway: IpAddr,
    ctx: &str,
) -> Result<()> {
    let mut route = RouteMessage::default();
    let (family, via) = match gateway {
        IpAddr::V4(a) => (AddressFamily::Inet, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, RouteAddress::Inet6(a)),
    };
    route.header.address_family = family;
    route.header.table = RouteHeader::RT_TABLE_MAIN;
    route.header.protocol = RouteProtocol::Boot;
    route.header.scope = RouteScope::Universe;
    route.header.kind = RouteType::Unicast;
    route.attributes.push(RouteAttribute::Gateway(via));
    route.attributes.push(RouteAttribute::Oif(index));
    nl.request(
        RouteNetlinkMessage::NewRoute(route),
        CREATE_EXCL,
        &format!("{ctx}: add the default route via {gateway}"),
    )
}
