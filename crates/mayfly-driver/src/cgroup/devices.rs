//! Device rules: which device nodes the processes of an instance (or build container) may
//! create and open, enforced by the kernel for the whole group.
//!
//! Every container gets the same allow-list, exactly the devices mayfly gives it: the harmless
//! host devices bind-mounted into its `/dev`, its terminals, and nothing else. Everything else
//! is refused at `mknod` and at `open` (EPERM), whatever mount the node sits on. This matters
//! most without a user namespace, where root inside is the host's root with CAP_MKNOD; with
//! one, the kernel already refuses device nodes to a namespace root, and the rules are a second
//! wall (as runc and crun put them up).
//!
//! - v1: the group of the `devices` hierarchy gets `a` in `devices.deny`, then one
//!   `devices.allow` line per rule.
//! - v2: a `BPF_PROG_TYPE_CGROUP_DEVICE` program (the allow-list as eBPF instructions, built
//!   below in safe code; loaded once per forker) is attached to the group's directory with
//!   `BPF_F_ALLOW_MULTI`, so programs of ancestor groups still run and all must agree.
//!
//! Rules go on before the first process joins. Overlayfs whiteouts (character device 0:0) are
//! exempt in the kernel, so deleting template files still works. Removing the group detaches
//! the program: nothing here keeps a group alive.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::OnceLock;

use mayfly_sys::bpf::EbpfInstruction;

use super::{CgroupError, CgroupMode, Cgroups, io_err, write_file};

/// Block or character device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device (`c`).
    Char,
    /// A block device (`b`).
    Block,
}

/// May create the node (`mknod`).
pub const MKNOD: u8 = 1;
/// May open it for reading.
pub const READ: u8 = 2;
/// May open it for writing.
pub const WRITE: u8 = 4;
const ALL_ACCESS: u8 = MKNOD | READ | WRITE;

/// One allowed device (or range of minors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Block or character.
    pub kind: DeviceKind,
    /// Major number.
    pub major: u32,
    /// Minor number; `None` for every minor of the major.
    pub minor: Option<u32>,
    /// What is allowed: a combination of [`MKNOD`], [`READ`], [`WRITE`].
    pub access: u8,
    /// What it is, for people.
    pub what: &'static str,
}

const fn char_dev(major: u32, minor: Option<u32>, what: &'static str) -> DeviceRule {
    DeviceRule {
        kind: DeviceKind::Char,
        major,
        minor,
        access: ALL_ACCESS,
        what,
    }
}

/// The devices a container may create and open: what mayfly puts in its `/dev`.
///
/// Not here, on purpose: `/dev/net/tun` (c 10:200), which networks will need, and `/dev/fuse`
/// (c 10:229); add them with the feature that provides the node.
pub const ALLOWED_DEVICES: &[DeviceRule] = &[
    char_dev(1, Some(3), "/dev/null"),
    char_dev(1, Some(5), "/dev/zero"),
    char_dev(1, Some(7), "/dev/full"),
    char_dev(1, Some(8), "/dev/random"),
    char_dev(1, Some(9), "/dev/urandom"),
    char_dev(5, Some(0), "/dev/tty"),
    char_dev(5, Some(1), "/dev/console"),
    char_dev(5, Some(2), "/dev/ptmx"),
    char_dev(
        136,
        None,
        "/dev/pts/N, and the terminal that is /dev/console",
    ),
];

impl DeviceRule {
    /// The rule as a line of v1 `devices.allow` (`c 1:3 rwm`).
    pub fn v1_line(&self) -> String {
        let kind = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let minor = self.minor.map_or_else(|| "*".to_owned(), |m| m.to_string());
        let access: String = [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')]
            .iter()
            .filter(|(bit, _)| self.access & bit != 0)
            .map(|(_, c)| *c)
            .collect();
        format!("{kind} {}:{minor} {access}", self.major)
    }
}

impl Cgroups {
    /// Confines the processes of group `rel` (created, still empty) to
    /// [`ALLOWED_DEVICES`]. Fails, with the reason, when the host offers no way to enforce
    /// device rules: a container must not start without them.
    pub fn restrict_devices(&self, rel: &str) -> Result<(), CgroupError> {
        let rel = rel.trim_start_matches('/');
        if self.mode == CgroupMode::V2 {
            let Some(root) = self.roots.first() else {
                return Err(no_device_rules(rel, "no cgroup2 hierarchy"));
            };
            let dir = root.mount.join(rel);
            let program = device_program().map_err(io_err("load the device program for", &dir))?;
            let group = rustix::fs::open(
                &dir,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| io_err("open", &dir)(e.into()))?;
            mayfly_sys::bpf::attach_device_program(program, &group)
                .map_err(io_err("attach the device program to", &dir))
        } else {
            let Some(h) = self.roots.iter().find(|h| h.has("devices")) else {
                return Err(no_device_rules(
                    rel,
                    "no v1 `devices` hierarchy is mounted (mount it, or drive the unified hierarchy with --cgroup-layout v2)",
                ));
            };
            let dir = h.mount.join(rel);
            // `a` first: deny everything (this also drops what the group inherited), then
            // open exactly the allowed devices.
            write_v1(&dir, "devices.deny", "a")?;
            for rule in ALLOWED_DEVICES {
                write_v1(&dir, "devices.allow", &rule.v1_line())?;
            }
            Ok(())
        }
    }
}

fn write_v1(dir: &Path, file: &str, line: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    write_file(&path, line).map_err(io_err("write", &path))
}

fn no_device_rules(rel: &str, why: &str) -> CgroupError {
    CgroupError::Io {
        action: "set device rules of",
        path: rel.into(),
        source: io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{why}; containers do not start without device rules"),
        ),
    }
}

/// The device program of this process, loaded on first use: one per forker, attached to every
/// group it creates. Each attachment holds the program, so groups keep their rules after the
/// forker that made them is gone (a new forker adopts them as they are).
fn device_program() -> io::Result<&'static OwnedFd> {
    static PROGRAM: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = PROGRAM.get() {
        return Ok(fd);
    }
    let fd =
        mayfly_sys::bpf::load_device_program(&device_program_code(ALLOWED_DEVICES), "mayfly_dev")?;
    // The forker is single-threaded: nobody else can have set it meanwhile.
    Ok(PROGRAM.get_or_init(|| fd))
}

// eBPF opcodes (linux/bpf.h, linux/bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU64_AND_K: u8 = 0x57; // dst &= imm
const ALU64_RSH_K: u8 = 0x77; // dst >>= imm
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const ALU64_MOV_X: u8 = 0xbf; // dst = src
const JMP_JNE_K: u8 = 0x55; // if dst != imm goto pc + 1 + off
const JMP_EXIT: u8 = 0x95;

// Registers: r0 result, r1 context; r2-r5 hold what the program compares.
const R0: u8 = 0;
const R1: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, where access_type is
// (access << 16) | type.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> EbpfInstruction {
    EbpfInstruction::new(code, dst, src, off, imm)
}

/// The allow-list `rules` as a cgroup device program: 1 (allow) when a rule matches the
/// device's type, major, minor and every access asked for; 0 (deny) otherwise.
pub(crate) fn device_program_code(rules: &[DeviceRule]) -> Vec<EbpfInstruction> {
    let mut code = vec![
        insn(LDX_MEM_W, R_TYPE, R1, CTX_ACCESS_TYPE, 0),
        insn(ALU64_AND_K, R_TYPE, 0, 0, 0xffff),
        insn(LDX_MEM_W, R_ACCESS, R1, CTX_ACCESS_TYPE, 0),
        insn(ALU64_RSH_K, R_ACCESS, 0, 0, 16),
        insn(LDX_MEM_W, R_MAJOR, R1, CTX_MAJOR, 0),
        insn(LDX_MEM_W, R_MINOR, R1, CTX_MINOR, 0),
    ];
    for rule in rules {
        // One block per rule; every mismatch jumps past the block's end, to the next rule
        // (marked `true` until the block's length is known).
        let mut block: Vec<(EbpfInstruction, bool)> = Vec::new();
        let kind = match rule.kind {
            DeviceKind::Char => BPF_DEVCG_DEV_CHAR,
            DeviceKind::Block => BPF_DEVCG_DEV_BLOCK,
        };
        block.push((insn(JMP_JNE_K, R_TYPE, 0, 0, kind), true));
        if rule.access & ALL_ACCESS != ALL_ACCESS {
            // Any access asked for beyond the rule's: no match. r1 (the context) is no
            // longer needed and serves as scratch.
            block.push((insn(ALU64_MOV_X, R1, R_ACCESS, 0, 0), false));
            let beyond = i32::from(ALL_ACCESS & !rule.access);
            block.push((insn(ALU64_AND_K, R1, 0, 0, beyond), false));
            block.push((insn(JMP_JNE_K, R1, 0, 0, 0), true));
        }
        block.push((insn(JMP_JNE_K, R_MAJOR, 0, 0, imm(rule.major)), true));
        if let Some(minor) = rule.minor {
            block.push((insn(JMP_JNE_K, R_MINOR, 0, 0, imm(minor)), true));
        }
        block.push((insn(ALU64_MOV_K, R0, 0, 0, 1), false));
        block.push((insn(JMP_EXIT, 0, 0, 0, 0), false));
        let len = block.len();
        for (i, (mut ins, to_next)) in block.into_iter().enumerate() {
            if to_next {
                ins.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
            }
            code.push(ins);
        }
    }
    code.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    code.push(insn(JMP_EXIT, 0, 0, 0, 0));
    code
}

/// Device numbers are at most 20 bits: they always fit an immediate.
fn imm(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v1_lines_name_exactly_the_devices_mayfly_provides() {
        let lines: Vec<String> = ALLOWED_DEVICES.iter().map(DeviceRule::v1_line).collect();
        assert_eq!(
            lines,
            [
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
            ]
        );
        let read_only = DeviceRule {
            kind: DeviceKind::Block,
            major: 7,
            minor: None,
            access: READ,
            what: "",
        };
        assert_eq!(read_only.v1_line(), "b 7:* r");
    }

    /// Runs the program as the kernel would, on one device access: what it returns.
    fn interpret(code: &[EbpfInstruction], kind: i32, access: u8, major: u32, minor: u32) -> u64 {
        let ctx = [
            (u64::from(access) << 16) | u64::from(kind.cast_unsigned()),
            u64::from(major),
            u64::from(minor),
        ];
        let mut reg = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = code[pc];
            let (dst, src) = (usize::from(i.regs & 0x0f), usize::from(i.regs >> 4));
            let imm = i64::from(i.imm).cast_unsigned();
            pc += 1;
            match i.code {
                LDX_MEM_W => reg[dst] = ctx[usize::try_from(i.off / 4).unwrap()],
                ALU64_AND_K => reg[dst] &= imm,
                ALU64_RSH_K => reg[dst] >>= imm,
                ALU64_MOV_K => reg[dst] = imm,
                ALU64_MOV_X => reg[dst] = reg[src],
                JMP_JNE_K => {
                    if reg[dst] != imm {
                        pc += usize::try_from(i.off).unwrap();
                    }
                }
                JMP_EXIT => return reg[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_program_allows_exactly_the_rules() {
        let mut rules = ALLOWED_DEVICES.to_vec();
        rules.push(DeviceRule {
            kind: DeviceKind::Block,
            major: 7,
            minor: Some(0),
            access: READ,
            what: "a read-only block device, to exercise the access check",
        });
        let code = device_program_code(&rules);
        let (c, b) = (BPF_DEVCG_DEV_CHAR, BPF_DEVCG_DEV_BLOCK);
        for (kind, access, major, minor, want) in [
            (c, READ | WRITE, 1, 3, 1),
            (c, MKNOD, 1, 9, 1),
            (c, READ, 5, 2, 1),
            (c, WRITE, 136, 4711, 1),
            (c, READ, 1, 1, 0),   // /dev/mem
            (c, WRITE, 1, 11, 0), // /dev/kmsg
            (b, READ, 1, 3, 0),   // a block device with null's numbers
            (b, READ, 254, 0, 0), // a disk
            (c, READ, 137, 0, 0),
            (b, READ, 7, 0, 1),
            (b, READ | WRITE, 7, 0, 0),
            (b, MKNOD, 7, 0, 0),
            (b, READ, 7, 1, 0),
        ] {
            assert_eq!(
                interpret(&code, kind, access, major, minor),
                want,
                "type {kind} access {access} {major}:{minor}"
            );
        }
    }

    /// The kernel's verifier accepts the program (as root, on a kernel with cgroup BPF).
    #[test]
    fn the_kernel_loads_the_program() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("not root: cannot load BPF programs");
            return;
        }
        mayfly_sys::bpf::load_device_program(&device_program_code(ALLOWED_DEVICES), "mayfly_test")
            .expect("the verifier accepts the device program");
    }
}
