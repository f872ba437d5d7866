//! Instance nouns: launch, start, stop, restart, reset, rm, list, info NAME and logs. The
//! request every new instance starts from (`create_request`) is here too; `run` uses it.

use std::io::Write;

use bytes::Bytes;
use http_body_util::BodyExt;
use mayfly_api::{Action, CreateInstance, InstanceInfo, Mode, StopRequest};

use super::{act_query, each, path_with, request};
use crate::cli::client::{Client, ClientError, full};
use crate::cli::output::{ago, json, size, table};
use crate::cli::stream::stdin_is_terminal;
use crate::cli::{InstanceOptions, LaunchArgs, NamesArgs, RmArgs, StopArgs};

pub(super) fn create_request(
    template: String,
    command: Vec<String>,
    options: InstanceOptions,
    mode: Mode,
) -> Result<CreateInstance, ClientError> {
    let entrypoint = options
        .process
        .entrypoint
        .as_deref()
        .map(|e| crate::cli::process::parse_command("--entrypoint", e))
        .transpose()?;
    let networks = options.network.networks().map_err(|message| {
        ClientError::Api(
            mayfly_api::ApiError::new(mayfly_api::ErrorCode::InvalidArgument, message)
                .with_hint("see `mayfly launch --help` for --network and --publish"),
        )
    })?;
    let limits = options.limits.limits().map_err(|message| {
        ClientError::Api(
            mayfly_api::ApiError::new(mayfly_api::ErrorCode::InvalidArgument, message)
                .with_hint("see `mayfly launch --help` for the limit flags"),
        )
    })?;
    let state = options.state;
    let invalid = |message: String, hint: &str| {
        ClientError::Api(
            mayfly_api::ApiError::new(mayfly_api::ErrorCode::InvalidArgument, message)
                .with_hint(hint),
        )
    };
    let mut meta = std::collections::BTreeMap::new();
    for pair in &state.meta {
        let (k, v) = mayfly_api::parse_meta_pair(pair)
            .map_err(|e| invalid(e, "see `mayfly launch --help`"))?;
        meta.insert(k, v);
    }
    let user_data = state.user_data.as_deref().map(read_user_data).transpose()?;
    Ok(CreateInstance {
        template,
        name: options.name,
        mode,
        command,
        entrypoint,
        user: options.process.user,
        apps: options.apps,
        ordered_apps: options.ordered,
        env: options.env,
        workdir: options.workdir,
        start: true,
        tty: false,
        term_size: None,
        init: options.init,
        networks,
        publish: options.network.publish,
        flavor: options.flavor,
        limits,
        user_data,
        meta,
        volumes: state.volumes,
        restart: state.restart.unwrap_or_default(),
        reset_at: state.reset_at,
    })
}

/// Reads `--user-data FILE` (`-`: standard input), refusing more than the daemon accepts.
fn read_user_data(path: &std::path::Path) -> Result<String, ClientError> {
    use std::io::Read;
    let invalid = |message: String| {
        ClientError::Api(
            mayfly_api::ApiError::new(mayfly_api::ErrorCode::InvalidArgument, message)
                .with_hint("give a script (#!...) or a cloud-config (#cloud-config) file"),
        )
    };
    let limit = mayfly_api::MAX_USER_DATA as u64 + 1;
    let mut bytes = Vec::new();
    let read = if path == std::path::Path::new("-") {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(|e| invalid(format!("cannot read --user-data {}: {e}", path.display())))?;
    if bytes.len() > mayfly_api::MAX_USER_DATA {
        return Err(invalid(format!(
            "--user-data {} is larger than {} bytes, the most an instance may be given",
            path.display(),
            mayfly_api::MAX_USER_DATA
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| invalid(format!("--user-data {} is not UTF-8 text", path.display())))
}

pub(super) async fn launch(client: &Client, args: LaunchArgs) -> Result<i32, ClientError> {
    let mode = if args.ephemeral {
        Mode::Ephemeral
    } else if args.persistent {
        Mode::Persistent
    } else {
        Mode::Transient
    };
    let mut req = create_request(args.template, args.command, args.options, mode)?;
    req.start = !args.no_start;
    let info: InstanceInfo = client.act(Action::CreateInstance, &[], Some(&req)).await?;
    if args.json {
        json(&info);
    } else if crate::cli::output::quiet() {
        println!("{}", info.name);
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

pub(super) async fn list(client: &Client, as_json: bool) -> Result<i32, ClientError> {
    let all: Vec<InstanceInfo> = client.act(Action::ListInstances, &[], None::<&()>).await?;
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
                i.interfaces
                    .first()
                    .map(|n| n.ipv4.clone())
                    .unwrap_or_else(|| "-".into()),
                ago(&i.created_at),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "STATE", "MODE", "TEMPLATE", "PID", "IPV4", "CREATED",
        ],
        &rows,
    );
    Ok(0)
}

pub(super) async fn instance_info(
    client: &Client,
    name: &str,
    as_json: bool,
) -> Result<i32, ClientError> {
    let (client, name) = client.target(name)?;
    let i: InstanceInfo = client
        .act(Action::InstanceInfo, &[name], None::<&()>)
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
    println!(
        "user:        {}",
        i.user.as_deref().unwrap_or("root (the default)")
    );
    if i.init {
        println!("init:        mayfly-init (PID 1, the command is its child)");
    }
    for e in &i.env {
        println!("env:         {e}");
    }
    println!("created:     {} ({})", i.created_at, ago(&i.created_at));
    if let Some(s) = &i.started_at {
        println!("started:     {s} ({})", ago(s));
    }
    if let Some(e) = &i.last_exit {
        let mut how = match e.signal {
            Some(sig) => format!("killed by signal {sig} (code {})", e.code),
            None => format!("exit code {}", e.code),
        };
        if let Some(ending) = e.ending {
            how = format!("{how}: {}", ending.as_str());
        }
        if e.oom_kills > 0 {
            how = format!("{how}, {} process(es) OOM-killed", e.oom_kills);
        }
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
    if i.interfaces.is_empty() {
        println!("network:     none (lo only)");
    }
    for n in &i.interfaces {
        let ipv6 = n
            .ipv6
            .as_ref()
            .map(|a| format!(", ipv6 {a}"))
            .unwrap_or_default();
        println!(
            "interface:   {} on network {}: ipv4 {}{ipv6}, mac {}",
            n.name, n.network, n.ipv4, n.mac
        );
    }
    for p in &i.publish {
        println!(
            "published:   {p} ({}:{} on the host → its port {})",
            p.host_ip, p.host_port, p.port
        );
    }
    super::resources::print_limits(&i);
    print_state(&i);
    if let Some(b) = i.writable_bytes {
        println!("changes:     {} in the writable layer", size(b));
    }
    if let Some(e) = &i.error {
        println!("error:       {e}");
    }
    Ok(0)
}

/// `mayfly start NAME...`.
pub(super) async fn start(client: &Client, a: NamesArgs) -> Result<i32, ClientError> {
    each(
        &a.names,
        a.json,
        |n| async move {
            let (client, name) = client.target(&n)?;
            client
                .act::<InstanceInfo>(Action::StartInstance, &[name], None::<&()>)
                .await
        },
        |n, info| match &info.note {
            Some(note) => println!("{n}: {note}"),
            None => println!("started {n}"),
        },
    )
    .await
}

/// `mayfly stop NAME...`.
pub(super) async fn stop(client: &Client, a: StopArgs) -> Result<i32, ClientError> {
    let req = StopRequest {
        timeout: Some(a.timeout),
        force: a.force,
        signal: a.signal.clone(),
    };
    each(
        &a.names,
        a.json,
        |n| {
            let req = req.clone();
            async move {
                let (client, name) = client.target(&n)?;
                client
                    .act::<InstanceInfo>(Action::StopInstance, &[name], Some(&req))
                    .await
            }
        },
        |n, info| match info.note.as_deref() {
            Some(note) if note.starts_with("already") => println!("{n}: {note}"),
            Some(note) => println!("stopped {n} ({note})"),
            None => println!("stopped {n}"),
        },
    )
    .await
}

pub(super) async fn lifecycle(
    client: &Client,
    names: &[String],
    action: Action,
    done: &'static str,
    args: &StopArgs,
) -> Result<i32, ClientError> {
    let req = StopRequest {
        timeout: Some(args.timeout),
        force: args.force,
        signal: args.signal.clone(),
    };
    each(
        names,
        args.json,
        |n| {
            let req = req.clone();
            async move {
                let (client, name) = client.target(&n)?;
                client
                    .act::<InstanceInfo>(action, &[name], Some(&req))
                    .await
            }
        },
        |n, _| println!("{done} {n}"),
    )
    .await
}

/// `mayfly rm NAME...`.
pub(super) async fn rm(client: &Client, a: RmArgs) -> Result<i32, ClientError> {
    let force = a.force;
    each(
        &a.names,
        a.json,
        |n| async move {
            let removed = remove(client, &n, force).await?;
            Ok(super::Removed { name: n, removed })
        },
        |n, r| {
            if r.removed {
                println!("removed {n}");
            }
        },
    )
    .await
}

/// `rm` of one instance: with `--force` everything goes; without it, an instance with
/// snapshots is only removed after the user says yes on a terminal. Whether it was removed.
async fn remove(client: &Client, target: &str, force: bool) -> Result<bool, ClientError> {
    let (client, name) = client.target(target)?;
    let client = &client;
    let delete = |snapshots: bool| async move {
        let (force, snapshots) = (force.to_string(), snapshots.to_string());
        let query = [("force", force.as_str()), ("snapshots", snapshots.as_str())];
        act_query::<()>(client, Action::RemoveInstance, &[name], &query, None::<&()>).await
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
                eprintln!("kept {target}");
                return Ok(false);
            }
            delete(true).await?;
        }
        other => other?,
    }
    Ok(true)
}

pub(super) async fn logs(
    client: &Client,
    name: &str,
    follow: bool,
    tail: Option<u64>,
) -> Result<i32, ClientError> {
    let (client, name) = client.target(name)?;
    let follow = follow.to_string();
    let tail = tail.map(|n| n.to_string());
    let mut query = vec![("follow", follow.as_str())];
    if let Some(n) = &tail {
        query.push(("tail", n.as_str()));
    }
    let path = path_with(Action::Logs, &[name], &query);
    let req = request(Action::Logs, &path, "application/json", full(Bytes::new()))?;
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

/// The per-instance state lines of `info`: volumes, metadata, user data, restart policy.
fn print_state(i: &InstanceInfo) {
    for v in &i.volumes {
        println!("volume:      {v}");
    }
    for (k, v) in &i.meta {
        println!("meta:        {k}={v}");
    }
    if let Some(u) = &i.user_data {
        let kind = match u.kind {
            mayfly_api::UserDataKind::Script => "script",
            mayfly_api::UserDataKind::CloudConfig => "cloud-config",
            mayfly_api::UserDataKind::Other => "other (for cloud-init)",
        };
        let by = match u.handler {
            mayfly_api::UserDataHandler::CloudInit => "the template's cloud-init",
            mayfly_api::UserDataHandler::Mayfly => "mayfly, before the init",
        };
        let status = match &u.status {
            Some(s) => {
                let code = s
                    .code
                    .map(|c| format!(", exit code {c}"))
                    .unwrap_or_default();
                let at =
                    s.at.as_deref()
                        .map(|a| format!(" at {a}"))
                        .unwrap_or_default();
                format!("; last run: {}{code}{at}", s.state)
            }
            None => String::new(),
        };
        println!(
            "user data:   {kind}, {}, run by {by}{status}",
            size(u.bytes)
        );
        for e in u.status.iter().flat_map(|s| &s.errors) {
            println!("             error: {e}");
        }
    }
    if !i.restart.is_no() {
        let mut line = format!("restart:     {}", i.restart);
        if let Some(r) = &i.restarts {
            line.push_str(&format!(", {} restart(s) in a row", r.restarts));
            if let Some(next) = &r.next_attempt {
                line.push_str(&format!(", next attempt at {next}"));
            }
            if let Some(why) = &r.gave_up {
                line.push_str(&format!(", gave up: {why}"));
            }
        }
        println!("{line}");
    }
}
