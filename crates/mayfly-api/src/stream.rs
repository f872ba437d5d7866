//! Framing of the interactive byte streams of `exec` and `run`.
//!
//! After `101 Switching Protocols` (`Upgrade: mayfly-stream`) both sides exchange frames:
//! one kind byte, a big-endian u32 payload length, the payload. The client sends stdin, stdin
//! EOF, terminal size and signals; the daemon sends stdin credit, stdout, stderr and, last, the
//! exit status or an error. A length above [`MAX_FRAME`] is a protocol error, so a peer cannot
//! make the other allocate without bound.
//!
//! Standard input is flow-controlled by credit, as SSH channels and HTTP/2 streams are: the
//! daemon's first frame is a [`Frame::Credit`] granting a window ([`STDIN_WINDOW`]), and it
//! grants more as it writes stdin into the process. The client never has more stdin bytes in
//! flight than it was granted; one that sends more breaks the protocol (the daemon ends the
//! process and answers with an [`Frame::Error`]). So the daemon never has to stop reading the
//! stream: signals, resizes, stdin EOF and a disconnect are seen at once even while the
//! process does not read its stdin. Output needs no credit: the daemon reads it only as fast
//! as the client takes it (the socket's own back-pressure), and the client always reads.
//!
//! | kind | frame       | direction        | payload                          |
//! |------|-------------|------------------|----------------------------------|
//! | 0    | `Stdin`     | client → daemon  | bytes (counted against credit)   |
//! | 1    | `StdinEof`  | client → daemon  | none                             |
//! | 2    | `Resize`    | client → daemon  | rows u16, cols u16               |
//! | 3    | `Signal`    | client → daemon  | signal number i32                |
//! | 4    | `Stdout`    | daemon → client  | bytes                            |
//! | 5    | `Stderr`    | daemon → client  | bytes                            |
//! | 6    | `Exit`      | daemon → client  | shell-style code i32 (last)      |
//! | 7    | `Error`     | daemon → client  | UTF-8 message (last)             |
//! | 8    | `Credit`    | daemon → client  | more stdin bytes allowed, u32    |
//! | 9    | `Kill`      | client → daemon  | none                             |
//!
//! `Kill` is the client giving up on the process (a second Ctrl-C): the daemon ends it at
//! once (SIGKILL to an exec'd process and its group; a forced stop of an attached run's
//! instance) and, as always, answers with its exit status once it is gone.

/// The `Upgrade` protocol token.
pub const UPGRADE_PROTOCOL: &str = "mayfly-stream";

/// Header of the `101` answer to `POST /v1/run`: the name of the instance created.
pub const INSTANCE_HEADER: &str = "mayfly-instance";

/// Header of the `101` answer to `POST /v1/run`: the id of the instance created (names can
/// be taken again once it is gone; the id never is).
pub const INSTANCE_ID_HEADER: &str = "mayfly-instance-id";

/// Largest payload accepted in one frame.
pub const MAX_FRAME: usize = 1 << 20;

/// The stdin window the daemon grants: at most this many bytes of stdin are ever buffered
/// between the client and the process (plus the process's pipe).
pub const STDIN_WINDOW: u32 = 1 << 20;

/// One message on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes for the process's standard input (client → daemon).
    Stdin(Vec<u8>),
    /// The client's standard input ended.
    StdinEof,
    /// The client's terminal has this many rows and columns.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Deliver this signal number to the process (client → daemon).
    Signal(i32),
    /// Bytes the process wrote to standard output (or to its terminal).
    Stdout(Vec<u8>),
    /// Bytes the process wrote to standard error.
    Stderr(Vec<u8>),
    /// The process ended with this shell-style code (daemon → client, last frame).
    Exit(i32),
    /// The daemon could not run or follow the process (last frame).
    Error(String),
    /// The client may send this many more bytes of stdin (daemon → client).
    Credit(u32),
    /// End the process now (client → daemon); the exit status follows as usual.
    Kill,
}

const STDIN: u8 = 0;
const STDIN_EOF: u8 = 1;
const RESIZE: u8 = 2;
const SIGNAL: u8 = 3;
const STDOUT: u8 = 4;
const STDERR: u8 = 5;
const EXIT: u8 = 6;
const ERROR: u8 = 7;
const CREDIT: u8 = 8;
const KILL: u8 = 9;

/// A malformed stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The peer sent an unknown frame kind.
    #[error("unknown stream frame kind {0}")]
    UnknownKind(u8),
    /// The peer announced a payload larger than [`MAX_FRAME`].
    #[error("stream frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// A fixed-size frame had the wrong payload size.
    #[error("stream frame of kind {kind} has a bad length {len}")]
    BadLength {
        /// Frame kind.
        kind: u8,
        /// Payload length.
        len: usize,
    },
}

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Stdin(b) => (STDIN, b.as_slice().into()),
            Frame::StdinEof => (STDIN_EOF, (&[][..]).into()),
            Frame::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                (RESIZE, p.into())
            }
            Frame::Signal(s) => (SIGNAL, s.to_be_bytes().to_vec().into()),
            Frame::Stdout(b) => (STDOUT, b.as_slice().into()),
            Frame::Stderr(b) => (STDERR, b.as_slice().into()),
            Frame::Exit(c) => (EXIT, c.to_be_bytes().to_vec().into()),
            Frame::Error(m) => (ERROR, m.as_bytes().into()),
            Frame::Credit(n) => (CREDIT, n.to_be_bytes().to_vec().into()),
            Frame::Kill => (KILL, (&[][..]).into()),
        };
        out.push(kind);
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&payload);
    }

    /// The encoded frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Incremental decoder: feed bytes as they arrive, take frames as they complete.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let payload: Vec<u8> = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        let fixed = |n: usize| -> Result<(), FrameError> {
            if payload.len() == n {
                Ok(())
            } else {
                Err(FrameError::BadLength { kind, len })
            }
        };
        let frame = match kind {
            STDIN => Frame::Stdin(payload),
            STDIN_EOF => Frame::StdinEof,
            RESIZE => {
                fixed(4)?;
                Frame::Resize {
                    rows: u16::from_be_bytes([payload[0], payload[1]]),
                    cols: u16::from_be_bytes([payload[2], payload[3]]),
                }
            }
            SIGNAL => {
                fixed(4)?;
                Frame::Signal(i32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]))
            }
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            EXIT => {
                fixed(4)?;
                Frame::Exit(i32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]))
            }
            ERROR => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
            CREDIT => {
                fixed(4)?;
                Frame::Credit(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]))
            }
            KILL => {
                fixed(0)?;
                Frame::Kill
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_even_when_split_byte_by_byte() {
        let frames = vec![
            Frame::Stdin(b"hello".to_vec()),
            Frame::StdinEof,
            Frame::Resize { rows: 24, cols: 80 },
            Frame::Signal(2),
            Frame::Stdout(vec![0, 1, 2, 255]),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-1),
            Frame::Error("no such instance".into()),
            Frame::Credit(1 << 20),
            Frame::Kill,
        ];
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for b in wire {
            dec.push(&[b]);
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn oversized_and_unknown_frames_are_errors() {
        let mut dec = FrameDecoder::new();
        dec.push(&[STDOUT, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(dec.next_frame(), Err(FrameError::TooLarge(_))));
        let mut dec = FrameDecoder::new();
        dec.push(&[42, 0, 0, 0, 0]);
        assert_eq!(dec.next_frame(), Err(FrameError::UnknownKind(42)));
        let mut dec = FrameDecoder::new();
        dec.push(&[EXIT, 0, 0, 0, 1, 7]);
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::BadLength { .. })
        ));
    }
}
