//! `docker save` trees: `manifest.json` names the config and layer files.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::blobs::{Alg, check_digest, digest_of_rel};
use super::dir::ImageDir;
use super::documents::{ConfigFile, SaveEntry};
use super::select::{Offer, choose};
use super::{DOCKER_TAR, DOCKER_TAR_GZIP, OCI_TAR_ZSTD, OciImage, OciLayer};
use crate::ImageError;
use crate::inode::stat_fd;

/// A `docker save` tree: `manifest.json` names the config and layer files of each image; the
/// image is chosen by `tag` among its `RepoTags` (or its config's digest), or is the only one.
pub(super) fn open_docker_save(
    image: &ImageDir,
    tag: Option<&str>,
) -> Result<OciImage, ImageError> {
    let entries: Vec<SaveEntry> = image.read_json("manifest.json")?;
    if entries.is_empty() {
        return Err(image.bad("manifest.json", "it lists no image".to_owned()));
    }
    let offers: Vec<Offer> = entries
        .iter()
        .map(|entry| Offer {
            names: entry.repo_tags.clone().unwrap_or_default(),
            id: config_id(&entry.config),
            platform: None,
        })
        .collect();
    let chosen = choose(&offers, tag, "this `docker save` archive")?;
    let Some(entry) = entries.into_iter().nth(chosen) else {
        return Err(image.bad("manifest.json", "it lists no image".to_owned()));
    };
    let name = entry.repo_tags.as_ref().and_then(|t| t.first().cloned());
    let config_rel = image.member(&entry.config, "the config path")?;
    let config_file: ConfigFile = match digest_of_rel(&config_rel) {
        Some(digest) => {
            let bytes = image.read_limited(&config_rel)?;
            check_digest(Path::new(&config_rel), &bytes, &digest)?;
            image.parse(&config_rel, &bytes)?
        }
        None => image.read_json(&config_rel)?,
    };
    let count = entry.layers.len();
    let layers = entry
        .layers
        .iter()
        .enumerate()
        // The digest is not known before the file is read.
        .map(|(i, path)| save_layer(image, path).map_err(|err| err.in_layer(i, count, "")))
        .collect::<Result<_, ImageError>>()?;
    Ok(OciImage {
        name,
        layers,
        config: config_file.into(),
    })
}

/// The layer file `path` of a `docker save` manifest.
fn save_layer(image: &ImageDir, path: &str) -> Result<OciLayer, ImageError> {
    let rel = image.member(path, "a layer path")?;
    let mut file = image.open_file(&rel)?;
    let shown = PathBuf::from(&rel);
    let size = stat_fd(file.as_fd())
        .map_err(|source| ImageError::Stat {
            path: shown.clone(),
            source,
        })?
        .stx_size;
    let mut magic = [0; 4];
    let len = read_full(&mut file, &mut magic).map_err(|source| ImageError::Read {
        path: shown.clone(),
        source,
    })?;
    let media_type = match &magic[..len] {
        [0x1f, 0x8b, ..] => DOCKER_TAR_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd] => OCI_TAR_ZSTD,
        _ => DOCKER_TAR,
    };
    let digest = match digest_of_rel(&rel) {
        Some(digest) => digest,
        None => image.hash_file(&rel, Alg::Sha256)?,
    };
    Ok(OciLayer {
        digest,
        media_type: media_type.to_owned(),
        size,
        path: shown,
    })
}

/// The id of a `docker save` image: its config's digest, from the config's file name
/// (`<hex>.json` or `blobs/sha256/<hex>`), or the name itself.
fn config_id(config: &str) -> String {
    let rel = config.trim_start_matches("./");
    if let Some(digest) = digest_of_rel(rel) {
        return digest;
    }
    match rel.strip_suffix(".json") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("sha256:{hex}")
        }
        _ => config.to_owned(),
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(len)
}
