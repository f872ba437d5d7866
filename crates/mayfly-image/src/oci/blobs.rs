//! Blob digests: validating them, hashing content, comparing.

use std::path::Path;

use sha2::Digest as _;

use crate::ImageError;

/// A hash algorithm OCI digests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alg {
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
pub(super) fn parse_digest(digest: &str) -> Result<(Alg, &str), ImageError> {
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
pub(super) fn blob_rel(digest: &str) -> Result<String, ImageError> {
    let (alg, hex) = parse_digest(digest)?;
    Ok(format!("blobs/{}/{hex}", alg.name()))
}

/// The digest a path of the form `blobs/<alg>/<hex>` names, if it is one.
pub(super) fn digest_of_rel(rel: &str) -> Option<String> {
    let (alg, hex) = rel.strip_prefix("blobs/")?.split_once('/')?;
    let digest = format!("{alg}:{hex}");
    parse_digest(&digest).ok()?;
    Some(digest)
}

/// A running hash of one of the digest algorithms.
pub(super) enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub(super) fn new(alg: Alg) -> Self {
        match alg {
            Alg::Sha256 => Self::Sha256(sha2::Sha256::new()),
            Alg::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest in `alg:hex` form.
    pub(super) fn finish(self) -> String {
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
pub(super) fn check_digest(path: &Path, bytes: &[u8], digest: &str) -> Result<(), ImageError> {
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
