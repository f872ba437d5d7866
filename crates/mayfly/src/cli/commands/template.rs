//! Template nouns other than import: build, patch, rollback, history, rollout, list, info,
//! rm and gc. Following a job's newline-delimited JSON events (with a progress bar on a
//! terminal) is here too, since import, build, patch and rollout all answer that way.

use std::time::Duration;

use http_body_util::BodyExt;
use mayfly_api::{Action, ImportEvent, TemplateInfo};

use super::import::import;
use super::{remove_each, request};
use crate::cli::client::{Client, ClientError, full};
use crate::cli::output::{ago, json, size, table};
use crate::cli::{RolloutArgs, TemplateCommand};

/// `mayfly template SUBCOMMAND`.
pub(super) async fn template(client: &Client, t: TemplateCommand) -> Result<i32, ClientError> {
    match t {
        TemplateCommand::Import(args) => import(client, args).await,
        TemplateCommand::List(f) => template_list(client, f.json).await,
        TemplateCommand::Info(a) => template_info(client, &a.name, a.json).await,
        TemplateCommand::Build(a) => {
            let command = parse_cmd(&a.cmd)?;
            let req = mayfly_api::BuildTemplate {
                name: a.name.clone(),
                debian: a.debian.clone(),
                variant: a.variant.clone(),
                mirror: a.mirror.clone(),
                no_init: a.no_init,
                from: a.from.clone(),
                packages: a.packages.clone(),
                run: a.run.clone(),
                command,
                stop_signal: a.stop_signal.clone(),
                message: a.message.clone(),
            };
            template_job(
                client,
                Action::BuildTemplate,
                &a.name,
                &req,
                format!("building {}", a.name),
            )
            .await
            .map(|t| {
                if a.json {
                    json(&t);
                } else if !crate::cli::output::quiet() {
                    print_version_summary("built", &t);
                }
                0
            })
        }
        TemplateCommand::Patch(a) => {
            let req = mayfly_api::PatchTemplate {
                packages: a.packages.clone(),
                run: a.run.clone(),
                from_dir: a.from_dir.as_ref().map(|d| {
                    std::fs::canonicalize(d)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| d.clone())
                }),
                stop_signal: a.stop_signal.clone(),
                message: a.message.clone(),
            };
            template_job(
                client,
                Action::PatchTemplate,
                &a.name,
                &req,
                format!("patching {}", a.name),
            )
            .await
            .map(|t| {
                if a.json {
                    json(&t);
                } else if !crate::cli::output::quiet() {
                    print_version_summary("patched", &t);
                    for s in &t.shadowed {
                        println!(
                            "note: {} (persistent) hides the new version at: {}",
                            s.instance,
                            s.paths.join(", ")
                        );
                    }
                }
                0
            })
        }
        TemplateCommand::Rollback(a) => {
            let req = mayfly_api::RollbackRequest { to: a.to };
            client
                .act::<TemplateInfo>(Action::RollbackTemplate, &[&a.name], Some(&req))
                .await
                .map(|t| {
                    if a.json {
                        json(&t);
                    } else if !crate::cli::output::quiet() {
                        println!(
                            "template {} now means version {}",
                            t.name, t.current_version
                        );
                    }
                    0
                })
        }
        TemplateCommand::History(a) => template_history(client, &a.name, a.json).await,
        TemplateCommand::Rollout(a) => rollout(client, a).await,
        TemplateCommand::Gc(f) => client
            .act::<mayfly_api::GcReport>(Action::CollectGarbage, &[], None::<&()>)
            .await
            .map(|r| {
                if f.json {
                    json(&r);
                } else if !crate::cli::output::quiet() {
                    println!(
                        "removed {} unused layer(s), {} freed",
                        r.removed.len(),
                        size(r.bytes)
                    );
                }
                0
            }),
        TemplateCommand::Rm(a) => {
            remove_each(client, &a.names, a.json, "template", Action::RemoveTemplate).await
        }
    }
}

async fn template_list(client: &Client, as_json: bool) -> Result<i32, ClientError> {
    let all: Vec<TemplateInfo> = client.act(Action::ListTemplates, &[], None::<&()>).await?;
    if as_json {
        json(&all);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|t| {
            let cur = t.current();
            vec![
                t.name.clone(),
                t.current_version.to_string(),
                cur.map(|v| v.layers.len().to_string()).unwrap_or_default(),
                size(
                    cur.map(|v| v.layers.iter().map(|l| l.size).sum())
                        .unwrap_or(0),
                ),
                t.used_by.len().to_string(),
                ago(&t.created_at),
            ]
        })
        .collect();
    table(
        &["NAME", "VERSION", "LAYERS", "SIZE", "INSTANCES", "CREATED"],
        &rows,
    );
    Ok(0)
}

async fn template_info(client: &Client, name: &str, as_json: bool) -> Result<i32, ClientError> {
    let t: TemplateInfo = client
        .act(Action::TemplateInfo, &[name], None::<&()>)
        .await?;
    if as_json {
        json(&t);
        return Ok(0);
    }
    println!(
        "name:       {}{}",
        t.name,
        if t.builtin { " (built-in)" } else { "" }
    );
    println!("version:    {} (current)", t.current_version);
    if let Some(p) = t.previous_version {
        println!("previous:   {p} (a failed rollout points the name back there)");
    }
    println!("created:    {} ({})", t.created_at, ago(&t.created_at));
    if let Some(v) = t.current() {
        print_defaults(&v.config);
        println!("workdir:    {}", v.config.workdir);
        println!("stop:       {}", v.config.stop_signal);
        for e in &v.config.env {
            println!("env:        {e}");
        }
    }
    println!(
        "used by:    {}",
        if t.used_by.is_empty() {
            "-".to_owned()
        } else {
            t.used_by.join(", ")
        }
    );
    if let Some(v) = t.current() {
        if !v.packages.is_empty() {
            println!("packages:   {} (list them with --json)", v.packages.len());
        }
        if let Some(base) = &v.base {
            println!(
                "base:       {base}{}",
                if v.app {
                    " (application template: stack it with --app)"
                } else {
                    ""
                }
            );
        }
    }
    println!("versions:");
    for v in &t.versions {
        let total: u64 = v.layers.iter().map(|l| l.size).sum();
        println!(
            "  {}  {}  {}  {}",
            v.version,
            v.created_at,
            size(total),
            v.message
        );
        for l in &v.layers {
            println!(
                "       layer {}  {}  {} entries",
                l.digest,
                size(l.size),
                l.entries
            );
        }
    }
    for sh in &t.shadowed {
        println!(
            "note: {} (persistent, on version {}) hides the current version at: {}",
            sh.instance,
            sh.since_version,
            sh.paths.join(", ")
        );
    }
    print_held_back(&t);
    Ok(0)
}

/// The default command (entrypoint and cmd apart, when there is an entrypoint) and user.
fn print_defaults(c: &mayfly_api::TemplateConfig) {
    let quoted = |words: &[String]| {
        words
            .iter()
            .map(|w| {
                if w.is_empty() || w.contains(|c: char| c.is_whitespace() || "'\"\\$`".contains(c))
                {
                    format!("'{}'", w.replace('\'', "'\\''"))
                } else {
                    w.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let cmd = if c.command.is_empty() {
        "(none: instances must give one)".to_owned()
    } else {
        quoted(&c.command)
    };
    println!("command:    {cmd}");
    let or_dash = |words: &[String]| {
        if words.is_empty() {
            "-".to_owned()
        } else {
            quoted(words)
        }
    };
    if c.entrypoint.is_empty() {
        println!("entrypoint: -   (arguments given at launch replace the whole command)");
    } else {
        println!(
            "entrypoint: {}   (arguments given at launch follow it)",
            quoted(&c.entrypoint)
        );
    }
    println!("cmd:        {}", or_dash(&c.cmd));
    println!(
        "user:       {}",
        if c.user.is_empty() {
            "root (the default)"
        } else {
            c.user.as_str()
        }
    );
}

async fn template_history(client: &Client, name: &str, as_json: bool) -> Result<i32, ClientError> {
    let t: TemplateInfo = client
        .act(Action::TemplateInfo, &[name], None::<&()>)
        .await?;
    if as_json {
        json(&t.versions);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = t
        .versions
        .iter()
        .map(|v| {
            let top = v.layers.last();
            vec![
                format!(
                    "{}{}",
                    v.version,
                    if v.version == t.current_version {
                        "*"
                    } else {
                        ""
                    }
                ),
                v.created_at.clone(),
                size(v.layers.iter().map(|l| l.size).sum()),
                top.map(|l| l.digest.chars().take(19).collect::<String>())
                    .unwrap_or_default(),
                if v.used_by.is_empty() {
                    "-".into()
                } else {
                    v.used_by.join(",")
                },
                v.message.clone(),
            ]
        })
        .collect();
    table(
        &[
            "VERSION",
            "CREATED",
            "SIZE",
            "TOP LAYER",
            "USED BY",
            "MESSAGE",
        ],
        &rows,
    );
    for s in &t.shadowed {
        println!(
            "note: {} (persistent, on version {}) hides the newer version at: {}",
            s.instance,
            s.since_version,
            s.paths.join(", ")
        );
    }
    print_held_back(&t);
    Ok(0)
}

/// Notes on the followers that a template's applications hold back.
fn print_held_back(t: &TemplateInfo) {
    for h in &t.held_back {
        println!(
            "note: {} is held back on version {}: {}",
            h.instance, h.version, h.reason
        );
    }
}

pub(super) fn print_version_summary(verb: &str, t: &TemplateInfo) {
    let v = t.current();
    let layers = v.map(|v| v.layers.len()).unwrap_or(0);
    let top = v.and_then(|v| v.layers.last());
    println!(
        "{verb} template {} version {} ({} layer{}, top {} {}{})",
        t.name,
        t.current_version,
        layers,
        if layers == 1 { "" } else { "s" },
        top.map(|l| l.digest.as_str()).unwrap_or("-"),
        size(top.map(|l| l.size).unwrap_or(0)),
        v.map(|v| format!(", {} packages", v.packages.len()))
            .filter(|_| v.is_some_and(|v| !v.packages.is_empty()))
            .unwrap_or_default()
    );
}

pub(super) fn parse_cmd(cmd: &Option<String>) -> Result<Option<Vec<String>>, ClientError> {
    cmd.as_deref()
        .map(|c| crate::cli::process::parse_command("--cmd", c))
        .transpose()
}

/// Sends `body` to a template job `action` (build, patch) of template `name` and follows its
/// events: output lines are printed (on stderr, above a spinner on a terminal) and the final
/// template returned.
async fn template_job(
    client: &Client,
    action: Action,
    name: &str,
    body: &impl serde::Serialize,
    label: String,
) -> Result<TemplateInfo, ClientError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let path = action.path(&[name]);
    let req = request(action, &path, "application/json", full(bytes))?;
    let response = client.send(req).await?;
    if !response.status().is_success() {
        return Err(Client::error_of(response).await);
    }
    let bar = progress_bar(None);
    bar.set_message(label);
    let tty = rustix::termios::isatty(std::io::stderr());
    let mut outcome: Option<ImportEvent> = None;
    let quiet = crate::cli::output::quiet();
    read_events(response, "build", |ev: ImportEvent| match ev {
        ImportEvent::Log { .. } if quiet => {}
        ImportEvent::Log { line } => {
            if tty {
                bar.println(line);
            } else {
                eprintln!("{line}");
            }
        }
        ImportEvent::Progress { .. } => {}
        ev => outcome = Some(ev),
    })
    .await?;
    bar.finish_and_clear();
    match outcome {
        Some(ImportEvent::Done(t)) => Ok(*t),
        Some(ImportEvent::Error(e)) => Err(ClientError::Api(e)),
        _ => Err(ClientError::Protocol(
            "the job ended without a result".into(),
        )),
    }
}

async fn rollout(client: &Client, a: RolloutArgs) -> Result<i32, ClientError> {
    let req = mayfly_api::RolloutRequest {
        wave: Some(a.wave),
        health: a.health.clone(),
        timeout: Some(a.timeout),
    };
    let bytes = serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let path = Action::Rollout.path(&[&a.name]);
    let request = request(Action::Rollout, &path, "application/json", full(bytes))?;
    let response = client.send(request).await?;
    if !response.status().is_success() {
        return Err(Client::error_of(response).await);
    }
    let mut failed: Option<mayfly_api::ApiError> = None;
    let mut done = false;
    // `--json`: one event per line as they come; `--quiet`: nothing but errors.
    let silent = a.json || crate::cli::output::quiet();
    read_events(response, "rollout", |ev: mayfly_api::RolloutEvent| {
        use mayfly_api::RolloutEvent as E;
        if a.json {
            json_line(&ev);
        }
        match ev {
            E::Wave { number, instances } if !silent => {
                println!("wave {number}: {}", instances.join(", "))
            }
            E::Instance {
                name,
                status,
                detail,
            } if !silent => {
                println!(
                    "  {name}: {status}{}",
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({detail})")
                    }
                )
            }
            E::Shadowed(s) if !silent => println!(
                "  {} (persistent, not reset) hides the new version at: {}",
                s.instance,
                s.paths.join(", ")
            ),
            E::HeldBack(h) if !silent => println!(
                "  {} (held back on version {}, not reset): {}",
                h.instance, h.version, h.reason
            ),
            E::RolledBack { to } if !silent => println!("rolled the template back to version {to}"),
            E::Done {
                version,
                reset,
                held_back,
            } => {
                done = true;
                if !silent {
                    println!(
                        "rolled out version {version} to {} instance(s){}",
                        reset.len(),
                        if held_back.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; {} held back by their applications: {}",
                                held_back.len(),
                                held_back.join(", ")
                            )
                        }
                    );
                }
            }
            E::Error(e) => failed = Some(e),
            _ => {}
        }
    })
    .await?;
    match (failed, done) {
        (Some(e), _) => Err(ClientError::Api(e)),
        (None, true) => Ok(0),
        (None, false) => Err(ClientError::Protocol(
            "the rollout ended without a result".into(),
        )),
    }
}

fn json_line<T: serde::Serialize>(value: &T) {
    if let Ok(s) = serde_json::to_string(value) {
        println!("{s}");
    }
}

/// Reads a newline-delimited JSON answer, one event at a time.
pub(super) async fn read_events<T: serde::de::DeserializeOwned>(
    response: hyper::Response<hyper::body::Incoming>,
    what: &str,
    mut on_event: impl FnMut(T),
) -> Result<(), ClientError> {
    let mut body = response.into_body();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ClientError::Protocol(format!("{what} stream broke: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let event = serde_json::from_slice::<T>(&line)
                .map_err(|e| ClientError::Protocol(format!("bad {what} stream: {e}")))?;
            on_event(event);
        }
    }
    Ok(())
}

pub(super) fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    if !rustix::termios::isatty(std::io::stderr()) || crate::cli::output::quiet() {
        return indicatif::ProgressBar::hidden();
    }
    match total {
        Some(total) => {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
        None => {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        }
    }
}
