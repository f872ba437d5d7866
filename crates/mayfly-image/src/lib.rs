//! Layers as immutable directory trees.
//!
//! This crate turns outside input (rootfs tarballs, OCI images and `docker save` archives,
//! host directories, the host's busybox) into plain directory trees that the store then files
//! under their content digest, and computes that digest. It also works on stacks of such
//! layers: squashing one into a single layer as overlayfs shows it, finding where two
//! application layers disagree, and merging their dpkg status files. It never decides where a
//! tree lives: callers pass a destination directory inside the state directory, and everything
//! written stays beneath it.
//!
//! Invariants:
//! - nothing an archive says can make us write outside the destination (no absolute paths,
//!   no `..`, no writing through symlinks, no hard links to files outside the archive), and
//!   nothing an image directory says can make us read outside it;
//! - a tree's digest depends only on what a container would see: paths, types, modes, owners,
//!   mtimes, xattrs, content, link targets, device numbers and hard-link structure.
#![forbid(unsafe_code)]

mod archive;
mod builtin;
mod conflicts;
mod copy;
mod digest;
mod dpkg;
mod error;
mod flatten;
mod inode;
mod limits;
mod mount_points;
mod oci;
mod opaque;
mod owners;
mod progress;
mod prune;
mod stack;
pub use stack::stack_shows_file;
mod tree;
mod xattr;

#[cfg(test)]
mod fixtures;

pub use archive::{unpack_archive, unpack_layer_archive, unpack_layer_archive_over};
pub use builtin::build_busybox_rootfs;
pub use conflicts::layer_conflicts;
pub use copy::{CopyOptions, copy_tree};
pub use digest::{Digest, tree_digest};
pub use dpkg::{DpkgConflict, merge_dpkg_status};
pub use error::ImageError;
pub use flatten::flatten_layers;
pub use limits::{ImportBudget, ImportLimits, Limit, MinFree};
pub use mount_points::mount_points;
pub use oci::{
    OciConfig, OciImage, OciLayer, image_layer_path, oci_blob_path, open_image_dir,
    open_oci_layout, unpack_image_archive,
};
pub use opaque::{OpaqueReport, drop_needless_opaque};
pub use owners::{IdRange, shift_owners, upper_to_layer};
pub use progress::{NoProgress, Progress, TreeStats};
pub use prune::prune_tree;
pub use tree::{remove_tree, tree_stats, tree_usage};
pub use xattr::XattrPolicy;
