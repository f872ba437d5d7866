//! Creating, listing and removing networks; the default network; the checks of an instance's
//! `--network` and `--publish`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use mayfly_api::{
    CreateNetwork, DEFAULT_NETWORK, NO_NETWORK, NetworkInfo, PublishPort, check_network_name,
};
use mayfly_net::Ipv4Net;
use mayfly_store::{InterfaceRecord, NetworkRecord, StoreError};

use super::{MAX_INTERFACES, interface_info, ports_clash};
use crate::{Engine, EngineError};

/// The automatic subnet: the first `10.N.0.0/24`, N from 77 upward then from 10, that
/// overlaps none of `taken`.
pub(crate) fn auto_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    (77..=255u8)
        .chain(10..77)
        .filter_map(|n| Ipv4Net::new(Ipv4Addr::new(10, n, 0, 0), 24).ok())
        .find(|net| !taken.iter().any(|t| t.overlaps(net)))
}

/// The networks an instance gets from `--network` (`None`: the default network; `none`
/// alone: no network), checked.
pub(crate) fn resolve_networks(asked: Option<&[String]>) -> Result<Vec<String>, EngineError> {
    let asked = match asked {
        None | Some([]) => return Ok(vec![DEFAULT_NETWORK.to_owned()]),
        Some(a) => a,
    };
    if asked.iter().any(|n| n == NO_NETWORK) {
        if asked.len() > 1 {
            return Err(EngineError::invalid(
                "`--network none` cannot be combined with other networks",
                "give either `--network none` or the networks to join",
            ));
        }
        return Ok(Vec::new());
    }
    if asked.len() > MAX_INTERFACES {
        return Err(EngineError::invalid(
            format!(
                "{} networks asked: an instance has at most {MAX_INTERFACES} interfaces",
                asked.len()
            ),
            "give at most 10 `--network` options",
        ));
    }
    for (i, n) in asked.iter().enumerate() {
        if n != DEFAULT_NETWORK {
            check_network_name(n)
                .map_err(|e| EngineError::invalid(e, "list networks with `mayfly network list`"))?;
        }
        if asked[..i].contains(n) {
            return Err(EngineError::invalid(
                format!("network `{n}` is given twice: an instance has one interface per network"),
                "give each network once",
            ));
        }
    }
    Ok(asked.to_vec())
}

/// Checks published ports `publish` of a new instance on `networks`: they need a network, do
/// not clash with each other, nor with another instance's (`others`: name and ports).
pub(crate) fn check_publish(
    publish: &[PublishPort],
    networks: &[String],
    others: &[(String, Vec<PublishPort>)],
) -> Result<(), EngineError> {
    if publish.is_empty() {
        return Ok(());
    }
    if networks.is_empty() {
        return Err(EngineError::invalid(
            "published ports need a network, and the instance has none (`--network none`)",
            "drop `--publish`, or give a network (`--network NAME`)",
        ));
    }
    for (i, p) in publish.iter().enumerate() {
        if let Some(q) = publish[..i].iter().find(|q| ports_clash(p, q)) {
            return Err(EngineError::invalid(
                format!("published ports {q} and {p} take the same host port"),
                "publish each host address and port once",
            ));
        }
        for (name, theirs) in others {
            if let Some(q) = theirs.iter().find(|q| ports_clash(p, q)) {
                return Err(EngineError::Conflict {
                    message: format!(
                        "host port {}/{} ({}) is already published by instance `{name}` ({q})",
                        p.host_port,
                        match p.proto {
                            mayfly_api::PortProto::Tcp => "tcp",
                            mayfly_api::PortProto::Udp => "udp",
                        },
                        p.host_ip
                    ),
                    hint: Some(format!(
                        "choose another host port, or remove `{name}` first (`mayfly rm {name}`)"
                    )),
                });
            }
        }
    }
    Ok(())
}

fn to_info(rec: &NetworkRecord, ifaces: Vec<mayfly_api::InterfaceInfo>) -> NetworkInfo {
    NetworkInfo {
        name: rec.name.clone(),
        bridge: rec.bridge.clone(),
        subnet: rec.subnet.to_string(),
        gateway: rec.subnet.gateway().to_string(),
        subnet6: rec
            .subnet6
            .map(|p| format!("{p}/{}", mayfly_net::addr6::PREFIX6)),
        gateway6: rec
            .subnet6
            .map(|p| mayfly_net::addr6::gateway6(p).to_string()),
        isolated: rec.isolated,
        nat: rec.nat,
        dns_upstream: rec.upstream.iter().map(Ipv4Addr::to_string).collect(),
        interfaces: ifaces,
        created_at: crate::rfc3339(rec.created_at),
    }
}

impl Engine {
    /// Creates a network (bridge, firewall, name server), refusing a taken name or an
    /// overlapping subnet.
    pub(crate) async fn network_create(
        self: &Arc<Self>,
        req: CreateNetwork,
    ) -> Result<NetworkInfo, EngineError> {
        if req.name != DEFAULT_NETWORK {
            check_network_name(&req.name)
                .map_err(|e| EngineError::invalid(e, "e.g. `mayfly network create backend`"))?;
        }
        let subnet = match &req.subnet {
            Some(s) => Some(s.parse::<Ipv4Net>().map_err(|e| {
                EngineError::invalid(e.to_string(), "e.g. `--subnet 10.20.0.0/24`")
            })?),
            None => None,
        };
        let mut upstream = Vec::new();
        for u in &req.dns_upstream {
            upstream.push(u.parse::<Ipv4Addr>().map_err(|_| {
                EngineError::invalid(
                    format!("`{u}` is not an IPv4 address of a name server"),
                    "e.g. `--dns-upstream 192.0.2.53`",
                )
            })?);
        }
        let _g = self.net.apply.lock().await;
        self.create_network_locked(&req.name, subnet, req.isolated, req.nat, upstream, req.ipv6)
            .await?;
        drop(_g);
        self.network_info_of(&req.name).await
    }

    /// Creates network `name` (the caller holds the apply lock): the catalogue first (which
    /// refuses a taken name or a subnet overlapping another network), then the host's side;
    /// a failure there removes both again.
    async fn create_network_locked(
        self: &Arc<Self>,
        name: &str,
        subnet: Option<Ipv4Net>,
        isolated: bool,
        nat: bool,
        upstream: Vec<Ipv4Addr>,
        ipv6: bool,
    ) -> Result<NetworkRecord, EngineError> {
        let host_nets = self
            .blocking(|| mayfly_net::link::used_ipv4_nets().map_err(EngineError::Net))
            .await?;
        let existing = self.db(|s| s.networks()).await?;
        if existing.iter().any(|n| n.name == name) {
            return Err(EngineError::Store(StoreError::AlreadyExists {
                kind: "network",
                name: name.to_owned(),
            }));
        }
        let subnet = match subnet {
            Some(s) => {
                // Another network's bridge is also a host route: name the network.
                if let Some(other) = existing.iter().find(|n| n.subnet.overlaps(&s)) {
                    return Err(EngineError::Store(StoreError::SubnetOverlaps {
                        subnet: s.to_string(),
                        other: other.name.clone(),
                        other_subnet: other.subnet.to_string(),
                    }));
                }
                if let Some(r) = host_nets.iter().find(|r| r.overlaps(&s)) {
                    return Err(EngineError::Conflict {
                        message: format!(
                            "subnet {s} overlaps the host's address or route {r}"
                        ),
                        hint: Some(
                            "choose another subnet with `--subnet`, or leave it out to get a free one"
                                .into(),
                        ),
                    });
                }
                s
            }
            None => {
                let mut taken = host_nets;
                taken.extend(existing.iter().map(|n| n.subnet));
                auto_subnet(&taken).ok_or_else(|| EngineError::Conflict {
                    message: "no free 10.N.0.0/24 subnet is left for a network".into(),
                    hint: Some("give one with `--subnet CIDR`".into()),
                })?
            }
        };
        let id = crate::random_hex(6);
        let rec = NetworkRecord {
            name: name.to_owned(),
            bridge: format!("mf-{id}"),
            id,
            subnet,
            isolated,
            nat,
            upstream,
            created_at: mayfly_store::now(),
            // A random ULA /64 (RFC 4193): 40 random bits make a clash with another network
            // (here or on a host it is joined to later) negligible; one with an existing
            // network of this host is drawn again.
            // A host without IPv6 (booted with `ipv6.disable=1`) gets IPv4-only networks.
            subnet6: (ipv6 && mayfly_net::link::ipv6_available()).then(|| {
                loop {
                    let p = mayfly_net::addr6::random_ula64();
                    if !existing.iter().any(|n| n.subnet6 == Some(p)) {
                        break p;
                    }
                }
            }),
        };
        let r = rec.clone();
        self.db(move |s| s.create_network(&r)).await?;
        if let Err(e) = self.network_up(&rec).await {
            tracing::error!(network = %rec.name, "cannot set the network up: {e}");
            self.network_down(&rec).await;
            let n = rec.name.clone();
            let _ = self.db(move |s| s.delete_network(&n)).await;
            if let Err(e2) = self.apply_firewall_locked().await {
                tracing::error!(network = %rec.name, "cannot update the firewall: {e2}");
            }
            return Err(e);
        }
        Ok(rec)
    }

    /// The default network, created (with the automatic subnet) if it does not exist yet.
    pub(crate) async fn ensure_default_network(self: &Arc<Self>) -> Result<(), EngineError> {
        let exists = |e: &Result<NetworkRecord, EngineError>| e.is_ok();
        let found = self.db(|s| s.network(DEFAULT_NETWORK)).await;
        if exists(&found) {
            return Ok(());
        }
        let _g = self.net.apply.lock().await;
        if self.db(|s| s.network(DEFAULT_NETWORK)).await.is_ok() {
            return Ok(());
        }
        self.create_network_locked(DEFAULT_NETWORK, None, false, true, Vec::new(), true)
            .await
            .map(|_| ())
    }

    /// Every network, by name.
    pub(crate) async fn network_list(&self) -> Result<Vec<NetworkInfo>, EngineError> {
        let (nets, ifaces, names) = self
            .db(|s| {
                let names: Vec<(String, String)> =
                    s.instances()?.into_iter().map(|r| (r.id, r.name)).collect();
                Ok((s.networks()?, s.all_interfaces()?, names))
            })
            .await?;
        Ok(nets
            .iter()
            .map(|n| to_info(n, infos(&ifaces, &names, &n.name)))
            .collect())
    }

    /// Network `name`.
    pub(crate) async fn network_info_of(&self, name: &str) -> Result<NetworkInfo, EngineError> {
        let n = name.to_owned();
        let (net, ifaces, names) = self
            .db(move |s| {
                let names: Vec<(String, String)> =
                    s.instances()?.into_iter().map(|r| (r.id, r.name)).collect();
                Ok((s.network(&n)?, s.network_interfaces(&n)?, names))
            })
            .await?;
        Ok(to_info(&net, infos(&ifaces, &names, name)))
    }

    /// Removes network `name`; refused while instances (or a build) have an interface on it.
    pub(crate) async fn network_remove(self: &Arc<Self>, name: &str) -> Result<(), EngineError> {
        let _g = self.net.apply.lock().await;
        let n = name.to_owned();
        let rec = self.db(move |s| s.network(&n)).await?;
        let n = name.to_owned();
        let users = self.db(move |s| s.network_users(&n)).await?;
        if !users.is_empty() {
            return Err(EngineError::Store(StoreError::NetworkInUse {
                network: name.to_owned(),
                users,
            }));
        }
        // The host's side first: a crash before the row goes leaves the network, which
        // start-up sets up again; never a name server or bridge the catalogue forgot.
        self.network_down(&rec).await;
        let n = name.to_owned();
        if let Err(e) = self.db(move |s| s.delete_network(&n)).await {
            // An instance joined meanwhile: the network stays.
            if let Err(e2) = self.network_up(&rec).await {
                tracing::error!(network = %name, "cannot set the network up again: {e2}");
            }
            return Err(e);
        }
        self.apply_firewall_locked().await
    }

    /// The networks `asked` by a new instance (see [`resolve_networks`]), the default one
    /// created if it is among them, the others checked to exist.
    pub(crate) async fn networks_for_instance(
        self: &Arc<Self>,
        asked: Option<&[String]>,
    ) -> Result<Vec<String>, EngineError> {
        let nets = resolve_networks(asked)?;
        if nets.iter().any(|n| n == DEFAULT_NETWORK) {
            self.ensure_default_network().await?;
        }
        for n in &nets {
            let name = n.clone();
            match self.db(move |s| s.network(&name)).await {
                Ok(_) => {}
                Err(EngineError::Store(StoreError::NotFound { .. })) => {
                    return Err(EngineError::Store(StoreError::NotFound {
                        kind: "network",
                        name: n.clone(),
                    }));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(nets)
    }

    /// Checks the published ports of a new instance against every other instance's.
    pub(crate) async fn check_instance_publish(
        &self,
        publish: &[PublishPort],
        networks: &[String],
    ) -> Result<(), EngineError> {
        for p in publish {
            let ip = p.host_ip;
            if ip.is_unspecified() || ip.is_loopback() {
                continue;
            }
            let local = self
                .blocking(move || Ok(mayfly_net::firewall::is_host_address(ip)))
                .await?;
            if !local {
                return Err(EngineError::invalid(
                    format!("cannot publish {p}: {ip} is not an address of this host"),
                    "give one of the host's addresses (`ip -4 addr`), 0.0.0.0 for all, or none for 127.0.0.1",
                ));
            }
        }
        let others: Vec<(String, Vec<PublishPort>)> = if publish.is_empty() {
            Vec::new()
        } else {
            self.db(|s| s.instances())
                .await?
                .into_iter()
                .filter(|r| !r.config.publish.is_empty())
                .map(|r| (r.name, r.config.publish))
                .collect()
        };
        check_publish(publish, networks, &others)
    }
}

fn infos(
    ifaces: &[InterfaceRecord],
    names: &[(String, String)],
    network: &str,
) -> Vec<mayfly_api::InterfaceInfo> {
    ifaces
        .iter()
        .filter(|i| i.network == network)
        .map(|i| {
            let name = names
                .iter()
                .find(|(id, _)| *id == i.owner)
                .map_or_else(|| format!("build {}", i.owner), |(_, n)| n.clone());
            interface_info(&name, &i.owner, i)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automatic_subnet_skips_what_is_taken_and_wraps() {
        let n = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert_eq!(auto_subnet(&[]), Some(n("10.77.0.0/24")));
        assert_eq!(
            auto_subnet(&[n("10.77.0.0/24"), n("10.78.0.0/16")]),
            Some(n("10.79.0.0/24"))
        );
        // A host route over all of 10.64.0.0/10 (10.64-10.127) pushes it past.
        assert_eq!(auto_subnet(&[n("10.64.0.0/10")]), Some(n("10.128.0.0/24")));
        // Everything from 77 up taken: it wraps to 10.
        assert_eq!(
            auto_subnet(&[n("10.64.0.0/10"), n("10.128.0.0/9")]),
            Some(n("10.10.0.0/24"))
        );
        assert_eq!(auto_subnet(&[n("10.0.0.0/8")]), None);
    }

    #[test]
    fn network_choices_are_checked() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(resolve_networks(None).unwrap(), ["default"]);
        assert!(resolve_networks(Some(&s(&["none"]))).unwrap().is_empty());
        assert_eq!(resolve_networks(Some(&s(&["a", "b"]))).unwrap(), ["a", "b"]);
        let err = |v: &[&str]| resolve_networks(Some(&s(v))).unwrap_err().to_string();
        assert!(err(&["none", "a"]).contains("cannot be combined"));
        assert!(err(&["a", "a"]).contains("given twice"));
        assert!(err(&["Bad_Name"]).contains("not a valid network name"));
        let many: Vec<String> = (0..11).map(|i| format!("n{i}")).collect();
        let e = resolve_networks(Some(&many)).unwrap_err().to_string();
        assert!(e.contains("at most 10"), "{e}");
        assert_eq!(resolve_networks(Some(&many[..10])).unwrap().len(), 10);
    }

    #[test]
    fn published_ports_need_a_network_and_a_free_host_port() {
        let p = |s: &str| s.parse::<PublishPort>().unwrap();
        let net = vec!["default".to_owned()];
        let e = check_publish(&[p("8080:80")], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("need a network"), "{e}");
        let others = vec![("web".to_owned(), vec![p("0.0.0.0:8080:80")])];
        let e = check_publish(&[p("127.0.0.1:8080:81")], &net, &others).unwrap_err();
        assert!(matches!(e, EngineError::Conflict { .. }));
        assert!(e.to_string().contains("instance `web`"), "{e}");
        assert!(check_publish(&[p("8081:80"), p("8080:80/udp")], &net, &others).is_ok());
        let e = check_publish(&[p("8081:80"), p("8081:90")], &net, &[]).unwrap_err();
        assert!(e.to_string().contains("same host port"), "{e}");
    }
}
