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
//!   16 MiB only;
//! - nothing in the directory is written.
//!
//! `docker save` names its older layers by an id that is not their content digest; their
//! digest is computed from the file, so a layer always has the digest of its blob as stored.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::Digest as _;

use crate::archive::normalize;
use crate::inode::{file_type, stat_at, stat_fd};
use crate::tree::open_root;
use crate::{ImageError, NoProgress, unpack_archive};

/// The largest index, manifest or config document read (image configs with a long history
/// reach a few hundred KiB).
const MAX_JSON: u64 = 16 << 20;

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const DOCKER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The platform images are chosen for: Linux on this machine's architecture, in OCI's names.
const OS: &str = "linux";
const ARCH: &str = if cfg!(target_arch = "x86_64") {
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

/// Unpacks a `docker save` / `podman save` archive (a tar, possibly compressed, holding
/// `manifest.json` or an OCI layout) into `dest`, an existing empty staging directory, with
/// every safety check of [`unpack_archive`]; read the result with [`open_image_dir`]. Fails
/// with [`ImageError::BadImage`] if the archive holds neither `manifest.json` nor `index.json`.
/// On error, `dest` is left partly written for the caller to remove.
pub fn unpack_image_archive<R: Read>(input: R, dest: &Path) -> Result<(), ImageError> {
    unpack_archive(input, dest, &NoProgress)?;
    let image = ImageDir::open(dest)?;
    if image.has("index.json")? || image.has("manifest.json")? {
        Ok(())
    } else {
        Err(ImageError::BadImage {
            path: dest.to_owned(),
            reason: "the archive holds neither an OCI layout (index.json) nor a docker save \
                     manifest (manifest.json)"
                .to_owned(),
        })
    }
}

/// Reads the image in `dir`: an OCI layout if it has `oci-layout` (see [`open_oci_layout`]),
/// else a `docker save` tree if it has `manifest.json`, which must describe exactly one image.
/// A docker-save layer's digest comes from its path when that is `blobs/<alg>/<hex>` and is
/// computed from the file otherwise; its media type is the docker tar type (gzip or zstd ones
/// if the file is compressed); the config is read from the JSON file the manifest names.
pub fn open_image_dir(dir: &Path) -> Result<OciImage, ImageError> {
    let image = ImageDir::open(dir)?;
    if image.has("oci-layout")? {
        return open_oci_layout(dir);
    }
    if image.has("manifest.json")? {
        return open_docker_save(&image);
    }
    if image.has("index.json")? {
        // Says what is missing.
        return open_oci_layout(dir);
    }
    Err(ImageError::BadImage {
        path: dir.to_owned(),
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
        path: dir.join(&layer.path),
        reason: "the layer path is not UTF-8".to_owned(),
    })?;
    let rel = image.member(path, "the layer path")?;
    image.check_blob(&rel, &layer.digest, layer.size)?;
    Ok(dir.join(rel))
}

/// A `docker save` tree: `manifest.json` names the config and layer files.
fn open_docker_save(image: &ImageDir) -> Result<OciImage, ImageError> {
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

/// A hash algorithm OCI digests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Sha256,
    Sha512,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }
}

/// Splits a blob digest into algorithm and hex digits, refusing anything else.
fn parse_digest(digest: &str) -> Result<(Alg, &str), ImageError> {
    let bad = || ImageError::BadBlobDigest(digest.to_owned());
    let (alg, hex) = digest.split_once(':').ok_or_else(bad)?;
    let (alg, len) = match alg {
        "sha256" => (Alg::Sha256, 64),
        "sha512" => (Alg::Sha512, 128),
        _ => return Err(bad()),
    };
    if hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok((alg, hex))
    } else {
        Err(bad())
    }
}

/// `blobs/<alg>/<hex>` for a valid digest.
fn blob_rel(digest: &str) -> Result<String, ImageError> {
    let (alg, hex) = parse_digest(digest)?;
    Ok(format!("blobs/{}/{hex}", alg.name()))
}

/// The digest a path of the form `blobs/<alg>/<hex>` names, if it is one.
fn digest_of_rel(rel: &str) -> Option<String> {
    let (alg, hex) = rel.strip_prefix("blobs/")?.split_once('/')?;
    let digest = format!("{alg}:{hex}");
    parse_digest(&digest).ok()?;
    Some(digest)
}

/// A running hash of one of the digest algorithms.
enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(alg: Alg) -> Self {
        match alg {
            Alg::Sha256 => Self::Sha256(sha2::Sha256::new()),
            Alg::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest in `alg:hex` form.
    fn finish(self) -> String {
        let (alg, bytes) = match self {
            Self::Sha256(h) => (Alg::Sha256, h.finalize().to_vec()),
            Self::Sha512(h) => (Alg::Sha512, h.finalize().to_vec()),
        };
        let mut out = format!("{}:", alg.name());
        for byte in bytes {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

/// Fails unless `bytes` (read from `path`) have `digest`.
fn check_digest(path: &Path, bytes: &[u8], digest: &str) -> Result<(), ImageError> {
    let (alg, _) = parse_digest(digest)?;
    let mut hasher = Hasher::new(alg);
    hasher.update(bytes);
    let actual = hasher.finish();
    if actual == digest {
        Ok(())
    } else {
        Err(ImageError::BlobMismatch {
            path: path.to_owned(),
            expected: digest.to_owned(),
            actual,
        })
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

/// An image directory held open, every file in it opened beneath it.
struct ImageDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl ImageDir {
    fn open(path: &Path) -> Result<Self, ImageError> {
        let fd = open_root(path).map_err(|source| ImageError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    fn host(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    fn bad(&self, rel: &str, reason: String) -> ImageError {
        ImageError::BadImage {
            path: self.host(rel),
            reason,
        }
    }

    /// Whether the top-level entry `name` exists (whatever it is).
    fn has(&self, name: &str) -> Result<bool, ImageError> {
        let c_name = CString::new(name).map_err(|_| self.bad(name, "a NUL byte".to_owned()))?;
        match stat_at(self.fd.as_fd(), &c_name) {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ImageError::Stat {
                path: self.host(name),
                source,
            }),
        }
    }

    /// Normalises a path the image names (`what`, for errors) into one relative to the image
    /// directory, refusing absolute paths and `..`.
    fn member(&self, path: &str, what: &str) -> Result<String, ImageError> {
        let subject = format!("{what} `{path}`");
        let reason = match normalize(path.as_bytes()) {
            // Normalising only drops whole components, so valid UTF-8 stays valid.
            Ok(rel) if !rel.is_empty() => return Ok(String::from_utf8_lossy(&rel).into_owned()),
            Ok(_) => format!("{subject} names the image directory itself"),
            Err(problem) => problem.reason(&subject),
        };
        Err(ImageError::BadImage {
            path: self.path.clone(),
            reason,
        })
    }

    /// Opens the regular file at `rel` for reading without ever leaving the image directory.
    fn open_file(&self, rel: &str) -> Result<File, ImageError> {
        let host = self.host(rel);
        let fd = rfs::openat2(
            self.fd.as_fd(),
            rel,
            // O_NONBLOCK: opening a FIFO planted in the image must not hang.
            OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
        )
        .map_err(|err| match err {
            rustix::io::Errno::XDEV => {
                self.bad(rel, "it resolves to outside the image directory".to_owned())
            }
            err => ImageError::Open {
                path: host.clone(),
                source: err.into(),
            },
        })?;
        let st = stat_fd(fd.as_fd()).map_err(|source| ImageError::Stat {
            path: host.clone(),
            source,
        })?;
        if file_type(&st) != FileType::RegularFile {
            return Err(self.bad(rel, "not a regular file".to_owned()));
        }
        Ok(File::from(fd))
    }

    /// The whole content of `rel`, refused if larger than [`MAX_JSON`].
    fn read_limited(&self, rel: &str) -> Result<Vec<u8>, ImageError> {
        let file = self.open_file(rel)?;
        let mut bytes = Vec::new();
        file.take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ImageError::Read {
                path: self.host(rel),
                source,
            })?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(self.bad(rel, format!("larger than {MAX_JSON} bytes")));
        }
        Ok(bytes)
    }

    fn parse<T: DeserializeOwned>(&self, rel: &str, bytes: &[u8]) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|err| self.bad(rel, format!("invalid JSON: {err}")))
    }

    fn read_json<T: DeserializeOwned>(&self, rel: &str) -> Result<T, ImageError> {
        let bytes = self.read_limited(rel)?;
        self.parse(rel, &bytes)
    }

    /// Reads and parses the JSON blob `descriptor` points at, checking its size and digest.
    fn read_blob_json<T: DeserializeOwned>(
        &self,
        descriptor: &Descriptor,
    ) -> Result<T, ImageError> {
        let rel = blob_rel(&descriptor.digest)?;
        let bytes = self.read_limited(&rel)?;
        let host = self.host(&rel);
        if bytes.len() as u64 != descriptor.size {
            return Err(ImageError::BlobMismatch {
                path: host,
                expected: format!("{} bytes", descriptor.size),
                actual: format!("{} bytes", bytes.len()),
            });
        }
        check_digest(&host, &bytes, &descriptor.digest)?;
        self.parse(&rel, &bytes)
    }

    /// The `alg` digest of the file at `rel`.
    fn hash_file(&self, rel: &str, alg: Alg) -> Result<String, ImageError> {
        let mut file = self.open_file(rel)?;
        let mut hasher = Hasher::new(alg);
        let mut buf = vec![0; 256 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => return Ok(hasher.finish()),
                Ok(n) => hasher.update(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ImageError::Read {
                        path: self.host(rel),
                        source,
                    });
                }
            }
        }
    }

    /// Fails unless the file at `rel` has `size` bytes and `digest`.
    fn check_blob(&self, rel: &str, digest: &str, size: u64) -> Result<(), ImageError> {
        let (alg, _) = parse_digest(digest)?;
        let host = self.host(rel);
        let actual_size = stat_fd(self.open_file(rel)?.as_fd())
            .map_err(|source| ImageError::Stat {
                path: host.clone(),
                source,
            })?
            .stx_size;
        if actual_size != size {
            return Err(ImageError::BlobMismatch {
                path: host,
                expected: format!("{size} bytes"),
                actual: format!("{actual_size} bytes"),
            });
        }
        let actual = self.hash_file(rel, alg)?;
        if actual != digest {
            return Err(ImageError::BlobMismatch {
                path: host,
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(())
    }
}

/// `oci-layout`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutFile {
    image_layout_version: String,
}

/// A content descriptor: what a document says about a blob it refers to.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

/// An image index or an image manifest; which one, the media type says (or the shape).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// An image config blob; only its `config` object matters here.
#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    env: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    stop_signal: Option<String>,
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
struct SaveEntry {
    config: String,
    #[serde(default)]
    layers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write as _;
    use std::os::unix::fs::MetadataExt as _;

    use serde_json::json;

    use super::*;
    use crate::fixtures::{Raw, TarWriter, xattrs_of};
    use crate::{flatten_layers, unpack_layer_archive};

    fn sha256(bytes: &[u8]) -> String {
        let mut hasher = Hasher::new(Alg::Sha256);
        hasher.update(bytes);
        hasher.finish()
    }

    fn file<'a>(name: &'a [u8], data: &'a [u8]) -> Raw<'a> {
        let mut raw = Raw::new(name, b'0');
        raw.data = data;
        raw
    }

    /// The base layer: `etc/gone` and `opt/app/old` are removed by the second layer.
    fn base_layer() -> Vec<u8> {
        TarWriter::default()
            .add(Raw::new(b"etc/", b'5'), &[])
            .add(file(b"etc/keep", b"kept"), &[])
            .add(file(b"etc/gone", b"deleted above"), &[])
            .add(Raw::new(b"opt/", b'5'), &[])
            .add(Raw::new(b"opt/app/", b'5'), &[])
            .add(file(b"opt/app/old", b"hidden above"), &[])
            .finish()
    }

    /// Deletes a file and replaces a directory.
    fn upper_layer() -> Vec<u8> {
        TarWriter::default()
            .add(Raw::new(b"etc/", b'5'), &[])
            .add(Raw::new(b"etc/.wh.gone", b'0'), &[])
            .add(Raw::new(b"opt/app/", b'5'), &[])
            .add(Raw::new(b"opt/app/.wh..wh..opq", b'0'), &[])
            .add(file(b"opt/app/new", b"new app"), &[])
            .finish()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn config_json() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "APP_MODE=prod"],
                "Entrypoint": ["/usr/bin/app"],
                "Cmd": ["serve", "--port", "8080"],
                "WorkingDir": "/srv/app",
                "User": "",
                "StopSignal": null,
                "Labels": {"ignored": "yes"}
            },
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap()
    }

    fn expected_config() -> OciConfig {
        OciConfig {
            env: vec![
                "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
                "APP_MODE=prod".to_owned(),
            ],
            entrypoint: vec!["/usr/bin/app".to_owned()],
            cmd: vec!["serve".to_owned(), "--port".to_owned(), "8080".to_owned()],
            workdir: Some("/srv/app".to_owned()),
            user: None,
            stop_signal: None,
        }
    }

    /// Writes `bytes` as a blob of the layout at `dir` and returns its descriptor.
    fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let digest = sha256(bytes);
        let path = oci_blob_path(dir, &digest).unwrap();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
        json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    fn json_blob(dir: &Path, media_type: &str, value: &serde_json::Value) -> serde_json::Value {
        blob(dir, media_type, &serde_json::to_vec(value).unwrap())
    }

    fn with_platform(mut descriptor: serde_json::Value, os: &str, arch: &str) -> serde_json::Value {
        descriptor["platform"] = json!({"os": os, "architecture": arch});
        descriptor
    }

    /// An OCI layout whose index points at a nested index for three platforms, ours one of them.
    fn oci_layout(dir: &Path) -> (serde_json::Value, serde_json::Value) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let base = blob(
            dir,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &gzip(&base_layer()),
        );
        let upper = blob(
            dir,
            "application/vnd.oci.image.layer.v1.tar",
            &upper_layer(),
        );
        let config = blob(dir, CONFIG_TYPES[0], &config_json());
        let manifest = json_blob(
            dir,
            MANIFEST_TYPES[0],
            &json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPES[0],
                "config": config,
                "layers": [base, upper]
            }),
        );
        // Other platforms' manifests need not be present: only ours is read.
        let other = json!({
            "mediaType": MANIFEST_TYPES[0],
            "digest": format!("sha256:{}", "0".repeat(64)),
            "size": 10
        });
        let nested = json_blob(
            dir,
            INDEX_TYPES[0],
            &json!({
                "schemaVersion": 2,
                "manifests": [
                    with_platform(other.clone(), "linux", "arm64"),
                    with_platform(manifest.clone(), "linux", ARCH),
                    with_platform(other, "unknown", "unknown"),
                ]
            }),
        );
        fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [nested]})).unwrap(),
        )
        .unwrap();
        (manifest, json!([base, upper]))
    }

    /// Unpacks each layer of `image` in `dir` next to it and returns the layer directories.
    fn unpack_layers(dir: &Path, image: &OciImage, out: &Path) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let blob = image_layer_path(dir, layer).unwrap();
                let dest = out.join(format!("layer{i}"));
                fs::create_dir(&dest).unwrap();
                unpack_layer_archive(File::open(blob).unwrap(), &dest, &NoProgress).unwrap();
                dest
            })
            .collect()
    }

    /// Checks the two unpacked layers and their flattened stack.
    fn check_layers(layers: &[PathBuf], out: &Path) {
        assert_eq!(layers.len(), 2);
        let whiteout = fs::symlink_metadata(layers[1].join("etc/gone")).unwrap();
        assert_eq!(
            (whiteout.mode(), whiteout.rdev(), whiteout.mtime()),
            (0o020_000, 0, 0)
        );
        assert_eq!(
            xattrs_of(&layers[1].join("opt/app"))
                .get("trusted.overlay.opaque")
                .map(Vec::as_slice),
            Some(&b"y"[..])
        );
        assert!(fs::symlink_metadata(layers[1].join("etc/.wh.gone")).is_err());
        let flat = out.join("flat");
        flatten_layers(layers, &flat, &NoProgress).unwrap();
        let names = |rel: &str| {
            let mut names: Vec<_> = fs::read_dir(flat.join(rel))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names("etc"), ["keep"]);
        assert_eq!(names("opt/app"), ["new"]);
    }

    #[test]
    fn reads_an_oci_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let (_, layers) = oci_layout(&dir);
        let image = open_oci_layout(&dir).unwrap();
        assert_eq!(image.config, expected_config());
        let expected: Vec<OciLayer> = layers
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let digest = d["digest"].as_str().unwrap().to_owned();
                OciLayer {
                    path: PathBuf::from(format!("blobs/sha256/{}", &digest[7..])),
                    digest,
                    media_type: d["mediaType"].as_str().unwrap().to_owned(),
                    size: d["size"].as_u64().unwrap(),
                }
            })
            .collect();
        assert_eq!(image.layers, expected);
        assert_eq!(open_image_dir(&dir).unwrap(), image);
        let layers = unpack_layers(&dir, &image, tmp.path());
        check_layers(&layers, tmp.path());
    }

    #[test]
    fn an_only_manifest_needs_no_platform() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let (manifest, _) = oci_layout(&dir);
        let index = json!({"schemaVersion": 2, "manifests": [manifest]});
        fs::write(dir.join("index.json"), index.to_string()).unwrap();
        assert_eq!(open_oci_layout(&dir).unwrap().layers.len(), 2);

        let index = json!({"manifests": [with_platform(manifest.clone(), "linux", "pdp11")]});
        fs::write(dir.join("index.json"), index.to_string()).unwrap();
        let err = open_oci_layout(&dir).unwrap_err();
        assert!(
            err.to_string().ends_with(&format!(
                "its only image is for linux/pdp11, not linux/{ARCH}"
            )),
            "{err}"
        );

        let index = json!({"manifests": [
            with_platform(manifest.clone(), "linux", "pdp11"),
            with_platform(manifest, "windows", ARCH),
        ]});
        fs::write(dir.join("index.json"), index.to_string()).unwrap();
        let err = open_oci_layout(&dir).unwrap_err();
        assert!(
            err.to_string().ends_with(&format!(
                "none of its images is for linux/{ARCH} (it has linux/pdp11, windows/{ARCH})"
            )),
            "{err}"
        );
    }

    #[test]
    fn malformed_layouts_fail_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let (manifest, layers) = oci_layout(&dir);

        // Missing index.
        fs::rename(dir.join("index.json"), tmp.path().join("index.json")).unwrap();
        let err = open_oci_layout(&dir).unwrap_err();
        assert!(
            matches!(&err, ImageError::Open { path, source }
                if *path == dir.join("index.json") && source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        let err = open_image_dir(&dir).unwrap_err();
        assert!(matches!(err, ImageError::Open { .. }), "{err:?}");
        fs::rename(tmp.path().join("index.json"), dir.join("index.json")).unwrap();

        // A digest that would climb out of the layout, in the index and in a manifest.
        let evil = "sha256:../../etc";
        let mut escaping = manifest.clone();
        escaping["digest"] = json!(evil);
        fs::write(
            dir.join("index.json"),
            json!({"manifests": [escaping]}).to_string(),
        )
        .unwrap();
        let err = open_oci_layout(&dir).unwrap_err();
        assert!(
            matches!(&err, ImageError::BadBlobDigest(d) if d == evil),
            "{err:?}"
        );
        let config = json!({"mediaType": CONFIG_TYPES[0], "digest": sha256(&config_json()), "size": config_json().len()});
        let mut evil_layer = layers[0].clone();
        evil_layer["digest"] = json!(format!("sha256:../../../../{}", "a".repeat(52)));
        let bad_manifest = json_blob(
            &dir,
            MANIFEST_TYPES[0],
            &json!({"config": config, "layers": [evil_layer]}),
        );
        fs::write(
            dir.join("index.json"),
            json!({"manifests": [bad_manifest]}).to_string(),
        )
        .unwrap();
        let err = open_oci_layout(&dir).unwrap_err();
        assert!(matches!(err, ImageError::BadBlobDigest(_)), "{err:?}");
        for bad in [
            evil,
            "sha256:",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha384:{}", "a".repeat(96)),
            &format!("sha256:{}/", "a".repeat(63)),
            &format!("sha512:{}", "a".repeat(64)),
            "",
        ] {
            assert!(
                matches!(oci_blob_path(&dir, bad), Err(ImageError::BadBlobDigest(_))),
                "{bad}"
            );
        }
        let good = format!("sha512:{}", "a".repeat(128));
        assert_eq!(
            oci_blob_path(&dir, &good).unwrap(),
            dir.join("blobs/sha512").join("a".repeat(128))
        );

        // A manifest blob that does not match its digest.
        fs::write(
            dir.join("index.json"),
            json!({"manifests": [manifest]}).to_string(),
        )
        .unwrap();
        let manifest_path = oci_blob_path(&dir, manifest["digest"].as_str().unwrap()).unwrap();
        let original = fs::read(&manifest_path).unwrap();
        let mut tampered = original.clone();
        tampered[0] = b' ';
        fs::write(&manifest_path, &tampered).unwrap();
        let err = open_oci_layout(&dir).unwrap_err();
        assert!(
            matches!(&err, ImageError::BlobMismatch { path, .. } if *path == manifest_path),
            "{err:?}"
        );
        fs::write(&manifest_path, &original).unwrap();

        // A layer blob that does not match: same size, other content; then another size.
        let image = open_oci_layout(&dir).unwrap();
        let layer_path = dir.join(&image.layers[1].path);
        let original = fs::read(&layer_path).unwrap();
        let mut tampered = original.clone();
        tampered[0] ^= 1;
        fs::write(&layer_path, &tampered).unwrap();
        let err = image_layer_path(&dir, &image.layers[1]).unwrap_err();
        assert!(
            matches!(&err, ImageError::BlobMismatch { expected, .. }
                if *expected == image.layers[1].digest),
            "{err:?}"
        );
        assert!(err.to_string().contains("expected sha256:"), "{err}");
        tampered.push(0);
        fs::write(&layer_path, &tampered).unwrap();
        let err = image_layer_path(&dir, &image.layers[1]).unwrap_err();
        assert!(
            err.to_string().ends_with(&format!(
                "expected {} bytes, found {} bytes",
                original.len(),
                original.len() + 1
            )),
            "{err}"
        );
        fs::write(&layer_path, &original).unwrap();
        image_layer_path(&dir, &image.layers[1]).unwrap();

        // A layer path or digest that was tampered with after opening.
        let mut moved = image.layers[1].clone();
        moved.path = PathBuf::from("../layout/blobs/sha256/x");
        let err = image_layer_path(&dir, &moved).unwrap_err();
        assert!(matches!(err, ImageError::BadImage { .. }), "{err:?}");
        moved.path = image.layers[1].path.clone();
        moved.digest = "sha256:..".to_owned();
        let err = image_layer_path(&dir, &moved).unwrap_err();
        assert!(matches!(err, ImageError::BadBlobDigest(_)), "{err:?}");

        // Not JSON, not a layout, not a container image.
        fs::write(dir.join("index.json"), "{").unwrap();
        let err = open_oci_layout(&dir).unwrap_err();
        assert!(err.to_string().contains("invalid JSON"), "{err}");
        let helm = json_blob(
            &dir,
            MANIFEST_TYPES[0],
            &json!({"config": blob(&dir, "application/vnd.cncf.helm.config.v1+json", b"{}"), "layers": []}),
        );
        fs::write(
            dir.join("index.json"),
            json!({"manifests": [helm]}).to_string(),
        )
        .unwrap();
        let err = open_oci_layout(&dir).unwrap_err();
        assert!(err.to_string().contains("not a container image"), "{err}");
        fs::remove_file(dir.join("oci-layout")).unwrap();
        fs::remove_file(dir.join("index.json")).unwrap();
        let err = open_image_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("neither an OCI layout"), "{err}");
    }

    /// A `docker save` archive of the old kind: layers named by id, the repeated empty layer a
    /// symlink to its first copy, the config named by its digest.
    fn docker_save(extra: &[Raw<'_>], layers: &[&str]) -> Vec<u8> {
        let base = base_layer();
        let empty = TarWriter::default().finish();
        let upper = upper_layer();
        let config = config_json();
        let config_name = format!("{}.json", &sha256(&config)[7..]);
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name,
            "RepoTags": ["app:latest"],
            "Layers": layers,
        }]))
        .unwrap();
        let mut tar = TarWriter::default();
        tar.add(file(b"aaa/layer.tar", &base), &[])
            .add(file(b"bbb/layer.tar", &empty), &[])
            .add(file(b"ccc/layer.tar", &upper), &[]);
        let mut link = Raw::new(b"ddd/layer.tar", b'2');
        link.link = b"../bbb/layer.tar";
        tar.add(link, &[]);
        tar.add(file(config_name.as_bytes(), &config), &[])
            .add(file(b"manifest.json", &manifest), &[])
            .add(file(b"repositories", b"{}"), &[]);
        for raw in extra {
            tar.add(*raw, &[]);
        }
        tar.finish()
    }

    const SAVED_LAYERS: &[&str] = &[
        "aaa/layer.tar",
        "bbb/layer.tar",
        "./ccc//layer.tar",
        "ddd/layer.tar",
    ];

    #[test]
    fn reads_a_docker_save_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = tmp.path().join("staging");
        fs::create_dir(&staging).unwrap();
        let archive = gzip(&docker_save(&[], SAVED_LAYERS));
        unpack_image_archive(&archive[..], &staging).unwrap();
        let image = open_image_dir(&staging).unwrap();
        assert_eq!(image.config, expected_config());
        let empty = TarWriter::default().finish();
        let blobs = [&base_layer(), &empty, &upper_layer(), &empty];
        let paths = [
            "aaa/layer.tar",
            "bbb/layer.tar",
            "ccc/layer.tar",
            "ddd/layer.tar",
        ];
        let expected: Vec<OciLayer> = blobs
            .iter()
            .zip(paths)
            .map(|(blob, path)| OciLayer {
                digest: sha256(blob),
                media_type: DOCKER_TAR.to_owned(),
                size: blob.len() as u64,
                path: PathBuf::from(path),
            })
            .collect();
        assert_eq!(image.layers, expected);
        let layers = unpack_layers(&staging, &image, tmp.path());
        // The empty layers add nothing to the stack.
        check_layers(&[layers[0].clone(), layers[2].clone()], tmp.path());
        assert_eq!(fs::read_dir(&layers[3]).unwrap().count(), 0);
    }

    #[test]
    fn docker_save_layers_named_by_digest_keep_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("saved");
        fs::create_dir(&dir).unwrap();
        let layer = gzip(&upper_layer());
        let digest = sha256(&layer);
        let rel = format!("blobs/sha256/{}", &digest[7..]);
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join(&rel), &layer).unwrap();
        let config = config_json();
        let config_rel = format!("blobs/sha256/{}", &sha256(&config)[7..]);
        fs::write(dir.join(&config_rel), &config).unwrap();
        let manifest = json!([{"Config": config_rel, "Layers": [rel]}]);
        fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
        let image = open_image_dir(&dir).unwrap();
        assert_eq!(
            image.layers,
            [OciLayer {
                digest: digest.clone(),
                media_type: DOCKER_TAR_GZIP.to_owned(),
                size: layer.len() as u64,
                path: PathBuf::from(&rel),
            }]
        );
        image_layer_path(&dir, &image.layers[0]).unwrap();
        // The digest in the path is checked, like an OCI blob's.
        fs::write(dir.join(&rel), gzip(&base_layer())).unwrap();
        let err = image_layer_path(&dir, &image.layers[0]).unwrap_err();
        assert!(matches!(err, ImageError::BlobMismatch { .. }), "{err:?}");
        // So is a config named by its digest.
        fs::write(dir.join(&config_rel), b"{}").unwrap();
        let err = open_image_dir(&dir).unwrap_err();
        assert!(matches!(err, ImageError::BlobMismatch { .. }), "{err:?}");

        // A save with an OCI layout inside is read as the layout.
        let layout = tmp.path().join("layout");
        oci_layout(&layout);
        fs::write(layout.join("manifest.json"), manifest.to_string()).unwrap();
        assert_eq!(
            open_image_dir(&layout).unwrap(),
            open_oci_layout(&layout).unwrap()
        );
    }

    #[test]
    fn malformed_docker_saves_fail_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let unpack = |name: &str, archive: &[u8]| {
            let staging = tmp.path().join(name);
            fs::create_dir(&staging).unwrap();
            unpack_image_archive(archive, &staging).map(|()| staging)
        };

        let staging = unpack("dotdot", &docker_save(&[], &["../../etc/passwd"])).unwrap();
        let err = open_image_dir(&staging).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "unusable image at `{}`: a layer path `../../etc/passwd` climbs out of the root \
                 with `..`",
                staging.display()
            )
        );
        let staging = unpack("absolute", &docker_save(&[], &["/etc/passwd"])).unwrap();
        assert!(matches!(
            open_image_dir(&staging),
            Err(ImageError::BadImage { .. })
        ));

        let mut escape = Raw::new(b"eee/layer.tar", b'2');
        escape.link = b"../../../../../../etc/passwd";
        let mut absolute = Raw::new(b"fff/layer.tar", b'2');
        absolute.link = b"/etc/passwd";
        let archive = docker_save(&[escape, absolute], &["aaa/layer.tar", "eee/layer.tar"]);
        let staging = unpack("escape", &archive).unwrap();
        let err = open_image_dir(&staging).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("it resolves to outside the image directory"),
            "{err}"
        );
        fs::write(
            staging.join("manifest.json"),
            json!([{"Config": "aaa/layer.tar", "Layers": ["fff/layer.tar"]}]).to_string(),
        )
        .unwrap();
        assert!(matches!(
            open_image_dir(&staging),
            Err(ImageError::BadImage { .. })
        ));
        fs::write(
            staging.join("manifest.json"),
            json!([{"Config": "x", "Layers": []}, {"Config": "y", "Layers": []}]).to_string(),
        )
        .unwrap();
        let err = open_image_dir(&staging).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("it describes 2 images; save one at a time"),
            "{err}"
        );

        let not_an_image = TarWriter::default()
            .add(file(b"hello.txt", b"hi"), &[])
            .finish();
        let err = unpack("plain", &not_an_image).unwrap_err();
        assert!(matches!(err, ImageError::BadImage { .. }), "{err:?}");
    }
}
