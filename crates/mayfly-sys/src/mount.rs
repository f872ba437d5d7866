//! `mount_setattr(2)`, which rustix does not wrap yet: idmapped and read-only detached mounts.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Mirrors `struct mount_attr` from `<linux/mount.h>` (size version 0, 32 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Flags for [`set_detached_mount_attrs`] besides `nodev`, which is always set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DetachedAttrs {
    /// Read-only.
    pub readonly: bool,
    /// Ignore setuid/setgid bits and file capabilities.
    pub nosuid: bool,
}

/// Sets attributes on the detached mount `mount` (from `open_tree(OPEN_TREE_CLONE)`), always
/// no-dev, and, when `userns` is given, makes it idmapped through that user namespace: files
/// owned by host uid 0 appear owned by whatever host uid the namespace maps its uid 0 to.
pub fn set_detached_mount_attrs(
    mount: impl AsFd,
    userns: Option<impl AsFd>,
    attrs: DetachedAttrs,
) -> io::Result<()> {
    let mut set = MOUNT_ATTR_NODEV;
    if attrs.readonly {
        set |= MOUNT_ATTR_RDONLY;
    }
    if attrs.nosuid {
        set |= MOUNT_ATTR_NOSUID;
    }
    let mut attr = MountAttr {
        attr_set: set,
        ..MountAttr::default()
    };
    // Keep the borrowed fd alive for the duration of the call.
    let userns_borrow = userns.as_ref().map(|fd| fd.as_fd());
    if let Some(fd) = userns_borrow {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = u64::try_from(fd.as_raw_fd())
            .map_err(|_| io::Error::other("negative file descriptor"))?;
    }
    let empty = c"";
    // SAFETY: `attr` is a properly initialised mount_attr of the size we pass; `empty` is a
    // valid NUL-terminated string; both fds are borrowed and open for the whole call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_fd().as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
