//! The arguments of `mayfly volume …`.

use clap::{Args, Subcommand};

use crate::cli::JsonFlag;

/// `mayfly volume`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create an empty volume (owned by root inside the instance it is attached to).
    #[command(after_help = "\
--size uses the disk-limit mechanism of `--disk` (a project quota where the state
filesystem has them, else an ext4 image loop-mounted over the volume's directory; see
docs/volumes.md): writing past it gives ENOSPC.

Examples:
  mayfly volume create data
  mayfly volume create db --size 2G
  mayfly launch busybox --name web --volume data:/srv/data")]
    Create(VolumeCreateArgs),
    /// List volumes and where each is attached.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  mayfly volume list\n  mayfly volume list --json"
    )]
    List(JsonFlag),
    /// Show a volume: its size limit, the bytes it uses, where it is attached.
    #[command(
        after_help = "Examples:\n  mayfly volume info data\n  mayfly volume info data --json"
    )]
    Info(VolumeInfoArgs),
    /// Delete volumes and their data (refused while one is attached: detach it, or remove
    /// its instance, first).
    #[command(
        visible_alias = "remove",
        after_help = "Examples:\n  mayfly volume rm data\n  mayfly volume rm old-1 old-2"
    )]
    Rm(VolumeRmArgs),
    /// Attach a volume to a stopped instance, mounted at PATH from its next start (a volume
    /// is attached to one instance at a time).
    #[command(
        after_help = "Examples:\n  mayfly volume attach data web:/srv/data\n  mayfly volume attach config web:/etc/app:ro"
    )]
    Attach(VolumeAttachArgs),
    /// Detach a volume from a stopped instance (its data stays in the volume).
    #[command(after_help = "Examples:\n  mayfly volume detach data web")]
    Detach(VolumeDetachArgs),
}

/// `mayfly volume create`.
#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    /// Volume name (a DNS label, like an instance name).
    pub name: String,
    /// Size limit, at least 16M, e.g. 1G.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub size: Option<u64>,
    /// Print the new volume as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    mayfly_api::size::parse_size(s)
}

/// `INSTANCE:/path[:ro]`, read like a volume mount with the instance in front (its `volume`
/// field holds the instance).
fn parse_target(s: &str) -> Result<mayfly_api::VolumeMount, String> {
    s.parse::<mayfly_api::VolumeMount>().map_err(|e| {
        e.replace("invalid volume", "invalid target")
            .replace("NAME:/path", "INSTANCE:/path")
            .replace("no volume name", "no instance name")
            .replace(
                "`--volume data:/srv/data`",
                "`mayfly volume attach data web:/srv/data`",
            )
    })
}

/// `mayfly volume info`.
#[derive(Debug, Args)]
pub struct VolumeInfoArgs {
    /// Volume name.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly volume rm`.
#[derive(Debug, Args)]
pub struct VolumeRmArgs {
    /// Volume names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly volume attach`.
#[derive(Debug, Args)]
pub struct VolumeAttachArgs {
    /// Volume name.
    pub name: String,
    /// INSTANCE:/path or INSTANCE:/path:ro.
    #[arg(value_name = "INSTANCE:/PATH[:ro]", value_parser = parse_target)]
    pub target: mayfly_api::VolumeMount,
    /// Print the volume as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly volume detach`.
#[derive(Debug, Args)]
pub struct VolumeDetachArgs {
    /// Volume name.
    pub name: String,
    /// The instance it is attached to.
    pub instance: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}
