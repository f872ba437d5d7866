//! mayfly's two nftables tables, rendered whole as an `nft --json` batch.
//!
//! `bridge mayfly` (anti-spoofing, on frames entering the bridges from instance ports, all
//! named `mv…`): a frame must carry its port's MAC, IPv4 and ARP their port's address, IPv6
//! its port's IPv6 address or its own (EUI-64) link-local one, and only ports with an IPv6
//! address send IPv6; a neighbour advertisement's target must be one of those two, and no
//! router advertisement or redirect passes (looked up in sets keyed by port name, so the
//! rules do not grow per instance); nothing but IPv4, ARP and IPv6 passes. A port absent
//! from the sets (an instance not yet in the state) passes nothing. The bandwidth limits of
//! instances' interfaces are policed there too ([`super::rate`]).
//!
//! `inet mayfly`: published ports (DNAT in prerouting for other hosts and in output for the
//! host itself; 127/8 sources leaving to a bridge masqueraded, which with `route_localnet`
//! makes `127.0.0.1:PORT` work; and an instance reaching a neighbour's published port is
//! masqueraded to the gateway, so that the answer comes back the way it went), forward drop between different mayfly bridges (and within an
//! isolated one, where instances must not route to each other through the host), forward
//! drop of new connections into a bridge from elsewhere (only published ports are reachable
//! from outside), the masquerade of a NAT network's subnet leaving through a non-mayfly
//! interface, a prerouting drop of instances' packets to 127/8 (which `route_localnet` would
//! otherwise deliver to the host's loopback services), and an input drop of packets to a
//! gateway from anywhere but its own bridge and the host; for IPv6 the same (the forward
//! rules match interfaces only, so they hold for both), with NAT66 of the ULA prefix, `::1`
//! and the IPv6 gateway. Published ports are IPv4 only.

use serde_json::{Value, json};

use std::net::Ipv6Addr;

use crate::{FirewallState, Forward, Interface, NetworkPlan, addr6};

/// The name of both tables.
pub const TABLE: &str = "mayfly";
/// Every instance port's name starts with this (`mv` + instance id + index).
pub const PORT_PATTERN: &str = "mv*";
/// Every mayfly bridge's name starts with this.
pub const BRIDGE_PATTERN: &str = "mf-*";

/// The batch that replaces both tables with what `state` says; with no network, the batch
/// that deletes them (an `add` first makes the `delete` of a missing table harmless).
pub fn batch(state: &FirewallState) -> Value {
    let mut cmds = Vec::new();
    for family in ["inet", "bridge"] {
        cmds.push(json!({"add": {"table": {"family": family, "name": TABLE}}}));
        cmds.push(json!({"delete": {"table": {"family": family, "name": TABLE}}}));
    }
    if !state.networks.is_empty() {
        bridge_table(state, &mut cmds);
        inet_table(state, &mut cmds);
    }
    json!({ "nftables": cmds })
}

/// The batch that turns the spoofing sets and the rates of `prev` into those of `next`
/// (elements of interfaces gone are deleted, the rates changed ([`super::rate::changes`]),
/// then the elements of new interfaces added): for two states that differ only in their
/// interfaces and rates. `None` when nothing changes.
pub fn element_changes(prev: &FirewallState, next: &FirewallState) -> Option<Value> {
    let gone: Vec<_> = prev
        .interfaces
        .iter()
        .filter(|i| !next.interfaces.contains(i))
        .collect();
    let new: Vec<_> = next
        .interfaces
        .iter()
        .filter(|i| !prev.interfaces.contains(i))
        .collect();
    let (rate_deletes, rate_adds) = super::rate::changes(prev, next);
    let mut cmds = Vec::new();
    for (verb, ifaces) in [("delete", &gone), ("add", &new)] {
        if verb == "add" {
            cmds.extend(rate_deletes.iter().cloned());
            cmds.extend(rate_adds.iter().cloned());
        }
        if ifaces.is_empty() {
            continue;
        }
        for (set, elems) in sets(ifaces.iter().copied()) {
            if elems.is_empty() {
                continue;
            }
            cmds.push(json!({verb: {"element": {
                "family": "bridge", "table": TABLE, "name": set, "elem": elems
            }}}));
        }
        let nd: Vec<_> = ifaces
            .iter()
            .flat_map(|i| own6(i).map(|a| json!({"concat": [i.host_name, hex128(a)]})))
            .collect();
        if !nd.is_empty() {
            cmds.push(json!({verb: {"element": {
                "family": "bridge", "table": TABLE, "name": "nd6", "elem": nd
            }}}));
        }
    }
    (!cmds.is_empty()).then(|| json!({ "nftables": cmds }))
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn chain(family: &str, name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({"add": {"chain": {
        "family": family, "table": TABLE, "name": name,
        "type": kind, "hook": hook, "prio": prio, "policy": "accept",
    }}})
}

fn rule(family: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": family, "table": TABLE, "chain": chain, "expr": expr}}})
}

fn bridge_table(state: &FirewallState, cmds: &mut Vec<Value>) {
    const F: &str = "bridge";
    cmds.push(json!({"add": {"table": {"family": F, "name": TABLE}}}));
    for (name, elems) in sets(state.interfaces.iter()) {
        let kind = match name {
            "macs" => json!(["ifname", "ether_addr"]),
            "addrs" => json!(["ifname", "ipv4_addr"]),
            "addrs6" => json!(["ifname", "ipv6_addr"]),
            _ => json!("ifname"),
        };
        let mut set = json!({"family": F, "table": TABLE, "name": name, "type": kind});
        if !elems.is_empty() {
            set["elem"] = Value::Array(elems);
        }
        cmds.push(json!({"add": {"set": set}}));
    }
    // Filled by `nd_batch`; until then (or if that fails) no advertisement passes.
    cmds.push(json!({"add": {"chain": {"family": F, "table": TABLE, "name": "nd"}}}));
    cmds.push(rule(F, "nd", vec![json!({"drop": null})]));
    cmds.push(chain(F, "ports", "filter", "prerouting", -200));
    let port = || meta("iifname");
    cmds.push(rule(
        F,
        "ports",
        vec![
            matches("!=", port(), json!(PORT_PATTERN)),
            json!({"accept": null}),
        ],
    ));
    cmds.push(rule(
        F,
        "ports",
        vec![
            matches(
                "!=",
                json!({"concat": [port(), payload("ether", "saddr")]}),
                json!("@macs"),
            ),
            json!({"drop": null}),
        ],
    ));
    // A frame of these ethertypes whose (port, source field) is not in the port's set.
    let not_own = |ethertype: &str, protocol: &str, field: &str, set: &str| {
        rule(
            F,
            "ports",
            vec![
                matches("==", payload("ether", "type"), json!(ethertype)),
                matches(
                    "!=",
                    json!({"concat": [port(), payload(protocol, field)]}),
                    json!(format!("@{set}")),
                ),
                json!({"drop": null}),
            ],
        )
    };
    cmds.push(not_own("ip", "ip", "saddr", "addrs"));
    cmds.push(not_own("arp", "arp", "saddr ether", "macs"));
    cmds.push(not_own("arp", "arp", "saddr ip", "addrs"));
    // IPv6 only from ports that have an IPv6 address, and only from that address or the
    // port's own link-local one (neighbour discovery needs it).
    cmds.push(rule(
        F,
        "ports",
        vec![
            matches("==", payload("ether", "type"), json!("ip6")),
            matches("!=", port(), json!("@ports6")),
            json!({"drop": null}),
        ],
    ));
    cmds.push(not_own("ip6", "ip6", "saddr", "addrs6"));
    // No router advertisement or redirect from an instance; a neighbour advertisement only
    // for the port's own addresses (chain `nd`, see `nd_batch`).
    cmds.push(rule(
        F,
        "ports",
        vec![
            matches(
                "==",
                payload("icmpv6", "type"),
                json!({"set": ["nd-router-advert", "nd-redirect"]}),
            ),
            json!({"drop": null}),
        ],
    ));
    cmds.push(rule(
        F,
        "ports",
        vec![
            matches("==", payload("icmpv6", "type"), json!("nd-neighbor-advert")),
            json!({"jump": {"target": "nd"}}),
        ],
    ));
    cmds.push(rule(
        F,
        "ports",
        vec![
            matches(
                "!=",
                payload("ether", "type"),
                json!({"set": ["ip", "arp", "ip6"]}),
            ),
            json!({"drop": null}),
        ],
    ));
    super::rate::declare(state, cmds);
}

/// The IPv6 addresses port `iface` may use: its own and its link-local one (none without
/// IPv6).
fn own6(iface: &Interface) -> impl Iterator<Item = Ipv6Addr> + '_ {
    iface
        .ipv6
        .into_iter()
        .flat_map(|a| [a, addr6::link_local(iface.mac.0)])
}

/// The text (not JSON) batch run after [`batch`] when there is a network: set `nd6` (port .
/// target address as a raw 128-bit number) and the rule of chain `nd` dropping a neighbour
/// advertisement whose target is not one of its port's own addresses ([`own6`]). Text
/// because nft 1.0.6's JSON cannot declare a set of raw payloads (`typeof`), and there is
/// no `icmpv6 taddr` field yet; its elements are JSON-able (a hex string), see
/// [`element_changes`].
pub fn nd_batch(state: &FirewallState) -> String {
    let elems: Vec<String> = state
        .interfaces
        .iter()
        .flat_map(|i| own6(i).map(move |a| format!("\"{}\" . {}", i.host_name, hex128(a))))
        .collect();
    let elems = if elems.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }} ;", elems.join(", "))
    };
    format!(
        "add set bridge {TABLE} nd6 {{ typeof iifname . {TARGET} ;{elems} }}\n\
         flush chain bridge {TABLE} nd\n\
         add rule bridge {TABLE} nd iifname . {TARGET} != @nd6 drop\n"
    )
}

/// A neighbour advertisement's target address: the 128 bits after the ICMPv6 header's
/// first 8 bytes.
const TARGET: &str = "@th,64,128";

fn hex128(a: Ipv6Addr) -> String {
    format!("0x{:032x}", u128::from(a))
}

/// The anti-spoofing sets' elements for `ifaces`: `macs` (port . MAC), `addrs` (port .
/// IPv4), `addrs6` (port . IPv6, its own and its link-local one) and `ports6` (the ports
/// that may send IPv6).
fn sets<'a>(
    ifaces: impl Iterator<Item = &'a Interface> + Clone,
) -> [(&'static str, Vec<Value>); 4] {
    let v6 = ifaces.clone().filter_map(|i| i.ipv6.map(|a| (i, a)));
    [
        (
            "macs",
            ifaces
                .clone()
                .map(|i| json!({"concat": [i.host_name, i.mac.to_string()]}))
                .collect(),
        ),
        (
            "addrs",
            ifaces
                .map(|i| json!({"concat": [i.host_name, i.ipv4.to_string()]}))
                .collect(),
        ),
        (
            "addrs6",
            v6.clone()
                .flat_map(|(i, _)| own6(i).map(|a| json!({"concat": [i.host_name, a.to_string()]})))
                .collect(),
        ),
        ("ports6", v6.map(|(i, _)| json!(i.host_name)).collect()),
    ]
}

fn inet_table(state: &FirewallState, cmds: &mut Vec<Value>) {
    const F: &str = "inet";
    cmds.push(json!({"add": {"table": {"family": F, "name": TABLE}}}));

    // `route_localnet` on the bridges (for published ports reached through 127.0.0.1) would
    // also let an instance reach the host's loopback-only services, by sending to 127.0.0.1
    // through its gateway (a packet socket suffices): drop those before routing. The
    // priority is after conntrack, before NAT: the answers of the host's own 127.0.0.1
    // connections to a published port still carry the gateway's address here.
    // With `br_netfilter` loaded (as on Docker hosts), a bridged frame passes this hook
    // once, with the port (`mv…`) as its input interface: both names are matched.
    cmds.push(chain(F, "loopback", "filter", "prerouting", -150));
    for from in [BRIDGE_PATTERN, PORT_PATTERN] {
        cmds.push(rule(
            F,
            "loopback",
            vec![
                matches("==", meta("iifname"), json!(from)),
                matches(
                    "==",
                    payload("ip", "daddr"),
                    json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
                ),
                json!({"drop": null}),
            ],
        ));
        // The kernel drops ::1 arriving on another interface anyway; said here too.
        cmds.push(rule(
            F,
            "loopback",
            vec![
                matches("==", meta("iifname"), json!(from)),
                matches("==", payload("ip6", "daddr"), json!("::1")),
                json!({"drop": null}),
            ],
        ));
    }

    // A gateway's address is its own network's (and the host's own): an instance of another
    // network, or a machine of the host's LAN routing to it, would get the answers of that
    // network's name server (its instances' names and addresses, and recursion).
    cmds.push(chain(F, "input", "filter", "input", 0));
    for net in &state.networks {
        cmds.push(rule(
            F,
            "input",
            vec![
                matches("!=", meta("iifname"), json!("lo")),
                matches("!=", meta("iifname"), json!(net.bridge)),
                matches("==", payload("ip", "daddr"), json!(net.gateway.to_string())),
                json!({"drop": null}),
            ],
        ));
        if let Some(gateway6) = net.gateway6() {
            cmds.push(rule(
                F,
                "input",
                vec![
                    matches("!=", meta("iifname"), json!("lo")),
                    matches("!=", meta("iifname"), json!(net.bridge)),
                    matches("==", payload("ip6", "daddr"), json!(gateway6.to_string())),
                    json!({"drop": null}),
                ],
            ));
        }
    }

    cmds.push(chain(F, "forward", "filter", "forward", 0));
    // Published services are for everybody, whichever network asks.
    cmds.push(rule(
        F,
        "forward",
        vec![
            matches("in", json!({"ct": {"key": "status"}}), json!("dnat")),
            json!({"accept": null}),
        ],
    ));
    // Nobody else reaches an instance but through a published port: with forwarding on, a
    // machine of the host's LAN that routes a network's subnet to the host would otherwise
    // reach every service of every instance. Answers to the instances' own connections
    // (established, related) still come in.
    cmds.push(rule(
        F,
        "forward",
        vec![
            matches("!=", meta("iifname"), json!(BRIDGE_PATTERN)),
            matches("==", meta("oifname"), json!(BRIDGE_PATTERN)),
            matches(
                "!=",
                json!({"ct": {"key": "state"}}),
                json!({"set": ["established", "related"]}),
            ),
            json!({"drop": null}),
        ],
    ));
    for net in &state.networks {
        forward_rules(net, cmds);
    }

    cmds.push(chain(F, "prerouting", "nat", "prerouting", -100));
    cmds.push(chain(F, "output", "nat", "output", -100));
    for fwd in &state.forwards {
        for chain in ["prerouting", "output"] {
            cmds.push(rule(F, chain, dnat(fwd)));
        }
    }

    cmds.push(chain(F, "postrouting", "nat", "postrouting", 100));
    // A published port reached through 127.0.0.1: the answer must come back to the host.
    cmds.push(rule(
        F,
        "postrouting",
        vec![
            matches(
                "==",
                payload("ip", "saddr"),
                json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
            ),
            matches("==", meta("oifname"), json!(BRIDGE_PATTERN)),
            json!({"masquerade": null}),
        ],
    ));
    for net in &state.networks {
        // An instance reaching a published port of a neighbour on its own bridge: without
        // this the answer would come straight from the neighbour and be ignored.
        cmds.push(rule(
            F,
            "postrouting",
            vec![
                matches("in", json!({"ct": {"key": "status"}}), json!("dnat")),
                matches("==", payload("ip", "saddr"), subnet(net)),
                matches("==", meta("oifname"), json!(net.bridge)),
                json!({"masquerade": null}),
            ],
        ));
    }
    for net in state.networks.iter().filter(|n| n.nat) {
        cmds.push(rule(
            F,
            "postrouting",
            vec![
                matches("==", payload("ip", "saddr"), subnet(net)),
                matches("!=", meta("oifname"), json!(BRIDGE_PATTERN)),
                json!({"masquerade": null}),
            ],
        ));
        // NAT66: the ULA prefix is not routed outside the host.
        if let Some(prefix) = net.subnet6 {
            cmds.push(rule(
                F,
                "postrouting",
                vec![
                    matches(
                        "==",
                        payload("ip6", "saddr"),
                        json!({"prefix": {"addr": prefix.to_string(), "len": crate::addr6::PREFIX6}}),
                    ),
                    matches("!=", meta("oifname"), json!(BRIDGE_PATTERN)),
                    json!({"masquerade": null}),
                ],
            ));
        }
    }
}

fn subnet(net: &NetworkPlan) -> Value {
    json!({"prefix": {"addr": net.subnet.addr().to_string(), "len": net.subnet.prefix()}})
}

fn forward_rules(net: &NetworkPlan, cmds: &mut Vec<Value>) {
    let from = matches("==", meta("iifname"), json!(net.bridge));
    // To another mayfly bridge.
    cmds.push(rule(
        "inet",
        "forward",
        vec![
            from.clone(),
            matches("==", meta("oifname"), json!(BRIDGE_PATTERN)),
            matches("!=", meta("oifname"), json!(net.bridge)),
            json!({"drop": null}),
        ],
    ));
    if net.isolated {
        // Back into the same isolated network, routed through the host.
        cmds.push(rule(
            "inet",
            "forward",
            vec![
                from,
                matches("==", meta("oifname"), json!(net.bridge)),
                json!({"drop": null}),
            ],
        ));
    }
}

fn dnat(fwd: &Forward) -> Vec<Value> {
    // Only ever the host's own addresses: a forward from an address the host does not have
    // would take over the host's (and the routed) connections to that remote address.
    let mut expr = vec![matches(
        "==",
        json!({"fib": {"result": "type", "flags": ["daddr"]}}),
        json!("local"),
    )];
    if !fwd.host_ip.is_unspecified() {
        expr.push(matches(
            "==",
            payload("ip", "daddr"),
            json!(fwd.host_ip.to_string()),
        ));
    }
    expr.push(matches(
        "==",
        payload(fwd.proto.as_str(), "dport"),
        json!(fwd.host_port),
    ));
    expr.push(json!({"dnat": {"family": "ip", "addr": fwd.ipv4.to_string(), "port": fwd.port}}));
    expr
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{Interface, Mac, Proto};

    fn plan(name: &str, bridge: &str, subnet: &str, isolated: bool, nat: bool) -> NetworkPlan {
        let subnet: crate::Ipv4Net = subnet.parse().unwrap();
        NetworkPlan {
            name: name.into(),
            bridge: bridge.into(),
            subnet,
            gateway: subnet.gateway(),
            isolated,
            nat,
            upstream: vec![],
            subnet6: nat.then(|| "fd12:3456:789a::".parse().unwrap()),
        }
    }

    fn cmds(v: &Value) -> &Vec<Value> {
        v["nftables"].as_array().unwrap()
    }

    fn rules_of<'a>(v: &'a Value, family: &str, chain: &str) -> Vec<&'a Value> {
        cmds(v)
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .filter(|r| r["family"] == family && r["chain"] == chain)
            .map(|r| &r["expr"])
            .collect()
    }

    fn state() -> FirewallState {
        let a = plan("a", "mf-aaaaaaaaaaaa", "10.77.0.0/24", false, true);
        let b = plan("b", "mf-bbbbbbbbbbbb", "10.78.0.0/24", true, false);
        let iface = Interface {
            network: "a".into(),
            bridge: a.bridge.clone(),
            host_name: "mv0123456789ab0".into(),
            name: "eth0".into(),
            mac: "02:00:00:00:00:07".parse::<Mac>().unwrap(),
            ipv4: Ipv4Addr::new(10, 77, 0, 2),
            prefix: 24,
            gateway: Some(a.gateway),
            isolated: false,
            ipv6: Some("fd12:3456:789a::a4d:2".parse().unwrap()),
            gateway6: a.gateway6(),
        };
        FirewallState {
            networks: vec![a, b],
            interfaces: vec![iface],
            forwards: vec![
                Forward {
                    proto: Proto::Tcp,
                    host_ip: Ipv4Addr::LOCALHOST,
                    host_port: 8080,
                    ipv4: Ipv4Addr::new(10, 77, 0, 2),
                    port: 80,
                },
                Forward {
                    proto: Proto::Udp,
                    host_ip: Ipv4Addr::UNSPECIFIED,
                    host_port: 5353,
                    ipv4: Ipv4Addr::new(10, 77, 0, 2),
                    port: 53,
                },
            ],
            rates: Default::default(),
        }
    }

    #[test]
    fn no_network_deletes_both_tables_and_adds_nothing() {
        let v = batch(&FirewallState::default());
        let c = cmds(&v);
        assert_eq!(c.len(), 4);
        for (i, family) in ["inet", "bridge"].iter().enumerate() {
            assert_eq!(c[2 * i]["add"]["table"]["family"], *family);
            assert_eq!(c[2 * i + 1]["delete"]["table"]["family"], *family);
            assert_eq!(c[2 * i + 1]["delete"]["table"]["name"], TABLE);
        }
    }

    #[test]
    fn tables_are_replaced_whole_in_one_batch() {
        let v = batch(&state());
        let c = cmds(&v);
        // Every command is on mayfly's tables only.
        for cmd in c {
            let obj = cmd.as_object().unwrap().values().next().unwrap();
            let inner = obj.as_object().unwrap().values().next().unwrap();
            let table = inner.get("table").unwrap_or(&inner["name"]);
            assert_eq!(table, TABLE, "{cmd}");
        }
        // Deletions come before any content.
        let last_delete = c.iter().rposition(|x| x.get("delete").is_some()).unwrap();
        let first_chain = c
            .iter()
            .position(|x| x["add"].get("chain").is_some())
            .unwrap();
        assert!(last_delete < first_chain);
    }

    #[test]
    fn spoofing_sets_hold_each_port_with_its_mac_and_address() {
        let v = batch(&state());
        let sets: Vec<&Value> = cmds(&v)
            .iter()
            .filter_map(|c| c["add"].get("set"))
            .collect();
        assert_eq!(sets.len(), 4);
        let macs = sets.iter().find(|s| s["name"] == "macs").unwrap();
        assert_eq!(
            macs["elem"][0]["concat"],
            json!(["mv0123456789ab0", "02:00:00:00:00:07"])
        );
        let addrs = sets.iter().find(|s| s["name"] == "addrs").unwrap();
        assert_eq!(
            addrs["elem"][0]["concat"],
            json!(["mv0123456789ab0", "10.77.0.2"])
        );
        let addrs6 = sets.iter().find(|s| s["name"] == "addrs6").unwrap();
        assert_eq!(
            addrs6["elem"],
            json!([
                {"concat": ["mv0123456789ab0", "fd12:3456:789a::a4d:2"]},
                {"concat": ["mv0123456789ab0", "fe80::ff:fe00:7"]},
            ]),
            "its own address and its own link-local one, not all of fe80::/64"
        );
        let ports6 = sets.iter().find(|s| s["name"] == "ports6").unwrap();
        assert_eq!(ports6["elem"], json!(["mv0123456789ab0"]));
        let rules = rules_of(&v, "bridge", "ports");
        // The rules do not grow with instances: one per check.
        assert_eq!(rules.len(), 10);
        let text = serde_json::to_string(&rules).unwrap();
        assert!(text.contains("@macs") && text.contains("@addrs") && text.contains("saddr ip"));
        assert!(text.contains("@addrs6") && text.contains("@ports6") && !text.contains("fe80"));
        assert!(
            text.contains(r#"["nd-router-advert","nd-redirect"]"#)
                && text.contains(r#""nd-neighbor-advert"}},{"jump":{"target":"nd"}}"#),
            "{text}"
        );
        // Until the text batch fills it, chain `nd` drops every advertisement.
        assert_eq!(rules_of(&v, "bridge", "nd"), [&json!([{"drop": null}])]);
        let nd = nd_batch(&state());
        assert_eq!(
            nd,
            "add set bridge mayfly nd6 { typeof iifname . @th,64,128 ; elements = { \
             \"mv0123456789ab0\" . 0xfd123456789a0000000000000a4d0002, \
             \"mv0123456789ab0\" . 0xfe80000000000000000000fffe000007 } ; }\n\
             flush chain bridge mayfly nd\n\
             add rule bridge mayfly nd iifname . @th,64,128 != @nd6 drop\n"
        );
        assert!(text.contains(r#"["ip","arp","ip6"]"#), "{text}");
        // An interface without IPv6 is in neither IPv6 set.
        let mut st = state();
        st.interfaces[0].ipv6 = None;
        let v = batch(&st);
        for name in ["addrs6", "ports6"] {
            let set = cmds(&v)
                .iter()
                .filter_map(|c| c["add"].get("set"))
                .find(|s| s["name"] == name)
                .unwrap();
            assert!(set.get("elem").is_none(), "{set}");
        }
        // The element changes of a start: all four sets.
        let start = element_changes(
            &FirewallState {
                interfaces: vec![],
                ..state()
            },
            &state(),
        )
        .unwrap();
        let names: Vec<&str> = cmds(&start)
            .iter()
            .map(|c| c["add"]["element"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["macs", "addrs", "addrs6", "ports6", "nd6"]);
        assert_eq!(
            cmds(&start)[4]["add"]["element"]["elem"][1]["concat"],
            json!(["mv0123456789ab0", "0xfe80000000000000000000fffe000007"])
        );
    }

    #[test]
    fn forwards_nat_and_isolation_rules() {
        let v = batch(&state());
        for chain in ["prerouting", "output"] {
            let rules = rules_of(&v, "inet", chain);
            assert_eq!(rules.len(), 2, "{chain}");
            let text = serde_json::to_string(&rules).unwrap();
            assert!(
                text.contains(r#""addr":"10.77.0.2","family":"ip","port":80"#),
                "{text}"
            );
            assert!(text.contains(r#""right":"127.0.0.1""#), "{text}");
            assert!(
                text.contains(r#""fib""#),
                "0.0.0.0 is every local address: {text}"
            );
        }
        let post = rules_of(&v, "inet", "postrouting");
        let leaving: Vec<String> = post
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .filter(|r| r.contains(r#""op":"!=""#) && r.contains("oifname"))
            .collect();
        assert_eq!(
            leaving.len(),
            2,
            "only the NAT network leaves masqueraded (IPv4 and IPv6): {leaving:?}"
        );
        assert!(
            leaving[0].contains(r#""addr":"10.77.0.0","len":24"#),
            "{leaving:?}"
        );
        assert!(
            leaving[1].contains(r#""addr":"fd12:3456:789a::","len":64"#),
            "{leaving:?}"
        );
        let input = serde_json::to_string(&rules_of(&v, "inet", "input")).unwrap();
        assert!(input.contains(r#""right":"fd12:3456:789a::1""#), "{input}");
        let lo = serde_json::to_string(&rules_of(&v, "inet", "loopback")).unwrap();
        assert!(lo.contains(r#""right":"::1""#), "{lo}");
        let text = serde_json::to_string(&post).unwrap();
        assert!(text.contains("127.0.0.0"));
        // Hairpin: one per network.
        assert_eq!(text.matches(r#""right":"dnat""#).count(), 2, "{text}");
        let fwd = rules_of(&v, "inet", "forward");
        // dnat accept, inbound drop, one cross-bridge drop per network, one more for the
        // isolated one.
        assert_eq!(fwd.len(), 1 + 1 + 2 + 1);
    }
}
