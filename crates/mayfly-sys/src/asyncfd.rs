//! Registering owned descriptors with tokio's reactor.
//!
//! `AsyncFd::register` is unsafe because a generic `AsRawFd` type could hand out another
//! descriptor later; an `OwnedFd` cannot, which is what makes this wrapper safe.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// Registers `fd` (which should be non-blocking) for readiness events. Must be called inside a
/// tokio runtime.
pub fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor that the AsyncFd now owns; it stays open
    // and its `as_raw_fd` keeps returning the same number until the AsyncFd is dropped.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}
