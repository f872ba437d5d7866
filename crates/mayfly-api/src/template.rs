//! Templates: named, versioned stacks of layers.

use serde::{Deserialize, Serialize};

use crate::ApiError;

/// What an instance started from a template version runs unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// Default init command; empty means an instance must name one.
    #[serde(default)]
    pub command: Vec<String>,
    /// `KEY=VALUE` environment of every process.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory of the init.
    #[serde(default = "root_dir")]
    pub workdir: String,
    /// Signal that asks the init to stop (`SIGTERM` unless the init wants another).
    #[serde(default = "sigterm")]
    pub stop_signal: String,
}

fn root_dir() -> String {
    "/".to_owned()
}

fn sigterm() -> String {
    "SIGTERM".to_owned()
}

/// One layer of a template version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Content digest (`blake3:…`).
    pub digest: String,
    /// Bytes of regular-file content.
    pub size: u64,
    /// Files, directories, links and nodes.
    pub entries: u64,
}

/// One immutable version of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInfo {
    /// Name.
    pub name: String,
    /// The version that `NAME` (without `@N`) means.
    pub current_version: u32,
    /// Provided by the daemon itself (the `busybox` template).
    pub builtin: bool,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Every version, oldest first.
    pub versions: Vec<VersionInfo>,
    /// Instances that use the template.
    pub used_by: Vec<String>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportTemplate {
    /// Template name.
    pub name: String,
    /// Absolute path of a root directory or a `.tar`, `.tar.gz` or `.tar.zst` rootfs on the
    /// daemon's host.
    pub path: String,
    /// Default init command of the new template.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// History message.
    #[serde(default)]
    pub message: Option<String>,
}

/// Query of `POST /v1/templates` when the body is an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Template name.
    pub name: String,
    /// Default init command, as a JSON array of strings.
    #[serde(default)]
    pub command: Option<String>,
    /// History message.
    #[serde(default)]
    pub message: Option<String>,
}

/// One line of the newline-delimited JSON answer to an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportEvent {
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
