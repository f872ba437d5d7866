//! OCI image layouts: `oci-layout`, `index.json`, and the manifest chosen for this platform.

use std::path::{Path, PathBuf};

use super::blobs::blob_rel;
use super::dir::ImageDir;
use super::documents::{ConfigFile, Descriptor, Document, LayoutFile};
use super::select::{Offer, choose};
use super::{CONFIG_TYPES, INDEX_TYPES, MANIFEST_TYPES, OciImage, OciLayer};
use crate::ImageError;

/// Reads the OCI image layout at `dir` (`oci-layout`, `index.json`, blobs under
/// `blobs/<alg>/<hex>`): the image the index names `tag` (see the `select` module for how
/// names match), or its only image, or the one for Linux on this machine's architecture among
/// images that differ only by platform; an index inside the index is followed one level (by
/// platform). Then the manifest's config and layers. The manifest and config blobs are
/// checked against their digests, and every layer blob is checked to be there with its size
/// (its digest is checked by [`image_layer_path`](super::image_layer_path)).
pub fn open_oci_layout(dir: &Path, tag: Option<&str>) -> Result<OciImage, ImageError> {
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
    let listed = index.manifests.unwrap_or_default();
    let mut chosen = select(&image, "index.json", &listed, tag)?;
    let name = chosen.names().into_iter().next();
    let mut document: Document = image.read_blob_json(&chosen)?;
    if is_index(&image, &chosen, &document)? {
        let rel = blob_rel(&chosen.digest)?;
        chosen = select(
            &image,
            &rel,
            document.manifests.as_deref().unwrap_or_default(),
            None,
        )?;
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
    let count = layers.len();
    let layers = layers
        .into_iter()
        .enumerate()
        .map(|(i, layer)| {
            if !is_layer_type(&layer.media_type) {
                return Err(image.bad(
                    &manifest_rel,
                    format!(
                        "layer {} has the unsupported media type `{}`",
                        layer.digest, layer.media_type
                    ),
                ));
            }
            let rel = blob_rel(&layer.digest)?;
            image
                .check_size(&rel, layer.size)
                .map_err(|e| e.in_layer(i, count, &layer.digest))?;
            Ok(OciLayer {
                path: PathBuf::from(rel),
                digest: layer.digest,
                media_type: layer.media_type,
                size: layer.size,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(OciImage {
        name,
        layers,
        config: config_file.into(),
    })
}

/// Picks a manifest (or nested index) from an index's list (found in `rel`): by `tag`, or the
/// only one, or this platform's.
fn select(
    image: &ImageDir,
    rel: &str,
    manifests: &[Descriptor],
    tag: Option<&str>,
) -> Result<Descriptor, ImageError> {
    if manifests.is_empty() {
        return Err(image.bad(rel, "it lists no manifest".to_owned()));
    }
    let offers: Vec<Offer> = manifests
        .iter()
        .map(|d| Offer {
            names: d.names(),
            id: d.digest.clone(),
            platform: d
                .platform
                .as_ref()
                .map(|p| format!("{}/{}", p.os, p.architecture)),
        })
        .collect();
    let what = if rel == "index.json" {
        "this OCI layout".to_owned()
    } else {
        format!("the image index `{rel}`")
    };
    match choose(&offers, tag, &what) {
        Ok(i) => Ok(manifests[i].clone()),
        // Platform problems are the index's: say which file.
        Err(ImageError::BadImage { path, reason }) if path.as_os_str().is_empty() => {
            Err(image.bad(rel, reason))
        }
        Err(err) => Err(err),
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
