//! `mayfly completion` and `mayfly man`: generated from the CLI definition itself.

use clap::Args;

/// `mayfly completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// `mayfly man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command into this directory (mayfly.1, mayfly-launch.1, …)
    /// instead of printing mayfly(1) on stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}
