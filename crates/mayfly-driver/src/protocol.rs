//! The daemon ↔ forker protocol: JSON messages over a `SOCK_SEQPACKET` unix socket, with
//! file descriptors (stdio, terminals) passed alongside as `SCM_RIGHTS`.
//!
//! Sequenced packets keep message boundaries, so one `recvmsg` is one message and the
//! descriptors that came with it. Requests carry a sequence number that the reply repeats;
//! events (a container or exec'd process ended) carry none and may arrive at any time, but
//! always after the reply that created what they report on.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use crate::spec::{ContainerSpec, ExitStatus, ProcessSpec};

/// Bumped whenever a message changes shape.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest message, in bytes.
pub const MAX_MESSAGE: usize = 256 * 1024;

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

/// Sends one message with `fds` attached.
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if bytes.len() > MAX_MESSAGE {
        return Err(io::Error::other(
            "message too large for the forker protocol",
        ));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
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
/// descriptors that came with it (close-on-exec).
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
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
    if msg.flags.contains(ReturnFlags::TRUNC) || msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::other("truncated message on the forker socket"));
    }
    Ok((msg.bytes, fds))
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
