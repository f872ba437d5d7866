//! Counting what a tree operation has done, for progress bars and for the store's bookkeeping.
//!
//! Reporting is a plain callback rather than a channel so that the operations stay synchronous
//! and the caller decides how often to redraw; `Sync` lets a caller share one reporter with the
//! thread that draws it.

use serde::{Deserialize, Serialize};

/// Receives counts while a tree is written or read.
pub trait Progress: Sync {
    /// Called after `entries` more entries (and `bytes` more bytes of regular-file content) have
    /// been handled.
    fn advance(&self, entries: u64, bytes: u64);
}

/// A [`Progress`] that ignores every report.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _entries: u64, _bytes: u64) {}
}

/// Size of a tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeStats {
    /// Files, directories, symlinks and device/FIFO nodes.
    pub entries: u64,
    /// Bytes of regular-file content.
    pub bytes: u64,
}

impl TreeStats {
    /// Adds one entry with `bytes` of content and tells `progress`.
    pub(crate) fn add(&mut self, bytes: u64, progress: &dyn Progress) {
        self.entries += 1;
        self.bytes += bytes;
        progress.advance(1, bytes);
    }
}
