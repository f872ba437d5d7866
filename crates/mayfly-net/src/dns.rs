//! One dnsmasq per network (stub: replaced by the nethost branch).

use std::net::Ipv4Addr;
use std::path::Path;

use crate::{NetworkPlan, Result};

/// The domain of instance names.
pub const DOMAIN: &str = "mayfly";

// stub: replaced by the nethost branch
pub fn ensure_running(_plan: &NetworkPlan, _dir: &Path) -> Result<()> {
    Ok(())
}

// stub: replaced by the nethost branch
pub fn stop(_dir: &Path) -> Result<()> {
    Ok(())
}

// stub: replaced by the nethost branch
pub fn set_host(_dir: &Path, _key: &str, _ipv4: Ipv4Addr, _name: &str) -> Result<()> {
    Ok(())
}

// stub: replaced by the nethost branch
pub fn remove_host(_dir: &Path, _key: &str) -> Result<()> {
    Ok(())
}

// stub: replaced by the nethost branch
pub fn host_keys(_dir: &Path) -> Result<Vec<String>> {
    Ok(Vec::new())
}
