//! Templates: named, versioned stacks of layers.

use serde::{Deserialize, Serialize};

use crate::ApiError;

/// What an instance started from a template version runs unless told otherwise.
///
/// The default command follows OCI images (and Docker): `entrypoint` followed by `cmd`.
/// Arguments given at launch (`mayfly run IMAGE -- ARGS`) replace `cmd` and are appended to
/// `entrypoint`; an instance's own entrypoint (`--entrypoint`) replaces the template's, and
/// then `cmd` is dropped unless arguments are given too. A template without an entrypoint
/// (every template made before mayfly kept the two apart, and most that are not images)
/// has its whole default command in `cmd`, which arguments replace.
///
/// `command` is that default command whole, `entrypoint` then `cmd`, for readers; a writer
/// may set `command` alone, which then becomes `cmd` with no entrypoint (when it differs
/// from what `entrypoint` and `cmd` make). [`TemplateConfig::set_command`] keeps the three
/// in step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TemplateConfigFields", into = "TemplateConfigFields")]
pub struct TemplateConfig {
    /// The default command, whole: `entrypoint` followed by `cmd`. Empty means an instance
    /// must name one.
    pub command: Vec<String>,
    /// What every process started with the default command begins with (an image's
    /// `Entrypoint`); arguments given at launch are appended to it.
    pub entrypoint: Vec<String>,
    /// The default arguments of `entrypoint`, or the default command when there is no
    /// entrypoint (an image's `Cmd`); arguments given at launch replace it.
    pub cmd: Vec<String>,
    /// Who the default command runs as: `USER[:GROUP]`, a name or uid and optionally a
    /// group name or gid, looked up in the instance's own `/etc/passwd` and `/etc/group`
    /// (an image's `User`). Empty is root.
    pub user: String,
    /// `KEY=VALUE` environment of every process.
    pub env: Vec<String>,
    /// Working directory of the init.
    pub workdir: String,
    /// Signal that asks the init to stop (`SIGTERM` unless the init wants another).
    pub stop_signal: String,
    /// The flavor instances get when their launch names none (`publish --limits`).
    pub flavor: Option<String>,
    /// Limits instances get under their own (`publish --limits`).
    pub limits: crate::Limits,
}

impl TemplateConfig {
    /// Sets the default command as an entrypoint and its arguments (`command` follows).
    pub fn set_command(&mut self, entrypoint: Vec<String>, cmd: Vec<String>) {
        self.command = entrypoint.iter().chain(&cmd).cloned().collect();
        self.entrypoint = entrypoint;
        self.cmd = cmd;
    }

    /// The entrypoint and cmd this configuration means (see the type's documentation for
    /// a `command` set alone).
    pub fn entrypoint_and_cmd(&self) -> (&[String], &[String]) {
        let joined = self.entrypoint.len() + self.cmd.len() == self.command.len()
            && self
                .entrypoint
                .iter()
                .chain(&self.cmd)
                .eq(self.command.iter());
        if self.command.is_empty() || joined {
            (&self.entrypoint, &self.cmd)
        } else {
            (&[], &self.command)
        }
    }

    /// The same configuration with `command`, `entrypoint` and `cmd` in step.
    pub fn normalized(mut self) -> Self {
        let (entrypoint, cmd) = self.entrypoint_and_cmd();
        let (entrypoint, cmd) = (entrypoint.to_vec(), cmd.to_vec());
        self.set_command(entrypoint, cmd);
        self
    }
}

impl Default for TemplateConfig {
    fn default() -> Self {
        TemplateConfig {
            command: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            user: String::new(),
            env: Vec::new(),
            workdir: root_dir(),
            stop_signal: sigterm(),
            flavor: None,
            limits: crate::Limits::default(),
        }
    }
}

/// On the wire: [`TemplateConfigFields`].
impl utoipa::PartialSchema for TemplateConfig {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <TemplateConfigFields as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for TemplateConfig {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <TemplateConfigFields as utoipa::ToSchema>::schemas(schemas);
    }
}

/// [`TemplateConfig`] as stored and sent: the same fields, read with defaults (a template
/// stored before entrypoint, cmd and user were kept has only `command`) and normalized
/// both ways.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TemplateConfigFields {
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    entrypoint: Vec<String>,
    #[serde(default)]
    cmd: Vec<String>,
    #[serde(default)]
    user: String,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default = "root_dir")]
    workdir: String,
    #[serde(default = "sigterm")]
    stop_signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flavor: Option<String>,
    #[serde(default, skip_serializing_if = "crate::Limits::is_empty")]
    limits: crate::Limits,
}

impl From<TemplateConfigFields> for TemplateConfig {
    fn from(f: TemplateConfigFields) -> Self {
        TemplateConfig {
            command: f.command,
            entrypoint: f.entrypoint,
            cmd: f.cmd,
            user: f.user,
            env: f.env,
            workdir: f.workdir,
            stop_signal: f.stop_signal,
            flavor: f.flavor,
            limits: f.limits,
        }
        .normalized()
    }
}

impl From<TemplateConfig> for TemplateConfigFields {
    fn from(c: TemplateConfig) -> Self {
        let c = c.normalized();
        TemplateConfigFields {
            command: c.command,
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            user: c.user,
            env: c.env,
            workdir: c.workdir,
            stop_signal: c.stop_signal,
            flavor: c.flavor,
            limits: c.limits,
        }
    }
}

fn root_dir() -> String {
    "/".to_owned()
}

fn sigterm() -> String {
    "SIGTERM".to_owned()
}

/// One layer of a template version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LayerInfo {
    /// Content digest (`blake3:…`).
    pub digest: String,
    /// Bytes of regular-file content.
    pub size: u64,
    /// Files, directories, links and nodes.
    pub entries: u64,
}

/// One immutable version of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionInfo {
    /// Version number, from 1.
    pub version: u32,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// What changed (import source, patch message).
    pub message: String,
    /// Layers, lowest first.
    pub layers: Vec<LayerInfo>,
    /// Defaults for instances.
    pub config: TemplateConfig,
    /// Installed packages (`name version`), when the version has a package database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// For an application template: the version it was built on (`name@N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Whether it is an application template (stackable with `--app`).
    #[serde(default)]
    pub app: bool,
    /// Instances (and `instance/snapshot`s) that use this version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

/// A template as `template list` and `template info` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateInfo {
    /// Name.
    pub name: String,
    /// The version that `NAME` (without `@N`) means.
    pub current_version: u32,
    /// The version the name pointed at before its last move (a patch, a new version, a
    /// rollback): where a failed rollout of the current version points it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<u32>,
    /// Provided by the daemon itself (the `busybox` template).
    pub builtin: bool,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Every version, oldest first.
    pub versions: Vec<VersionInfo>,
    /// Instances that use the template.
    pub used_by: Vec<String>,
    /// Persistent followers whose own changes hide parts of the current version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadowed: Vec<Shadowed>,
    /// Followers that run an older version because their applications are not built on the
    /// current one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_back: Vec<HeldBack>,
}

impl TemplateInfo {
    /// The current version's record.
    pub fn current(&self) -> Option<&VersionInfo> {
        self.versions
            .iter()
            .find(|v| v.version == self.current_version)
    }
}

/// `POST /v1/templates` with a JSON body: import a directory or archive that the daemon's host
/// can read.
///
/// The answer, by default, comes when the import has ended: `201 Created` with the
/// [`TemplateInfo`], or the error's status with its [`crate::ErrorBody`]. A client that sends
/// `Accept: application/x-ndjson` gets `200` and [`ImportEvent`] lines as soon as the import is
/// under way, once the request, the name and the source have been checked (for an image
/// directory: its index, the image chosen, its manifest, config and the presence and size of
/// every layer blob); what fails after that (a damaged layer) is the last line, an
/// [`ImportEvent::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportTemplate {
    /// Template name.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub name: String,
    /// Absolute path, on the daemon's host, of a root directory, a `.tar`, `.tar.gz` or
    /// `.tar.zst` of one, an OCI image layout, or a `docker save` / OCI archive. `PATH:TAG`
    /// names an image of a layout or archive that holds several, when `PATH:TAG` itself does
    /// not exist (see [`split_image_tag`]).
    pub path: String,
    /// The image to import from a layout or archive that holds several: a tag (the index's
    /// `org.opencontainers.image.ref.name`, a `docker save`'s `RepoTags`), a full name, or the
    /// image's digest.
    #[serde(default)]
    pub tag: Option<String>,
    /// Default init command of the new template, whole (it becomes its `cmd`, with no
    /// entrypoint: for an image, it replaces the image's `Entrypoint` and `Cmd`).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// History message.
    #[serde(default)]
    pub message: Option<String>,
}

/// Query of `POST /v1/templates` when the body is an archive (answered as for
/// [`ImportTemplate`]; with `Accept: application/x-ndjson` the import is under way once the
/// name is checked, since the rest is in the body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Template name.
    pub name: String,
    /// The image to import, from an archive that holds several (see [`ImportTemplate::tag`]).
    #[serde(default)]
    pub tag: Option<String>,
    /// Default init command, as a JSON array of strings (whole, as in [`ImportTemplate`]).
    #[serde(default)]
    pub command: Option<String>,
    /// History message.
    #[serde(default)]
    pub message: Option<String>,
}

/// The media type with which a client of `POST /v1/templates` asks for [`ImportEvent`] lines.
pub const NDJSON: &str = "application/x-ndjson";

/// Splits an import source of the form `PATH:TAG`: `source` itself when `exists(source)`, else
/// the longest prefix before a `:` that exists, with what follows as the tag (which may hold
/// `:` itself: `save.tar:busybox:1.36`). When nothing exists, `source` itself, for the caller
/// to report as missing.
pub fn split_image_tag(source: &str, exists: impl Fn(&str) -> bool) -> (&str, Option<&str>) {
    if exists(source) {
        return (source, None);
    }
    for (i, _) in source.rmatch_indices(':') {
        let (path, tag) = (&source[..i], &source[i + 1..]);
        if !path.is_empty() && !tag.is_empty() && exists(path) {
            return (path, Some(tag));
        }
    }
    (source, None)
}

/// One line of the newline-delimited JSON answer to an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportEvent {
    /// A line of output of a build (debootstrap, a package install, a script).
    Log {
        /// The line.
        line: String,
    },
    /// Entries and bytes written so far.
    Progress {
        /// Entries written.
        entries: u64,
        /// Bytes of file content written.
        bytes: u64,
    },
    /// The import finished; the template as it is now.
    Done(Box<TemplateInfo>),
    /// The import failed; nothing was kept.
    Error(ApiError),
}

/// `POST /v1/templates/build`: build a template (answers a stream of [`ImportEvent`] lines).
/// Either `debian` (an OS template from packages, with debootstrap) or `from` (an application
/// template over a base: `packages` and/or `run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildTemplate {
    /// Template name (the path's name wins).
    #[serde(default)]
    pub name: String,
    /// Debian suite to debootstrap (`bookworm`).
    #[serde(default)]
    pub debian: Option<String>,
    /// debootstrap variant (default `minbase`).
    #[serde(default)]
    pub variant: Option<String>,
    /// Package archive (default `http://deb.debian.org/debian`).
    #[serde(default)]
    pub mirror: Option<String>,
    /// An OS template without an init: debootstrap's variant alone, no systemd (by default
    /// an OS template boots systemd: `systemd-sysv` and `dbus` are added, its command is
    /// `/sbin/init`, and the units that cannot work in a container are masked).
    #[serde(default)]
    pub no_init: bool,
    /// Base template (`NAME` or `NAME@N`) of an application template.
    #[serde(default)]
    pub from: Option<String>,
    /// Packages to install.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Shell commands to run (after the packages), with `/bin/sh -c`.
    #[serde(default)]
    pub run: Option<String>,
    /// Default init command of the new template, whole (its `cmd`, with no entrypoint). An
    /// application template without it takes its base's command and user, or, rebuilt, keeps
    /// its own.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The signal that asks the new template's init to stop (`SIGRTMIN+3` for systemd,
    /// `SIGUSR2` for busybox init, `SIGINT` for Debian's sysvinit). Without it: an application
    /// template takes its base's (rebuilt, keeps its own), an OS template gets `SIGTERM`; and
    /// a `SIGTERM` becomes systemd's or sysvinit's request when the default command is
    /// `/sbin/init` and the packages installed say which init that is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// History message.
    #[serde(default)]
    pub message: Option<String>,
}

/// `POST /v1/templates/{name}/patch`: make version N+1 = version N + one new layer (answers a
/// stream of [`ImportEvent`] lines). Exactly one of `packages`, `run`, `from_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTemplate {
    /// Packages to install, or `["upgrade"]` to upgrade everything.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Shell commands to run with `/bin/sh -c`.
    #[serde(default)]
    pub run: Option<String>,
    /// A directory on the daemon's host whose tree is laid over the template.
    #[serde(default)]
    pub from_dir: Option<String>,
    /// A new stop signal for the new version (with one of the above); without it, as for
    /// [`BuildTemplate::stop_signal`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// History message.
    #[serde(default)]
    pub message: Option<String>,
}

/// `POST /v1/templates/{name}/rollback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to point the name at (default: the one before the current).
    #[serde(default)]
    pub to: Option<u32>,
}

/// Answer of `POST /v1/templates/gc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct GcReport {
    /// Layers removed.
    pub removed: Vec<String>,
    /// Bytes of file content freed.
    pub bytes: u64,
}

/// `POST /v1/templates/{name}/rollout`: reset the running transient instances that follow the
/// template, in waves (answers a stream of [`RolloutEvent`] lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// Instances reset at once (default 1).
    #[serde(default)]
    pub wave: Option<u32>,
    /// Health check run inside each reset instance with `/bin/sh -c`; exit 0 is healthy.
    #[serde(default)]
    pub health: Option<String>,
    /// Seconds a health check may take (default 30).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// Paths a persistent instance's own changes hide from a newer template version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shadowed {
    /// Instance name.
    pub instance: String,
    /// The version its writable layer was made on.
    pub since_version: u32,
    /// Paths (relative to `/`) that both the instance and the newer versions changed; the
    /// instance's copy wins there.
    pub paths: Vec<String>,
}

/// A follower (an instance without `@N`) that does not take the current version because the
/// application templates stacked on it (`--app`) are not built on it: it follows the newest
/// version they are built on until they are rebuilt over the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeldBack {
    /// Instance name.
    pub instance: String,
    /// The version it follows instead.
    pub version: u32,
    /// Which applications hold it back, and how to release it.
    pub reason: String,
}

/// One line of the answer to a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutEvent {
    /// A wave starts.
    Wave {
        /// Its number, from 1.
        number: u32,
        /// Its instances.
        instances: Vec<String>,
    },
    /// Something happened to one instance.
    Instance {
        /// Instance name.
        name: String,
        /// `reset` (now on the new version), `healthy`, `unhealthy`, `reverted` (back on the
        /// version the name points at again after a failure), `returned` (running again on the
        /// version it ran, after its reset failed), `failed` (see the detail).
        status: String,
        /// Details (version, health check output).
        detail: String,
    },
    /// A persistent follower hides part of the new version (it is not reset by a rollout).
    Shadowed(Shadowed),
    /// A follower is held back by its applications (it is not reset by a rollout).
    HeldBack(HeldBack),
    /// The rollout failed: the template was pointed back at this version, the one it meant
    /// before the version being rolled out became current.
    RolledBack {
        /// The version.
        to: u32,
    },
    /// The rollout finished.
    Done {
        /// The version now running on every reset instance.
        version: u32,
        /// Instances reset.
        reset: Vec<String>,
        /// Followers held back by their applications (not reset).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        held_back: Vec<String>,
    },
    /// The rollout failed; see the message for what was rolled back.
    Error(ApiError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn a_config_stored_with_only_a_command_reads_as_cmd() {
        let old = r#"{"command":["/sbin/init"],"env":[],"workdir":"/","stop_signal":"SIGTERM"}"#;
        let c: TemplateConfig = serde_json::from_str(old).expect("old config");
        assert_eq!(c.cmd, words("/sbin/init"));
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.command, words("/sbin/init"));
        assert_eq!(c.user, "");
    }

    #[test]
    fn entrypoint_and_cmd_round_trip_with_the_whole_command() {
        let mut c = TemplateConfig::default();
        c.set_command(words("/bin/app --serve"), words("--port 80"));
        c.user = "65534:65534".into();
        let text = serde_json::to_string(&c).expect("serialize");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            v["command"],
            serde_json::json!(["/bin/app", "--serve", "--port", "80"])
        );
        assert_eq!(v["entrypoint"], serde_json::json!(["/bin/app", "--serve"]));
        assert_eq!(v["cmd"], serde_json::json!(["--port", "80"]));
        assert_eq!(v["user"], "65534:65534");
        let back: TemplateConfig = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, c);
    }

    #[test]
    fn a_command_set_alone_over_a_split_one_wins_whole() {
        let mut base = TemplateConfig::default();
        base.set_command(words("/bin/app"), words("--default"));
        // What a writer that knows only `command` does: `{ command: X, ..base }`.
        let c = TemplateConfig {
            command: words("/bin/other -x"),
            ..base.clone()
        };
        assert_eq!(
            c.entrypoint_and_cmd(),
            (&[][..], &words("/bin/other -x")[..])
        );
        let c = c.normalized();
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.cmd, words("/bin/other -x"));
        // An empty command with a split one is the split one (writers that set only those).
        let c = TemplateConfig {
            command: Vec::new(),
            ..base
        }
        .normalized();
        assert_eq!(c.command, words("/bin/app --default"));
    }

    #[test]
    fn unknown_config_fields_are_refused() {
        let bad = r#"{"command":[],"entry_point":["x"]}"#;
        assert!(serde_json::from_str::<TemplateConfig>(bad).is_err());
    }

    #[test]
    fn a_tag_is_split_off_only_where_the_whole_does_not_exist() {
        let exists = |p: &str| ["/srv/oci", "/srv/a:b", "save.tar"].contains(&p);
        assert_eq!(split_image_tag("/srv/oci", exists), ("/srv/oci", None));
        assert_eq!(
            split_image_tag("/srv/oci:v1", exists),
            ("/srv/oci", Some("v1"))
        );
        assert_eq!(split_image_tag("/srv/a:b", exists), ("/srv/a:b", None));
        assert_eq!(
            split_image_tag("/srv/a:b:c", exists),
            ("/srv/a:b", Some("c"))
        );
        assert_eq!(
            split_image_tag("save.tar:busybox:1.36", exists),
            ("save.tar", Some("busybox:1.36"))
        );
        assert_eq!(split_image_tag("/nope:v1", exists), ("/nope:v1", None));
        assert_eq!(split_image_tag("save.tar:", exists), ("save.tar:", None));
    }
}
