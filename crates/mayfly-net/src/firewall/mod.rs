//! mayfly's own nftables tables, `inet mayfly` and `bridge mayfly`: rendered whole from the
//! desired state ([`render`]) and replaced in one `nft --json` transaction (then the
//! neighbour advertisement check in a text one, see [`apply`]), so that the kernel never
//! holds half of an update and a crash leaves either the old or the new rules.
//! No other table is ever touched.

pub mod rate;
pub mod render;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{FirewallState, NetError, Proto, Result};

/// How long one `nft` run may take.
const NFT_DEADLINE: Duration = Duration::from_secs(10);
/// How much of nft's output is kept for an error message.
const OUTPUT_LIMIT: u64 = 64 * 1024;

/// Makes both tables what `state` says, atomically; with no network in `state`, deletes them.
/// The neighbour-advertisement check goes in by a second, text batch
/// ([`render::nd_batch`]); until it is in, chain `nd` drops every advertisement from an
/// instance, so the tables never let a forged one through.
pub fn apply(state: &FirewallState) -> Result<()> {
    run_nft(&render::batch(state), "apply mayfly's firewall tables")?;
    if state.networks.is_empty() {
        return Ok(());
    }
    run(
        render::nd_batch(state).into_bytes(),
        false,
        "apply mayfly's neighbour advertisement check",
    )
}

/// Makes both tables what `next` says, knowing that they hold `prev` (what this process
/// applied last): when only the instances' interfaces and rates differ (an instance started
/// or ended, a rate changed), only the elements of the spoofing sets and the rate maps (and
/// the rates' limit objects) change, which is cheaper than replacing the tables
/// (no hook is unregistered and registered again) and does not grow with the number of
/// instances; otherwise, or if that fails (someone changed the tables), as [`apply`].
pub fn apply_change(prev: Option<&FirewallState>, next: &FirewallState) -> Result<()> {
    if let Some(prev) = prev
        && !next.networks.is_empty()
        && prev.networks == next.networks
        && prev.forwards == next.forwards
    {
        let Some(batch) = render::element_changes(prev, next) else {
            return Ok(());
        };
        match run_nft(&batch, "update mayfly's firewall") {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!("{e}; replacing the tables whole"),
        }
    }
    apply(next)
}

/// Deletes both tables. Idempotent.
pub fn remove() -> Result<()> {
    run_nft(
        &render::batch(&FirewallState::default()),
        "remove mayfly's firewall tables",
    )
}

/// Whether `ip` is one of the host's addresses (a socket can be bound to it).
pub fn is_host_address(ip: Ipv4Addr) -> bool {
    !matches!(
        UdpSocket::bind(SocketAddrV4::new(ip, 0)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable
    )
}

/// Whether a host socket holds `ip:port` for `proto` (binding it fails with "address in
/// use"); an address the host does not have is not "in use".
pub fn port_in_use(ip: Ipv4Addr, port: u16, proto: Proto) -> bool {
    let addr = SocketAddrV4::new(ip, port);
    let res = match proto {
        Proto::Tcp => TcpListener::bind(addr).map(drop),
        Proto::Udp => UdpSocket::bind(addr).map(drop),
    };
    matches!(res, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

fn run_nft(batch: &serde_json::Value, what: &str) -> Result<()> {
    run(serde_json::to_vec(batch).unwrap_or_default(), true, what)
}

/// Runs `nft -f -` on `body`, JSON (`-j`) or text.
fn run(body: Vec<u8>, json: bool, what: &str) -> Result<()> {
    let tool = |message: String| NetError::Tool {
        what: what.to_owned(),
        message,
    };
    let args: &[&str] = if json {
        &["-j", "-f", "-"]
    } else {
        &["-f", "-"]
    };
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            tool(format!(
                "cannot run `nft` ({e}); install the nftables package"
            ))
        })?;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr {
            let _ = s.take(OUTPUT_LIMIT).read_to_string(&mut text);
        }
        text
    });
    // Fed from a thread: a batch larger than the pipe would otherwise block here, past the
    // deadline, when nft does not read it (the kill below ends the write too).
    let writer = child.stdin.take().map(|mut stdin| {
        std::thread::spawn(move || -> std::io::Result<()> { stdin.write_all(&body) })
    });
    let deadline = Instant::now() + NFT_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(tool(format!(
                    "`nft` did not finish within {} s and was killed",
                    NFT_DEADLINE.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(tool(format!("cannot wait for `nft`: {e}"))),
        }
    };
    let stderr = reader.join().unwrap_or_default();
    let written = writer.map(|w| {
        w.join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the writer panicked")))
    });
    let status = status?;
    if !status.success() {
        return Err(tool(format!(
            "`nft {}` failed ({status}): {}",
            args.join(" "),
            stderr.trim()
        )));
    }
    if let Some(Err(e)) = written {
        return Err(tool(format!("cannot feed `nft`: {e}")));
    }
    Ok(())
}
