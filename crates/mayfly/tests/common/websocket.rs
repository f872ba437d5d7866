//! A minimal WebSocket client over the daemon's unix socket, for the terminal's tests that do
//! not need a browser (RFC 6455: masked frames from the client, unmasked from the server).

use super::*;

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    Binary(Vec<u8>),
    Text(String),
    Close,
}

/// An open WebSocket.
pub struct WsClient {
    s: UnixStream,
    buf: Vec<u8>,
    mask: u32,
}

impl WsClient {
    /// Opens `path` on `socket`; the refusal (any answer but `101`) as it came.
    pub fn connect(socket: &Path, path: &str) -> Result<WsClient, HttpResponse> {
        let mut s = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()));
        s.set_read_timeout(Some(CLI_TIMEOUT)).expect("timeout");
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: mayfly\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bWF5Zmx5LXRlcm1pbmFsIQ==\r\n\r\n"
        );
        s.write_all(head.as_bytes()).expect("write the handshake");
        let raw = super::webdriver::read_answer(&mut s).expect("read the handshake's answer");
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(raw.len(), |e| e + 4);
        let answer = parse_http(&raw).unwrap_or_else(|e| panic!("bad handshake answer: {e}"));
        if answer.status != 101 {
            return Err(answer);
        }
        Ok(WsClient {
            s,
            buf: raw[end..].to_vec(),
            mask: 0x1234_5678,
        })
    }

    fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | u8::try_from(len).unwrap_or(0));
        } else if let Ok(len) = u16::try_from(len) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&len.to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.mask = self.mask.rotate_left(7) ^ 0x9e37_79b9;
        let key = self.mask.to_be_bytes();
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        let _ = self.s.write_all(&frame);
    }

    /// Sends terminal input.
    pub fn send_binary(&mut self, data: &[u8]) {
        self.send(0x2, data);
    }

    /// Sends a control message.
    pub fn send_text(&mut self, text: &str) {
        self.send(0x1, text.as_bytes());
    }

    /// The next message, or None when the connection ends or `timeout` passes.
    pub fn recv(&mut self, timeout: Duration) -> Option<WsMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                match opcode {
                    0x1 => return Some(WsMessage::Text(String::from_utf8_lossy(&payload).into())),
                    0x2 => return Some(WsMessage::Binary(payload)),
                    0x8 => return Some(WsMessage::Close),
                    // Pings and pongs: the server sends none unasked.
                    _ => continue,
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let mut chunk = [0u8; 16 * 1024];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads terminal output until it contains `want`; the output so far. Text messages are
    /// collected into `texts`.
    pub fn output_until(
        &mut self,
        want: &str,
        timeout: Duration,
        texts: &mut Vec<String>,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while !String::from_utf8_lossy(&out).contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(WsMessage::Binary(b)) => out.extend_from_slice(&b),
                Some(WsMessage::Text(t)) => texts.push(t),
                Some(WsMessage::Close) | None => panic!(
                    "the terminal ended before showing {want:?}: {:?} (texts {texts:?})",
                    String::from_utf8_lossy(&out)
                ),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Closes the connection at once, as a page that goes away does.
    pub fn drop_connection(self) {
        let _ = self.s.shutdown(std::net::Shutdown::Both);
    }
}

/// One complete frame at the start of `buf`: (opcode, payload, bytes used).
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(b)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let key = if masked {
        let k: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(k)
    } else {
        None
    };
    let payload = buf.get(at..at + len)?;
    let payload = match key {
        Some(k) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ k[i % 4])
            .collect(),
        None => payload.to_vec(),
    };
    Some((opcode, payload, at + len))
}
