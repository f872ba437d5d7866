//! One function per command: build the request, call the API, print the answer.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::Method;
use hyper::body::Frame as BodyFrame;
use mayfly_api::{
    ApiError, CreateInstance, DaemonInfo, ErrorCode, ExecRequest, ImportEvent, ImportTemplate,
    InstanceInfo, Mode, StopRequest, TemplateInfo, paths,
};

use super::client::{Client, ClientError};
use super::output::{ago, json, size, table};
use super::stream::{interactive, stdin_is_terminal, terminal_size};
use super::{Command, ImportArgs, LaunchArgs, RunArgs, TemplateCommand};

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn fail(e: &ClientError) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

/// Runs one client command; returns the exit code.
pub async fn dispatch(client: &Client, command: Command) -> i32 {
    let result: Result<i32, ClientError> = match command {
        Command::Daemon(_) | Command::Forker(_) => Ok(2),
        Command::Info(args) => match args.name {
            None => daemon_info(client, args.json).await,
            Some(name) => instance_info(client, &name, args.json).await,
        },
        Command::Template(t) => match t {
            TemplateCommand::Import(args) => import(client, args).await,
            TemplateCommand::List(f) => template_list(client, f.json).await,
            TemplateCommand::Info(a) => template_info(client, &a.name, a.json).await,
            TemplateCommand::Build(a) => {
                let command = match parse_cmd(&a.cmd) {
                    Ok(c) => c,
                    Err(e) => return fail(&e),
                };
                let req = mayfly_api::BuildTemplate {
                    name: a.name.clone(),
                    debian: a.debian.clone(),
                    variant: a.variant.clone(),
                    mirror: a.mirror.clone(),
                    from: a.from.clone(),
                    packages: a.packages.clone(),
                    run: a.run.clone(),
                    command,
                    message: a.message.clone(),
                };
                let path = format!("{}/build", paths::template(&enc(&a.name)));
                template_job(client, &path, &req, format!("building {}", a.name))
                    .await
                    .map(|t| {
                        if a.json {
                            json(&t);
                        } else {
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
                    message: a.message.clone(),
                };
                let path = format!("{}/patch", paths::template(&enc(&a.name)));
                template_job(client, &path, &req, format!("patching {}", a.name))
                    .await
                    .map(|t| {
                        if a.json {
                            json(&t);
                        } else {
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
                let path = format!("{}/rollback", paths::template(&enc(&a.name)));
                client
                    .call::<TemplateInfo>(Method::POST, &path, Some(&req))
                    .await
                    .map(|t| {
                        println!(
                            "template {} now means version {}",
                            t.name, t.current_version
                        );
                        0
                    })
            }
            TemplateCommand::History(a) => template_history(client, &a.name, a.json).await,
            TemplateCommand::Rollout(a) => rollout(client, a).await,
            TemplateCommand::Gc(f) => client
                .call::<mayfly_api::GcReport>(Method::POST, "/v1/layers/gc", None::<&()>)
                .await
                .map(|r| {
                    if f.json {
                        json(&r);
                    } else {
                        println!(
                            "removed {} unused layer(s), {} freed",
                            r.removed.len(),
                            size(r.bytes)
                        );
                    }
                    0
                }),
            TemplateCommand::Rm(a) => {
                each(&a.names, |n| async move {
                    client
                        .call::<()>(Method::DELETE, &paths::template(&enc(&n)), None::<&()>)
                        .await
                        .map(|()| println!("removed template {n}"))
                })
                .await
            }
        },
        Command::Launch(args) => launch(client, args).await,
        Command::Run(args) => return run(client, args).await,
        Command::List(f) => list(client, f.json).await,
        Command::Start(a) => {
            each(&a.names, |n| async move {
                client
                    .call::<InstanceInfo>(
                        Method::POST,
                        &paths::instance_action(&enc(&n), "start"),
                        None::<&()>,
                    )
                    .await
                    .map(|_| println!("started {n}"))
            })
            .await
        }
        Command::Stop(a) => {
            let req = StopRequest {
                timeout: Some(a.timeout),
                force: a.force,
            };
            each(&a.names, |n| {
                let req = req.clone();
                async move {
                    client
                        .call::<()>(
                            Method::POST,
                            &paths::instance_action(&enc(&n), "stop"),
                            Some(&req),
                        )
                        .await
                        .map(|()| println!("stopped {n}"))
                }
            })
            .await
        }
        Command::Restart(a) => {
            lifecycle(client, &a.names, "restart", "restarted", a.timeout, a.force).await
        }
        Command::Reset(a) => {
            lifecycle(client, &a.names, "reset", "reset", a.timeout, a.force).await
        }
        Command::Rm(a) => {
            let force = a.force;
            each(&a.names, |n| async move { remove(client, &n, force).await }).await
        }
        Command::Snapshot(c) => snapshot(client, c).await,
        Command::Clone(a) => {
            let req = mayfly_api::CloneRequest {
                name: a.name.clone(),
                snapshot: a.snapshot.clone(),
                mode: a.mode,
                start: a.start,
            };
            let path = paths::instance_action(&enc(&a.source), "clone");
            client
                .call::<InstanceInfo>(Method::POST, &path, Some(&req))
                .await
                .map(|info| {
                    if a.json {
                        json(&info);
                    } else {
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
        Command::Publish(a) => {
            let (name, snap) = match a.source.split_once('/') {
                Some((n, s)) => (n.to_owned(), Some(s.to_owned())),
                None => (a.source.clone(), None),
            };
            let req = mayfly_api::PublishRequest {
                template: a.template.clone(),
                snapshot: snap,
                message: a.message.clone(),
            };
            let path = paths::instance_action(&enc(&name), "publish");
            client
                .call::<TemplateInfo>(Method::POST, &path, Some(&req))
                .await
                .map(|t| {
                    if a.json {
                        json(&t);
                    } else {
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
        Command::Exec(a) => {
            let req = ExecRequest {
                command: a.command,
                env: a.env,
                workdir: a.workdir,
                tty: a.tty,
                term_size: if a.tty { terminal_size() } else { None },
            };
            return match interactive(
                client,
                &paths::instance_action(&enc(&a.name), "exec"),
                &req,
                a.tty,
            )
            .await
            {
                Ok(code) => code,
                Err(e) => exec_failure(&e),
            };
        }
        Command::Logs(a) => logs(client, &a.name, a.follow, a.tail).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// `rm` of one instance: with `--force` everything goes; without it, an instance with
/// snapshots is only removed after the user says yes on a terminal.
async fn remove(client: &Client, name: &str, force: bool) -> Result<(), ClientError> {
    let delete = |snapshots: bool| {
        let path = format!(
            "{}?force={force}&snapshots={snapshots}",
            paths::instance(&enc(name))
        );
        async move { client.call::<()>(Method::DELETE, &path, None::<&()>).await }
    };
    match delete(force).await {
        Err(ClientError::Api(e))
            if e.code == mayfly_api::ErrorCode::InUse && e.message.contains("has snapshots") =>
        {
            if !stdin_is_terminal() {
                return Err(ClientError::Api(e));
            }
            eprint!("{}. Delete them too? [y/N] ", e.message);
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                eprintln!("kept {name}");
                return Ok(());
            }
            delete(true).await?;
        }
        other => other?,
    }
    println!("removed {name}");
    Ok(())
}

async fn snapshot(client: &Client, command: super::SnapshotCommand) -> Result<i32, ClientError> {
    use super::SnapshotCommand as S;
    match command {
        S::Create(a) => {
            let req = mayfly_api::CreateSnapshot {
                name: a.snapshot.clone(),
            };
            let path = paths::instance_action(&enc(&a.name), "snapshots");
            let s: mayfly_api::SnapshotInfo = client.call(Method::POST, &path, Some(&req)).await?;
            if a.json {
                json(&s);
            } else {
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
            let path = paths::instance_action(&enc(&a.name), "snapshots");
            let all: Vec<mayfly_api::SnapshotInfo> =
                client.call(Method::GET, &path, None::<&()>).await?;
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
            let path = paths::snapshot(&enc(&a.name), &enc(&a.snapshot));
            let s: mayfly_api::SnapshotInfo = client.call(Method::GET, &path, None::<&()>).await?;
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
            }
        }
        S::Restore(a) => {
            let path = format!(
                "{}/restore",
                paths::snapshot(&enc(&a.name), &enc(&a.snapshot))
            );
            let i: InstanceInfo = client.call(Method::POST, &path, None::<&()>).await?;
            if a.json {
                json(&i);
            } else {
                println!("restored {} to {} ({})", a.name, a.snapshot, i.state);
            }
        }
        S::Rm(a) => {
            let path = paths::snapshot(&enc(&a.name), &enc(&a.snapshot));
            client
                .call::<()>(Method::DELETE, &path, None::<&()>)
                .await?;
            println!("removed snapshot {} of {}", a.snapshot, a.name);
        }
    }
    Ok(0)
}

/// The exit code of `run`/`exec` when mayfly, not the program, failed.
fn exec_failure(e: &ClientError) -> i32 {
    eprintln!("error: {e}");
    match e {
        ClientError::Api(api)
            if api.code == mayfly_api::ErrorCode::NotFound
                && api.message.starts_with("cannot exec") =>
        {
            127
        }
        ClientError::Api(api) if api.message.starts_with("cannot exec") => 126,
        _ => 125,
    }
}

/// Applies `f` to every name; reports each failure and goes on. Exit 1 if any failed.
async fn each<F, Fut>(names: &[String], f: F) -> Result<i32, ClientError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut code = 0;
    for n in names {
        if let Err(e) = f(n.clone()).await {
            code = code.max(fail(&e));
        }
    }
    Ok(code)
}

async fn lifecycle(
    client: &Client,
    names: &[String],
    action: &'static str,
    done: &'static str,
    timeout: u64,
    force: bool,
) -> Result<i32, ClientError> {
    let req = StopRequest {
        timeout: Some(timeout),
        force,
    };
    each(names, |n| {
        let req = req.clone();
        async move {
            client
                .call::<InstanceInfo>(
                    Method::POST,
                    &paths::instance_action(&enc(&n), action),
                    Some(&req),
                )
                .await
                .map(|_| println!("{done} {n}"))
        }
    })
    .await
}

async fn daemon_info(client: &Client, as_json: bool) -> Result<i32, ClientError> {
    let info: DaemonInfo = client.call(Method::GET, paths::INFO, None::<&()>).await?;
    if as_json {
        json(&info);
        return Ok(0);
    }
    println!("version:          {}", info.version);
    println!("state directory:  {}", info.state_dir);
    println!("socket:           {}", client.socket().display());
    println!("cgroups:          {}", info.cgroup_mode);
    match &info.user_namespaces_off_reason {
        None => println!("user namespaces:  yes (idmapped template layers)"),
        Some(why) => println!("user namespaces:  no ({why})"),
    }
    if let Some(pid) = info.forker_pid {
        println!("forker pid:       {pid}");
    }
    println!("templates:        {}", info.templates);
    println!(
        "instances:        {} ({} running)",
        info.instances, info.running
    );
    Ok(0)
}

async fn instance_info(client: &Client, name: &str, as_json: bool) -> Result<i32, ClientError> {
    let i: InstanceInfo = client
        .call(Method::GET, &paths::instance(&enc(name)), None::<&()>)
        .await?;
    if as_json {
        json(&i);
        return Ok(0);
    }
    let template = match i.pinned_version {
        Some(v) => format!("{}@{v} (pinned)", i.template),
        None => format!("{} (follows the latest version)", i.template),
    };
    println!("name:        {}", i.name);
    println!("id:          {}", i.id);
    println!("state:       {}", i.state);
    println!("mode:        {}", i.mode);
    println!("template:    {template}");
    if let Some(v) = i.running_version {
        println!("running:     version {v}");
    }
    if let Some(pid) = i.pid {
        println!("pid:         {pid}");
    }
    if !i.command.is_empty() {
        println!("command:     {}", i.command.join(" "));
    }
    for e in &i.env {
        println!("env:         {e}");
    }
    println!("created:     {} ({})", i.created_at, ago(&i.created_at));
    if let Some(s) = &i.started_at {
        println!("started:     {s} ({})", ago(s));
    }
    if let Some(e) = &i.last_exit {
        let how = match e.signal {
            Some(sig) => format!("killed by signal {sig} (code {})", e.code),
            None => format!("exit code {}", e.code),
        };
        println!(
            "last exit:   {how}{}",
            e.at.as_deref()
                .map(|a| format!(" at {a}"))
                .unwrap_or_default()
        );
    }
    match (i.isolation.user_namespace, i.isolation.host_id_base) {
        (true, Some(base)) => println!(
            "isolation:   user namespace, ids 0-{} = host {base}-{}",
            i.isolation.host_id_count.unwrap_or(0).saturating_sub(1),
            base + i.isolation.host_id_count.unwrap_or(1) - 1
        ),
        _ => println!("isolation:   no user namespace"),
    }
    if let Some(b) = i.writable_bytes {
        println!("changes:     {} in the writable layer", size(b));
    }
    if let Some(e) = &i.error {
        println!("error:       {e}");
    }
    Ok(0)
}

async fn list(client: &Client, as_json: bool) -> Result<i32, ClientError> {
    let all: Vec<InstanceInfo> = client
        .call(Method::GET, paths::INSTANCES, None::<&()>)
        .await?;
    if as_json {
        json(&all);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|i| {
            let template = match (i.pinned_version, i.running_version) {
                (Some(p), _) => format!("{}@{p}", i.template),
                (None, Some(v)) => format!("{} (v{v})", i.template),
                (None, None) => i.template.clone(),
            };
            vec![
                i.name.clone(),
                i.state.to_string(),
                i.mode.to_string(),
                template,
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                ago(&i.created_at),
            ]
        })
        .collect();
    table(
        &["NAME", "STATE", "MODE", "TEMPLATE", "PID", "CREATED"],
        &rows,
    );
    Ok(0)
}

async fn template_list(client: &Client, as_json: bool) -> Result<i32, ClientError> {
    let all: Vec<TemplateInfo> = client
        .call(Method::GET, paths::TEMPLATES, None::<&()>)
        .await?;
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
        .call(Method::GET, &paths::template(&enc(name)), None::<&()>)
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
        let cmd = if v.config.command.is_empty() {
            "(none: instances must give one)".to_owned()
        } else {
            v.config.command.join(" ")
        };
        println!("command:    {cmd}");
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

fn parse_cmd(cmd: &Option<String>) -> Result<Option<Vec<String>>, ClientError> {
    match cmd {
        None => Ok(None),
        Some(c) if c.trim_start().starts_with('[') => {
            serde_json::from_str(c).map(Some).map_err(|e| {
                ClientError::Api(
                    mayfly_api::ApiError::new(
                        mayfly_api::ErrorCode::InvalidArgument,
                        format!("invalid --cmd JSON: {e}"),
                    )
                    .with_hint("e.g. --cmd '[\"/bin/sh\", \"-c\", \"sleep 100\"]'"),
                )
            })
        }
        Some(c) => Ok(Some(c.split_whitespace().map(str::to_owned).collect())),
    }
}

fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    if !rustix::termios::isatty(std::io::stderr()) {
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

/// What the daemon would refuse before reading an upload (a bad name, a name in use), asked
/// before sending what may be gigabytes. The daemon checks again: this only saves the upload.
async fn refuse_before_upload(client: &Client, name: &str) -> Result<(), ClientError> {
    if let Err(e) = mayfly_api::names::check_template_name(name) {
        return Err(ClientError::Api(ApiError {
            code: ErrorCode::InvalidArgument,
            message: e,
            hint: Some("e.g. `mayfly template import debian ./rootfs.tar.zst`".into()),
        }));
    }
    let path = paths::template(&enc(name));
    match client
        .call::<serde_json::Value>(Method::GET, &path, None::<&()>)
        .await
    {
        Ok(_) => Err(ClientError::Api(ApiError {
            code: ErrorCode::AlreadyExists,
            message: format!("template `{name}` already exists"),
            hint: Some(format!(
                "choose another name, or remove the existing template first (a new version of it: `mayfly template patch {name} --from DIR`)"
            )),
        })),
        Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

async fn import(client: &Client, args: ImportArgs) -> Result<i32, ClientError> {
    let command = parse_cmd(&args.cmd)?;
    let source = Path::new(&args.source);
    let is_dir = args.source != "-" && source.is_dir();
    let response = if is_dir {
        let path = std::fs::canonicalize(source).map_err(|e| {
            ClientError::Protocol(format!("cannot read source {}: {e}", source.display()))
        })?;
        let body = ImportTemplate {
            name: args.name.clone(),
            path: path.display().to_string(),
            command,
            message: args.message.clone(),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let req = Client::request(
            Method::POST,
            paths::TEMPLATES,
            "application/json",
            super::client::full(bytes),
        )?;
        (client.send(req).await?, progress_bar(None))
    } else {
        refuse_before_upload(client, &args.name).await?;
        let (reader, total): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, Option<u64>) = if args
            .source
            == "-"
        {
            (Box::new(tokio::io::stdin()), None)
        } else {
            let f = tokio::fs::File::open(source).await.map_err(|e| {
                ClientError::Protocol(format!(
                    "cannot open source {}: {e}\n  hint: give a root directory or a .tar, .tar.gz or .tar.zst of one",
                    source.display()
                ))
            })?;
            let len = f.metadata().await.ok().map(|m| m.len());
            (Box::new(f), len)
        };
        let bar = progress_bar(total);
        bar.set_message(format!("uploading {}", args.source));
        let counter = bar.clone();
        let stream = tokio_util_like_reader_stream(reader).map(move |chunk| {
            if let Ok(b) = &chunk {
                counter.inc(u64::try_from(b.len()).unwrap_or(0));
            }
            chunk.map(BodyFrame::data)
        });
        let body = BodyExt::boxed_unsync(StreamBody::new(stream));
        let mut path = format!("{}?name={}", paths::TEMPLATES, enc(&args.name));
        if let Some(c) = &command {
            let j = serde_json::to_string(c).unwrap_or_default();
            path.push_str(&format!("&command={}", enc(&j)));
        }
        if let Some(m) = &args.message {
            path.push_str(&format!("&message={}", enc(m)));
        }
        let req = Client::request(Method::POST, &path, "application/x-tar", body)?;
        (client.send(req).await?, bar)
    };
    let (response, bar) = response;
    if !response.status().is_success() {
        bar.finish_and_clear();
        return Err(Client::error_of(response).await);
    }
    if is_dir {
        bar.set_message(format!("copying {}", args.source));
    } else {
        bar.set_message("unpacking");
    }
    let source = args.source.clone();
    let mut outcome: Option<ImportEvent> = None;
    let streamed = read_events(response, "import", |ev: ImportEvent| match ev {
        ImportEvent::Progress { entries, bytes } => {
            if is_dir {
                bar.set_message(format!(
                    "copying {source}: {entries} entries, {}",
                    size(bytes)
                ));
            }
        }
        ImportEvent::Log { line } => bar.println(line),
        ev => outcome = Some(ev),
    })
    .await;
    bar.finish_and_clear();
    // A refused upload larger than what the daemon reads after a refusal ends in a closed
    // connection under a client still sending: the result, received before, is what counts.
    if outcome.is_none() {
        streamed?;
    }
    match outcome {
        Some(ImportEvent::Done(t)) => {
            if args.json {
                json(&t);
            } else {
                let v = t.current();
                print_version_summary("imported", &t);
                if v.is_some_and(|v| v.config.command.is_empty()) {
                    println!(
                        "note: it has no /sbin/init; give instances a command (`mayfly launch {} -- CMD`) or import with --cmd",
                        t.name
                    );
                }
            }
            Ok(0)
        }
        Some(ImportEvent::Error(e)) => Err(ClientError::Api(e)),
        _ => Err(ClientError::Protocol(
            "the import ended without a result".into(),
        )),
    }
}

/// Reads a newline-delimited JSON answer, one event at a time.
async fn read_events<T: serde::de::DeserializeOwned>(
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

/// Sends `body` to a template job endpoint (build, patch) and follows its events: output
/// lines are printed (on stderr, above a spinner on a terminal) and the final template returned.
async fn template_job(
    client: &Client,
    path: &str,
    body: &impl serde::Serialize,
    label: String,
) -> Result<TemplateInfo, ClientError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let req = Client::request(
        Method::POST,
        path,
        "application/json",
        super::client::full(bytes),
    )?;
    let response = client.send(req).await?;
    if !response.status().is_success() {
        return Err(Client::error_of(response).await);
    }
    let bar = progress_bar(None);
    bar.set_message(label);
    let tty = rustix::termios::isatty(std::io::stderr());
    let mut outcome: Option<ImportEvent> = None;
    read_events(response, "build", |ev: ImportEvent| match ev {
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

fn print_version_summary(verb: &str, t: &TemplateInfo) {
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

async fn template_history(client: &Client, name: &str, as_json: bool) -> Result<i32, ClientError> {
    let t: TemplateInfo = client
        .call(Method::GET, &paths::template(&enc(name)), None::<&()>)
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

async fn rollout(client: &Client, a: super::RolloutArgs) -> Result<i32, ClientError> {
    let req = mayfly_api::RolloutRequest {
        wave: Some(a.wave),
        health: a.health.clone(),
        timeout: Some(a.timeout),
    };
    let bytes = serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let path = format!("{}/rollout", paths::template(&enc(&a.name)));
    let request = Client::request(
        Method::POST,
        &path,
        "application/json",
        super::client::full(bytes),
    )?;
    let response = client.send(request).await?;
    if !response.status().is_success() {
        return Err(Client::error_of(response).await);
    }
    let mut failed: Option<mayfly_api::ApiError> = None;
    let mut done = false;
    read_events(response, "rollout", |ev: mayfly_api::RolloutEvent| {
        use mayfly_api::RolloutEvent as E;
        if a.json {
            json_line(&ev);
        }
        match ev {
            E::Wave { number, instances } if !a.json => {
                println!("wave {number}: {}", instances.join(", "))
            }
            E::Instance {
                name,
                status,
                detail,
            } if !a.json => {
                println!(
                    "  {name}: {status}{}",
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({detail})")
                    }
                )
            }
            E::Shadowed(s) if !a.json => println!(
                "  {} (persistent, not reset) hides the new version at: {}",
                s.instance,
                s.paths.join(", ")
            ),
            E::HeldBack(h) if !a.json => println!(
                "  {} (held back on version {}, not reset): {}",
                h.instance, h.version, h.reason
            ),
            E::RolledBack { to } if !a.json => println!("rolled the template back to version {to}"),
            E::Done {
                version,
                reset,
                held_back,
            } => {
                done = true;
                if !a.json {
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

/// Chunks of an async reader as a stream (what tokio-util's ReaderStream does).
fn tokio_util_like_reader_stream(
    reader: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        let mut buf = vec![0u8; 256 * 1024];
        match tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(reader)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

fn create_request(
    template: String,
    command: Vec<String>,
    options: super::InstanceOptions,
    mode: Mode,
) -> CreateInstance {
    CreateInstance {
        template,
        name: options.name,
        mode,
        command,
        apps: options.apps,
        ordered_apps: options.ordered,
        env: options.env,
        workdir: options.workdir,
        start: true,
        tty: false,
        term_size: None,
    }
}

async fn launch(client: &Client, args: LaunchArgs) -> Result<i32, ClientError> {
    let mode = if args.ephemeral {
        Mode::Ephemeral
    } else if args.persistent {
        Mode::Persistent
    } else {
        Mode::Transient
    };
    let mut req = create_request(args.template, args.command, args.options, mode);
    req.start = !args.no_start;
    let info: InstanceInfo = client
        .call(Method::POST, paths::INSTANCES, Some(&req))
        .await?;
    if args.json {
        json(&info);
    } else {
        println!(
            "{} {} ({}, from {})",
            if req.start { "launched" } else { "created" },
            info.name,
            info.mode,
            info.template
        );
    }
    Ok(0)
}

async fn run(client: &Client, args: RunArgs) -> i32 {
    let mode = if args.rm {
        Mode::Ephemeral
    } else {
        Mode::Transient
    };
    let tty = args.tty;
    let mut req = create_request(args.template, args.command, args.options, mode);
    req.tty = tty;
    req.term_size = if tty { terminal_size() } else { None };
    if tty && !stdin_is_terminal() {
        eprintln!("warning: -t given but stdin is not a terminal");
    }
    match interactive(client, paths::RUN, &req, tty).await {
        Ok(code) => code,
        Err(e) => exec_failure(&e),
    }
}

async fn logs(
    client: &Client,
    name: &str,
    follow: bool,
    tail: Option<u64>,
) -> Result<i32, ClientError> {
    let mut path = format!(
        "{}?follow={follow}",
        paths::instance_action(&enc(name), "logs")
    );
    if let Some(n) = tail {
        path.push_str(&format!("&tail={n}"));
    }
    let req = Client::request(
        Method::GET,
        &path,
        "application/json",
        super::client::full(Bytes::new()),
    )?;
    let response = client.send(req).await?;
    if !response.status().is_success() {
        return Err(Client::error_of(response).await);
    }
    let mut body = response.into_body();
    let mut out = std::io::stdout();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Protocol(format!("log stream broke: {e}")))?;
        if let Ok(data) = frame.into_data() {
            let _ = out.write_all(&data);
            let _ = out.flush();
        }
    }
    Ok(0)
}
