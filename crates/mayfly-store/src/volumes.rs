//! Volumes: data that lives outside any instance, attached to at most one at a time.
//!
//! (Skeleton: filled in by the volumes work.)

use crate::StoreError;

/// Attaches every volume of `mounts` to instance `id` inside `tx` (the instance's insert),
/// refusing one that another instance holds.
pub(crate) fn attach_all(
    _tx: &rusqlite::Transaction<'_>,
    _id: &str,
    _mounts: &[mayfly_api::VolumeMount],
) -> Result<(), StoreError> {
    Ok(())
}

/// Detaches every volume instance `id` holds, inside `tx` (the instance's delete).
pub(crate) fn detach_all(_tx: &rusqlite::Transaction<'_>, _id: &str) -> Result<(), StoreError> {
    Ok(())
}
