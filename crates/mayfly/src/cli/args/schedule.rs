//! `mayfly schedule …`.

use clap::{Args, Subcommand};

/// `mayfly schedule`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule: reset, restart or snapshot an instance at the times of a cron
    /// expression (5 fields, the host's local time) or every day at HH:MM.
    #[command(after_help = "\
Examples:
  mayfly schedule add web reset '0 3 * * *'
  mayfly schedule add web restart 04:30
  mayfly schedule add db snapshot '0 * * * *' --keep 24

Fields: minute hour day-of-month month day-of-week (e.g. `*/15 * * * 1-5`). A run missed
while the daemon was down runs once when it starts again. Scheduled snapshots are named
sched-ID-YYYYmmdd-HHMM; --keep N removes all but the newest N of them.")]
    Add(ScheduleAddArgs),
    /// List schedules (every instance's, or one instance's).
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  mayfly schedule list\n  mayfly schedule list web\n  mayfly schedule list --json"
    )]
    List(ScheduleListArgs),
    /// Remove a schedule (the snapshots it made stay).
    #[command(
        visible_alias = "remove",
        after_help = "Examples:\n  mayfly schedule rm 3"
    )]
    Rm(ScheduleRmArgs),
}

/// `mayfly schedule add`.
#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    /// Instance name.
    pub name: String,
    /// What to do: reset, restart or snapshot.
    pub action: mayfly_api::ScheduleAction,
    /// When: a 5-field cron expression (quote it), or HH:MM for every day at that time.
    pub cron: String,
    /// Snapshot schedules: keep only the newest N snapshots this schedule made.
    #[arg(long, value_name = "N")]
    pub keep: Option<u32>,
    /// Print the schedule as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly schedule list`.
#[derive(Debug, Args)]
pub struct ScheduleListArgs {
    /// Only this instance's schedules.
    pub name: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly schedule rm`.
#[derive(Debug, Args)]
pub struct ScheduleRmArgs {
    /// Schedule id (see `mayfly schedule list`).
    pub id: u64,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}
