//! `mayfly volume …`.
//!
//! (Skeleton: filled in by the volumes work.)

use clap::Subcommand;

/// `mayfly volume`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List volumes.
    #[command(visible_alias = "ls", after_help = "Examples:\n  mayfly volume list")]
    List,
}
