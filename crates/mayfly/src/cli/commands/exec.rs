//! The interactive commands, `exec` and `run`: a program's streams carried over the upgraded
//! connection, and its exit code passed through (or 125/126/127 when mayfly failed, 3 when
//! the daemon cannot be reached or was lost).

use mayfly_api::{Action, ExecRequest, Mode};

use super::instance::create_request;
use crate::cli::client::{Client, ClientError};
use crate::cli::stream::{interactive, stdin_is_terminal, terminal_size};
use crate::cli::{ExecArgs, RunArgs};

/// `mayfly exec NAME -- CMD...`.
pub(super) async fn exec(client: &Client, a: ExecArgs) -> i32 {
    let req = ExecRequest {
        command: a.command,
        env: a.env,
        workdir: a.workdir,
        user: a.user.user,
        tty: a.tty,
        term_size: if a.tty { terminal_size() } else { None },
    };
    let (client, name) = match client.target(&a.name) {
        Ok(t) => t,
        Err(e) => return exec_failure(&e),
    };
    let path = Action::Exec.path(&[name]);
    match interactive(&client, &path, &req, a.tty, Some(&a.name)).await {
        Ok(code) => code,
        Err(e) => exec_failure(&e),
    }
}

pub(super) async fn run(client: &Client, args: RunArgs) -> i32 {
    let mode = if args.rm {
        Mode::Ephemeral
    } else {
        Mode::Transient
    };
    let tty = args.tty;
    if args.options.state.user_data.as_deref() == Some(std::path::Path::new("-")) {
        eprintln!(
            "error: `--user-data -` reads standard input, which `run` gives to the command\n  hint: put the user data in a file (`--user-data FILE`)"
        );
        return 125;
    }
    let mut req = match create_request(args.template, args.command, args.options, mode) {
        Ok(req) => req,
        Err(e) => return exec_failure(&e),
    };
    req.tty = tty;
    req.term_size = if tty { terminal_size() } else { None };
    if tty && !stdin_is_terminal() {
        eprintln!("warning: -t given but stdin is not a terminal");
    }
    match interactive(client, &Action::Run.path(&[]), &req, tty, None).await {
        Ok(code) => code,
        Err(e) => exec_failure(&e),
    }
}

/// The exit code of `run`/`exec` when mayfly, not the program, failed.
fn exec_failure(e: &ClientError) -> i32 {
    eprintln!("error: {e}");
    match e {
        ClientError::Connect(..) | ClientError::Lost(_) => e.exit_code(),
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
