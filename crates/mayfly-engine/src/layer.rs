//! Sealing a tree as a layer: its record (content digest and sizes) and flushing it to disk
//! before it is renamed into the layer store, so that a layer the catalogue names is on disk.

use std::path::Path;

use mayfly_store::LayerRecord;

use crate::EngineError;
use crate::error::io_err;

/// The record of layer tree `tree`: its content digest, bytes and entries.
pub(crate) fn measure(tree: &Path) -> Result<LayerRecord, EngineError> {
    let digest = mayfly_image::tree_digest(tree)?;
    let stats = mayfly_image::tree_stats(tree)?;
    Ok(LayerRecord {
        digest: digest.as_str().to_owned(),
        size: stats.bytes,
        entries: stats.entries,
    })
}

/// Flushes the filesystem that holds `path`: one `syncfs` covers every file of a tree.
pub(crate) fn flush(path: &Path) -> Result<(), EngineError> {
    let dir = std::fs::File::open(path).map_err(io_err("open", path))?;
    rustix::fs::syncfs(&dir).map_err(|e| io_err("flush", path)(e.into()))
}

/// [`measure`] then [`flush`].
pub(crate) fn seal(tree: &Path) -> Result<LayerRecord, EngineError> {
    let record = measure(tree)?;
    flush(tree)?;
    Ok(record)
}
