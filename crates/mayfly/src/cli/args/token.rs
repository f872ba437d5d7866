//! `mayfly token …` (part R of issue 24).

use clap::{Args, Subcommand};

/// `mayfly token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for remote clients and the web page (its secret is shown once;
    /// only on the daemon's host).
    #[command(after_help = "Examples:\n  mayfly token create ci\n  mayfly token create ci --json")]
    Create(TokenCreateArgs),
    /// List tokens (never their secrets).
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  mayfly token list\n  mayfly token list --json"
    )]
    List(crate::cli::JsonFlag),
    /// Revoke tokens: requests that carry them, and web sessions opened with them, are
    /// refused from now on (only on the daemon's host).
    #[command(after_help = "Examples:\n  mayfly token revoke ci")]
    Revoke(TokenNamesArgs),
}

/// `mayfly token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// Token name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    #[command(flatten)]
    pub json: crate::cli::JsonFlag,
}

/// Token names.
#[derive(Debug, Args)]
pub struct TokenNamesArgs {
    /// Token names.
    #[arg(required = true)]
    pub names: Vec<String>,
}
