//! The JSON documents of an image, as far as mayfly reads them.

use serde::Deserialize;

use super::OciConfig;

/// `oci-layout`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LayoutFile {
    pub(super) image_layout_version: String,
}

/// A content descriptor: what a document says about a blob it refers to.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    #[serde(default)]
    pub(super) media_type: String,
    pub(super) digest: String,
    pub(super) size: u64,
    #[serde(default)]
    pub(super) platform: Option<Platform>,
    #[serde(default)]
    pub(super) annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// The annotation that names (tags) an image in an OCI layout's index.
pub(super) const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The full reference containerd (and `docker save` since Docker 25) records beside it.
pub(super) const CONTAINERD_NAME: &str = "io.containerd.image.name";

impl Descriptor {
    /// The names an index gives the image this descriptor points at: its `ref.name`
    /// annotation (a tag such as `1.0`, or a full reference), and containerd's full name.
    pub(super) fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for key in [REF_NAME, CONTAINERD_NAME] {
            if let Some(name) = self.annotations.as_ref().and_then(|a| a.get(key))
                && !name.is_empty()
                && !names.contains(name)
            {
                names.push(name.clone());
            }
        }
        names
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Platform {
    pub(super) architecture: String,
    pub(super) os: String,
}

/// An image index or an image manifest; which one, the media type says (or the shape).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Document {
    #[serde(default)]
    pub(super) media_type: Option<String>,
    #[serde(default)]
    pub(super) manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub(super) config: Option<Descriptor>,
    #[serde(default)]
    pub(super) layers: Option<Vec<Descriptor>>,
}

/// An image config blob; only its `config` object matters here.
#[derive(Deserialize)]
pub(super) struct ConfigFile {
    #[serde(default)]
    pub(super) config: Option<RunConfig>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RunConfig {
    pub(super) env: Option<Vec<String>>,
    pub(super) entrypoint: Option<Vec<String>>,
    pub(super) cmd: Option<Vec<String>>,
    pub(super) working_dir: Option<String>,
    pub(super) user: Option<String>,
    pub(super) stop_signal: Option<String>,
}

impl From<ConfigFile> for OciConfig {
    fn from(file: ConfigFile) -> Self {
        let config = file.config.unwrap_or_default();
        let present = |s: Option<String>| s.filter(|s| !s.is_empty());
        Self {
            env: config.env.unwrap_or_default(),
            entrypoint: config.entrypoint.unwrap_or_default(),
            cmd: config.cmd.unwrap_or_default(),
            workdir: present(config.working_dir),
            user: present(config.user),
            stop_signal: present(config.stop_signal),
        }
    }
}

/// One image of a `docker save` `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SaveEntry {
    pub(super) config: String,
    #[serde(default)]
    pub(super) repo_tags: Option<Vec<String>>,
    #[serde(default)]
    pub(super) layers: Vec<String>,
}
