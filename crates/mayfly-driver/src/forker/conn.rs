//! The forker's end of its connection to the daemon: non-blocking, with a bounded queue of
//! messages the daemon has not taken yet.
//!
//! The forker must never block on its daemon: while a message waits for room in the socket,
//! the loop goes on reaping, pumping logs and serving requests. A daemon that stops reading
//! for so long that [`MAX_QUEUED_BYTES`] fill up is treated as gone: the connection is
//! dropped, and the next daemon learns what ended from the state list of its `Hello`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::protocol;

/// Bytes of messages kept for a daemon that does not read.
pub(super) const MAX_QUEUED_BYTES: usize = 32 << 20;

/// Descriptors kept with those messages (terminals, pipe readers): the forker's own
/// descriptors are a resource of every instance.
pub(super) const MAX_QUEUED_FDS: usize = 512;

/// One message waiting to be sent.
#[derive(Debug)]
struct Outgoing {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// What became of a message handed to [`Conn::send`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// It is in the socket, or queued behind earlier ones.
    Ok,
    /// The socket is broken or the queue overflowed: drop the connection.
    Broken,
}

/// The daemon's connection.
#[derive(Debug)]
pub(super) struct Conn {
    fd: OwnedFd,
    /// Which connection this is: replies of operations begun on an earlier connection are
    /// not sent on this one (its sequence numbers mean other requests).
    pub generation: u64,
    out: VecDeque<Outgoing>,
    out_bytes: usize,
    out_fds: usize,
}

impl Conn {
    /// Wraps an accepted socket (made non-blocking, with a send buffer for large messages).
    pub(super) fn new(fd: OwnedFd, generation: u64) -> io::Result<Conn> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        protocol::tune(fd.as_fd());
        Ok(Conn {
            fd,
            generation,
            out: VecDeque::new(),
            out_bytes: 0,
            out_fds: 0,
        })
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether messages wait for room (the loop then watches for writability).
    pub(super) fn has_queued(&self) -> bool {
        !self.out.is_empty()
    }

    /// Sends `bytes` with `fds`, or queues them behind earlier messages.
    pub(super) fn send(&mut self, bytes: Vec<u8>, fds: Vec<OwnedFd>) -> Sent {
        if self.out.is_empty() {
            match try_send(self.fd.as_fd(), &bytes, &fds) {
                Ok(true) => return Sent::Ok,
                Ok(false) => {}
                Err(e) => {
                    eprintln!("forker: send to the daemon: {e}");
                    return Sent::Broken;
                }
            }
        }
        self.out_bytes += bytes.len();
        self.out_fds += fds.len();
        self.out.push_back(Outgoing { bytes, fds });
        if self.out_bytes > MAX_QUEUED_BYTES || self.out_fds > MAX_QUEUED_FDS {
            eprintln!(
                "forker: the daemon has not read {} bytes ({} descriptors) of answers and events; dropping its connection",
                self.out_bytes, self.out_fds
            );
            return Sent::Broken;
        }
        Sent::Ok
    }

    /// Sends what is queued, as far as the socket takes it.
    pub(super) fn flush(&mut self) -> Sent {
        while let Some(front) = self.out.front() {
            match try_send(self.fd.as_fd(), &front.bytes, &front.fds) {
                Ok(true) => {
                    self.out_bytes -= front.bytes.len();
                    self.out_fds -= front.fds.len();
                    self.out.pop_front();
                }
                Ok(false) => return Sent::Ok,
                Err(e) => {
                    eprintln!("forker: send to the daemon: {e}");
                    return Sent::Broken;
                }
            }
        }
        Sent::Ok
    }
}

/// `Ok(true)` sent, `Ok(false)` no room now, `Err` the connection is unusable.
fn try_send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<bool> {
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    loop {
        match protocol::send(sock, bytes, &borrowed) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
