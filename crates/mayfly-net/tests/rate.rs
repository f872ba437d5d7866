//! Bandwidth limits of instance ports (`--net-rate`), for real: TCP between two "containers"
//! on a bridge in a network namespace of the test's own, timed with and without a limit,
//! each way, changed and removed through element-only changes.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Container, iface, isolate, plan};
use mayfly_net::{FirewallState, firewall, link};

/// How long one transfer may take at most (a stalled one fails the test, never hangs it).
const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `f` in a thread that joined network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: OwnedFd,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("join the container's network namespace");
        f()
    })
}

/// Sends `bytes` over TCP from `from` to `to` (at `to_ip`) and returns how long it took
/// until the receiver had them all.
fn transfer(from: &Container, to: &Container, to_ip: Ipv4Addr, bytes: usize) -> Duration {
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = in_netns(to.netns(), move || {
        let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        ready_tx.send(l.local_addr().unwrap().port()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(TRANSFER_DEADLINE)).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => panic!("the receiver stalled after {got} bytes: {e}"),
            }
        }
        (got, Instant::now())
    });
    let port = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the receiver listens");
    let sender = in_netns(from.netns(), move || {
        let start = Instant::now();
        let mut s =
            TcpStream::connect_timeout(&SocketAddrV4::new(to_ip, port).into(), TRANSFER_DEADLINE)
                .expect("connect to the receiver");
        s.set_write_timeout(Some(TRANSFER_DEADLINE)).unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).expect("send");
            left -= n;
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        start
    });
    let start = sender.join().expect("the sender");
    let (got, end) = receiver.join().expect("the receiver");
    assert_eq!(got, bytes, "every byte arrived");
    end - start
}

fn nft(args: &[&str]) -> String {
    let out = Command::new("nft").args(args).output().unwrap();
    assert!(out.status.success(), "nft {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_port_rate_slows_both_directions_and_changes_and_goes_without_replacing_the_tables() {
    isolate();
    let p = plan("lan", "mf-000000000009", "10.77.0.0/24", false);
    link::ensure_bridge(&p).unwrap();
    let (a, b) = (Container::new(), Container::new());
    let (ia, ib) = (iface(&p, 0, 0), iface(&p, 1, 0));
    link::attach(a.netns().as_fd(), &ia).unwrap();
    link::attach(b.netns().as_fd(), &ib).unwrap();
    let free = FirewallState {
        networks: vec![p.clone()],
        interfaces: vec![ia.clone(), ib.clone()],
        ..Default::default()
    };
    firewall::apply_change(None, &free).unwrap();
    const SIZE: usize = 3 << 19; // 1.5 MiB
    const RATE: u64 = 256 << 10; // 256 KiB/s

    // Without a limit: well under a second (so that the limited times below mean something).
    let unlimited = transfer(&a, &b, ib.ipv4, SIZE);
    assert!(
        unlimited < Duration::from_secs(2),
        "1.5 MiB without a limit took {unlimited:?}"
    );

    // a limited to 256 KiB/s: the bucket holds one second of it, the rest comes at the
    // rate, ~5 s; whichever way the bytes go, as a's sending or as its receiving.
    let limited = FirewallState {
        rates: [(ia.host_name.clone(), RATE)].into_iter().collect(),
        ..free.clone()
    };
    let chain = || nft(&["-a", "list", "chain", "bridge", "mayfly", "rate_out"]);
    let chain_before = chain();
    firewall::apply_change(Some(&free), &limited).unwrap();
    assert_eq!(
        chain(),
        chain_before,
        "a rate is an element, not a new table"
    );
    let table = nft(&["list", "table", "bridge", "mayfly"]);
    assert!(
        table.contains(&format!("limit {}-out-{RATE}", ia.host_name))
            && table.contains(&format!("limit {}-in-{RATE}", ia.host_name))
            && table.contains("rate over 256 kbytes/second"),
        "{table}"
    );
    for (what, from, to, ip) in [
        ("a's sending", &a, &b, ib.ipv4),
        ("a's receiving", &b, &a, ia.ipv4),
    ] {
        let took = transfer(from, to, ip, SIZE);
        assert!(
            took > Duration::from_millis(2500) && took < Duration::from_secs(40),
            "1.5 MiB at 256 KiB/s limiting {what} took {took:?} (about 5 s expected; without \
             a limit {unlimited:?})\n{table}"
        );
    }
    // b has no limit: between b and a third party nothing slows (the limit is per port);
    // here, b to the host's gateway address is not limited either.

    // Raised on the fly to 64 MiB/s: fast again.
    let raised = FirewallState {
        rates: [(ia.host_name.clone(), 64 << 20)].into_iter().collect(),
        ..free.clone()
    };
    firewall::apply_change(Some(&limited), &raised).unwrap();
    let table = nft(&["list", "table", "bridge", "mayfly"]);
    assert!(
        !table.contains(&format!("-out-{RATE}")) && table.contains("-out-67108864"),
        "the old limit is gone, the new one there: {table}"
    );
    let took = transfer(&a, &b, ib.ipv4, SIZE);
    assert!(
        took < Duration::from_secs(2),
        "after raising the rate, 1.5 MiB took {took:?}"
    );

    // Lowered again, then removed (the instance's end): nothing of it stays.
    firewall::apply_change(Some(&raised), &limited).unwrap();
    let took = transfer(&a, &b, ib.ipv4, SIZE);
    assert!(
        took > Duration::from_millis(2500),
        "lowered again, 1.5 MiB took {took:?}"
    );
    let gone = FirewallState {
        interfaces: vec![ib.clone()],
        ..free.clone()
    };
    firewall::apply_change(Some(&limited), &gone).unwrap();
    let table = nft(&["list", "table", "bridge", "mayfly"]);
    assert!(!table.contains(&ia.host_name), "{table}");
    assert!(!table.contains("limit mv"), "{table}");
    assert_eq!(chain(), chain_before, "still element-only changes");
    firewall::remove().unwrap();
}

#[test]
fn the_whole_tables_carry_the_rates() {
    isolate();
    let p = plan("lan", "mf-00000000000a", "10.78.0.0/24", false);
    let ia = iface(&p, 0, 0);
    let state = FirewallState {
        networks: vec![p.clone()],
        interfaces: vec![ia.clone()],
        rates: [(ia.host_name.clone(), 1000)].into_iter().collect(),
        ..Default::default()
    };
    firewall::apply(&state).unwrap();
    let table = nft(&["list", "table", "bridge", "mayfly"]);
    // 8 kbit/s (the smallest rate) gets a bucket a 64 KiB segment fits in.
    assert!(
        table.contains(&format!("limit {}-out-1000", ia.host_name))
            && table.contains("rate over 1000 bytes/second burst 130072 bytes"),
        "{table}"
    );
    assert!(
        table.contains(&format!("\"{0}\" : \"{0}-in-1000\"", ia.host_name)),
        "{table}"
    );
    assert!(
        table.contains("limit name iifname map @rates_out drop")
            && table.contains("limit name oifname map @rates_in drop"),
        "{table}"
    );
    firewall::remove().unwrap();
    assert!(!nft(&["list", "tables"]).contains("mayfly"));
}
