//! `mayfly completion` and `mayfly man` (part C of issue 24).

use clap::Args;

/// `mayfly completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: String,
}

/// `mayfly man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command into this directory (default: mayfly(1) on stdout).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}
