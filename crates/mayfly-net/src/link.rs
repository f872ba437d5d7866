//! Bridges, veths, addresses and routes (stub: replaced by the nethost branch).

use std::os::fd::BorrowedFd;

use crate::{Interface, Ipv4Net, NetworkPlan, Result};

// stub: replaced by the nethost branch
pub fn ensure_bridge(_plan: &NetworkPlan) -> Result<()> {
    Ok(())
}

// stub: replaced by the nethost branch
pub fn remove_bridge(_name: &str) -> Result<()> {
    Ok(())
}

// stub: replaced by the nethost branch
pub fn delete_link(_name: &str) -> Result<()> {
    Ok(())
}

// stub: replaced by the nethost branch
pub fn links_with_prefix(_prefix: &str) -> Result<Vec<String>> {
    Ok(Vec::new())
}

// stub: replaced by the nethost branch
pub fn used_ipv4_nets() -> Result<Vec<Ipv4Net>> {
    Ok(Vec::new())
}

// stub: replaced by the nethost branch
pub fn attach(_netns: BorrowedFd<'_>, _iface: &Interface) -> Result<()> {
    Ok(())
}
