//! The arguments of `mayfly snapshot …`, and of what is made from an instance or its
//! snapshot: `clone` and `publish`.

use clap::{Args, Subcommand};

/// Snapshot subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot an instance (a running one is frozen for the copy).
    #[command(
        after_help = "Examples:\n  mayfly snapshot create web\n  mayfly snapshot create web before-upgrade"
    )]
    Create(SnapshotCreateArgs),
    /// List an instance's snapshots.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  mayfly snapshot list web\n  mayfly snapshot list web --json"
    )]
    List(SnapshotListArgs),
    /// Show one snapshot.
    #[command(after_help = "Examples:\n  mayfly snapshot info web before-upgrade")]
    Info(SnapshotArgs),
    /// Rewind an instance to a snapshot (a running one is stopped, rewound and started).
    #[command(after_help = "Examples:\n  mayfly snapshot restore web before-upgrade")]
    Restore(SnapshotArgs),
    /// Delete a snapshot.
    #[command(
        visible_alias = "remove",
        after_help = "Examples:\n  mayfly snapshot rm web before-upgrade"
    )]
    Rm(SnapshotArgs),
}

/// `mayfly snapshot create`.
#[derive(Debug, Args)]
pub struct SnapshotCreateArgs {
    /// Instance name.
    pub name: String,
    /// Snapshot name (default snapN).
    pub snapshot: Option<String>,
    /// Print the snapshot as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly snapshot list`.
#[derive(Debug, Args)]
pub struct SnapshotListArgs {
    /// Instance name.
    pub name: String,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Commands that name one snapshot.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Instance name.
    pub name: String,
    /// Snapshot name.
    pub snapshot: String,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly clone`.
#[derive(Debug, Args)]
pub struct CloneArgs {
    /// Source instance.
    pub source: String,
    /// New instance name.
    pub name: String,
    /// Start from this snapshot of the source.
    #[arg(long, short)]
    pub snapshot: Option<String>,
    /// Mode of the clone (default: the source's): ephemeral, transient or persistent.
    #[arg(long)]
    pub mode: Option<mayfly_api::Mode>,
    /// Start the clone.
    #[arg(long)]
    pub start: bool,
    /// Give the clone a copy of each of the source's volumes (named CLONE-VOLUME); without
    /// it the clone gets no volume (a volume is attached to one instance at a time).
    #[arg(long)]
    pub copy_volumes: bool,
    /// Print the new instance as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// NAME or NAME/SNAPSHOT.
    pub source: String,
    /// Template to create, or to add a version to.
    #[arg(long = "as", value_name = "TEMPLATE")]
    pub template: String,
    /// History message.
    #[arg(long, short)]
    pub message: Option<String>,
    /// Make the instance's flavor and own limits the defaults of instances launched from the
    /// new version (not copied without it).
    #[arg(long)]
    pub limits: bool,
    /// Print the template as JSON.
    #[arg(long)]
    pub json: bool,
}
