//! `mayfly schedule …`.
//!
//! (Skeleton: filled in by the schedules work.)

use clap::Subcommand;

/// `mayfly schedule`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// List schedules.
    #[command(visible_alias = "ls")]
    List,
}
