//! `mayfly remote …` (part R of issue 24).

use clap::{Args, Subcommand};

/// `mayfly remote`.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Add a remote daemon (`https://HOST:PORT`), trusting its certificate after showing
    /// its fingerprint.
    #[command(
        after_help = "Examples:\n  mayfly remote add lab https://lab.example:8443 --token SECRET"
    )]
    Add(RemoteAddArgs),
    /// List remotes.
    #[command(visible_alias = "ls", after_help = "Examples:\n  mayfly remote list")]
    List(crate::cli::JsonFlag),
    /// Forget remotes.
    #[command(
        visible_alias = "remove",
        after_help = "Examples:\n  mayfly remote rm lab"
    )]
    Rm(RemoteNamesArgs),
}

/// `mayfly remote add`.
#[derive(Debug, Args)]
pub struct RemoteAddArgs {
    /// Remote name.
    pub name: String,
    /// Its URL: `https://HOST:PORT`.
    pub url: String,
    /// The API token to send (made there by `mayfly token create`).
    #[arg(long, env = "MAYFLY_TOKEN", value_name = "SECRET")]
    pub token: Option<String>,
}

/// Remote names.
#[derive(Debug, Args)]
pub struct RemoteNamesArgs {
    /// Remote names.
    #[arg(required = true)]
    pub names: Vec<String>,
}
