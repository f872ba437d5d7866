//! The arguments of `mayfly template …`: import, list, info, rm, build, patch, rollback,
//! history, rollout and gc.

use clap::{Args, Subcommand};

use crate::cli::JsonFlag;

/// Template subcommands.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Import a root filesystem (a directory, or a .tar, .tar.gz or .tar.zst; `-` reads stdin)
    /// or a container image (an OCI image layout, a `docker save` / `podman save` archive, or
    /// an OCI archive).
    #[command(after_help = "\
A layout or archive with several images (umoci's tags, `docker save a b`) needs one named:
`SOURCE:TAG` (when that is not itself a path) or --tag TAG, matched against the index's
`org.opencontainers.image.ref.name` or the save's RepoTags (`busybox:1.36`, or just `1.36`),
or the image's digest. Without one, the only image is taken, and a choice between several is
refused with the list of their tags.

Examples:
  mayfly template import debian ./debian-rootfs.tar.zst
  mayfly template import nginx ./nginx-oci-layout/        # image layers, env, entrypoint, cmd, user, workdir
  mayfly template import web ./layout:v2                  # the image tagged v2 (umoci, skopeo oci:)
  mayfly template import db ./images.tar --tag postgres:16
  docker save nginx:latest | mayfly template import nginx -
  mayfly template import tools /srv/rootfs --cmd /sbin/init
  mayfly template import app ./app.tar --cmd '[\"/usr/bin/app\", \"--serve\"]'")]
    Import(ImportArgs),
    /// List templates.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  mayfly template list\n  mayfly template list --json"
    )]
    List(JsonFlag),
    /// Show a template: versions, layers, users, and what instances run by default (command,
    /// entrypoint and cmd, user, workdir, env, stop signal).
    #[command(after_help = "Examples:\n  mayfly template info busybox")]
    Info(TemplateInfoArgs),
    /// Delete a template (refused while instances use it), or one version of it (NAME@N).
    #[command(
        visible_alias = "remove",
        after_help = "Examples:\n  mayfly template rm debian\n  mayfly template rm debian@2   # one old version"
    )]
    Rm(TemplateRmArgs),
    /// Build an OS template from packages (debootstrap) or an application template over a base.
    #[command(after_help = "\
Building an existing application template again adds a version of it over the base given:
that is how an application moves to a new version of its base.

A template keeps no downloaded packages, package lists, apt caches or build logs (apt's
sources stay: run `apt-get update` before installing in an instance), and never the build
host's hostname or resolv.conf: every instance gets its own /etc/hostname, /etc/hosts and
/etc/resolv.conf from mayfly at every start.

An OS template (--debian) boots systemd: systemd-sysv and dbus are installed with the variant,
its command is /sbin/init, and the units that cannot work in a container are masked
(systemd-machine-id-commit.service: mayfly provides /etc/machine-id). `mayfly launch debian`
then boots it; `mayfly exec NAME -- systemctl is-system-running --wait` says when it is up.
--no-init builds the variant alone (no systemd; its command idles).

Examples:
  mayfly template build debian --debian bookworm
  mayfly template build small --debian bookworm --no-init
  mayfly template build debian --debian bookworm --variant minbase --packages curl,ca-certificates
  mayfly template build web --from debian --packages nginx
  mayfly template build tools --from debian@1 --run 'echo hi > /etc/motd'
  mayfly template build bbi --from busybox --run 'echo ::respawn:/bin/sleep 1d > /etc/inittab' --cmd '/bin/busybox init' --stop-signal SIGUSR2")]
    Build(BuildArgs),
    /// Make version N+1 = version N + one layer (packages, a script or a directory).
    #[command(after_help = "\
Examples:
  mayfly template patch debian --packages upgrade
  mayfly template patch web --packages curl --message 'add curl'
  mayfly template patch web --run 'sed -i s/80/8080/ /etc/nginx/sites-enabled/default'
  mayfly template patch busybox --from /srv/overlay")]
    Patch(PatchArgs),
    /// Point the name back at an older version (instant; followers take it at their next start).
    #[command(
        after_help = "Examples:\n  mayfly template rollback web\n  mayfly template rollback web --to 2"
    )]
    Rollback(RollbackArgs),
    /// Show a template's versions: time, message, size, digest, users.
    #[command(after_help = "Examples:\n  mayfly template history web")]
    History(TemplateInfoArgs),
    /// Reset the running transient followers in waves; on a failure, put everything back.
    #[command(after_help = "\
A failed reset or health check points the name back at the version it meant before the
current one, and every running follower on the rejected version follows it back; an instance
whose reset failed runs again on the version it ran. Pinned and persistent instances, and
followers held back by their applications (--app not built on the new version), are not reset.

Examples:
  mayfly template rollout web
  mayfly template rollout web --wave 5 --health 'wget -qO- http://127.0.0.1/' --timeout 20")]
    Rollout(RolloutArgs),
    /// Remove layers that no template version uses.
    #[command(after_help = "Examples:\n  mayfly template gc")]
    Gc(JsonFlag),
}

/// `mayfly template build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Template name.
    pub name: String,
    /// Debootstrap this Debian suite (an OS template).
    #[arg(long, value_name = "SUITE", conflicts_with = "from")]
    pub debian: Option<String>,
    /// debootstrap variant.
    #[arg(long, requires = "debian", value_name = "VARIANT")]
    pub variant: Option<String>,
    /// Package archive.
    #[arg(long, requires = "debian", value_name = "URL")]
    pub mirror: Option<String>,
    /// No init: the debootstrap variant alone, without systemd (whose template boots).
    #[arg(long, requires = "debian")]
    pub no_init: bool,
    /// Base template of an application template (NAME or NAME@N).
    #[arg(long, value_name = "BASE")]
    pub from: Option<String>,
    /// Packages to install (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "PKG,…")]
    pub packages: Vec<String>,
    /// Shell commands to run in the build (after the packages).
    #[arg(long, value_name = "SCRIPT")]
    pub run: Option<String>,
    /// Default init command: words split on spaces, or a JSON array.
    #[arg(long, value_name = "COMMAND")]
    pub cmd: Option<String>,
    /// The signal that asks the init to stop (default: the base's, SIGTERM for an OS
    /// template; /sbin/init with systemd-sysv or sysvinit-core installed gets SIGRTMIN+3 or
    /// SIGINT). busybox init: SIGUSR2.
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// History message.
    #[arg(long, short)]
    pub message: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly template patch`.
#[derive(Debug, Args)]
pub struct PatchArgs {
    /// Template name.
    pub name: String,
    /// Packages to install (comma-separated), or `upgrade`.
    #[arg(long, value_delimiter = ',', value_name = "PKG,…|upgrade")]
    pub packages: Vec<String>,
    /// Shell commands to run.
    #[arg(long, value_name = "SCRIPT")]
    pub run: Option<String>,
    /// A directory (on the daemon's host) laid over the template.
    #[arg(long = "from", value_name = "DIR")]
    pub from_dir: Option<String>,
    /// A new stop signal for the new version (with one of the above).
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// History message.
    #[arg(long, short)]
    pub message: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly template rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Template name.
    pub name: String,
    /// Version to point at (default: the one before the current).
    #[arg(long)]
    pub to: Option<u32>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly template rollout`.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// Template name.
    pub name: String,
    /// Instances reset at once.
    #[arg(long, default_value_t = 1)]
    pub wave: u32,
    /// Health check run in each reset instance (`sh -c`); exit 0 is healthy.
    #[arg(long, value_name = "CMD")]
    pub health: Option<String>,
    /// Seconds a health check may take.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Print the events as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly template import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Template name.
    pub name: String,
    /// Root directory, rootfs archive, OCI layout, `docker save` or OCI archive, or `-` for an
    /// archive on stdin; `SOURCE:TAG` chooses an image of a layout or archive that holds
    /// several (when `SOURCE:TAG` is not itself a path).
    pub source: String,
    /// The image to import from a layout or archive that holds several: a tag (`b`,
    /// `1.36`), a name (`busybox:1.36`, `docker.io/library/busybox:1.36`) or its digest.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Default init command: words split on spaces, or a JSON array (for an image, it
    /// replaces the image's Entrypoint and Cmd).
    #[arg(long, value_name = "COMMAND")]
    pub cmd: Option<String>,
    /// History message.
    #[arg(long, short)]
    pub message: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly template info`.
#[derive(Debug, Args)]
pub struct TemplateInfoArgs {
    /// Template name.
    pub name: String,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `mayfly template rm`.
#[derive(Debug, Args)]
pub struct TemplateRmArgs {
    /// Template names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}
