//! Network nouns: network create/list/info/rm, channel create/list/rm, and `rename`.

use mayfly_api::{
    Action, ChannelInfo, CreateChannel, CreateNetwork, InstanceInfo, NetworkInfo, RenameRequest,
};

use super::{remove_each, show};
use crate::cli::client::{Client, ClientError};
use crate::cli::output::{ago, json, table_text};
use crate::cli::{ChannelCommand, NetworkCommand, RenameArgs};

/// `mayfly network …`.
pub(super) async fn network(client: &Client, command: NetworkCommand) -> Result<i32, ClientError> {
    match command {
        NetworkCommand::Create(a) => {
            let req = CreateNetwork {
                name: a.name,
                subnet: a.subnet,
                isolated: a.isolated,
                nat: !a.no_nat,
                ipv6: !a.no_ipv6,
                dns_upstream: a.dns_upstream.iter().map(ToString::to_string).collect(),
            };
            let n: NetworkInfo = client.act(Action::CreateNetwork, &[], Some(&req)).await?;
            if a.json {
                json(&n);
            } else if !crate::cli::output::quiet() {
                println!("created network {}", n.name);
                print_network(&n);
            }
        }
        NetworkCommand::List(f) => {
            super::list(
                client,
                Action::ListNetworks,
                &[],
                f.json,
                &[
                    "NAME",
                    "SUBNET",
                    "GATEWAY",
                    "BRIDGE",
                    "OPTIONS",
                    "INTERFACES",
                    "CREATED",
                ],
                |n: &NetworkInfo| {
                    vec![
                        n.name.clone(),
                        n.subnet.clone(),
                        n.gateway.clone(),
                        n.bridge.clone(),
                        flags(n),
                        n.interfaces.len().to_string(),
                        ago(&n.created_at),
                    ]
                },
            )
            .await?;
        }
        NetworkCommand::Info(a) => {
            show::<NetworkInfo>(client, Action::NetworkInfo, &a.name, a.json, print_network)
                .await?;
        }
        NetworkCommand::Rm(a) => {
            return remove_each(client, &a.names, a.json, "network", Action::RemoveNetwork).await;
        }
    }
    Ok(0)
}

/// `isolated`, `no-nat`, or `-`.
fn flags(n: &NetworkInfo) -> String {
    let mut f = Vec::new();
    if n.isolated {
        f.push("isolated");
    }
    if !n.nat {
        f.push("no-nat");
    }
    if f.is_empty() {
        "-".to_owned()
    } else {
        f.join(",")
    }
}

fn print_network(n: &NetworkInfo) {
    println!("name:        {}", n.name);
    println!("subnet:      {}", n.subnet);
    println!(
        "gateway:     {} (the instances' router and name server)",
        n.gateway
    );
    match (&n.subnet6, &n.gateway6) {
        (Some(subnet6), Some(gateway6)) => {
            println!("subnet6:     {subnet6}");
            println!("gateway6:    {gateway6}");
        }
        _ => println!("ipv6:        none (created with --no-ipv6)"),
    }
    println!("bridge:      {}", n.bridge);
    println!(
        "isolated:    {}",
        if n.isolated {
            "yes (instances reach only the gateway)"
        } else {
            "no"
        }
    );
    println!(
        "nat:         {}",
        if n.nat {
            "yes (outbound traffic is masqueraded)"
        } else {
            "no"
        }
    );
    if n.dns_upstream.is_empty() {
        println!("dns:         other names go to the host's name servers");
    } else {
        println!(
            "dns:         other names go to {}",
            n.dns_upstream.join(", ")
        );
    }
    println!("created:     {} ({})", n.created_at, ago(&n.created_at));
    if n.interfaces.is_empty() {
        println!("interfaces:  none");
    } else {
        println!("interfaces:");
        let rows: Vec<Vec<String>> = n
            .interfaces
            .iter()
            .map(|i| {
                vec![
                    format!("  {}", i.instance),
                    i.name.clone(),
                    i.ipv4.clone(),
                    i.ipv6.clone().unwrap_or_else(|| "-".into()),
                    i.mac.clone(),
                    i.host_name.clone(),
                ]
            })
            .collect();
        // Part of the report, not a list: printed whole even with --quiet.
        print!(
            "{}",
            table_text(
                &["  INSTANCE", "NAME", "IPV4", "IPV6", "MAC", "HOST END"],
                &rows,
            )
        );
    }
}

/// `mayfly channel …`.
pub(super) async fn channel(client: &Client, command: ChannelCommand) -> Result<i32, ClientError> {
    match command {
        ChannelCommand::Create(a) => {
            let req = CreateChannel {
                name: a.name,
                server: a.server,
                client: a.client,
            };
            let c: ChannelInfo = client.act(Action::CreateChannel, &[], Some(&req)).await?;
            if a.json {
                json(&c);
            } else if !crate::cli::output::quiet() {
                println!(
                    "created channel {}: {} in {} (read-write) and {} (read-only)",
                    c.name, c.path, c.server, c.client
                );
                if let Some(note) = &c.note {
                    println!("note: {note}");
                }
            }
        }
        ChannelCommand::List(f) => {
            super::list(
                client,
                Action::ListChannels,
                &[],
                f.json,
                &["NAME", "SERVER", "CLIENT", "PATH", "CREATED"],
                |c: &ChannelInfo| {
                    vec![
                        c.name.clone(),
                        c.server.clone(),
                        c.client.clone(),
                        c.path.clone(),
                        ago(&c.created_at),
                    ]
                },
            )
            .await?;
        }
        ChannelCommand::Rm(a) => {
            return remove_each(client, &a.names, a.json, "channel", Action::RemoveChannel).await;
        }
    }
    Ok(0)
}

/// `mayfly rename OLD NEW`.
pub(super) async fn rename(client: &Client, a: RenameArgs) -> Result<i32, ClientError> {
    let req = RenameRequest {
        name: a.new_name.clone(),
    };
    let (client, name) = client.target(&a.name)?;
    let info: InstanceInfo = client
        .act(Action::RenameInstance, &[name], Some(&req))
        .await?;
    if a.json {
        json(&info);
    } else if !crate::cli::output::quiet() {
        println!("renamed {} to {}", a.name, info.name);
        if let Some(note) = &info.note {
            println!("note: {note}");
        }
    }
    Ok(0)
}
