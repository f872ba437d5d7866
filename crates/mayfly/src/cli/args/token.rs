//! `mayfly token …` (part R of issue 24).

use clap::{Args, Subcommand};

/// `mayfly token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for remote clients and the web page (its secret is shown once).
    #[command(after_help = "Examples:\n  mayfly token create ci")]
    Create(TokenNameArgs),
    /// List tokens (never their secrets).
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  mayfly token list\n  mayfly token list --json"
    )]
    List(crate::cli::JsonFlag),
    /// Revoke tokens: requests that carry them are refused from now on.
    #[command(after_help = "Examples:\n  mayfly token revoke ci")]
    Revoke(TokenNamesArgs),
}

/// One token name.
#[derive(Debug, Args)]
pub struct TokenNameArgs {
    /// Token name.
    pub name: String,
}

/// Token names.
#[derive(Debug, Args)]
pub struct TokenNamesArgs {
    /// Token names.
    #[arg(required = true)]
    pub names: Vec<String>,
}
