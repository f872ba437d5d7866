//! Giving a container one network interface before its init runs: a veth pair whose inside
//! end is created directly in the container's network namespace.
//!
//! The inside is configured through a netlink socket opened in that namespace: the calling
//! thread joins it just long enough to open the socket and write two of its settings, then
//! returns to its own. Going back cannot reasonably fail (the thread's own namespace is held
//! open and the caller is privileged), but if it did the thread would go on in the
//! container's namespace and later starts, execs and firewall calls would act there: the
//! process aborts instead (the daemon sees its forker gone and restarts it; instances keep
//! running and are adopted).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkInfo, LinkMessage,
};
use rustix::thread::LinkNameSpaceType;

use super::nl::{CREATE_EXCL, Netlink};
use super::{address_message, default_route, delete_named, find_link, set_up, sysctl, v6};
use crate::{Interface, NetError, Result, addr6};

/// Creates `iface` for the container whose network namespace is `netns`: the host end on
/// its bridge (isolated when the network is, no IPv6, up), the inside end renamed, with its
/// MAC and address, up, and the default route through the gateway when it has one; `lo` up;
/// IPv6 on the new interface only when it has an IPv6 address (then without RA,
/// autoconfiguration or DAD, its link-local address, made from its MAC by EUI-64, kept for
/// neighbour discovery, and the
/// IPv6 default route through `gateway6` when it has one), off otherwise; ping for every group (`net.ipv4.ping_group_range`), so
/// that an unprivileged ping works. On failure nothing of the pair is left.
pub fn attach(netns: BorrowedFd<'_>, iface: &Interface) -> Result<()> {
    let ctx = format!(
        "interface {} ({} on the host) on network {}",
        iface.name, iface.host_name, iface.network
    );
    let mut host = Netlink::open()?;
    let bridge = find_link(&mut host, &iface.bridge)?.ok_or_else(|| {
        NetError::Invalid(format!(
            "{ctx}: the network's bridge {} is missing (restarting the daemon recreates it)",
            iface.bridge
        ))
    })?;
    // A host end left by an instance that died with its namespace held elsewhere.
    delete_named(&mut host, &iface.host_name)?;
    let mut inside = in_namespace(netns, || {
        // The interface made next inherits these: IPv6 off (lo keeps ::1), or on without
        // router advertisements, autoconfiguration or DAD, so that from its first moment
        // nothing but mayfly configures it.
        v6::switch("default", iface.ipv6.is_some(), &ctx)?;
        if iface.ipv6.is_some() {
            // Its link-local address from its MAC by EUI-64, whatever the distribution's
            // default: the firewall expects exactly that one (`addr6::link_local`).
            sysctl::set("net/ipv6/conf/default/addr_gen_mode", "0", &ctx)?;
        }
        sysctl::set("net/ipv4/ping_group_range", "0 2147483647", &ctx)?;
        Netlink::open()
    })?;
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(iface.name.clone()));
    peer.attributes
        .push(LinkAttribute::Address(iface.mac.0.to_vec()));
    peer.attributes
        .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
    let mut msg = LinkMessage::default();
    msg.attributes
        .push(LinkAttribute::IfName(iface.host_name.clone()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    host.request(
        RouteNetlinkMessage::NewLink(msg),
        CREATE_EXCL,
        &format!("create {ctx}"),
    )?;
    let configured = configure(&mut host, &mut inside, bridge.header.index, iface, &ctx);
    if configured.is_err() {
        let _ = delete_named(&mut host, &iface.host_name);
    }
    configured
}

fn configure(
    host: &mut Netlink,
    inside: &mut Netlink,
    bridge: u32,
    iface: &Interface,
    ctx: &str,
) -> Result<()> {
    let host_end = find_link(host, &iface.host_name)?.ok_or_else(|| NetError::Netlink {
        what: format!("create {ctx}"),
        message: "the host end vanished right after its creation".into(),
        errno: None,
    })?;
    let index = host_end.header.index;
    sysctl::set_if_present(
        &format!("net/ipv6/conf/{}/disable_ipv6", iface.host_name),
        "1",
        ctx,
    )?;
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::Controller(bridge));
    host.request(
        RouteNetlinkMessage::SetLink(msg),
        0,
        &format!("{ctx}: put the host end on bridge {}", iface.bridge),
    )?;
    if iface.isolated {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                true,
            )])),
        ]));
        host.request(
            RouteNetlinkMessage::NewLink(msg),
            0,
            &format!("{ctx}: isolate the bridge port"),
        )?;
    }
    set_up(host, index, &format!("{ctx}: bring up the host end"))?;

    let inner = find_link(inside, &iface.name)?.ok_or_else(|| NetError::Netlink {
        what: format!("create {ctx}"),
        message: "the inside end did not appear in the instance's namespace".into(),
        errno: None,
    })?;
    let inner = inner.header.index;
    inside.request(
        RouteNetlinkMessage::NewAddress(address_message(inner, iface.ipv4, iface.prefix)),
        CREATE_EXCL,
        &format!("{ctx}: give it the address {}/{}", iface.ipv4, iface.prefix),
    )?;
    if let Some(ipv6) = iface.ipv6 {
        inside.request(
            RouteNetlinkMessage::NewAddress(v6::address_message(inner, ipv6, addr6::PREFIX6)),
            CREATE_EXCL,
            &format!("{ctx}: give it the address {ipv6}/{}", addr6::PREFIX6),
        )?;
    }
    set_up(inside, inner, &format!("{ctx}: bring it up"))?;
    if let Some(lo) = find_link(inside, "lo")? {
        set_up(inside, lo.header.index, &format!("{ctx}: bring up lo"))?;
    }
    if let Some(gateway) = iface.gateway {
        default_route(inside, inner, gateway.into(), ctx)?;
    }
    if let (Some(gateway6), Some(_)) = (iface.gateway6, iface.ipv6) {
        default_route(inside, inner, gateway6.into(), ctx)?;
    }
    Ok(())
}

/// Runs `f` with the calling thread in network namespace `netns`, then puts the thread back
/// into its own (aborting the process if that fails: see the module documentation).
pub(crate) fn in_namespace<T>(netns: BorrowedFd<'_>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let own: OwnedFd = rustix::fs::open(
        "/proc/thread-self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| NetError::Io {
        what: "open the own network namespace".into(),
        source: e.into(),
    })?;
    rustix::thread::move_into_link_name_space(netns, Some(LinkNameSpaceType::Network)).map_err(
        |e| NetError::Io {
            what: "enter the instance's network namespace".into(),
            source: e.into(),
        },
    )?;
    let out = f();
    if let Err(e) =
        rustix::thread::move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::Network))
    {
        tracing::error!("cannot return to the own network namespace ({e}): aborting");
        eprintln!("mayfly-net: cannot return to the own network namespace ({e}): aborting");
        std::process::abort();
    }
    out
}
