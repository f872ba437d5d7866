//! What an instance's processes run and as whom: `--user` (`launch`, `run`, `exec`) and
//! `--entrypoint` (`launch`, `run`), and how a command given as one string is read (also
//! `--cmd` of `template import` and `template build`).

use clap::Args;

use crate::cli::client::ClientError;

/// `--user` and `--entrypoint` of `launch` and `run`.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Run the command as USER[:GROUP]: a name or uid, optionally a group name or gid, looked
    /// up in the instance's own /etc/passwd and /etc/group (a uid without an entry runs with
    /// gid 0). Default: the template's user (`mayfly template info` shows it), else root.
    /// `exec` runs as this user too unless it says otherwise.
    #[arg(long, short = 'u', value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Replace the template's entrypoint (words split on spaces, or a JSON array; '' clears
    /// it). The template's default arguments (cmd) are then dropped: give any after `--`.
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true)]
    pub entrypoint: Option<String>,
}

/// `--user` of `exec`.
#[derive(Debug, Args)]
pub struct ExecUserArg {
    /// Run as USER[:GROUP]: a name or uid, optionally a group name or gid, looked up in the
    /// instance's own /etc/passwd and /etc/group. Default: the user the instance's init runs
    /// as (`mayfly info NAME` shows it).
    #[arg(long, short = 'u', value_name = "USER[:GROUP]")]
    pub user: Option<String>,
}

/// Reads the command given to `flag`: a JSON array of strings if it starts with `[`, else
/// words split on white space (so `''` is no command at all).
pub(crate) fn parse_command(flag: &str, value: &str) -> Result<Vec<String>, ClientError> {
    if value.trim_start().starts_with('[') {
        return serde_json::from_str(value).map_err(|e| {
            ClientError::Api(
                mayfly_api::ApiError::new(
                    mayfly_api::ErrorCode::InvalidArgument,
                    format!("invalid {flag} JSON: {e}"),
                )
                .with_hint(format!(
                    "give a JSON array of strings, e.g. {flag} '[\"/bin/sh\", \"-c\", \"sleep 100\"]'"
                )),
            )
        });
    }
    Ok(value.split_whitespace().map(str::to_owned).collect())
}
