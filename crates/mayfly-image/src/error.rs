//! The one error type of this crate.
//!
//! Every variant names the step that failed and the path it failed on, so a message alone tells
//! an operator where to look. Paths from archives are the archive's own names (they mean more to
//! whoever built the archive than a path under the state directory); paths elsewhere are the
//! host paths the caller passed, joined with the relative path inside the tree.

use std::io;
use std::path::PathBuf;

use crate::Limit;

/// What went wrong while importing, copying, hashing, building or removing a tree.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Opening a file or directory failed.
    #[error("cannot open `{path}`")]
    Open {
        /// The path that could not be opened.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading a file, directory listing or link target failed.
    #[error("cannot read `{path}`")]
    Read {
        /// The path that could not be read.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Looking up a path's metadata failed.
    #[error("cannot stat `{path}`")]
    Stat {
        /// The path that could not be examined.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Creating a file, directory, symlink or device node failed.
    #[error("cannot create `{path}`")]
    Create {
        /// The path that could not be created.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing file content failed.
    #[error("cannot write `{path}`")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Changing the owner failed.
    #[error("cannot set the owner of `{path}`")]
    SetOwner {
        /// The path whose owner could not be set.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Changing the permission bits failed.
    #[error("cannot set the mode of `{path}`")]
    SetMode {
        /// The path whose mode could not be set.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Changing the timestamps failed.
    #[error("cannot set the mtime of `{path}`")]
    SetTimes {
        /// The path whose timestamps could not be set.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Listing or reading extended attributes failed.
    #[error("cannot read the xattrs of `{path}`")]
    ReadXattrs {
        /// The path whose xattrs could not be read.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Setting one extended attribute failed.
    #[error("cannot set xattr `{name}` on `{path}`")]
    SetXattr {
        /// The path the xattr was meant for.
        path: PathBuf,
        /// The xattr's name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Creating a hard link failed.
    #[error("cannot hard-link `{path}` to `{target}`")]
    Link {
        /// The new link.
        path: PathBuf,
        /// The existing file it should share an inode with.
        target: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Removing a file or directory failed.
    #[error("cannot remove `{path}`")]
    Remove {
        /// The path that could not be removed.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A removal met another mount; nothing below it was touched.
    #[error("refusing to remove `{path}`: it is a mount point")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
    },
    /// A destination that must start empty has something in it.
    #[error("`{path}` is not an empty directory")]
    NotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// An archive entry was refused because unpacking it could escape or corrupt the tree.
    #[error("refusing archive entry `{entry}`: {reason}")]
    UnsafeEntry {
        /// The entry's name as the archive spells it.
        entry: String,
        /// Why it is unsafe.
        reason: String,
    },
    /// An archive entry is of a kind this crate does not unpack.
    #[error("unsupported archive entry `{entry}`: {kind}")]
    UnsupportedEntry {
        /// The entry's name as the archive spells it.
        entry: String,
        /// What about it is unsupported.
        kind: String,
    },
    /// A string is not a digest of the form `blake3:<64 lowercase hex>`.
    #[error("invalid digest `{0}`: expected `blake3:` and 64 lowercase hex digits")]
    BadDigest(String),
    /// A string is not an OCI blob digest (`sha256:` and 64, or `sha512:` and 128, lowercase
    /// hex digits).
    #[error(
        "invalid blob digest `{0}`: expected `sha256:` and 64 or `sha512:` and 128 lowercase hex digits"
    )]
    BadBlobDigest(String),
    /// An image directory (OCI layout or `docker save` tree) is malformed, incomplete or not
    /// supported.
    #[error("unusable image: {}{reason}", at(path))]
    BadImage {
        /// The file that is wrong, relative to the image directory (empty: the image itself).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file the image refers to is not in it.
    #[error("`{}` is missing from the image", path.display())]
    Missing {
        /// The file, relative to the image directory.
        path: PathBuf,
    },
    /// A blob's content does not match the digest or size that refers to it.
    #[error("blob `{}` does not match its descriptor: expected {expected}, found {actual}", path.display())]
    BlobMismatch {
        /// The blob file, relative to the image directory.
        path: PathBuf,
        /// The digest or size the image promised.
        expected: String,
        /// What the file holds.
        actual: String,
    },
    /// An image directory or archive holds several images and the one asked for is not
    /// among them, or none was asked for, or the name asked for fits several.
    #[error("{problem} (it has {})", offered.join(", "))]
    ImageChoice {
        /// What is wrong with the choice.
        problem: String,
        /// The images on offer, by their names (tags), or ids for those without one.
        offered: Vec<String>,
    },
    /// Something failed with one layer of an image.
    #[error("layer {index} of {count}{} of the image", if digest.is_empty() { String::new() } else { format!(" ({digest})") })]
    Layer {
        /// Its position, 1 for the lowest.
        index: usize,
        /// How many layers the image has.
        count: usize,
        /// The digest of its blob (empty when it is not known yet).
        digest: String,
        /// What failed.
        #[source]
        source: Box<ImageError>,
    },
    /// The archive is corrupt, truncated, not a tar, or badly compressed.
    #[error("corrupt or unsupported archive")]
    BadArchive {
        /// What the decoder or tar reader reported.
        #[source]
        source: io::Error,
    },
    /// An import limit was reached; nothing more was read or written.
    #[error("{what} ({}); {}", limit.flag(), limit.advice())]
    Limit {
        /// Which limit.
        limit: Limit,
        /// What went past it, with the limit's value.
        what: String,
    },
    /// The host busybox could not be run.
    #[error("cannot run `{path}`")]
    RunBusybox {
        /// The busybox binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The host busybox ran but its answer is unusable.
    #[error("unusable output from `{path}`: {reason}")]
    BusyboxOutput {
        /// The busybox binary.
        path: PathBuf,
        /// What is wrong with the output.
        reason: String,
    },
}

/// `` `path`: `` for a file of an image, nothing for the image itself.
fn at(path: &std::path::Path) -> String {
    if path.as_os_str().is_empty() {
        String::new()
    } else {
        format!("`{}`: ", path.display())
    }
}

impl ImageError {
    /// The error itself, or for a [`ImageError::Layer`], what failed in the layer.
    pub fn cause(&self) -> &ImageError {
        match self {
            Self::Layer { source, .. } => source.cause(),
            other => other,
        }
    }

    /// `self`, said of layer `index` (from 0) of `count` with `digest`.
    pub fn in_layer(self, index: usize, count: usize, digest: &str) -> Self {
        Self::Layer {
            index: index + 1,
            count,
            digest: digest.to_owned(),
            source: Box::new(self),
        }
    }

    /// Wraps an error from reading or decoding the archive stream.
    pub(crate) fn bad_archive(source: io::Error) -> Self {
        Self::BadArchive { source }
    }

    /// An import limit reached.
    pub(crate) fn limit(limit: Limit, what: String) -> Self {
        Self::Limit { limit, what }
    }
}
