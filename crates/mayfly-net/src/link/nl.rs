//! A blocking rtnetlink socket: one request at a time, answered by an acknowledgement or a
//! dump, with a receive deadline so that no call can hang.

use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::{NetError, Result};

/// How long the kernel may take to answer one request.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

/// The largest datagram read at once (the kernel's dump messages stay far below).
const RECV_BUFFER: usize = 64 * 1024;

/// Flags of a request that creates something that must not exist yet.
pub(crate) const CREATE_EXCL: u16 = NLM_F_CREATE | NLM_F_EXCL;

/// An rtnetlink socket of the network namespace it was opened in (it stays bound to that
/// namespace whichever the thread moves to later).
#[derive(Debug)]
pub(crate) struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens one in the calling thread's network namespace.
    pub(crate) fn open() -> Result<Netlink> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source: std::io::Error| NetError::Io { what, source }
        };
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(io("open a netlink socket"))?;
        sock.bind_auto().map_err(io("bind a netlink socket"))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(io("connect a netlink socket"))?;
        // Extended acks make errors precise; without them the errno still says enough.
        let _ = sock.set_ext_ack(true);
        rustix::net::sockopt::set_socket_timeout(
            sock.as_fd(),
            rustix::net::sockopt::Timeout::Recv,
            Some(ANSWER_DEADLINE),
        )
        .map_err(|e| io("set a netlink deadline")(e.into()))?;
        Ok(Netlink { sock, seq: 0 })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16, what: &str) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = flags;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        rustix::net::send(self.sock.as_fd(), &buf, rustix::net::SendFlags::empty()).map_err(
            |e| NetError::Io {
                what: format!("{what}: send the netlink request"),
                source: e.into(),
            },
        )?;
        Ok(self.seq)
    }

    /// Reads datagrams, handing each message of sequence `seq` to `each`, until `each` says
    /// the answer is complete (`Ok(true)`).
    fn receive(
        &mut self,
        seq: u32,
        what: &str,
        mut each: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> Result<bool>,
    ) -> Result<()> {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let n =
                match rustix::net::recv(self.sock.as_fd(), &mut buf, rustix::net::RecvFlags::TRUNC)
                {
                    Ok((n, full)) if full <= n => n,
                    Ok((_, full)) => {
                        return Err(NetError::Netlink {
                            what: what.to_owned(),
                            message: format!(
                                "an answer of {full} bytes exceeds the {RECV_BUFFER}-byte buffer"
                            ),
                            errno: None,
                        });
                    }
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(rustix::io::Errno::AGAIN) => {
                        return Err(NetError::Netlink {
                            what: what.to_owned(),
                            message: format!(
                                "the kernel did not answer within {} s",
                                ANSWER_DEADLINE.as_secs()
                            ),
                            errno: None,
                        });
                    }
                    Err(e) => {
                        return Err(NetError::Io {
                            what: format!("{what}: read the netlink answer"),
                            source: e.into(),
                        });
                    }
                };
            let mut offset = 0;
            while offset < n {
                let msg: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&buf[offset..n]).map_err(|e| {
                        NetError::Netlink {
                            what: what.to_owned(),
                            message: format!("unreadable answer: {e}"),
                            errno: None,
                        }
                    })?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += len.next_multiple_of(4);
                if msg.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(ref e) = msg.payload
                    && let Some(code) = e.code
                {
                    let errno = code.get().abs();
                    return Err(NetError::Netlink {
                        what: what.to_owned(),
                        message: std::io::Error::from_raw_os_error(errno).to_string(),
                        errno: Some(errno),
                    });
                }
                if each(msg.payload)? {
                    return Ok(());
                }
            }
        }
    }

    /// Sends a request and waits for its acknowledgement.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<()> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags, what)?;
        self.receive(seq, what, |payload| {
            Ok(matches!(
                payload,
                NetlinkPayload::Error(_) | NetlinkPayload::Done(_)
            ))
        })
    }

    /// Sends a dump request and collects the messages of the answer.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP, what)?;
        let mut out = Vec::new();
        self.receive(seq, what, |payload| match payload {
            NetlinkPayload::InnerMessage(m) => {
                out.push(m);
                Ok(false)
            }
            NetlinkPayload::Done(_) | NetlinkPayload::Error(_) => Ok(true),
            _ => Ok(false),
        })?;
        Ok(out)
    }
}

/// Whether `e` is the kernel's answer `errno`.
pub(crate) fn is_errno(e: &NetError, errno: i32) -> bool {
    matches!(e, NetError::Netlink { errno: Some(x), .. } if *x == errno)
}
