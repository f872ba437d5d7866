//! Readiness notification for systemd (`Type=notify`, see contrib/mayfly.service): `READY=1`
//! once the API socket accepts connections, `STOPPING=1` when the daemon stops, each with a
//! `STATUS=` line for `systemctl status`. The address comes from `$NOTIFY_SOCKET` (a path, or
//! `@name` for an abstract socket), which [`take_socket_from_environment`] takes out of the
//! environment at start-up, before any thread or child exists: the forker, and through it
//! every instance, must never inherit it (a container could otherwise tell systemd the
//! daemon is ready, or stopping). Nothing happens without `NOTIFY_SOCKET`; a failed send is
//! logged and otherwise ignored (readiness is a courtesy to the service manager).

use std::ffi::{OsStr, OsString};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable systemd sets for `Type=notify` services.
const VARIABLE: &str = "NOTIFY_SOCKET";

/// How long one notification may wait for room in the service manager's queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// The service manager's socket, once taken from the environment.
static SOCKET: OnceLock<Option<OsString>> = OnceLock::new();

/// Takes `$NOTIFY_SOCKET` out of the environment and keeps it for [`ready`] and [`stopping`].
/// Call it first thing in the daemon, while the process is single-threaded.
pub(crate) fn take_socket_from_environment() -> std::io::Result<()> {
    let socket = mayfly_sys::process::take_env_var(VARIABLE)?;
    let _ = SOCKET.set(socket.filter(|s| !s.is_empty()));
    Ok(())
}

/// Tells the service manager the daemon is ready.
pub(crate) fn ready() {
    notify("READY=1\nSTATUS=serving the API");
}

/// Tells the service manager the daemon is stopping.
pub(crate) fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping (instances keep running)");
}

fn notify(message: &str) {
    let Some(Some(address)) = SOCKET.get() else {
        return;
    };
    if let Err(e) = send(address, message) {
        tracing::warn!(
            "cannot notify the service manager at {VARIABLE}={}: {e}",
            address.to_string_lossy()
        );
    }
}

/// Sends `message` as one datagram to `address`: a path, or `@name` (abstract).
fn send(address: &OsStr, message: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    let bytes = address.as_bytes();
    let to = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(address)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "neither an absolute path nor an @abstract name",
            ));
        }
    };
    socket.send_to_addr(message.as_bytes(), &to)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let at_path = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(receive(&at_path), "READY=1");

        let name = format!("mayfly-notify-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_socket = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        send(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(receive(&abstract_socket), "STOPPING=1");

        let e = send(OsStr::new("relative/path"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    }
}
