//! The start-up probe: can template layers be mounted idmapped through a user namespace?

use std::os::fd::AsFd;

use mayfly_sys::process::{CloneFlags, Forked};
use rustix::mount::OpenTreeFlags;

use super::spawn::{LAYER_ATTRS, reap_now, seqpacket_pair};
use crate::protocol;

/// Checks that `path` can be mounted idmapped through a fresh user namespace: a child
/// unshares one, we map it, clone `path` as a detached mount and idmap it. Returns why not.
pub(crate) fn probe_idmap(path: &std::path::Path) -> Result<(), String> {
    let (parent_sock, child_sock) = seqpacket_pair().map_err(|f| f.message)?;
    let flags = CloneFlags {
        user: true,
        ..CloneFlags::default()
    };
    let pid = match mayfly_sys::process::clone_process(flags) {
        Err(e) => return Err(format!("cannot create a user namespace: {e}")),
        Ok(Forked::Child) => {
            // Wait until the parent is done with our namespace, then leave.
            drop(parent_sock);
            let mut buf = [0u8; 4];
            let _ = protocol::recv(child_sock.as_fd(), &mut buf);
            mayfly_sys::process::exit_immediately(0)
        }
        Ok(Forked::Parent(pid)) => pid,
    };
    drop(child_sock);
    let result = (|| {
        let line = "0 2147418112 65536";
        for file in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{}/{file}", pid.as_raw_nonzero()), line)
                .map_err(|e| format!("cannot map ids in a user namespace: {e}"))?;
        }
        let userns = rustix::fs::open(
            format!("/proc/{}/ns/user", pid.as_raw_nonzero()).as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| format!("cannot open a user namespace: {e}"))?;
        let tree = rustix::mount::open_tree(
            rustix::fs::CWD,
            path,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(|e| format!("cannot clone a mount of {}: {e}", path.display()))?;
        mayfly_sys::mount::set_detached_mount_attrs(&tree, Some(&userns), LAYER_ATTRS).map_err(|e| {
            format!(
                "the filesystem of {} does not support idmapped mounts ({e}); Linux 5.19 or later with ext4, xfs, btrfs or tmpfs does",
                path.display()
            )
        })
    })();
    let _ = protocol::send(parent_sock.as_fd(), b"done", &[]);
    reap_now(pid);
    result
}
