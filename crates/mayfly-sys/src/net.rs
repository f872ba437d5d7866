//! The one netdevice ioctl mayfly needs before it has a netlink stack: bringing `lo` up in a
//! fresh network namespace.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Sets `IFF_UP` on the loopback interface of the calling thread's network namespace.
pub fn loopback_up() -> io::Result<()> {
    let sock: OwnedFd = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    // SAFETY: an all-zero ifreq is a valid value; we write a NUL-terminated name that fits.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::try_from(*src).unwrap_or(0);
    }
    // SAFETY: `req` is a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS and the socket is open.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        let up = libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
        req.ifr_ifru.ifru_flags |= up;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
