//! `mayfly schedule add|list|rm`.

use mayfly_api::{Action, ApiError, CreateSchedule, ErrorCode, ScheduleInfo};

use crate::cli::ScheduleCommand;
use crate::cli::client::{Client, ClientError};
use crate::cli::output::{json, say};

/// `mayfly schedule …`.
pub(super) async fn schedule(client: &Client, c: ScheduleCommand) -> Result<i32, ClientError> {
    match c {
        ScheduleCommand::Add(a) => {
            let req = CreateSchedule {
                action: a.action,
                cron: a.cron,
                keep: a.keep,
            };
            let (client, name) = client.target(&a.name)?;
            let s: ScheduleInfo = client.act(Action::AddSchedule, &[name], Some(&req)).await?;
            if a.json {
                json(&s);
            } else if !crate::cli::output::quiet() {
                let next = s.next_run.as_deref().unwrap_or("never");
                println!(
                    "schedule {} added: {} {} at `{}` (next run {next})",
                    s.id, s.action, s.instance, s.cron
                );
            }
        }
        ScheduleCommand::List(a) => {
            let (client, action, args) = match &a.name {
                Some(n) => {
                    let (client, name) = client.target(n)?;
                    (client, Action::ListSchedules, vec![name])
                }
                None => (client.clone(), Action::ListAllSchedules, vec![]),
            };
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            super::list(
                &client,
                action,
                &args,
                a.json,
                &[
                    "ID",
                    "INSTANCE",
                    "ACTION",
                    "CRON",
                    "NEXT",
                    "LAST",
                    "LAST ERROR",
                ],
                |s: &ScheduleInfo| {
                    let action = match s.keep {
                        Some(k) => format!("{} (keep {k})", s.action),
                        None => s.action.to_string(),
                    };
                    vec![
                        s.id.to_string(),
                        s.instance.clone(),
                        action,
                        s.cron.clone(),
                        dash(&s.next_run),
                        dash(&s.last_run),
                        dash(&s.last_error),
                    ]
                },
            )
            .await?;
        }
        ScheduleCommand::Rm(a) => {
            let all: Vec<ScheduleInfo> = client
                .act(Action::ListAllSchedules, &[], None::<&()>)
                .await?;
            let Some(s) = all.iter().find(|s| s.id == a.id) else {
                return Err(ClientError::Api(
                    ApiError::new(
                        ErrorCode::NotFound,
                        format!("schedule {} does not exist", a.id),
                    )
                    .with_hint("see `mayfly schedule list` for the ids"),
                ));
            };
            let id = a.id.to_string();
            client
                .act::<()>(Action::RemoveSchedule, &[&s.instance, &id], None::<&()>)
                .await?;
            if a.json {
                json(s);
            } else {
                say(format_args!("removed schedule {} of {}", a.id, s.instance));
            }
        }
    }
    Ok(0)
}
