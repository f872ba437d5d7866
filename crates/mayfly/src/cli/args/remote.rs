//! `mayfly remote …` (part R of issue 24).

use clap::{Args, Subcommand};

/// `mayfly remote`.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Add a remote daemon (`https://HOST:PORT`), trusting its certificate after showing
    /// its SHA-256 fingerprint (compare it with `mayfly info` on the daemon's host); the
    /// certificate is pinned: a different one is refused later.
    #[command(after_help = "Examples:\n  \
        mayfly remote add lab https://lab.example:8443 --token SECRET\n  \
        mayfly remote add lab https://10.0.0.5:8443 --token SECRET --fingerprint 3f2a…\n  \
        mayfly remote add ci https://ci.example:8443 --token SECRET --accept-certificate\n  \
        mayfly --remote lab list\n  \
        mayfly exec lab:web -- uname -a")]
    Add(RemoteAddArgs),
    /// List remotes.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  mayfly remote list\n  mayfly remote list --json"
    )]
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
    #[arg(
        long,
        env = "MAYFLY_TOKEN",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub token: Option<String>,
    /// Trust the certificate the daemon shows without asking (check its fingerprint some
    /// other way).
    #[arg(long)]
    pub accept_certificate: bool,
    /// Trust the certificate only if its SHA-256 fingerprint is this (as `mayfly info`
    /// prints it on the daemon's host; `:` separators and case do not matter).
    #[arg(long, value_name = "SHA256")]
    pub fingerprint: Option<String>,
}

/// Remote names.
#[derive(Debug, Args)]
pub struct RemoteNamesArgs {
    /// Remote names.
    #[arg(required = true)]
    pub names: Vec<String>,
}
