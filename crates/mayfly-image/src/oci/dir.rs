//! An image directory held open, every file in it opened beneath it.
//!
//! Errors name files relative to the image directory: that is how whoever made the image knows
//! them, and the directory itself may be the daemon's staging copy of an uploaded archive,
//! which means nothing to the user.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use serde::de::DeserializeOwned;

use super::blobs::{Alg, Hasher, blob_rel, check_digest, parse_digest};
use super::documents::Descriptor;
use crate::ImageError;
use crate::archive::normalize;
use crate::inode::{file_type, stat_at, stat_fd};
use crate::tree::open_root;

/// The largest index, manifest or config document read (image configs with a long history
/// reach a few hundred KiB; they are parsed in memory, so this bounds what one costs).
const MAX_JSON: u64 = 4 << 20;

/// An image directory held open, every file in it opened beneath it.
pub(super) struct ImageDir {
    fd: OwnedFd,
}

impl ImageDir {
    pub(super) fn open(path: &Path) -> Result<Self, ImageError> {
        let fd = open_root(path).map_err(|source| ImageError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self { fd })
    }

    pub(super) fn bad(&self, rel: &str, reason: String) -> ImageError {
        ImageError::BadImage {
            path: PathBuf::from(rel),
            reason,
        }
    }

    /// Whether the top-level entry `name` exists (whatever it is).
    pub(super) fn has(&self, name: &str) -> Result<bool, ImageError> {
        let c_name = CString::new(name).map_err(|_| self.bad(name, "a NUL byte".to_owned()))?;
        match stat_at(self.fd.as_fd(), &c_name) {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ImageError::Stat {
                path: PathBuf::from(name),
                source,
            }),
        }
    }

    /// Normalises a path the image names (`what`, for errors) into one relative to the image
    /// directory, refusing absolute paths and `..`.
    pub(super) fn member(&self, path: &str, what: &str) -> Result<String, ImageError> {
        let subject = format!("{what} `{path}`");
        let reason = match normalize(path.as_bytes()) {
            // Normalising only drops whole components, so valid UTF-8 stays valid.
            Ok(rel) if !rel.is_empty() => return Ok(String::from_utf8_lossy(&rel).into_owned()),
            Ok(_) => format!("{subject} names the image directory itself"),
            Err(problem) => problem.reason(&subject),
        };
        Err(self.bad("", reason))
    }

    /// Opens the regular file at `rel` for reading without ever leaving the image directory.
    /// A file that is not there is the image's fault ([`ImageError::Missing`]).
    pub(super) fn open_file(&self, rel: &str) -> Result<File, ImageError> {
        let shown = PathBuf::from(rel);
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
            rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => ImageError::Missing {
                path: PathBuf::from(rel),
            },
            rustix::io::Errno::LOOP => self.bad(rel, "it is a loop of symlinks".to_owned()),
            err => ImageError::Open {
                path: shown.clone(),
                source: err.into(),
            },
        })?;
        let st = stat_fd(fd.as_fd()).map_err(|source| ImageError::Stat {
            path: shown.clone(),
            source,
        })?;
        if file_type(&st) != FileType::RegularFile {
            return Err(self.bad(rel, "not a regular file".to_owned()));
        }
        Ok(File::from(fd))
    }

    /// The whole content of `rel`, refused if larger than [`MAX_JSON`].
    pub(super) fn read_limited(&self, rel: &str) -> Result<Vec<u8>, ImageError> {
        let file = self.open_file(rel)?;
        let mut bytes = Vec::new();
        file.take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ImageError::Read {
                path: PathBuf::from(rel),
                source,
            })?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(self.bad(
                rel,
                format!(
                    "larger than {}: not an image document",
                    mayfly_api::size::format_size(MAX_JSON)
                ),
            ));
        }
        Ok(bytes)
    }

    pub(super) fn parse<T: DeserializeOwned>(
        &self,
        rel: &str,
        bytes: &[u8],
    ) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|err| self.bad(rel, format!("invalid JSON: {err}")))
    }

    pub(super) fn read_json<T: DeserializeOwned>(&self, rel: &str) -> Result<T, ImageError> {
        let bytes = self.read_limited(rel)?;
        self.parse(rel, &bytes)
    }

    /// Reads and parses the JSON blob `descriptor` points at, checking its size and digest.
    pub(super) fn read_blob_json<T: DeserializeOwned>(
        &self,
        descriptor: &Descriptor,
    ) -> Result<T, ImageError> {
        let rel = blob_rel(&descriptor.digest)?;
        let bytes = self.read_limited(&rel)?;
        if bytes.len() as u64 != descriptor.size {
            return Err(ImageError::BlobMismatch {
                path: PathBuf::from(&rel),
                expected: format!("{} bytes", descriptor.size),
                actual: format!("{} bytes", bytes.len()),
            });
        }
        check_digest(Path::new(&rel), &bytes, &descriptor.digest)?;
        self.parse(&rel, &bytes)
    }

    /// The `alg` digest of the file at `rel`.
    pub(super) fn hash_file(&self, rel: &str, alg: Alg) -> Result<String, ImageError> {
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
                        path: PathBuf::from(rel),
                        source,
                    });
                }
            }
        }
    }

    /// The size of the regular file at `rel`.
    pub(super) fn size_of(&self, rel: &str) -> Result<u64, ImageError> {
        Ok(stat_fd(self.open_file(rel)?.as_fd())
            .map_err(|source| ImageError::Stat {
                path: PathBuf::from(rel),
                source,
            })?
            .stx_size)
    }

    /// Fails unless the file at `rel` is there with `size` bytes.
    pub(super) fn check_size(&self, rel: &str, size: u64) -> Result<(), ImageError> {
        let actual_size = self.size_of(rel)?;
        if actual_size != size {
            return Err(ImageError::BlobMismatch {
                path: PathBuf::from(rel),
                expected: format!("{size} bytes"),
                actual: format!("{actual_size} bytes"),
            });
        }
        Ok(())
    }

    /// Fails unless the file at `rel` has `size` bytes and `digest`.
    pub(super) fn check_blob(&self, rel: &str, digest: &str, size: u64) -> Result<(), ImageError> {
        let (alg, _) = parse_digest(digest)?;
        self.check_size(rel, size)?;
        let actual = self.hash_file(rel, alg)?;
        if actual != digest {
            return Err(ImageError::BlobMismatch {
                path: PathBuf::from(rel),
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(())
    }
}
