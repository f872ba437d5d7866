//! OCI image layouts: `oci-layout`, `index.json`, and the manifest chosen for this platform.

use std::path::{Path, PathBuf};

use super::blobs::blob_rel;
use super::dir::ImageDir;
use super::documents::{ConfigFile, Descriptor, Document, LayoutFile};
use super::{ARCH, CONFIG_TYPES, INDEX_TYPES, MANIFEST_TYPES, OS, OciImage, OciLayer};
use crate::ImageError;

/// Reads the OCI image layout at `dir` (`oci-layout`, `index.json`, blobs under
/// `blobs/<alg>/<hex>`): the manifest the index names (the one for Linux on this machine's
/// architecture if it names several, or its only one unless that is for another platform;
/// an index inside the index is followed one level), then the manifest's config and layers.
/// The manifest and config blobs are checked against their digests; layer blobs are checked by
/// [`image_layer_path`].
pub fn open_oci_layout(dir: &Path) -> Result<OciImage, ImageError> {
    let image = ImageDir::open(dir)?;
    let layout: LayoutFile = image.read_json("oci-layout")?;
    if !layout.image_layout_version.starts_with("1.") {
        return Err(image.bad(
            "oci-layout",
            format!(
                "image layout version {} is not supported",
                layout.image_layout_version
            ),
        ));
    }
    let index: Document = image.read_json("index.json")?;
    let mut chosen = select(&image, "index.json", index.manifests.as_deref())?;
    let mut document: Document = image.read_blob_json(&chosen)?;
    if is_index(&image, &chosen, &document)? {
        let rel = blob_rel(&chosen.digest)?;
        chosen = select(&image, &rel, document.manifests.as_deref())?;
        document = image.read_blob_json(&chosen)?;
        if is_index(&image, &chosen, &document)? {
            return Err(image.bad(
                &blob_rel(&chosen.digest)?,
                "an index nested more than one level deep".to_owned(),
            ));
        }
    }
    let manifest_rel = blob_rel(&chosen.digest)?;
    let (Some(config), Some(layers)) = (document.config, document.layers) else {
        return Err(image.bad(
            &manifest_rel,
            "a manifest without config or layers".to_owned(),
        ));
    };
    if !config.media_type.is_empty() && !CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(image.bad(
            &manifest_rel,
            format!(
                "not a container image: its config is of type `{}`",
                config.media_type
            ),
        ));
    }
    let config_file: ConfigFile = image.read_blob_json(&config)?;
    let layers = layers
        .into_iter()
        .map(|layer| {
            if !is_layer_type(&layer.media_type) {
                return Err(image.bad(
                    &manifest_rel,
                    format!(
                        "layer {} has the unsupported media type `{}`",
                        layer.digest, layer.media_type
                    ),
                ));
            }
            Ok(OciLayer {
                path: PathBuf::from(blob_rel(&layer.digest)?),
                digest: layer.digest,
                media_type: layer.media_type,
                size: layer.size,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(OciImage {
        layers,
        config: config_file.into(),
    })
}

/// Picks the manifest for this platform from an index's list (found in `rel`).
fn select(
    image: &ImageDir,
    rel: &str,
    manifests: Option<&[Descriptor]>,
) -> Result<Descriptor, ImageError> {
    let platform = |d: &Descriptor| {
        d.platform
            .as_ref()
            .map(|p| format!("{}/{}", p.os, p.architecture))
    };
    let ours = |d: &Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == OS && p.architecture == ARCH)
    };
    match manifests.unwrap_or_default() {
        [] => Err(image.bad(rel, "it lists no manifest".to_owned())),
        [only] => match platform(only) {
            Some(other) if !ours(only) => Err(image.bad(
                rel,
                format!("its only image is for {other}, not {OS}/{ARCH}"),
            )),
            _ => Ok(only.clone()),
        },
        several => several.iter().find(|d| ours(d)).cloned().ok_or_else(|| {
            let offered: Vec<String> = several
                .iter()
                .map(|d| platform(d).unwrap_or_else(|| "unspecified".to_owned()))
                .collect();
            image.bad(
                rel,
                format!(
                    "none of its images is for {OS}/{ARCH} (it has {})",
                    offered.join(", ")
                ),
            )
        }),
    }
}

/// Whether the document `descriptor` points at is an index (as opposed to a manifest), by
/// the descriptor's media type, else the document's own, else its shape.
fn is_index(
    image: &ImageDir,
    descriptor: &Descriptor,
    document: &Document,
) -> Result<bool, ImageError> {
    let media_type = match (&*descriptor.media_type, &document.media_type) {
        ("", Some(own)) => own.as_str(),
        (given, _) => given,
    };
    if INDEX_TYPES.contains(&media_type) {
        Ok(true)
    } else if MANIFEST_TYPES.contains(&media_type) {
        Ok(false)
    } else if media_type.is_empty() {
        Ok(document.manifests.is_some())
    } else {
        Err(image.bad(
            &blob_rel(&descriptor.digest)?,
            format!("`{media_type}` is neither an image index nor an image manifest"),
        ))
    }
}

/// Whether a layer of this media type is a tarball we can unpack (plain, gzip or zstd).
fn is_layer_type(media_type: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "application/vnd.oci.image.layer.v1.",
        "application/vnd.oci.image.layer.nondistributable.v1.",
        "application/vnd.docker.image.rootfs.diff.",
        "application/vnd.docker.image.rootfs.foreign.diff.",
    ];
    PREFIXES.iter().any(|prefix| {
        media_type
            .strip_prefix(prefix)
            .is_some_and(|rest| matches!(rest, "tar" | "tar+gzip" | "tar+zstd" | "tar.gzip"))
    })
}
