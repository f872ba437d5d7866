//! Snapshot nouns: snapshot create/list/info/restore/rm, and what is made from an instance or
//! its snapshot: `clone` (a new instance) and `publish` (a new template version).

use mayfly_api::{Action, InstanceInfo, TemplateInfo};

use crate::cli::client::{Client, ClientError};
use crate::cli::output::{ago, json, say, size, table};
use crate::cli::{CloneArgs, PublishArgs, SnapshotCommand};

pub(super) async fn snapshot(
    client: &Client,
    command: SnapshotCommand,
) -> Result<i32, ClientError> {
    use crate::cli::SnapshotCommand as S;
    match command {
        S::Create(a) => {
            let req = mayfly_api::CreateSnapshot {
                name: a.snapshot.clone(),
            };
            let (client, name) = client.target(&a.name)?;
            let s: mayfly_api::SnapshotInfo = client
                .act(Action::CreateSnapshot, &[name], Some(&req))
                .await?;
            if a.json {
                json(&s);
            } else if !crate::cli::output::quiet() {
                let frozen = s
                    .frozen_ms
                    .map(|ms| format!(", instance frozen for {ms} ms"))
                    .unwrap_or_default();
                println!(
                    "snapshot {} of {} taken ({}, {} entries{frozen})",
                    s.name,
                    s.instance,
                    size(s.size),
                    s.entries
                );
            }
        }
        S::List(a) => {
            let (client, name) = client.target(&a.name)?;
            let all: Vec<mayfly_api::SnapshotInfo> = client
                .act(Action::ListSnapshots, &[name], None::<&()>)
                .await?;
            if a.json {
                json(&all);
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.created_at.clone(),
                            size(s.size),
                            format!("{}@{}", s.template, s.template_version),
                            s.frozen_ms
                                .map(|m| format!("{m} ms"))
                                .unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(&["NAME", "TAKEN", "SIZE", "TEMPLATE", "FROZEN"], &rows);
            }
        }
        S::Info(a) => {
            let (client, name) = client.target(&a.name)?;
            let s: mayfly_api::SnapshotInfo = client
                .act(Action::SnapshotInfo, &[name, &a.snapshot], None::<&()>)
                .await?;
            if a.json {
                json(&s);
            } else {
                println!("name:       {}", s.name);
                println!("instance:   {}", s.instance);
                println!("taken:      {} ({})", s.created_at, ago(&s.created_at));
                println!("template:   {}@{}", s.template, s.template_version);
                println!("size:       {} ({} entries)", size(s.size), s.entries);
                if let Some(ms) = s.frozen_ms {
                    println!("frozen:     {ms} ms");
                }
                for v in &s.volumes {
                    println!("volume:     {v} (recorded, its data is not in the snapshot)");
                }
            }
        }
        S::Restore(a) => {
            let (client, name) = client.target(&a.name)?;
            let i: InstanceInfo = client
                .act(Action::RestoreSnapshot, &[name, &a.snapshot], None::<&()>)
                .await?;
            if a.json {
                json(&i);
            } else if !crate::cli::output::quiet() {
                println!("restored {} to {} ({})", a.name, a.snapshot, i.state);
            }
        }
        S::Rm(a) => {
            let (client, name) = client.target(&a.name)?;
            client
                .act::<()>(Action::RemoveSnapshot, &[name, &a.snapshot], None::<&()>)
                .await?;
            if a.json {
                json(&serde_json::json!({
                    "instance": a.name,
                    "name": a.snapshot,
                    "removed": true,
                }));
            } else {
                say(format_args!(
                    "removed snapshot {} of {}",
                    a.snapshot, a.name
                ));
            }
        }
    }
    Ok(0)
}

/// `mayfly clone SOURCE NAME`.
pub(super) async fn clone_instance(client: &Client, a: CloneArgs) -> Result<i32, ClientError> {
    let req = mayfly_api::CloneRequest {
        name: a.name.clone(),
        snapshot: a.snapshot.clone(),
        mode: a.mode,
        start: a.start,
        copy_volumes: a.copy_volumes,
    };
    let (client, source) = client.target(&a.source)?;
    client
        .act::<InstanceInfo>(Action::CloneInstance, &[source], Some(&req))
        .await
        .map(|info| {
            if a.json {
                json(&info);
            } else if !crate::cli::output::quiet() {
                println!(
                    "cloned {} as {}{}",
                    a.source,
                    info.name,
                    if a.start { " (started)" } else { "" }
                );
            }
            0
        })
}

/// `mayfly publish NAME[/SNAPSHOT] --as TEMPLATE`.
pub(super) async fn publish(client: &Client, a: PublishArgs) -> Result<i32, ClientError> {
    let (name, snap) = match a.source.split_once('/') {
        Some((n, s)) => (n.to_owned(), Some(s.to_owned())),
        None => (a.source.clone(), None),
    };
    let req = mayfly_api::PublishRequest {
        template: a.template.clone(),
        snapshot: snap,
        message: a.message.clone(),
        limits: a.limits,
    };
    let (client, name) = client.target(&name)?;
    client
        .act::<TemplateInfo>(Action::Publish, &[name], Some(&req))
        .await
        .map(|t| {
            if a.json {
                json(&t);
            } else if !crate::cli::output::quiet() {
                let layer = t.current().and_then(|v| v.layers.last());
                println!(
                    "published {} as template {} version {} (new layer {}, {})",
                    a.source,
                    t.name,
                    t.current_version,
                    layer.map(|l| l.digest.as_str()).unwrap_or("-"),
                    size(layer.map(|l| l.size).unwrap_or(0))
                );
            }
            0
        })
}
