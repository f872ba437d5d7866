//! The console of a detached container: a pseudo-terminal pair the forker makes on the host's
//! devpts. Its slave side becomes the instance's `/dev/console` (a bind mount, like the
//! terminal of `run -t`); the forker holds the master side for as long as the init runs, so
//! the console outlives daemon restarts just as the log pipe does.
//!
//! What the instance writes to the console is read by the forker at once, whoever listens,
//! and appended to the instance's console log (with the terminal's `\r\n` line ends turned
//! back into `\n`, see [`super::logs::LogPump::append_console`]): nothing written to the
//! console can block on a missing or slow reader. One client at a time may be attached
//! (`mayfly console`): it gets what is written from then on, and what it sends is written to
//! the master side as typed input. The client is a stream socket whose other end the daemon
//! relays; every buffer is bounded: output a client does not take in time is dropped for
//! that client (never for the log), and its input is read only as fast as the console
//! takes it.
//!
//! The forker keeps a descriptor of the slave side open too: without it, the master side
//! would report a hang-up (and `EIO`) whenever no process of the instance has the console
//! open, as between an init's start and its first open of `/dev/console`.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::pty::OpenptFlags;

use rustix::event::epoll;

use super::logs::LogPump;
use super::{Forker, Source};
use crate::protocol::{Failure, FailureKind};

/// Output kept for an attached client that does not read: more is dropped for it.
pub(super) const CLIENT_OUT_MAX: usize = 256 * 1024;

/// Input from the client kept while the console does not take it; the client's socket is
/// not read meanwhile.
pub(super) const INPUT_MAX: usize = 64 * 1024;

/// Most bytes moved from the console per readiness (see `LogPump::pump`).
const READ_BUDGET: usize = 256 * 1024;

/// Bytes read at once.
const CHUNK: usize = 16 * 1024;

/// The window size a console starts with.
const DEFAULT_SIZE: (u16, u16) = (24, 80);

/// Makes a console: `(master, slave)`, the slave given to the instance's root (host uid and
/// gid of `owner`, as `spawn::give_terminal` does for `run -t`).
pub(super) fn open_pair(owner: Option<(u32, u32)>) -> Result<(OwnedFd, OwnedFd), Failure> {
    let fail = |e: rustix::io::Errno| Failure::other(format!("create the console: {e}"));
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags).map_err(fail)?;
    rustix::pty::grantpt(&master).map_err(fail)?;
    rustix::pty::unlockpt(&master).map_err(fail)?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags).map_err(fail)?;
    let _ = rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: DEFAULT_SIZE.0,
            ws_col: DEFAULT_SIZE.1,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    );
    rustix::io::ioctl_fionbio(&master, true).map_err(fail)?;
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(
            &slave,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
        )
        .map_err(fail)?;
        rustix::fs::fchmod(&slave, rustix::fs::Mode::from_raw_mode(0o620)).map_err(fail)?;
    }
    Ok((master, slave))
}

/// The attached client.
#[derive(Debug)]
struct Client {
    sock: OwnedFd,
    /// Output not yet taken by the client (at most [`CLIENT_OUT_MAX`]).
    out: VecDeque<u8>,
}

/// What reading the console found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Output {
    /// Read what there was (or nothing was there).
    Ok,
    /// The master side reports a hang-up without data (the console was hung up by the
    /// instance, e.g. `vhangup` by a getty): poll it on a timer until it works again.
    HungUp,
}

/// One container's console.
#[derive(Debug)]
pub(crate) struct Console {
    master: OwnedFd,
    _slave: OwnedFd,
    client: Option<Client>,
    /// Typed input not yet written to the console (at most [`INPUT_MAX`]).
    input: Vec<u8>,
}

impl Console {
    /// A console whose master side (non-blocking) is `master`.
    pub(super) fn new(master: OwnedFd, slave: OwnedFd) -> Console {
        Console {
            master,
            _slave: slave,
            client: None,
            input: Vec::new(),
        }
    }

    /// The master side, to watch.
    pub(super) fn master(&self) -> &OwnedFd {
        &self.master
    }

    /// The attached client's socket, if one is attached.
    pub(super) fn client_sock(&self) -> Option<&OwnedFd> {
        self.client.as_ref().map(|c| &c.sock)
    }

    /// Attaches a client: returns the daemon's end of its socket and a duplicate of the
    /// master side (for window-size changes only). Refused while another client is attached.
    pub(super) fn attach(&mut self, id: &str) -> Result<(OwnedFd, OwnedFd), Failure> {
        if self.client.is_some() {
            return Err(Failure {
                kind: FailureKind::Busy,
                message: format!(
                    "another client is attached to the console of instance {id}; only one may be at a time"
                ),
            });
        }
        let fail = |e: rustix::io::Errno| Failure::other(format!("attach to the console: {e}"));
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(fail)?;
        let master = self
            .master
            .try_clone()
            .map_err(|e| Failure::other(format!("attach to the console: {e}")))?;
        // The daemon's end blocks as sockets usually do; it makes it non-blocking itself.
        rustix::io::ioctl_fionbio(&theirs, false).map_err(fail)?;
        self.client = Some(Client {
            sock: ours,
            out: VecDeque::new(),
        });
        self.input.clear();
        Ok((theirs, master))
    }

    /// Moves what the console holds into the log and the client's queue (up to the read
    /// budget), and typed input into the console.
    pub(super) fn pump(&mut self, mut log: Option<&mut LogPump>) -> Output {
        let mut buf = [0u8; CHUNK];
        let mut budget = READ_BUDGET;
        let mut outcome = Output::Ok;
        while budget > 0 {
            match rustix::io::read(self.master.as_fd(), &mut buf) {
                Ok(0) => {
                    outcome = Output::HungUp;
                    break;
                }
                Ok(n) => {
                    if let Some(log) = log.as_deref_mut() {
                        log.append_console(&buf[..n]);
                    }
                    if let Some(c) = &mut self.client {
                        let room = CLIENT_OUT_MAX.saturating_sub(c.out.len());
                        c.out.extend(&buf[..n.min(room)]);
                    }
                    budget = budget.saturating_sub(n);
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => {
                    outcome = Output::HungUp;
                    break;
                }
            }
        }
        self.write_input();
        self.flush_client();
        outcome
    }

    /// Writes typed input into the console, as far as it takes it now.
    fn write_input(&mut self) {
        while !self.input.is_empty() {
            match rustix::io::write(self.master.as_fd(), &self.input) {
                Ok(0) => break,
                Ok(n) => {
                    self.input.drain(..n);
                }
                Err(rustix::io::Errno::INTR) => continue,
                // Full (AGAIN), or hung up: keep it for later, the client waits meanwhile.
                Err(_) => break,
            }
        }
    }

    /// Sends the client what is queued, as far as its socket takes it; `false` if the
    /// client is gone (it is detached then).
    fn flush_client(&mut self) -> bool {
        let Some(c) = &mut self.client else {
            return true;
        };
        while !c.out.is_empty() {
            let (front, _) = c.out.as_slices();
            match rustix::net::send(&c.sock, front, rustix::net::SendFlags::NOSIGNAL) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return true,
                Err(_) => {
                    self.client = None;
                    return false;
                }
            }
        }
        true
    }

    /// The client's socket is ready (`readable`, `writable`, or hung up); `false` once the
    /// client is gone (it is detached then).
    pub(super) fn client_ready(&mut self, writable: bool, hangup: bool) -> bool {
        if writable && !self.flush_client() {
            return false;
        }
        let Some(c) = &mut self.client else {
            return false;
        };
        let mut buf = [0u8; CHUNK];
        let mut gone = false;
        loop {
            let room = INPUT_MAX.saturating_sub(self.input.len()).min(CHUNK);
            if room == 0 {
                break;
            }
            match rustix::io::read(c.sock.as_fd(), &mut buf[..room]) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        self.write_input();
        // A client that hung up goes even while its input waits (that input is still typed):
        // a hang-up is reported for as long as it is watched.
        if gone || hangup {
            self.client = None;
            return false;
        }
        true
    }

    /// What to watch the master side for: input always, output room while typed input waits.
    pub(super) fn master_interest(&self) -> rustix::event::epoll::EventFlags {
        use rustix::event::epoll::EventFlags;
        if self.input.is_empty() {
            EventFlags::IN
        } else {
            EventFlags::IN | EventFlags::OUT
        }
    }

    /// What to watch the client's socket for: input while there is room for it, output room
    /// while output waits.
    pub(super) fn client_interest(&self) -> rustix::event::epoll::EventFlags {
        use rustix::event::epoll::EventFlags;
        let mut flags = EventFlags::RDHUP;
        if self.input.len() < INPUT_MAX {
            flags |= EventFlags::IN;
        }
        if self.client.as_ref().is_some_and(|c| !c.out.is_empty()) {
            flags |= EventFlags::OUT;
        }
        flags
    }
}

// ---- the forker's side: watching consoles and their clients ------------------------------

impl Forker {
    /// Sets up the console `pair` of the container `id` that just started (`Starting`).
    pub(super) fn watch_console(&mut self, id: &str, pair: Option<(OwnedFd, OwnedFd)>) {
        let Some((master, slave)) = pair else { return };
        let console = Console::new(master, slave);
        self.watch(console.master(), Source::Console(id.to_owned()));
        if let Some(c) = self.containers.get_mut(id) {
            c.console = Some(console);
        }
    }

    /// Attaches a client to the console of running container `id`: the daemon's end of the
    /// client's socket and a duplicate of the master side (for window-size changes).
    pub(super) fn attach_console(&mut self, id: &str) -> Result<Vec<OwnedFd>, Failure> {
        let c = self.running(id)?;
        if c.console.is_none() {
            return Err(Failure {
                kind: FailureKind::UnknownContainer,
                message: format!(
                    "instance {id} has no console: an instance started attached (`mayfly run`) has the client's terminal or pipes instead, and one started by an earlier forker lost its console with it"
                ),
            });
        }
        let Some(console) = self.containers.get_mut(id).and_then(|c| c.console.as_mut()) else {
            return Err(Failure::other("console vanished"));
        };
        let (sock, master) = console.attach(id)?;
        let watched = console.client_sock().and_then(|s| s.try_clone().ok());
        if let Some(fd) = watched {
            let flags = console.client_interest();
            self.watch_with(&fd, Source::ConsoleClient(id.to_owned()), flags);
        }
        Ok(vec![sock, master])
    }

    /// The console of `id` is readable (or writable, or hung up).
    pub(super) fn pump_console(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let super::Container { console, log, .. } = c;
        let Some(console) = console.as_mut() else {
            return;
        };
        let had_client = console.client_sock().is_some();
        let outcome = console.pump(log.as_mut());
        let source = Source::Console(id.to_owned());
        // Polled on a timer while hung up (the slow poll takes it off its list to call us).
        let watched = self.sources.values().any(|(s, _)| s == &source);
        match outcome {
            Output::HungUp => self.go_slow(source),
            Output::Ok if !watched => {
                // It works again: back to being watched.
                self.slow.retain(|s| s != &source);
                let fd = self
                    .containers
                    .get(id)
                    .and_then(|c| c.console.as_ref())
                    .and_then(|c| c.master().try_clone().ok());
                if let Some(fd) = fd {
                    self.watch(&fd, source);
                }
            }
            Output::Ok => {}
        }
        self.console_interest(id, had_client);
    }

    /// The socket of the client attached to the console of `id` is ready.
    pub(super) fn console_client_ready(&mut self, id: &str, flags: epoll::EventFlags) {
        let Some(console) = self.containers.get_mut(id).and_then(|c| c.console.as_mut()) else {
            self.unwatch(&Source::ConsoleClient(id.to_owned()));
            return;
        };
        let hangup = flags
            .intersects(epoll::EventFlags::HUP | epoll::EventFlags::RDHUP | epoll::EventFlags::ERR);
        console.client_ready(flags.contains(epoll::EventFlags::OUT), hangup);
        self.console_interest(id, true);
    }

    /// Watches the console of `id` and its client for what they wait for now (a client
    /// that went away is no longer watched).
    fn console_interest(&mut self, id: &str, had_client: bool) {
        let Some(console) = self.containers.get(id).and_then(|c| c.console.as_ref()) else {
            return;
        };
        let master = console.master_interest();
        let client = console
            .client_sock()
            .is_some()
            .then(|| console.client_interest());
        let source = Source::Console(id.to_owned());
        if !self.slow.contains(&source) {
            self.rewatch(&source, master);
        }
        match client {
            Some(flags) => self.rewatch(&Source::ConsoleClient(id.to_owned()), flags),
            None if had_client => self.unwatch(&Source::ConsoleClient(id.to_owned())),
            None => {}
        }
    }

    /// The init of `id` ended: what is left in its console goes to `log`, and the console
    /// (with its client) is closed.
    pub(super) fn close_console(&mut self, id: &str, log: Option<&mut LogPump>) {
        let console = self.containers.get_mut(id).and_then(|c| c.console.take());
        self.unwatch(&Source::Console(id.to_owned()));
        self.unwatch(&Source::ConsoleClient(id.to_owned()));
        if let Some(mut console) = console {
            // Every writer is gone with the namespace; what they wrote is in the buffer.
            console.pump(log);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_reaches_the_log_and_a_slow_client_never_holds_it_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let mut log = LogPump::open(r, path.clone(), 1 << 20).unwrap();
        let (master, slave) = open_pair(None).unwrap();
        let slave_w = slave.try_clone().unwrap();
        let mut console = Console::new(master, slave);
        let (client, _resize) = console.attach("x").unwrap();
        assert!(console.attach("x").is_err(), "a second client is refused");
        // The client never reads: far more than its queue is written.
        let line = [b'y'; 1023];
        let mut written = 0;
        for _ in 0..(2 * CLIENT_OUT_MAX / 1024) {
            rustix::io::write(&slave_w, &line).unwrap();
            rustix::io::write(&slave_w, b"\n").unwrap();
            written += 1024;
            assert_eq!(console.pump(Some(&mut log)), Output::Ok);
        }
        // The log has all of it, with `\n` line ends.
        let text = std::fs::read(&path).unwrap();
        assert_eq!(text.len(), written);
        assert!(!text.contains(&b'\r'));
        // Typed input reaches the console.
        rustix::io::write(&client, b"typed\n").unwrap();
        assert!(console.client_ready(false, false));
        let mut buf = [0u8; 64];
        let n = rustix::io::read(&slave_w, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"typed\n");
        // The client leaving detaches it, and another may attach.
        drop(client);
        assert!(!console.client_ready(false, true));
        assert!(console.attach("x").is_ok());
    }
}
