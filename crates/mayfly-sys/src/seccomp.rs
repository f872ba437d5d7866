//! Installing a seccomp BPF program, which rustix does not wrap.
//!
//! The program itself is built in safe code (mayfly-driver's `security` module); this only
//! hands it to the kernel. Unlike most helpers we do *not* set `PR_SET_NO_NEW_PRIVS`: setuid
//! programs inside a system container (su, sudo, ping) must keep working, and the caller holds
//! CAP_SYS_ADMIN in its user namespace, which the kernel accepts instead.

use std::io;

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInstruction {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Immediate operand.
    pub k: u32,
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const BpfInstruction,
}

/// Installs `program` as a seccomp filter of the calling thread (and its future children).
pub fn install_filter(program: &[BpfInstruction]) -> io::Result<()> {
    let len = libc::c_ushort::try_from(program.len())
        .ok()
        .filter(|l| *l > 0)
        .ok_or_else(|| io::Error::other("seccomp program is empty or too long"))?;
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at `len` valid instructions that stay borrowed for the call; the
    // kernel copies the program and keeps no pointer into our memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &raw const prog,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
