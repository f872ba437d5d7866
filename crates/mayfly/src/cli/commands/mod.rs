//! One function per command: build the request, call the API, print the answer.
//! `dispatch` hands each command to the file of its noun; what several nouns share (paths
//! from the API's action table with a query, the error report, the loop over several names)
//! lives here. No path is written here: each comes from [`mayfly_api::ACTIONS`].

mod console;
mod daemon;
mod events;
mod exec;
mod import;
mod instance;
mod meta;
mod network;
mod remote;
mod resources;
mod schedule;
mod snapshot;
mod stats;
mod template;
mod token;
mod volume;

use mayfly_api::Action;
use mayfly_api::actions::encode;

use super::Command;
use super::client::{Client, ClientError, ReqBody};

/// The path of `action` (its placeholders filled by `args`) followed by `query`, each value
/// percent-encoded.
fn path_with(action: Action, args: &[&str], query: &[(&str, &str)]) -> String {
    let mut path = action.path(args);
    for (i, (key, value)) in query.iter().enumerate() {
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str(key);
        path.push('=');
        path.push_str(&encode(value));
    }
    path
}

/// Calls `action` as [`Client::act`] does, with `query` after its path.
async fn act_query<T: serde::de::DeserializeOwned>(
    client: &Client,
    action: Action,
    args: &[&str],
    query: &[(&str, &str)],
    body: Option<&impl serde::Serialize>,
) -> Result<T, ClientError> {
    let path = path_with(action, args, query);
    client
        .call(super::client::method(action), &path, body)
        .await
}

/// A request for `action` at `path` (made by [`path_with`] or [`Action::path`]), for the
/// answers read as a stream.
fn request(
    action: Action,
    path: &str,
    content_type: &str,
    body: ReqBody,
) -> Result<hyper::Request<ReqBody>, ClientError> {
    Client::request(super::client::method(action), path, content_type, body)
}

fn fail(e: &ClientError) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

/// Runs one client command; returns the exit code.
pub async fn dispatch(client: &Client, command: Command) -> i32 {
    // Commands that print and end stop quietly when their reader leaves (`| head`); the
    // attached ones (run, exec, console) relay streams and handle a closed output themselves.
    if !matches!(
        command,
        Command::Run(_) | Command::Exec(_) | Command::Console(_)
    ) {
        mayfly_sys::signal::default_sigpipe();
    }
    let result: Result<i32, ClientError> = match command {
        Command::Daemon(_) | Command::Forker(_) => Ok(2),
        Command::Info(args) => match args.name {
            None => daemon::daemon_info(client, args.json).await,
            Some(name) => instance::instance_info(client, &name, args.json).await,
        },
        Command::Template(t) => template::template(client, t).await,
        Command::Launch(args) => instance::launch(client, args).await,
        Command::Run(args) => return exec::run(client, args).await,
        Command::List(f) => instance::list(client, f.json).await,
        Command::Start(a) => instance::start(client, a).await,
        Command::Stop(a) => instance::stop(client, a).await,
        Command::Restart(a) => {
            instance::lifecycle(client, &a.names, Action::RestartInstance, "restarted", &a).await
        }
        Command::Reset(a) => {
            instance::lifecycle(client, &a.names, Action::ResetInstance, "reset", &a).await
        }
        Command::Rm(a) => instance::rm(client, a).await,
        Command::Snapshot(c) => snapshot::snapshot(client, c).await,
        Command::Clone(a) => snapshot::clone_instance(client, a).await,
        Command::Publish(a) => snapshot::publish(client, a).await,
        Command::Exec(a) => return exec::exec(client, a).await,
        Command::Console(a) => return console::console(client, a).await,
        Command::Logs(a) => instance::logs(client, &a.name, a.follow, a.tail).await,
        Command::Network(c) => network::network(client, c).await,
        Command::Channel(c) => network::channel(client, c).await,
        Command::Rename(a) => network::rename(client, a).await,
        Command::Flavor(c) => resources::flavor(client, c).await,
        Command::Set(a) => resources::set(client, a).await,
        Command::Stats(a) => stats::stats(client, a).await,
        Command::Pause(a) => resources::pause(client, a, false).await,
        Command::Resume(a) => resources::pause(client, a, true).await,
        Command::Volume(c) => volume::volume(client, c).await,
        Command::Schedule(c) => schedule::schedule(client, c).await,
        Command::Events(a) => events::events(client, a).await,
        Command::Token(c) => token::token(client, c).await,
        Command::Remote(c) => remote::remote(client, c).await,
        Command::Completion(a) => return meta::completion(a),
        Command::Man(a) => return meta::man(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// Gets the object `action` answers for `name` and prints it: JSON for scripts (`as_json`),
/// else `print`.
async fn show<T>(
    client: &Client,
    action: Action,
    name: &str,
    as_json: bool,
    print: fn(&T),
) -> Result<(), ClientError>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let object: T = client.act(action, &[name], None::<&()>).await?;
    if as_json {
        crate::cli::output::json(&object);
    } else {
        print(&object);
    }
    Ok(())
}

/// Gets the list `action` answers (for `args`) and prints it: JSON for scripts (`as_json`),
/// else a table of `headers` with one row per object, made by `row`.
async fn list<T>(
    client: &Client,
    action: Action,
    args: &[&str],
    as_json: bool,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> Result<(), ClientError>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let all: Vec<T> = client.act(action, args, None::<&()>).await?;
    if as_json {
        crate::cli::output::json(&all);
    } else {
        let rows: Vec<Vec<String>> = all.iter().map(row).collect();
        crate::cli::output::table(headers, &rows);
    }
    Ok(())
}

/// Removes the object of each name with `action` and says `removed NOUN NAME`; reports each
/// failure and goes on.
async fn remove_each(
    client: &Client,
    names: &[String],
    as_json: bool,
    noun: &str,
    action: Action,
) -> Result<i32, ClientError> {
    each(
        names,
        as_json,
        |n| async move {
            client.act::<()>(action, &[&n], None::<&()>).await?;
            Ok(Removed {
                name: n,
                removed: true,
            })
        },
        |n, _| println!("removed {noun} {n}"),
    )
    .await
}

/// Applies `f` to every name and collects the answers; reports each failure and goes on.
/// With `as_json` the answers are printed as one JSON array at the end; else `line` says what
/// became of each (unless `--quiet`). Exit 1 if any failed (3 if the daemon was lost).
async fn each<F, Fut, T>(
    names: &[String],
    as_json: bool,
    f: F,
    line: impl Fn(&str, &T),
) -> Result<i32, ClientError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
    T: serde::Serialize,
{
    let mut code = 0;
    let mut answers = Vec::new();
    for n in names {
        match f(n.clone()).await {
            Ok(answer) => {
                if !as_json && !super::output::quiet() {
                    line(n, &answer);
                }
                answers.push(answer);
            }
            Err(e) => code = code.max(fail(&e)),
        }
    }
    if as_json {
        super::output::json(&answers);
    }
    Ok(code)
}

/// What `--json` prints for each object a removal was asked for.
#[derive(Debug, serde::Serialize)]
struct Removed {
    name: String,
    /// False when it was kept (the user said no).
    removed: bool,
}
