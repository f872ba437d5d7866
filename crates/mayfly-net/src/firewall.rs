//! mayfly's nftables tables (stub: replaced by the nethost branch).

use std::net::Ipv4Addr;

use crate::{FirewallState, Proto, Result};

// stub: replaced by the nethost branch
pub fn apply(_state: &FirewallState) -> Result<()> {
    Ok(())
}

// stub: replaced by the nethost branch
pub fn remove() -> Result<()> {
    Ok(())
}

// stub: replaced by the nethost branch
pub fn port_in_use(_ip: Ipv4Addr, _port: u16, _proto: Proto) -> bool {
    false
}
