//! The host's side of networks: each network's bridge and name server, mayfly's firewall
//! (rendered whole from the catalogue's networks and the instances whose network is up), and
//! what an instance's start and end, a build, and the daemon's start-up do to them.
//!
//! Order at an instance's start: bridges and name servers (idempotent), then the firewall with
//! the instance's interfaces, forwards and rate (rules match the host end's name, which works
//! before the veth exists: the first frame is already policed), then the driver creates the
//! veth and starts the init, then its names are published. At the end of the run, in
//! reverse: names, firewall (its rate goes with its interfaces), host ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mayfly_net::{FirewallState, Interface, dns, firewall, link};
use mayfly_store::{InstanceRecord, NetworkRecord};

use super::{Active, forwards_of, interface_of, plan_of};
use crate::{Engine, EngineError, lock};

impl Engine {
    /// Network `rec`'s bridge and name server (idempotent), off the async runtime.
    pub(crate) async fn network_host_up(&self, rec: &NetworkRecord) -> Result<(), EngineError> {
        let plan = plan_of(rec);
        let dir = self.layout.net_dir(&rec.name);
        let _g = self.net.host.lock().await;
        self.blocking(move || {
            link::ensure_bridge(&plan)?;
            dns::ensure_running(&plan, &dir)?;
            Ok(())
        })
        .await
    }

    /// Sets network `rec` up on the host: bridge, name server, firewall. The caller holds
    /// the apply lock.
    pub(crate) async fn network_up(&self, rec: &NetworkRecord) -> Result<(), EngineError> {
        self.network_host_up(rec).await?;
        self.apply_firewall_locked().await
    }

    /// Takes network `rec` down on the host: its name server and its bridge (its rules go
    /// with the next apply, once its row is gone). Failures are logged. The caller holds the
    /// apply lock.
    pub(crate) async fn network_down(&self, rec: &NetworkRecord) {
        let dir = self.layout.net_dir(&rec.name);
        let bridge = rec.bridge.clone();
        let _g = self.net.host.lock().await;
        // Each step whatever the other did: a name server that will not stop must not leave
        // the bridge behind (nothing removes a bridge whose network is gone).
        let stopped = match crate::inject("network-down:dns") {
            Ok(()) => self.blocking(move || Ok(dns::stop(&dir)?)).await,
            Err(e) => Err(e),
        };
        let removed = self
            .blocking(move || Ok(link::remove_bridge(&bridge)?))
            .await;
        for e in [stopped, removed].into_iter().filter_map(Result::err) {
            tracing::error!(network = %rec.name, "cannot take the network down: {e}");
        }
    }

    /// Renders the firewall from the catalogue's networks and the active instances and
    /// applies it (no network left: mayfly's tables go). The caller holds the apply lock.
    pub(crate) async fn apply_firewall_locked(&self) -> Result<(), EngineError> {
        let nets = self.db(|s| s.networks()).await?;
        let mut state = FirewallState {
            networks: nets.iter().map(plan_of).collect(),
            ..FirewallState::default()
        };
        {
            let active = lock(&self.net.active);
            let mut ids: Vec<&String> = active.keys().collect();
            ids.sort();
            for id in ids {
                let a = &active[id];
                state.interfaces.extend(a.interfaces.iter().cloned());
                state.forwards.extend(a.forwards.iter().cloned());
                if let Some(rate) = a.rate {
                    state
                        .rates
                        .extend(a.interfaces.iter().map(|i| (i.host_name.clone(), rate)));
                }
            }
        }
        let prev = lock(&self.net.applied).take();
        let applied = self
            .blocking(move || {
                if state.networks.is_empty() {
                    firewall::remove()?;
                    Ok(None)
                } else {
                    firewall::apply_change(prev.as_ref(), &state)?;
                    Ok(Some(state))
                }
            })
            .await?;
        *lock(&self.net.applied) = applied;
        Ok(())
    }

    /// Applies the firewall under the apply lock.
    pub(crate) async fn sync_firewall(&self) -> Result<(), EngineError> {
        let _g = self.net.apply.lock().await;
        self.apply_firewall_locked().await
    }

    /// The interfaces of instance (or build) `owner`, as the driver sets them up.
    pub(crate) async fn interfaces_of(&self, owner: &str) -> Result<Vec<Interface>, EngineError> {
        let owner = owner.to_owned();
        let (ifaces, nets) = self
            .db(move |s| Ok((s.interfaces(&owner)?, s.networks()?)))
            .await?;
        Ok(ifaces
            .iter()
            .filter_map(|i| {
                nets.iter()
                    .find(|n| n.name == i.network)
                    .map(|n| interface_of(i, n))
            })
            .collect())
    }

    /// Brings up the network side of instance `rec` before the driver starts it: its
    /// networks' bridges and name servers, and the firewall with its interfaces and published
    /// ports. Refuses a published port that another running instance, or another process on
    /// the host, holds. Returns the interfaces for the driver (none: `--network none`).
    pub(crate) async fn instance_net_up(
        self: &Arc<Self>,
        rec: &InstanceRecord,
    ) -> Result<Vec<Interface>, EngineError> {
        let interfaces = self.interfaces_of(&rec.id).await?;
        if interfaces.is_empty() {
            return Ok(interfaces);
        }
        let nets = self.db(|s| s.networks()).await?;
        for n in nets
            .iter()
            .filter(|n| interfaces.iter().any(|i| i.network == n.name))
        {
            self.network_host_up(n).await?;
        }
        let forwards = forwards_of(&rec.config.publish, interfaces[0].ipv4);
        let _g = self.net.apply.lock().await;
        {
            let active = lock(&self.net.active);
            for p in &rec.config.publish {
                for (id, a) in active.iter().filter(|(id, _)| **id != rec.id) {
                    let theirs = a.forwards.iter().any(|f| {
                        f.host_port == p.host_port
                            && f.proto.as_str() == proto_str(p.proto)
                            && (f.host_ip == p.host_ip
                                || f.host_ip.is_unspecified()
                                || p.host_ip.is_unspecified())
                    });
                    if theirs {
                        return Err(EngineError::Conflict {
                            message: format!(
                                "host port {}:{}/{} is published by running instance `{}` ({id})",
                                p.host_ip,
                                p.host_port,
                                proto_str(p.proto),
                                a.name
                            ),
                            hint: Some(format!("stop `{}` first", a.name)),
                        });
                    }
                }
            }
        }
        for f in &forwards {
            let (ip, port, proto) = (f.host_ip, f.host_port, f.proto);
            let held = self
                .blocking(move || Ok(firewall::port_in_use(ip, port, proto)))
                .await?;
            if held {
                return Err(EngineError::Conflict {
                    message: format!(
                        "cannot publish {ip}:{port}/{}: another process on the host holds that port",
                        proto.as_str()
                    ),
                    hint: Some(
                        "stop that process, or recreate the instance with another host port (`--publish`)"
                            .into(),
                    ),
                });
            }
        }
        lock(&self.net.active).insert(
            rec.id.clone(),
            Active {
                name: rec.name.clone(),
                interfaces: interfaces.clone(),
                forwards,
                rate: self.net_rate_of(rec),
            },
        );
        if let Err(e) = self.apply_firewall_locked().await {
            lock(&self.net.active).remove(&rec.id);
            if let Err(e2) = self.apply_firewall_locked().await {
                tracing::error!(instance = %rec.name, "cannot put the firewall back: {e2}");
            }
            return Err(e);
        }
        Ok(interfaces)
    }

    /// Publishes the names of instance `id` (started) on its networks' name servers.
    pub(crate) async fn instance_net_started(&self, id: &str) -> Result<(), EngineError> {
        let entry = lock(&self.net.active).get(id).cloned();
        let Some(a) = entry else { return Ok(()) };
        self.set_names(id, &a).await
    }

    /// Takes down the network side of instance (or build) `id` whose run ended (or whose
    /// start failed): its names, its rules, its host ends. Failures are logged and the
    /// rest still done (start-up reconciles what is left).
    pub(crate) async fn instance_net_down(&self, id: &str) {
        let removed = lock(&self.net.active).remove(id);
        // The firewall holds only active runs: one that was not (a run found ended at
        // start-up) has no rule to take out.
        let was_active = removed.is_some();
        let ifaces = match removed {
            Some(a) => a.interfaces,
            None => self.interfaces_of(id).await.unwrap_or_default(),
        };
        if ifaces.is_empty() {
            return;
        }
        self.remove_names(id).await;
        if was_active && let Err(e) = self.sync_firewall().await {
            tracing::error!(owner = %id, "cannot remove the rules of an ended run: {e}");
        }
        let hosts: Vec<String> = ifaces.into_iter().map(|i| i.host_name).collect();
        let gone = self
            .blocking(move || {
                for h in &hosts {
                    link::delete_link(h)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = gone {
            tracing::error!(owner = %id, "cannot delete a host end: {e}");
        }
    }

    /// A build's interface on the default network (created if needed), leased for the
    /// build's life and in the firewall until [`Engine::build_net_down`].
    pub(crate) async fn build_net_up(
        self: &Arc<Self>,
        build_id: &str,
    ) -> Result<Vec<Interface>, EngineError> {
        self.ensure_default_network().await?;
        let id = build_id.to_owned();
        self.db(move |s| s.lease_build_interfaces(&id, &[mayfly_api::DEFAULT_NETWORK.to_owned()]))
            .await?;
        let up = async {
            let interfaces = self.interfaces_of(build_id).await?;
            let nets = self.db(|s| s.networks()).await?;
            for n in nets
                .iter()
                .filter(|n| interfaces.iter().any(|i| i.network == n.name))
            {
                self.network_host_up(n).await?;
            }
            let _g = self.net.apply.lock().await;
            lock(&self.net.active).insert(
                build_id.to_owned(),
                Active {
                    name: String::new(),
                    interfaces: interfaces.clone(),
                    forwards: Vec::new(),
                    rate: None,
                },
            );
            self.apply_firewall_locked().await?;
            Ok::<_, EngineError>(interfaces)
        }
        .await;
        if up.is_err() {
            self.build_net_down(build_id).await;
        }
        up
    }

    /// Ends a build's network: rules, host end, lease.
    pub(crate) async fn build_net_down(&self, build_id: &str) {
        self.instance_net_down(build_id).await;
        let id = build_id.to_owned();
        if let Err(e) = self.db(move |s| s.release_interfaces(&id)).await {
            tracing::error!(build = %build_id, "cannot release the build's address: {e}");
        }
    }

    /// Start-up: every network's bridge and name server up, build leases dropped, the
    /// running instances' networks known again, names exactly those of the running
    /// instances, the firewall re-applied, host ends of instances that do not run deleted.
    pub(crate) async fn recover_networks(self: &Arc<Self>) -> Result<(), EngineError> {
        let dropped = self.db(|s| s.drop_build_leases()).await?;
        if dropped > 0 {
            tracing::warn!(
                "dropped {dropped} address lease(s) of builds the daemon's end interrupted"
            );
        }
        let (nets, recs, chans) = self
            .db(|s| Ok((s.networks()?, s.instances()?, s.channels()?)))
            .await?;
        self.sweep_stale_networks(&nets, &chans).await;
        for n in &nets {
            if let Err(e) = self.network_host_up(n).await {
                tracing::error!(network = %n.name, "cannot set the network up: {e}");
            }
        }
        let running: Vec<&InstanceRecord> = recs
            .iter()
            .filter(|r| {
                self.slot(&r.name)
                    .is_ok_and(|s| s.state() == mayfly_api::InstanceState::Running)
            })
            .collect();
        let mut keep_links: HashSet<String> = HashSet::new();
        for r in &running {
            let interfaces = self.interfaces_of(&r.id).await?;
            if interfaces.is_empty() {
                continue;
            }
            keep_links.extend(interfaces.iter().map(|i| i.host_name.clone()));
            let forwards = forwards_of(&r.config.publish, interfaces[0].ipv4);
            lock(&self.net.active).insert(
                r.id.clone(),
                Active {
                    name: r.name.clone(),
                    interfaces,
                    forwards,
                    rate: self.net_rate_of(r),
                },
            );
        }
        // A firewall that cannot be applied now (the next network change tries again) must
        // not keep the names and host ends below from being set right.
        let synced = match crate::inject("recover:firewall") {
            Ok(()) => self.sync_firewall().await,
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            tracing::error!("cannot apply the firewall at start-up: {e}");
        }
        // Names: exactly the running instances'.
        let wanted: HashMap<String, Active> = lock(&self.net.active).clone();
        for n in &nets {
            let dir = self.layout.net_dir(&n.name);
            let keys = {
                let dir = dir.clone();
                self.blocking(move || Ok(dns::host_keys(&dir)?)).await
            };
            for key in keys.unwrap_or_default() {
                let on_it = wanted
                    .get(&key)
                    .is_some_and(|a| a.interfaces.iter().any(|i| i.network == n.name));
                if !on_it {
                    let dir = dir.clone();
                    let _ = self
                        .blocking(move || Ok(dns::remove_host(&dir, &key)?))
                        .await;
                }
            }
        }
        for (id, a) in &wanted {
            if let Err(e) = self.set_names(id, a).await {
                tracing::error!(instance = %a.name, "cannot publish its name: {e}");
            }
        }
        // Host ends of this daemon's instances that do not run (another daemon may share the
        // namespace: its own are left alone). A build's die with its namespace, which the
        // reconciliation ended.
        let ours: HashSet<String> = recs
            .iter()
            .flat_map(|r| (0..=9u8).map(|i| super::host_name(&r.id, i)))
            .collect();
        let stale = self
            .blocking(|| Ok(link::links_with_prefix("mv")?))
            .await
            .unwrap_or_default();
        for l in stale
            .into_iter()
            .filter(|l| ours.contains(l) && !keep_links.contains(l))
        {
            tracing::warn!("deleting host end {l}: its instance does not run");
            let _ = self.blocking(move || Ok(link::delete_link(&l)?)).await;
        }
        Ok(())
    }
}

impl Engine {
    /// Removes what a crash left of removed networks and channels: name servers and
    /// directories of networks the catalogue no longer has (a removal takes the bridge down
    /// before the row goes, so a crash in between leaves the network, set up again here),
    /// and channel directories without a channel.
    async fn sweep_stale_networks(
        &self,
        nets: &[NetworkRecord],
        chans: &[mayfly_store::ChannelRecord],
    ) {
        let known: HashSet<String> = nets.iter().map(|n| n.name.clone()).collect();
        let net_root = self.layout.root().join("net");
        let stale_dirs: Vec<std::path::PathBuf> = std::fs::read_dir(&net_root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !known.contains(&*e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
        for dir in stale_dirs {
            tracing::warn!(
                "stopping the name server of a removed network ({})",
                dir.display()
            );
            let d = dir.clone();
            if let Err(e) = self.blocking(move || Ok(dns::stop(&d)?)).await {
                tracing::error!("cannot stop the name server in {}: {e}", dir.display());
            }
        }
        let channels: HashSet<&str> = chans.iter().map(|c| c.name.as_str()).collect();
        if let Ok(entries) = std::fs::read_dir(self.layout.channels()) {
            for e in entries.flatten() {
                if !channels.contains(&*e.file_name().to_string_lossy()) {
                    let _ = self.trash.discard(&e.path());
                }
            }
        }
    }
}

fn proto_str(p: mayfly_api::PortProto) -> &'static str {
    match p {
        mayfly_api::PortProto::Tcp => "tcp",
        mayfly_api::PortProto::Udp => "udp",
    }
}
