//! The IPv6 side of bridges and instance interfaces: a ULA address without duplicate
//! address detection (mayfly's allocation already makes it unique), and no router
//! advertisement or autoconfiguration taken, so that nothing but mayfly configures it.

use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};

use super::nl::Netlink;
use super::sysctl;
use crate::Result;

/// Turns IPv6 on interface `name` on (`on`: no RA, no autoconfiguration, no DAD) or off.
pub(crate) fn switch(name: &str, on: bool, ctx: &str) -> Result<()> {
    if on {
        for (key, value) in [("accept_ra", "0"), ("autoconf", "0"), ("accept_dad", "0")] {
            sysctl::set(&format!("net/ipv6/conf/{name}/{key}"), value, ctx)?;
        }
        sysctl::set(&format!("net/ipv6/conf/{name}/disable_ipv6"), "0", ctx)
    } else {
        sysctl::set_if_present(&format!("net/ipv6/conf/{name}/disable_ipv6"), "1", ctx)
    }
}

/// The netlink message of address `ip/prefix` on interface `index`, without DAD.
pub(crate) fn address_message(index: u32, ip: Ipv6Addr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet6;
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    msg.header.flags = AddressHeaderFlags::Nodad;
    msg.attributes.push(AddressAttribute::Local(IpAddr::V6(ip)));
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V6(ip)));
    msg.attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    msg
}

/// The global (not link-local) IPv6 addresses of interface `index`, with their prefix.
pub(crate) fn global_addresses(nl: &mut Netlink, index: u32) -> Result<Vec<(Ipv6Addr, u8)>> {
    let mut req = AddressMessage::default();
    req.header.family = AddressFamily::Inet6;
    let mut out = Vec::new();
    for msg in nl.dump(
        RouteNetlinkMessage::GetAddress(req),
        "list the IPv6 addresses",
    )? {
        let RouteNetlinkMessage::NewAddress(addr) = msg else {
            continue;
        };
        if addr.header.family != AddressFamily::Inet6
            || addr.header.index != index
            || addr.header.scope != AddressScope::Universe
        {
            continue;
        }
        let ip = addr.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = ip {
            out.push((ip, addr.header.prefix_len));
        }
    }
    Ok(out)
}
