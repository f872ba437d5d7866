//! The confinement every container process gets: the seccomp filter, the capability set and
//! the `/proc` and `/sys` paths that are masked or made read-only.
//!
//! Policy in one place, so a review (or a test per known attack) reads one file. The filter is
//! a deny list in the spirit of Docker's default profile, narrowed to what a user namespace does
//! not already stop: with an unprivileged user namespace most dangerous calls fail their
//! capability check in the initial namespace anyway; the filter removes kernel attack surface
//! (keyrings, io_uring, userfaultfd, perf, BPF, module and kexec calls — kexec is refused
//! even though CAP_SYS_BOOT is kept, see [`KEPT_CAPABILITIES`]) and the terminal
//! injection ioctls. Calls of the x32 ABI are refused outright, since a deny list keyed on
//! x86-64 numbers would not see them, and calls of any other architecture (i386 through
//! `int 0x80`) kill the process.

use mayfly_sys::seccomp::BpfInstruction;

/// Capabilities a container's processes keep (Docker's default set, and SYS_BOOT). Everything
/// else is dropped from the bounding set, so not even a setuid-root program inside regains it.
///
/// SYS_BOOT is kept so that an init's `poweroff`, `halt` and `reboot` work: `reboot(2)` checks
/// it in the user namespace that owns the caller's pid namespace, and in a pid namespace other
/// than the host's it only ends that namespace's init (the kernel's `reboot_pid_ns`; the
/// engine's `power.rs` reads the end). Every instance and build container has its own pid
/// namespace (the forker's `spawn.rs` always clones with `CLONE_NEWPID`), so it never reaches
/// the host, with or without a user namespace. Its other use, `kexec_load` and
/// `kexec_file_load`, is refused by the seccomp filter ([`denied_syscalls`]) whatever the
/// capabilities: without a user namespace this capability is the host's, and kexec would
/// replace the host's kernel.
pub const KEPT_CAPABILITIES: &[rustix::thread::CapabilitySet] = &[
    rustix::thread::CapabilitySet::CHOWN,
    rustix::thread::CapabilitySet::DAC_OVERRIDE,
    rustix::thread::CapabilitySet::FSETID,
    rustix::thread::CapabilitySet::FOWNER,
    rustix::thread::CapabilitySet::MKNOD,
    rustix::thread::CapabilitySet::NET_RAW,
    rustix::thread::CapabilitySet::SETGID,
    rustix::thread::CapabilitySet::SETUID,
    rustix::thread::CapabilitySet::SETFCAP,
    rustix::thread::CapabilitySet::SETPCAP,
    rustix::thread::CapabilitySet::NET_BIND_SERVICE,
    rustix::thread::CapabilitySet::SYS_CHROOT,
    rustix::thread::CapabilitySet::KILL,
    rustix::thread::CapabilitySet::AUDIT_WRITE,
    rustix::thread::CapabilitySet::SYS_BOOT,
];

/// The capabilities a container's processes keep on this build: [`KEPT_CAPABILITIES`], less
/// SYS_BOOT where there is no seccomp filter ([`default_filter`] is `None` on architectures
/// mayfly has no syscall table for): only the filter keeps `kexec_load` from an instance
/// whose root is the host's.
pub fn kept_capabilities() -> rustix::thread::CapabilitySet {
    let filtered = default_filter().is_some();
    KEPT_CAPABILITIES
        .iter()
        .filter(|c| filtered || **c != rustix::thread::CapabilitySet::SYS_BOOT)
        .fold(rustix::thread::CapabilitySet::empty(), |all, c| all | *c)
}

/// Files under `/proc` hidden behind `/dev/null` (they leak host kernel state or allow timing
/// attacks).
pub const MASKED_FILES: &[&str] = &[
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/interrupts",
];

/// Directories hidden behind an empty read-only tmpfs.
pub const MASKED_DIRS: &[&str] = &[
    "proc/acpi",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Paths re-mounted read-only.
pub const READONLY_PATHS: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

// Offsets in struct seccomp_data.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0_LOW: u32 = 16; // args[0], low 32 bits on little-endian
const OFFSET_ARG1_LOW: u32 = 16 + 8; // args[1], low 32 bits on little-endian

/// `CLONE_NEWUSER`, in the flags of `clone(2)` and `unshare(2)` (their first argument).
const CLONE_NEWUSER: u32 = 0x1000_0000;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000; // AUDIT_ARCH_AARCH64

#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// System calls that fail with EPERM inside a container.
fn denied_syscalls() -> Vec<libc::c_long> {
    #[allow(unused_mut)]
    let mut calls = vec![
        // Never allowed: with CAP_SYS_BOOT kept (see KEPT_CAPABILITIES), only this stops them.
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_syslog,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_lookup_dcookie,
        libc::SYS_quotactl,
        libc::SYS_quotactl_fd,
        libc::SYS_fanotify_init,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_move_pages,
        libc::SYS_migrate_pages,
        libc::SYS_vmsplice,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS_ustat,
        libc::SYS_sysfs,
        libc::SYS__sysctl,
        libc::SYS_nfsservctl,
    ]);
    calls
}

/// `ioctl` requests refused inside a container: faking terminal input of another session
/// (TIOCSTI) and the Linux console's selection/paste ioctl (TIOCLINUX).
const DENIED_IOCTLS: &[u32] = &[0x5412 /* TIOCSTI */, 0x541C /* TIOCLINUX */];

/// `FS_IOC_FSSETXATTR` (`_IOW('X', 32, struct fsxattr)`): sets a file's project id.
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

fn stmt(code: u16, k: u32) -> BpfInstruction {
    BpfInstruction {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> BpfInstruction {
    BpfInstruction { code, jt, jf, k }
}

fn nr(call: libc::c_long) -> u32 {
    u32::try_from(call).unwrap_or(u32::MAX)
}

/// Builds the default filter. `None` on architectures mayfly has no syscall table for.
pub fn default_filter() -> Option<Vec<BpfInstruction>> {
    filter(false)
}

/// Whether the calling process is in the host's initial user namespace (an instance without
/// a user namespace), read from `/proc/self/ns/user`: the initial namespace's inode number is
/// fixed (`PROC_USER_INIT_INO`). Unknown counts as yes (the stricter filter).
pub fn in_initial_user_namespace() -> bool {
    const PROC_USER_INIT_INO: &str = "user:[4026531837]";
    std::fs::read_link("/proc/self/ns/user")
        .map(|l| l.as_os_str() == PROC_USER_INIT_INO)
        .unwrap_or(true)
}

/// Builds the filter of a process of an instance; with `no_new_user_namespaces` (an
/// instance without a user namespace, whose root is the host's) it also refuses to make a
/// user namespace: `unshare` and `clone` with `CLONE_NEWUSER` fail with EPERM, and `clone3`
/// (whose flags a filter cannot read) with ENOSYS, which C libraries answer by falling back
/// to `clone`. In a user namespace of its own, such a process would own the host's uid-0
/// cgroup files through a fresh cgroup mount and could lift its limits; with a user
/// namespace (the default), the files' owner is not mapped there and nothing is refused.
/// `None` on architectures mayfly has no syscall table for.
pub fn filter(no_new_user_namespaces: bool) -> Option<Vec<BpfInstruction>> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return None;
    }
    let eperm = SECCOMP_RET_ERRNO | u32::try_from(libc::EPERM).unwrap_or(1);
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jump(BPF_JMP_JEQ_K, NATIVE_ARCH, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        let enosys = SECCOMP_RET_ERRNO | u32::try_from(libc::ENOSYS).unwrap_or(38);
        prog.push(jump(BPF_JMP_JSET_K, X32_SYSCALL_BIT, 0, 1));
        prog.push(stmt(BPF_RET_K, enosys));
    }
    for call in denied_syscalls() {
        prog.push(jump(BPF_JMP_JEQ_K, nr(call), 0, 1));
        prog.push(stmt(BPF_RET_K, eperm));
    }
    if no_new_user_namespaces {
        let enosys = SECCOMP_RET_ERRNO | u32::try_from(libc::ENOSYS).unwrap_or(38);
        prog.push(jump(BPF_JMP_JEQ_K, nr(libc::SYS_clone3), 0, 1));
        prog.push(stmt(BPF_RET_K, enosys));
        for call in [libc::SYS_unshare, libc::SYS_clone] {
            // The flags replace the number in the accumulator: the call is decided here.
            prog.push(jump(BPF_JMP_JEQ_K, nr(call), 0, 4));
            prog.push(stmt(BPF_LD_W_ABS, OFFSET_ARG0_LOW));
            prog.push(jump(BPF_JMP_JSET_K, CLONE_NEWUSER, 0, 1));
            prog.push(stmt(BPF_RET_K, eperm));
            prog.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
        }
    }
    // ioctl: compare the request (low 32 bits of the second argument).
    let mut ioctls = DENIED_IOCTLS.to_vec();
    if no_new_user_namespaces {
        // Its root could move its files out of the instance's quota project (the kernel lets
        // only the initial user namespace change a project id).
        ioctls.push(FS_IOC_FSSETXATTR);
    }
    let ioctl_checks = u8::try_from(ioctls.len() * 2 + 1).unwrap_or(u8::MAX);
    prog.push(jump(BPF_JMP_JEQ_K, nr(libc::SYS_ioctl), 0, ioctl_checks));
    prog.push(stmt(BPF_LD_W_ABS, OFFSET_ARG1_LOW));
    for request in &ioctls {
        prog.push(jump(BPF_JMP_JEQ_K, *request, 0, 1));
        prog.push(stmt(BPF_RET_K, eperm));
    }
    prog.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    Some(prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_jumps_stay_inside_the_program() {
        for strict in [false, true] {
            filter_jumps_stay_inside(&filter(strict).expect("x86_64 or aarch64"));
        }
    }

    #[test]
    fn only_the_strict_filter_refuses_new_user_namespaces() {
        let has = |prog: &[BpfInstruction]| {
            prog.iter()
                .any(|i| i.code == BPF_JMP_JSET_K && i.k == CLONE_NEWUSER)
        };
        assert!(has(&filter(true).unwrap()));
        assert!(!has(&filter(false).unwrap()));
        let sets_projects = |prog: &[BpfInstruction]| {
            prog.iter()
                .any(|i| i.code == BPF_JMP_JEQ_K && i.k == FS_IOC_FSSETXATTR)
        };
        assert!(sets_projects(&filter(true).unwrap()));
        assert!(!sets_projects(&filter(false).unwrap()));
        assert_eq!(default_filter(), filter(false));
    }

    fn filter_jumps_stay_inside(prog: &[BpfInstruction]) {
        for (i, ins) in prog.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                // BPF_JMP: both targets must exist.
                assert!(
                    i + 1 + usize::from(ins.jt) < prog.len(),
                    "jt out of range at {i}"
                );
                assert!(
                    i + 1 + usize::from(ins.jf) < prog.len(),
                    "jf out of range at {i}"
                );
            }
        }
        assert_eq!(prog.last().map(|i| i.k), Some(SECCOMP_RET_ALLOW));
        assert!(prog.len() < 4096);
    }

    #[test]
    fn kexec_stays_denied_while_sys_boot_is_kept() {
        assert!(KEPT_CAPABILITIES.contains(&rustix::thread::CapabilitySet::SYS_BOOT));
        // Kept only where the filter exists (always on the architectures tested here).
        assert_eq!(
            kept_capabilities().contains(rustix::thread::CapabilitySet::SYS_BOOT),
            default_filter().is_some()
        );
        let denied = denied_syscalls();
        assert!(denied.contains(&libc::SYS_kexec_load));
        assert!(denied.contains(&libc::SYS_kexec_file_load));
        // And reboot(2) itself is allowed (it ends only the instance's pid namespace).
        assert!(!denied.contains(&libc::SYS_reboot));
        let prog = default_filter().expect("x86_64 or aarch64");
        for call in [libc::SYS_kexec_load, libc::SYS_kexec_file_load] {
            assert!(
                prog.iter()
                    .any(|i| i.code == BPF_JMP_JEQ_K && i.k == nr(call)),
                "{call} not in the filter"
            );
        }
    }
}
