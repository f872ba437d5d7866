//! IPv4 subnets and MAC addresses: parsing, display, and the arithmetic the catalogue's
//! allocation needs. Pure: no system calls.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::NetError;

/// Fills `b` with random bytes (the kernel's; without an entropy syscall, time and pid,
/// enough to avoid collisions on one host).
pub(crate) fn random_bytes(b: &mut [u8]) {
    if rustix::rand::getrandom(&mut *b, rustix::rand::GetRandomFlags::empty()).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mix = t ^ (u128::from(std::process::id()) << 64);
        for (x, byte) in b.iter_mut().zip(mix.to_le_bytes().into_iter().cycle()) {
            *x = byte;
        }
    }
}

/// An IPv4 subnet: a network address (host bits zero) and a prefix length (8..=30).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// The subnet `addr/prefix`; refuses host bits set and prefixes outside 8..=30 (a network
    /// needs a gateway, at least one instance and a broadcast address).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Ipv4Net, NetError> {
        if !(8..=30).contains(&prefix) {
            return Err(NetError::Invalid(format!(
                "prefix length /{prefix} is not usable: give one from /8 to /30 (e.g. 10.20.0.0/24)"
            )));
        }
        let net = Ipv4Net { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            let fixed = Ipv4Addr::from(u32::from(addr) & net.mask());
            return Err(NetError::Invalid(format!(
                "{addr}/{prefix} has host bits set: the subnet is {fixed}/{prefix}"
            )));
        }
        Ok(net)
    }

    /// The subnet of `prefix` bits (clamped to 32) around `addr`, host bits cleared: what an
    /// address or route of the host covers, for overlap checks. Unlike [`Ipv4Net::new`] it
    /// takes any prefix, so not every method makes sense on the result (a /32 has no gateway).
    pub fn covering(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
        let prefix = prefix.min(32);
        let mut net = Ipv4Net { addr, prefix };
        net.addr = Ipv4Addr::from(u32::from(addr) & net.mask());
        net
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The first host address: the gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// How many addresses instances can get (all but the network, gateway and broadcast).
    pub fn capacity(&self) -> u32 {
        (!self.mask()).saturating_sub(2)
    }

    /// The `n`th address an instance may get (0-based: the one after the gateway), if the
    /// subnet has it.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        (n < self.capacity()).then(|| Ipv4Addr::from(u32::from(self.addr) + 2 + n))
    }

    /// The first address instances may get that is not in `taken`.
    pub fn first_free(&self, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let mut used: Vec<u32> = taken
            .iter()
            .filter(|ip| self.contains(**ip))
            .map(|ip| u32::from(*ip))
            .collect();
        used.sort_unstable();
        let mut candidate = u32::from(self.addr) + 2;
        for u in used {
            if u == candidate {
                candidate += 1;
            } else if u > candidate {
                break;
            }
        }
        (candidate < u32::from(self.broadcast())).then(|| Ipv4Addr::from(candidate))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            NetError::Invalid(format!(
                "`{s}` is not an IPv4 subnet: write ADDRESS/PREFIX, e.g. 10.20.0.0/24"
            ))
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Ipv4Net::new(addr, prefix)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A random locally administered unicast address (`x2:…`, `x6:…`, `xa:…`, `xe:…`).
    pub fn random() -> Mac {
        let mut b = [0u8; 6];
        random_bytes(&mut b);
        b[0] = (b[0] & 0xfe) | 0x02;
        Mac(b)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetError::Invalid(format!("`{s}` is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for x in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *x = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_refuse_what_cannot_be_a_network() {
        let n: Ipv4Net = "10.20.0.0/24".parse().unwrap();
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 20, 0, 1));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 20, 0, 255));
        assert_eq!(n.capacity(), 253);
        assert_eq!(n.host(0), Some(Ipv4Addr::new(10, 20, 0, 2)));
        assert_eq!(n.host(253), None);
        assert_eq!(n.to_string(), "10.20.0.0/24");
        let e = "10.20.0.1/24".parse::<Ipv4Net>().unwrap_err().to_string();
        assert!(e.contains("10.20.0.0/24"), "{e}");
        for bad in [
            "10.20.0.0",
            "10.20.0.0/31",
            "10.20.0.0/7",
            "x/24",
            "10.20.0.0/+4",
            "",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlaps_and_first_free_address() {
        let a: Ipv4Net = "10.20.0.0/16".parse().unwrap();
        let b: Ipv4Net = "10.20.5.0/24".parse().unwrap();
        let c: Ipv4Net = "10.21.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        let small: Ipv4Net = "10.0.0.0/30".parse().unwrap();
        assert_eq!(small.capacity(), 1);
        let first = small.first_free(&[]).unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(small.first_free(&[first]), None, "exhausted");
        let n: Ipv4Net = "10.1.0.0/24".parse().unwrap();
        let taken = [Ipv4Addr::new(10, 1, 0, 3), Ipv4Addr::new(10, 1, 0, 2)];
        assert_eq!(n.first_free(&taken), Some(Ipv4Addr::new(10, 1, 0, 4)));
        let gap = [Ipv4Addr::new(10, 1, 0, 3)];
        assert_eq!(n.first_free(&gap), Some(Ipv4Addr::new(10, 1, 0, 2)));
    }

    #[test]
    fn covering_clears_host_bits_for_any_prefix() {
        let ip = Ipv4Addr::new(192, 168, 7, 9);
        assert_eq!(Ipv4Net::covering(ip, 24).to_string(), "192.168.7.0/24");
        assert_eq!(Ipv4Net::covering(ip, 32).to_string(), "192.168.7.9/32");
        assert_eq!(Ipv4Net::covering(ip, 0).to_string(), "0.0.0.0/0");
        let n: Ipv4Net = "192.168.0.0/16".parse().unwrap();
        assert!(n.overlaps(&Ipv4Net::covering(ip, 32)));
    }

    #[test]
    fn macs_are_local_unicast_and_round_trip() {
        for _ in 0..64 {
            let m = Mac::random();
            assert_eq!(m.0[0] & 0x03, 0x02, "{m}");
            assert_eq!(m.to_string().parse::<Mac>().unwrap(), m);
        }
        assert!("02:00:00:00:00".parse::<Mac>().is_err());
        assert!("02:00:00:00:00:00:00".parse::<Mac>().is_err());
    }
}
