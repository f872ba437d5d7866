//! The daemon ↔ forker protocol: JSON messages over a `SOCK_SEQPACKET` unix socket, with
//! file descriptors (stdio, terminals) passed alongside as `SCM_RIGHTS`.
//!
//! Sequenced packets keep message boundaries, so one `recvmsg` is one message and the
//! descriptors that came with it. Requests carry a sequence number that the reply repeats;
//! events (a container or exec'd process ended) carry none and may arrive at any time, but
//! always after the reply that created what they report on. A reply may come long after
//! later requests' replies (a spawn waits for its child's verdict, a freeze for the kernel).
//!
//! One bad message is an error for that message only, never for the connection: a request
//! too large to send fails before it is sent; one that cannot be read is answered with a
//! [`FailureKind::Malformed`] failure when its sequence number can be read, and ignored
//! (its sender's deadline ends it) when not; descriptors beyond [`MAX_FDS`] are dropped and
//! the request refused. Only a peer that closes, or one that stops reading for so long that
//! the other side's bounded queue overflows, ends the connection.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use crate::spec::{ContainerSpec, ExitStatus, ProcessSpec};

/// Bumped whenever a message changes shape or meaning.
pub const PROTOCOL_VERSION: u32 = 7;

/// Largest message, in bytes. The engine refuses process specifications that could not fit
/// (see `mayfly_engine`'s limits) long before this.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Send buffer of both ends. A `SOCK_SEQPACKET` message larger than the sender's buffer
/// fails with `EMSGSIZE` (the default, about 208 KiB, is below [`MAX_MESSAGE`]); this leaves
/// room for several large messages in flight.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Most descriptors passed with one message.
pub const MAX_FDS: usize = 32;

/// A request with its sequence number.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// Repeated in the reply.
    pub seq: u64,
    /// What is asked.
    pub request: Request,
}

/// What the daemon asks of the forker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// First message of a connection: the forker answers with every container it tracks.
    Hello {
        /// The daemon's protocol version.
        protocol: u32,
    },
    /// Create and start a container (with stdio descriptors for [`crate::spec::StdioSpec::Passed`]).
    Spawn(Box<ContainerSpec>),
    /// Send a signal to a container's init.
    Signal {
        /// Instance id.
        id: String,
        /// Signal number.
        signal: i32,
    },
    /// SIGKILL every process of a container (through its cgroup).
    KillAll {
        /// Instance id.
        id: String,
    },
    /// Run a process inside a running container (stdio descriptors attached).
    Exec {
        /// Instance id.
        id: String,
        /// Daemon-chosen id for events about this process.
        exec_id: u64,
        /// The process.
        process: Box<ProcessSpec>,
    },
    /// Send a signal to an exec'd process.
    SignalExec {
        /// Its id.
        exec_id: u64,
        /// Signal number.
        signal: i32,
    },
    /// Freeze or thaw every process of a container.
    Freeze {
        /// Instance id.
        id: String,
        /// `true` to freeze, `false` to thaw.
        frozen: bool,
    },
    /// Track a container that a previous forker started (after that forker died).
    Adopt {
        /// Instance id.
        id: String,
        /// Host pid of its init.
        pid: i32,
        /// Start time of that pid (clock ticks since boot), to detect pid reuse.
        start_time: u64,
        /// Its cgroup path.
        cgroup: String,
        /// Its console log (the read end of its output pipe travels with the request).
        #[serde(default)]
        log: Option<LogTarget>,
    },
    /// Send back a duplicate of the read end of a container's output pipe, so that the pipe
    /// keeps a reader (and the init keeps running) if this forker dies.
    LogReader {
        /// Instance id.
        id: String,
    },
    /// Attach to the console of a detached container: the answer carries the daemon's end
    /// of a stream socket (what the console writes comes out of it, what is written into it
    /// is typed on the console) and a duplicate of the console's master side, for window
    /// sizes. One client at a time ([`FailureKind::Busy`] otherwise); closing the socket
    /// detaches.
    Console {
        /// Instance id.
        id: String,
    },
    /// Check that a template layer under `path` can be mounted idmapped in a fresh user
    /// namespace (kernel, filesystem and user-namespace support in one go).
    ProbeIdmap {
        /// A directory on the layers' filesystem.
        path: std::path::PathBuf,
    },
    /// Forget an ended container (and remove its cgroup) once the daemon has recorded its end.
    Release {
        /// Instance id.
        id: String,
    },
}

impl Request {
    /// What the request is, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Spawn(_) => "spawn",
            Request::Signal { .. } => "signal",
            Request::KillAll { .. } => "kill",
            Request::Exec { .. } => "exec",
            Request::SignalExec { .. } => "signal-exec",
            Request::Freeze { frozen: true, .. } => "freeze",
            Request::Freeze { frozen: false, .. } => "thaw",
            Request::Adopt { .. } => "adopt",
            Request::LogReader { .. } => "log-reader",
            Request::Console { .. } => "console",
            Request::ProbeIdmap { .. } => "probe",
            Request::Release { .. } => "release",
        }
    }

    /// How long the daemon waits for the answer: longer than the forker's own deadline for
    /// what the request waits on (see `forker::pending`), so that the forker's precise
    /// error normally comes first and this one only means the forker itself is stuck.
    pub fn deadline(&self) -> std::time::Duration {
        let secs = match self {
            Request::Spawn(_) => 90,
            Request::Exec { .. } | Request::Freeze { .. } | Request::ProbeIdmap { .. } => 30,
            Request::Release { .. } => 20,
            _ => 15,
        };
        std::time::Duration::from_secs(secs)
    }
}

/// Where an adopted container's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTarget {
    /// The log file.
    pub path: std::path::PathBuf,
    /// Rotation size.
    pub max_bytes: u64,
}

/// A container the forker tracks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Instance id.
    pub id: String,
    /// Host pid of the init.
    pub pid: i32,
    /// Start time of the init (clock ticks since boot).
    pub start_time: u64,
    /// Set once the init has ended.
    pub exited: Option<ExitStatus>,
}

/// A successful answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Hello`].
    Hello {
        /// The forker's protocol version.
        protocol: u32,
        /// The forker's pid.
        pid: i32,
        /// The cgroup mode it drives (`v2`, `v1`, `hybrid`); empty from older forkers.
        #[serde(default)]
        cgroup_mode: String,
        /// Containers it tracks, running or ended and not yet released.
        containers: Vec<ContainerState>,
    },
    /// The container runs.
    Spawned {
        /// Host pid of the init.
        pid: i32,
        /// Its start time (clock ticks since boot).
        start_time: u64,
    },
    /// The exec'd process runs.
    ExecStarted {
        /// Its host pid.
        pid: i32,
    },
    /// Answer to [`Request::ProbeIdmap`]: `None` if idmapped layers work, else why not.
    Probe {
        /// Why user namespaces cannot be used, if they cannot.
        unsupported: Option<String>,
    },
    /// Done, nothing to report.
    Done,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The named container or exec is not tracked.
    UnknownContainer,
    /// The program to run does not exist in the instance.
    ProgramNotFound,
    /// The program exists but cannot be executed.
    ProgramNotExecutable,
    /// The user to run as cannot be resolved in the instance (no such user or group in its
    /// `/etc/passwd` or `/etc/group`, an unusable file, an id its user namespace lacks).
    BadUser,
    /// The instance is frozen (or being frozen): nothing new can start in it.
    Frozen,
    /// The request could not be read (malformed, truncated, too many descriptors).
    Malformed,
    /// What the request waited for did not happen within the forker's deadline.
    TimedOut,
    /// The resource is taken (a console that has a client attached already).
    Busy,
    /// The container runs (a release asked for a run that ended, while a newer run of the
    /// same container started: that end was settled already).
    StillRunning,
    /// The kernel refused a limit of the instance (a value its cgroup files do not take).
    LimitRefused,
    /// A mount (a volume, a channel, mayfly's own directories) cannot be made on its target
    /// inside the instance: the instance's own files make that path unusable (a symbolic
    /// link to nothing, a file where a directory is needed).
    BadMountTarget,
    /// Anything else.
    Other,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Classification.
    pub kind: FailureKind,
    /// What failed, for the user.
    pub message: String,
}

impl Failure {
    /// A failure of kind [`FailureKind::Other`].
    pub fn other(message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Other,
            message: message.into(),
        }
    }
}

/// Something that happened, reported unasked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A container's init ended; every process of the container is gone.
    Exited {
        /// Instance id.
        id: String,
        /// How the init ended (`None` for an adopted init, whose status cannot be known).
        status: Option<ExitStatus>,
    },
    /// An exec'd process ended.
    ExecExited {
        /// Its id.
        exec_id: u64,
        /// How.
        status: ExitStatus,
    },
}

/// What the forker sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromForker {
    /// The answer to request `seq`.
    Reply {
        /// The request's sequence number.
        seq: u64,
        /// Its outcome.
        result: Result<Reply, Failure>,
    },
    /// An event.
    Event(Event),
}

/// Whether a failed [`send`] refused only this message (too large, too many descriptors),
/// leaving the connection usable.
pub fn refused_message(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput || e.raw_os_error() == Some(libc::EMSGSIZE)
}

/// Sends one message with `fds` attached.
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if bytes.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a message of {} bytes is larger than the forker protocol's {MAX_MESSAGE}",
                bytes.len()
            ),
        ));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("more than {MAX_FDS} descriptors for one message"),
        ));
    }
    let sent = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        return Err(io::Error::other("short send on a sequenced-packet socket"));
    }
    Ok(())
}

/// Receives one message into `buf`; returns its length (0 means the peer closed) and the
/// descriptors that came with it (close-on-exec). A message cut short (data or descriptors)
/// is an error: for the private sockets of a child's set-up, where that cannot happen.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let r = recv_message(sock, buf)?;
    if r.truncated || r.fds_dropped {
        return Err(io::Error::other("truncated message on the forker socket"));
    }
    Ok((r.len, r.fds))
}

/// One message as received on the daemon ↔ forker connection.
#[derive(Debug)]
pub struct Received {
    /// Its length (0: the peer closed).
    pub len: usize,
    /// The descriptors that came with it (close-on-exec).
    pub fds: Vec<OwnedFd>,
    /// The message was longer than the buffer and is cut: unreadable.
    pub truncated: bool,
    /// More descriptors came than fit (or than this process may hold): some were dropped.
    pub fds_dropped: bool,
}

/// Receives one message into `buf`, reporting truncation instead of failing on it (the
/// connection stays usable; only this message is lost).
pub fn recv_message(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    Ok(Received {
        len: msg.bytes,
        fds,
        truncated: msg.flags.contains(ReturnFlags::TRUNC),
        fds_dropped: msg.flags.contains(ReturnFlags::CTRUNC),
    })
}

/// Gives a connection's socket the send buffer that [`MAX_MESSAGE`] needs (forced past the
/// system's `wmem_max`, which root may do; else as large as allowed).
pub fn tune(sock: BorrowedFd<'_>) {
    if rustix::net::sockopt::set_socket_send_buffer_size_force(sock, SOCKET_BUFFER).is_err() {
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(sock, SOCKET_BUFFER);
    }
}

/// The sequence number of a request that could not be read whole, if it has one.
pub fn seq_of_request(bytes: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct SeqOnly {
        seq: u64,
    }
    serde_json::from_slice::<SeqOnly>(bytes).ok().map(|s| s.seq)
}

/// The sequence number of a reply that could not be read whole, if it has one.
pub fn seq_of_reply(bytes: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum SeqOnly {
        Reply { seq: u64 },
    }
    match serde_json::from_slice::<SeqOnly>(bytes) {
        Ok(SeqOnly::Reply { seq }) => Some(seq),
        Err(_) => None,
    }
}

/// Serialises and sends a value.
pub fn send_json<T: Serialize>(
    sock: impl AsFd,
    value: &T,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    send(sock.as_fd(), &bytes, fds)
}
