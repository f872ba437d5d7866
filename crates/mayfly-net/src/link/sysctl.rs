//! Writing `/proc/sys` settings of the calling thread's network namespace (the kernel picks
//! the namespace of the thread that opens the file).

use crate::{NetError, Result};

/// Writes `value` to `/proc/sys/<key>`.
pub(crate) fn set(key: &str, value: &str, ctx: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|source| NetError::Io {
        what: format!("{ctx}: set {path} to {value}"),
        source,
    })
}

/// Like [`set`], but a setting the kernel does not have (IPv6 built out or disabled at
/// boot) is not an error.
pub(crate) fn set_if_present(key: &str, value: &str, ctx: &str) -> Result<()> {
    match set(key, value, ctx) {
        Err(NetError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
