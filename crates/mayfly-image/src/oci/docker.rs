//! `docker save` trees: `manifest.json` names the config and layer files.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::PathBuf;

use super::blobs::{Alg, check_digest, digest_of_rel};
use super::dir::ImageDir;
use super::documents::{ConfigFile, SaveEntry};
use super::{DOCKER_TAR, DOCKER_TAR_GZIP, OCI_TAR_ZSTD, OciImage, OciLayer};
use crate::ImageError;
use crate::inode::stat_fd;

/// A `docker save` tree: `manifest.json` names the config and layer files.
pub(super) fn open_docker_save(image: &ImageDir) -> Result<OciImage, ImageError> {
    let entries: Vec<SaveEntry> = image.read_json("manifest.json")?;
    let [entry] = <[SaveEntry; 1]>::try_from(entries).map_err(|entries| {
        image.bad(
            "manifest.json",
            format!("it describes {} images; save one at a time", entries.len()),
        )
    })?;
    let config_rel = image.member(&entry.config, "the config path")?;
    let config_file: ConfigFile = match digest_of_rel(&config_rel) {
        Some(digest) => {
            let bytes = image.read_limited(&config_rel)?;
            check_digest(&image.host(&config_rel), &bytes, &digest)?;
            image.parse(&config_rel, &bytes)?
        }
        None => image.read_json(&config_rel)?,
    };
    let layers = entry
        .layers
        .iter()
        .map(|path| {
            let rel = image.member(path, "a layer path")?;
            let mut file = image.open_file(&rel)?;
            let host = image.host(&rel);
            let size = stat_fd(file.as_fd())
                .map_err(|source| ImageError::Stat {
                    path: host.clone(),
                    source,
                })?
                .stx_size;
            let mut magic = [0; 4];
            let len = read_full(&mut file, &mut magic).map_err(|source| ImageError::Read {
                path: host.clone(),
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
                path: PathBuf::from(rel),
            })
        })
        .collect::<Result<_, ImageError>>()?;
    Ok(OciImage {
        layers,
        config: config_file.into(),
    })
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
