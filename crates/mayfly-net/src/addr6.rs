//! IPv6 unique local addresses (RFC 4193): a network's /64, and the addresses in it derived
//! from the IPv4 ones, so that IPv6 needs no allocation of its own. Pure but for the random
//! global id.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The length of every network's IPv6 prefix.
pub const PREFIX6: u8 = 64;

/// A new ULA /64: `fd`, a random 40-bit global id, subnet id 0 (RFC 4193, 3.2).
pub fn random_ula64() -> Ipv6Addr {
    let mut id = [0u8; 5];
    crate::addr::random_bytes(&mut id);
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..6].copy_from_slice(&id);
    Ipv6Addr::from(b)
}

/// Whether `prefix` is a ULA /64 as [`random_ula64`] makes them (`fd00::/8`, the last 64
/// bits zero).
pub fn is_ula64(prefix: Ipv6Addr) -> bool {
    let b = prefix.octets();
    b[0] == 0xfd && b[8..].iter().all(|&x| x == 0)
}

/// The gateway of the /64 `prefix`: `prefix::1`.
pub fn gateway6(prefix: Ipv6Addr) -> Ipv6Addr {
    host6(prefix, 1)
}

/// The IPv6 address of the instance whose IPv4 address is `ipv4`: `prefix::` and the 32
/// bits of `ipv4` (e.g. `fdxx:xxxx:xxxx::a4d:2` for 10.77.0.2). Unique on the network because
/// the IPv4 address is, and never the gateway's (no instance has x.x.x.1 with all else 0).
pub fn derived6(prefix: Ipv6Addr, ipv4: Ipv4Addr) -> Ipv6Addr {
    host6(prefix, u32::from(ipv4))
}

/// The link-local address the kernel gives an interface with MAC `mac` when its
/// `addr_gen_mode` is 0 (EUI-64, RFC 4291 appendix A): `fe80::` and the MAC with `ff:fe` in
/// its middle and the universal/local bit flipped.
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[0] = 0xfe;
    b[1] = 0x80;
    b[8] = mac[0] ^ 0x02;
    b[9..11].copy_from_slice(&mac[1..3]);
    b[11] = 0xff;
    b[12] = 0xfe;
    b[13..16].copy_from_slice(&mac[3..6]);
    Ipv6Addr::from(b)
}

fn host6(prefix: Ipv6Addr, low: u32) -> Ipv6Addr {
    let net = u128::from(prefix) & !((1u128 << 64) - 1);
    Ipv6Addr::from(net | u128::from(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ula_prefixes_are_random_fd_slash_64_and_addresses_derive_from_ipv4() {
        let a = random_ula64();
        let b = random_ula64();
        assert!(is_ula64(a) && is_ula64(b));
        assert_ne!(a, b, "40 random bits");
        assert_eq!(a.segments()[3], 0, "subnet id 0");
        let p: Ipv6Addr = "fd12:3456:789a::".parse().unwrap();
        assert_eq!(
            gateway6(p),
            "fd12:3456:789a::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            derived6(p, Ipv4Addr::new(10, 77, 0, 2)),
            "fd12:3456:789a::a4d:2".parse::<Ipv6Addr>().unwrap()
        );
        assert!(!is_ula64("fe80::".parse().unwrap()));
        assert_eq!(
            link_local([0x02, 0x4d, 0x66, 0x01, 0x02, 0x03]),
            "fe80::4d:66ff:fe01:203".parse::<Ipv6Addr>().unwrap()
        );
        assert!(!is_ula64("fd00::1".parse().unwrap()));
    }
}
