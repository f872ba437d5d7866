//! Every `unsafe` block and raw syscall of mayfly lives here, behind safe functions.
//!
//! Everything else in the workspace is `#![forbid(unsafe_code)]` and uses `rustix` for system
//! calls; this crate holds only what rustix does not offer (fork-like `clone`, `mount_setattr`,
//! `execve` with prepared arrays, signal dispositions, the `--init` loop, `close_range`, a
//! netdevice ioctl, fd passing helpers, `bpf(2)` for cgroup device programs, `quotactl_fd(2)`
//! and the project-id ioctls). Each function states the invariant
//! that makes it sound; where soundness depends on the caller's situation (a fork needs a
//! single-threaded process), the function checks that situation at run time and refuses
//! otherwise, so that the wrapper stays safe.
#![allow(unsafe_code)]

pub mod asyncfd;
pub mod bpf;
pub mod init;
pub mod mount;
pub mod net;
pub mod process;
pub mod quota;
pub mod seccomp;
pub mod signal;
