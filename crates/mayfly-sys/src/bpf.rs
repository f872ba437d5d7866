//! `bpf(2)` for cgroup v2 device programs, which rustix does not wrap: load an eBPF program of
//! type `BPF_PROG_TYPE_CGROUP_DEVICE` and attach it to a cgroup directory.
//!
//! The program itself (an allow-list) is built in safe code by mayfly-driver
//! (`cgroup/devices.rs`); this only hands instructions and descriptors to the kernel.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// One eBPF instruction (`struct bpf_insn`, 8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EbpfInstruction {
    /// Opcode.
    pub code: u8,
    /// Destination register in the low nibble, source register in the high one.
    pub regs: u8,
    /// Signed offset (jumps, memory accesses).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl EbpfInstruction {
    /// An instruction on registers `dst` and `src` (0-10).
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> EbpfInstruction {
        EbpfInstruction {
            code,
            regs: (dst & 0x0f) | ((src & 0x0f) << 4),
            off,
            imm,
        }
    }
}

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Programs of every ancestor group run too, and all must allow.
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel takes a shorter
/// structure than its own and treats the missing tail as zero.
#[repr(C)]
#[derive(Debug, Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The fields of `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
#[derive(Debug, Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// Size of the verifier log asked for when a load fails.
const LOG_SIZE: usize = 64 * 1024;

fn load(program: &[EbpfInstruction], name: &[u8], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let insn_cnt =
        u32::try_from(program.len()).map_err(|_| io::Error::other("BPF program too long"))?;
    let license = c"Apache-2.0";
    let mut prog_name = [0u8; 16];
    // The kernel wants at most 15 bytes of [A-Za-z0-9_.] and a NUL.
    for (dst, src) in prog_name.iter_mut().zip(name.iter().take(15)) {
        *dst = *src;
    }
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..ProgLoadAttr::default()
    };
    if let Some(buf) = log {
        attr.log_level = 1;
        attr.log_size = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        attr.log_buf = buf.as_mut_ptr() as u64;
    }
    // SAFETY: `attr` is a zero-initialised prefix of bpf_attr of the size we pass; the
    // pointers in it (instructions, license, log buffer) point at live memory of the lengths
    // given, borrowed for the whole call (the kernel copies the program and writes at most
    // `log_size` bytes of log). On success the kernel returns a new descriptor that nothing
    // else owns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &raw mut attr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(ret).map_err(|_| io::Error::other("bpf returned no descriptor"))?;
    // SAFETY: `fd` was just returned by the kernel (close-on-exec) and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads `program` as a cgroup device program named `name`. A program the verifier refuses
/// is loaded again with a log, and the error carries the log's end.
pub fn load_device_program(program: &[EbpfInstruction], name: &str) -> io::Result<OwnedFd> {
    match load(program, name.as_bytes(), None) {
        Ok(fd) => Ok(fd),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EACCES)) => {
            let mut log = vec![0u8; LOG_SIZE];
            let again = load(program, name.as_bytes(), Some(&mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: String = text.lines().rev().take(8).collect::<Vec<_>>().join(" / ");
            match again {
                Ok(fd) => Ok(fd),
                Err(_) => Err(io::Error::new(
                    e.kind(),
                    format!("{e}; the verifier says: {tail}"),
                )),
            }
        }
        Err(e) => Err(e),
    }
}

/// Attaches device program `program` to the cgroup v2 directory `group` (open with
/// `O_RDONLY | O_DIRECTORY`), alongside whatever programs its ancestors run.
pub fn attach_device_program(program: impl AsFd, group: impl AsFd) -> io::Result<()> {
    let fd = |f: std::os::fd::BorrowedFd<'_>| {
        u32::try_from(f.as_raw_fd()).map_err(|_| io::Error::other("negative file descriptor"))
    };
    let mut attr = ProgAttachAttr {
        target_fd: fd(group.as_fd())?,
        attach_bpf_fd: fd(program.as_fd())?,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttachAttr::default()
    };
    // SAFETY: `attr` is a zero-initialised prefix of bpf_attr of the size we pass; both
    // descriptors are borrowed and open for the whole call; the kernel takes its own reference
    // to the program and keeps no pointer into our memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &raw mut attr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
