//! Resource nouns: flavor create/list/info/rm, `set`, `pause`, `resume`, and the limits part
//! of `info NAME`. `stats` is in `stats.rs`.

use mayfly_api::{
    Action, CreateFlavor, FlavorInfo, InstanceInfo, InstanceState, LIMIT_KEYS, Limits, SetLimits,
    SetOutcome,
};

use super::{each, remove_each, show};
use crate::cli::client::{Client, ClientError};
use crate::cli::output::json;
use crate::cli::{FlavorCommand, NamesArgs, SetArgs};

/// `key=value …` of every limit set, in [`LIMIT_KEYS`] order (`-` when none).
pub(super) fn limits_line(limits: &Limits) -> String {
    let parts: Vec<String> = LIMIT_KEYS
        .iter()
        .filter_map(|k| limits.get_key(k).map(|v| format!("{k}={v}")))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

/// The resources part of `mayfly info NAME`: flavor, effective limits, OOM kills.
pub(super) fn print_limits(i: &InstanceInfo) {
    println!("flavor:      {}", i.flavor.as_deref().unwrap_or("none"));
    if i.limits.is_empty() {
        println!("limits:      none (swap off)");
    } else {
        println!("limits:      {}", limits_line(&i.limits));
        if i.limits.swap.is_none() {
            println!("             (swap off)");
        }
    }
    let live = matches!(
        i.state,
        InstanceState::Running | InstanceState::Paused | InstanceState::Stopping
    );
    if i.oom_kills > 0 || i.limits.memory.is_some() {
        println!(
            "oom kills:   {} ({})",
            i.oom_kills,
            if live { "this run" } else { "its last run" }
        );
    }
}

/// `mayfly flavor …`.
pub(super) async fn flavor(client: &Client, command: FlavorCommand) -> Result<i32, ClientError> {
    match command {
        FlavorCommand::Create(a) => {
            let limits = a.limits.limits().map_err(invalid)?;
            let req = CreateFlavor {
                name: a.name,
                description: a.description.unwrap_or_default(),
                limits,
            };
            let f: FlavorInfo = client.act(Action::CreateFlavor, &[], Some(&req)).await?;
            if a.json {
                json(&f);
            } else if !crate::cli::output::quiet() {
                println!("created flavor {}: {}", f.name, limits_line(&f.limits));
            }
        }
        FlavorCommand::List(f) => {
            super::list(
                client,
                Action::ListFlavors,
                &[],
                f.json,
                &["NAME", "KIND", "LIMITS", "INSTANCES", "DESCRIPTION"],
                |f: &FlavorInfo| {
                    vec![
                        f.name.clone(),
                        if f.builtin { "built-in" } else { "custom" }.to_owned(),
                        limits_line(&f.limits),
                        f.used_by.len().to_string(),
                        if f.description.is_empty() {
                            "-".to_owned()
                        } else {
                            f.description.clone()
                        },
                    ]
                },
            )
            .await?;
        }
        FlavorCommand::Info(a) => {
            show::<FlavorInfo>(client, Action::FlavorInfo, &a.name, a.json, print_flavor).await?;
        }
        FlavorCommand::Rm(a) => {
            return remove_each(client, &a.names, a.json, "flavor", Action::RemoveFlavor).await;
        }
    }
    Ok(0)
}

fn print_flavor(f: &FlavorInfo) {
    println!("name:        {}", f.name);
    println!(
        "kind:        {}",
        if f.builtin {
            "built-in (cannot be removed)"
        } else {
            "custom"
        }
    );
    if !f.description.is_empty() {
        println!("description: {}", f.description);
    }
    for key in LIMIT_KEYS {
        if let Some(v) = f.limits.get_key(key) {
            println!("{:<13}{v}", format!("{key}:"));
        }
    }
    if f.limits.swap.is_none() {
        println!("swap:        none (swap off)");
    }
    if f.used_by.is_empty() {
        println!("used by:     no instance");
    } else {
        println!("used by:     {}", f.used_by.join(", "));
    }
}

/// A message of the CLI's own checks as the API's 400.
fn invalid(message: String) -> ClientError {
    ClientError::Api(
        mayfly_api::ApiError::new(mayfly_api::ErrorCode::InvalidArgument, message)
            .with_hint("see docs/resources.md for each limit's forms"),
    )
}

/// `mayfly set NAME KEY=VALUE… [--flavor F]`.
pub(super) async fn set(client: &Client, a: SetArgs) -> Result<i32, ClientError> {
    let req = SetLimits {
        flavor: a.flavor.map(|f| {
            if f.eq_ignore_ascii_case("none") {
                String::new()
            } else {
                f
            }
        }),
        changes: a.changes,
    };
    let (client, name) = client.target(&a.name)?;
    let outcome: SetOutcome = client.act(Action::SetLimits, &[name], Some(&req)).await?;
    if a.json {
        json(&outcome);
        return Ok(0);
    }
    if crate::cli::output::quiet() {
        return Ok(0);
    }
    let name = &outcome.instance.name;
    let shown = |key: &str| {
        let value = outcome
            .instance
            .limits
            .get_key(key)
            .unwrap_or_else(|| "none".to_owned());
        format!("{key}={value}")
    };
    if outcome.applied.is_empty() && outcome.next_start.is_empty() {
        println!("{name}: nothing changed");
    }
    if !outcome.applied.is_empty() {
        let keys: Vec<String> = outcome.applied.iter().map(|k| shown(k)).collect();
        println!("{name}: applied now: {}", keys.join(" "));
    }
    for (key, why) in &outcome.next_start {
        println!("{name}: at the next start: {} ({why})", shown(key));
    }
    if let Some(flavor) = &outcome.instance.flavor {
        println!("{name}: flavor {flavor}");
    }
    Ok(0)
}

/// `mayfly pause NAME…` / `mayfly resume NAME…`.
pub(super) async fn pause(client: &Client, a: NamesArgs, resume: bool) -> Result<i32, ClientError> {
    let (action, done) = if resume {
        (Action::ResumeInstance, "resumed")
    } else {
        (Action::PauseInstance, "paused")
    };
    each(
        &a.names,
        a.json,
        |n| async move {
            let (client, name) = client.target(&n)?;
            client
                .act::<InstanceInfo>(action, &[name], None::<&()>)
                .await
        },
        |n, info| match &info.note {
            Some(note) => println!("{n}: {note}"),
            None => println!("{done} {n}"),
        },
    )
    .await
}
