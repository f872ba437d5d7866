//! `mayfly volume …`.

use mayfly_api::{Action, AttachVolume, CreateVolume, DetachVolume, VolumeInfo};

use super::{remove_each, show};
use crate::cli::VolumeCommand;
use crate::cli::client::{Client, ClientError};
use crate::cli::output::{ago, json, say};

/// `mayfly volume …`.
pub(super) async fn volume(client: &Client, c: VolumeCommand) -> Result<i32, ClientError> {
    match c {
        VolumeCommand::Create(a) => {
            let req = CreateVolume {
                name: a.name,
                size: a.size,
            };
            let v: VolumeInfo = client.act(Action::CreateVolume, &[], Some(&req)).await?;
            if a.json {
                json(&v);
            } else if !crate::cli::output::quiet() {
                println!("created volume {}", v.name);
            }
        }
        VolumeCommand::List(f) => {
            super::list(
                client,
                Action::ListVolumes,
                &[],
                f.json,
                &["NAME", "SIZE", "ATTACHED", "CREATED"],
                |v: &VolumeInfo| {
                    vec![
                        v.name.clone(),
                        v.size
                            .map_or_else(|| "-".into(), mayfly_api::size::format_size),
                        attachment(v),
                        ago(&v.created_at),
                    ]
                },
            )
            .await?;
        }
        VolumeCommand::Info(a) => {
            show::<VolumeInfo>(client, Action::VolumeInfo, &a.name, a.json, print_volume).await?;
        }
        VolumeCommand::Rm(a) => {
            return remove_each(client, &a.names, a.json, "volume", Action::RemoveVolume).await;
        }
        VolumeCommand::Attach(a) => {
            // INSTANCE:/path[:ro]: the mount's `volume` field holds the instance.
            let m = a.target;
            let req = AttachVolume {
                instance: m.volume,
                path: m.path,
                readonly: m.readonly,
            };
            let v: VolumeInfo = client
                .act(Action::AttachVolume, &[&a.name], Some(&req))
                .await?;
            if a.json {
                json(&v);
            } else if !crate::cli::output::quiet() {
                println!("attached volume {} to {}", v.name, attachment(&v));
            }
        }
        VolumeCommand::Detach(a) => {
            let req = DetachVolume {
                instance: a.instance.clone(),
            };
            let v: VolumeInfo = client
                .act(Action::DetachVolume, &[&a.name], Some(&req))
                .await?;
            if a.json {
                json(&v);
            } else {
                say(format_args!(
                    "detached volume {} from {}",
                    a.name, a.instance
                ));
            }
        }
    }
    Ok(0)
}

/// `INSTANCE:/path[:ro]`, or `-`.
fn attachment(v: &VolumeInfo) -> String {
    match &v.attached {
        Some(a) => format!(
            "{}:{}{}",
            a.instance,
            a.path,
            if a.readonly { ":ro" } else { "" }
        ),
        None => "-".into(),
    }
}

fn print_volume(v: &VolumeInfo) {
    println!("name:        {}", v.name);
    println!("id:          {}", v.id);
    println!(
        "size:        {}",
        v.size.map_or_else(
            || "no limit".into(),
            |s| format!("{} ({s} bytes)", mayfly_api::size::format_size(s))
        )
    );
    if let Some(used) = v.used {
        println!(
            "used:        {} ({used} bytes)",
            mayfly_api::size::format_size(used)
        );
    }
    println!("attached:    {}", attachment(v));
    println!("created:     {}", v.created_at);
}
