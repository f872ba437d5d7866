//! `mayfly events` (part E of issue 24).

use clap::Args;

/// `mayfly events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing events as they happen.
    #[arg(long, short)]
    pub follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Only events since this time: RFC 3339, or a duration back from now (`10m`, `2h`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
}
