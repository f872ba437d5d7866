//! Container images from elsewhere: OCI image layouts and `docker save` / `podman save`
//! archives. This module finds an image's layer blobs, lowest first, and the settings it wants
//! to run with; unpacking a layer is [`crate::unpack_layer_archive`]'s job.
//!
//! An image directory is outside input, so:
//! - a digest is validated (`sha256:` and 64, or `sha512:` and 128, lowercase hex digits)
//!   before it becomes part of a path, so no `..` or `/` can slip in through one;
//! - every file is opened beneath the image directory with `openat2(RESOLVE_BENEATH)`: a
//!   symlink inside the image is followed only while it stays inside (`docker save` links a
//!   repeated layer to its first copy), and an absolute one, or one climbing out, fails;
//! - every blob is checked against the digest and size that refer to it (manifests and configs
//!   when they are read, layers by [`image_layer_path`]); JSON documents are read up to
//!   4 MiB only;
//! - layers are unpacked under the import's limits, each one and all of them together (see
//!   [`crate::ImportLimits`]);
//! - nothing in the directory is written.
//!
//! `docker save` names its older layers by an id that is not their content digest; their
//! digest is computed from the file, so a layer always has the digest of its blob as stored.
//!
//! A layout or a save may hold several images: one is chosen by the name (tag) the caller
//! gives, or is the only one, or the one for this platform (see `select`).
//!
//! Errors name files relative to the image directory, never the directory itself (it may be
//! a staging copy of an upload); an image that is incomplete, damaged or ambiguous fails with
//! [`ImageError::BadImage`], [`ImageError::Missing`], [`ImageError::BlobMismatch`],
//! [`ImageError::BadBlobDigest`] or [`ImageError::ImageChoice`], all the image's fault rather
//! than the host's (a layer's, wrapped in [`ImageError::Layer`]).
//!
//! The parts: `layout` reads OCI layouts, `docker` `docker save` trees, `select` chooses one
//! image of several, `dir` opens files beneath the image directory, `blobs` checks digests,
//! `documents` is the JSON they hold.

mod blobs;
mod dir;
mod docker;
mod documents;
mod layout;
mod select;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{ImageError, ImportBudget, NoProgress, unpack_archive};

use blobs::blob_rel;
use dir::ImageDir;
use docker::open_docker_save;
pub use layout::open_oci_layout;

pub(super) const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
pub(super) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
pub(super) const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
pub(super) const DOCKER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub(super) const DOCKER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub(super) const OCI_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The platform images are chosen for: Linux on this machine's architecture, in OCI's names.
pub(super) const OS: &str = "linux";
pub(super) const ARCH: &str = if cfg!(target_arch = "x86_64") {
    "amd64"
} else if cfg!(target_arch = "aarch64") {
    "arm64"
} else if cfg!(target_arch = "powerpc64") {
    "ppc64le"
} else {
    std::env::consts::ARCH
};

/// An image: its layers and how it wants to be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciImage {
    /// The name the layout's index or the save's manifest gives the image (its first one),
    /// if any.
    pub name: Option<String>,
    /// The layers, lowest first.
    pub layers: Vec<OciLayer>,
    /// The run settings from the image config.
    pub config: OciConfig,
}

/// One layer blob of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLayer {
    /// `sha256:<hex>` (or `sha512:<hex>`) of the blob as stored, compressed or not.
    pub digest: String,
    /// The blob's media type, such as `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub media_type: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// Where the blob is, relative to the image directory; open it through
    /// [`image_layer_path`], which checks it.
    pub path: PathBuf,
}

/// How an image wants to be run: the parts of its config's `config` object that mayfly uses.
/// Empty strings read as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OciConfig {
    /// `Env`: `NAME=value` entries.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`: the arguments to the entrypoint, or the command if there is none.
    pub cmd: Vec<String>,
    /// `WorkingDir`.
    pub workdir: Option<String>,
    /// `User`: a name or id, optionally with `:group`.
    pub user: Option<String>,
    /// `StopSignal`, such as `SIGQUIT`.
    pub stop_signal: Option<String>,
}

/// The path of the blob with `digest` in the OCI layout at `dir`: `dir/blobs/<alg>/<hex>`.
/// Refuses ([`ImageError::BadBlobDigest`]) anything but `sha256:` with 64 or `sha512:` with 128
/// lowercase hex digits, so the result is always inside `dir/blobs`.
pub fn oci_blob_path(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    Ok(dir.join(blob_rel(digest)?))
}

/// Unpacks a `docker save` / `podman save` archive (a tar, possibly compressed, holding
/// `manifest.json` or an OCI layout) into `dest`, an existing empty staging directory, with
/// every safety check of [`unpack_archive`]; read the result with [`open_image_dir`]. Fails
/// with [`ImageError::BadImage`] if the archive holds neither `manifest.json` nor `index.json`.
/// On error, `dest` is left partly written for the caller to remove. `budget` bounds the
/// archive as [`unpack_archive`]'s does; the layers are unpacked (with
/// [`crate::unpack_layer_archive`]) against a budget of their own, which they share.
pub fn unpack_image_archive<R: Read>(
    input: R,
    dest: &Path,
    budget: &ImportBudget,
) -> Result<(), ImageError> {
    unpack_archive(input, dest, &NoProgress, budget)?;
    let image = ImageDir::open(dest)?;
    if image.has("index.json")? || image.has("manifest.json")? {
        Ok(())
    } else {
        Err(ImageError::BadImage {
            path: PathBuf::new(),
            reason: "the archive holds neither an OCI layout (index.json) nor a docker save \
                     manifest (manifest.json)"
                .to_owned(),
        })
    }
}

/// Reads the image in `dir`: an OCI layout if it has `oci-layout` (see [`open_oci_layout`]),
/// else a `docker save` tree if it has `manifest.json`. `tag` chooses the image where there
/// are several (an index's `org.opencontainers.image.ref.name` annotations, a save's
/// `RepoTags`); without it, there must be only one (or, in a layout, one per platform).
/// A docker-save layer's digest comes from its path when that is `blobs/<alg>/<hex>` and is
/// computed from the file otherwise; its media type is the docker tar type (gzip or zstd ones
/// if the file is compressed); the config is read from the JSON file the manifest names.
pub fn open_image_dir(dir: &Path, tag: Option<&str>) -> Result<OciImage, ImageError> {
    let image = ImageDir::open(dir)?;
    if image.has("oci-layout")? {
        return open_oci_layout(dir, tag);
    }
    if image.has("manifest.json")? {
        return open_docker_save(&image, tag);
    }
    if image.has("index.json")? {
        // Says what is missing.
        return open_oci_layout(dir, tag);
    }
    Err(ImageError::BadImage {
        path: PathBuf::new(),
        reason: "neither an OCI layout (oci-layout, index.json) nor a docker save tree \
                 (manifest.json)"
            .to_owned(),
    })
}

/// The host path of `layer`'s blob in the image at `dir`, after checking that it is a regular
/// file inside `dir` of the layer's size whose content has the layer's digest (compressed or
/// not, as stored): [`ImageError::BlobMismatch`] if not. The check reads the whole blob; the
/// path stays good as long as nothing else writes to `dir`, which is meant to be the caller's
/// own staging or store directory.
pub fn image_layer_path(dir: &Path, layer: &OciLayer) -> Result<PathBuf, ImageError> {
    let image = ImageDir::open(dir)?;
    let path = layer.path.to_str().ok_or_else(|| ImageError::BadImage {
        path: layer.path.clone(),
        reason: "the layer path is not UTF-8".to_owned(),
    })?;
    let rel = image.member(path, "the layer path")?;
    image.check_blob(&rel, &layer.digest, layer.size)?;
    Ok(dir.join(rel))
}
