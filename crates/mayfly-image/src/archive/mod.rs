//! Unpacking rootfs tarballs and OCI image layers: the one place where untrusted input becomes
//! files, as root.
//!
//! Invariants, each enforced here rather than trusted to the tar reader:
//! - every name is normalised and refused if absolute or containing `..`;
//! - every parent directory is resolved from the destination's descriptor with `openat2`
//!   (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | …`), so nothing is ever written through a symlink,
//!   whether the archive planted it or not, and nothing leaves the destination's mount;
//! - leaves are created with `O_EXCL`/`O_NOFOLLOW`, `symlinkat`, `mknodat` or `linkat`, none of
//!   which follow a symlink at the final component;
//! - a hard link may only point at a regular file this archive already unpacked;
//! - owners are the numeric ids of the header, never looked up by name on the host;
//! - only portable xattrs survive ([`XattrPolicy::Portable`]): an archive must not be able to
//!   smuggle in `trusted.overlay.*` and change how overlayfs reads the layer.
//!
//! An OCI layer is unpacked by the same code with one difference, its whiteout names: where a
//! rootfs tarball's `.wh.x` is just a file, a layer's becomes the overlay whiteout or opaque
//! marker it stands for. Only we write those, in canonical form, so the layer digests the same
//! whichever tool made the archive.
//!
//! Directories the archive does not describe itself (the root, and parents it leaves out) are
//! root-owned, mode 0755, mtime 0, so the resulting tree, and its digest, depends only on the
//! archive. Directory mtimes are applied at the very end, because creating their children
//! changes them.
//!
//! Every import is bounded ([`ImportLimits`](crate::ImportLimits)): entries, path length and
//! depth, bytes per file and in all, the expansion of a compressed stream, the archive's own
//! size and the free space left on the filesystem are checked as the archive streams, before
//! anything is written past a limit.
//!
//! The stages live in their own files: `detect` picks the decompressor, `meter` counts the
//! streams, `unpack` turns entries into files, `names` checks entry names, `meta` reads owners,
//! times and xattrs, and `layer` gives OCI whiteout names their meaning.

mod detect;
mod layer;
#[cfg(test)]
mod limit_tests;
mod lower;
mod meta;
mod meter;
mod names;
#[cfg(test)]
mod tests;
mod unpack;

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::Path;

use crate::inode::{Inode, Time};
use crate::tree::open_empty_root;
use crate::{ImageError, ImportBudget, Progress, TreeStats};

use detect::{EndTracker, decompress};
use meter::Meter;
pub(crate) use names::normalize;
use unpack::Unpacker;

/// Unpacks a tar archive (plain, gzip or zstd, told apart by their first bytes) into `dest`, an
/// existing empty directory, and returns what it wrote: one entry per archive member applied
/// (a `.` member and hard links included, implied parent directories not), and the bytes of
/// regular-file content.
///
/// The archive is untrusted: see the module documentation for what is refused. A `.` entry sets
/// the metadata of `dest` itself; otherwise `dest` becomes root-owned, mode 0755, mtime 0. On
/// error, whatever was unpacked so far stays in `dest` for the caller to remove; nothing is ever
/// written outside it.
///
/// `budget` bounds what the archive may cost ([`ImageError::Limit`] names the limit reached);
/// archives unpacked with the same budget count against it together.
pub fn unpack_archive<R: Read>(
    input: R,
    dest: &Path,
    progress: &dyn Progress,
    budget: &ImportBudget,
) -> Result<TreeStats, ImageError> {
    unpack(input, dest, progress, budget, Names::Plain, &[])
}

/// Unpacks an OCI image layer (a "changeset" tarball: plain, gzip or zstd) into `dest`, an
/// existing empty directory, as an overlayfs layer, with every check of [`unpack_archive`].
///
/// OCI whiteouts become overlay ones: an entry `dir/.wh.NAME` becomes a whiteout at `dir/NAME`
/// (a root-owned 0:0 character device with mode 0 and mtime 0), replacing whatever this archive
/// put there before, a whole directory included; `dir/.wh..wh..opq` marks `dir` opaque
/// (`trusted.overlay.opaque` = `y`), creating it like an implied parent if the archive has not.
/// Other `.wh..wh.` names are AUFS bookkeeping and are skipped. A whiteout below a path this
/// archive made a non-directory (a file, symlink or device) is skipped too: umoci writes one
/// for each child of a directory that became a file or symlink, and the children went with
/// the directory. A hard link or symlink named `.wh.*`, a whiteout of `.` or `..`, and a path
/// that goes through a `.wh.` name are refused. Whiteouts count as entries in the returned
/// stats; opaque markers and skipped names do not.
pub fn unpack_layer_archive<R: Read>(
    input: R,
    dest: &Path,
    progress: &dyn Progress,
    budget: &ImportBudget,
) -> Result<TreeStats, ImageError> {
    unpack(input, dest, progress, budget, Names::Layer, &[])
}

/// [`unpack_layer_archive`] for a layer that goes on top of `lower` (layer trees, lowest
/// first): a directory the archive does not describe itself (the root without a `.` entry, a
/// parent it leaves out) takes the owner, mode, mtime and portable xattrs the layers below
/// give it, as the image means (the layer leaves it unchanged), rather than the defaults that
/// would hide them once the layers are stacked. Where the layers below have no directory
/// there, the defaults stay.
pub fn unpack_layer_archive_over<R: Read>(
    input: R,
    dest: &Path,
    lower: &[std::path::PathBuf],
    progress: &dyn Progress,
    budget: &ImportBudget,
) -> Result<TreeStats, ImageError> {
    unpack(input, dest, progress, budget, Names::Layer, lower)
}

/// Whether `.wh.` names are ordinary files or OCI whiteouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Names {
    /// A rootfs tarball: every name is a file.
    Plain,
    /// An OCI layer: `.wh.` names are whiteouts and opaque markers.
    Layer,
}

fn unpack<R: Read>(
    input: R,
    dest: &Path,
    progress: &dyn Progress,
    budget: &ImportBudget,
    meaning: Names,
    lower: &[std::path::PathBuf],
) -> Result<TreeStats, ImageError> {
    let lower = lower::Lower::open(lower)?;
    let root = open_empty_root(dest)?;
    budget.check_free(root.as_fd(), 0)?;
    Inode::root(0o755, Time::default()).set_owner_mode(root.as_fd(), dest)?;

    let meter = Meter::new(*budget.limits());
    let result = unpack_stream(
        input,
        &meter,
        Unpacker::new(root, meaning, lower, meter.clone()),
        progress,
        budget,
    );
    // A limit reached inside the tar or decompression reader comes out of them as an opaque
    // I/O error: the meter knows what it was.
    match meter.take_tripped() {
        Some(err) => Err(err),
        None => result,
    }
}

fn unpack_stream<R: Read>(
    input: R,
    meter: &std::rc::Rc<Meter>,
    mut unpacker: Unpacker,
    progress: &dyn Progress,
    budget: &ImportBudget,
) -> Result<TreeStats, ImageError> {
    let mut stream = EndTracker {
        inner: decompress(input, meter)?,
        reached_end: false,
    };
    {
        let mut archive = tar::Archive::new(&mut stream);
        let mut first = true;
        for entry in archive.entries().map_err(ImageError::bad_archive)? {
            let mut entry = entry.map_err(|e| {
                if first {
                    // Nothing readable at all: say what was expected rather than which
                    // header field looked odd.
                    ImageError::bad_archive(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("it does not start with a tar header ({e})"),
                    ))
                } else {
                    ImageError::bad_archive(e)
                }
            })?;
            first = false;
            meter.entry_started();
            unpacker.entry(&mut entry, progress, budget)?;
            // What an entry carries beyond what it needs (a directory's or a skipped name's
            // data) is read here, so that only headers count as headers.
            io::copy(&mut entry, &mut io::sink()).map_err(ImageError::bad_archive)?;
            meter.entry_done();
        }
    }
    // The tar reader also stops at the end of the stream, so a tarball cut at a block boundary
    // would look complete; the end-of-archive marker is what tells them apart.
    if stream.reached_end {
        return Err(ImageError::bad_archive(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the archive ends without an end-of-archive marker",
        )));
    }
    // Reading to the end makes the decompressor check its trailing checksum.
    meter.entry_started();
    io::copy(&mut stream, &mut io::sink()).map_err(ImageError::bad_archive)?;
    unpacker.finish()
}
