//! The measured cases. Each `*_once` call is one timed iteration and returns its wall time;
//! everything an iteration creates it also removes before the clock stops.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::sys;

/// Ids mapped into the user namespaces of crun's containers and of the floor: the same kind
/// of mapping as mayfly's (container 0..65536 → a private host range).
pub const ID_COUNT: u32 = 65536;

fn run_quiet(cmd: &mut Command, what: &str) -> io::Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{what}: exited with {status}")))
    }
}

/// A streamed call: wall time, success, and each JSON line with the time it arrived.
pub type Stream = (Duration, bool, Vec<(Duration, serde_json::Value)>);

/// The mayfly CLI against one daemon.
#[derive(Debug)]
pub struct Mayfly {
    pub bin: PathBuf,
    pub socket: PathBuf,
}

impl Mayfly {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--socket").arg(&self.socket);
        c
    }

    /// `mayfly run --rm --network none busybox -- /bin/true`, whole CLI invocation (without
    /// a network interface, as crun's case: bench/net.sh compares the networked cases).
    pub fn run_once(&self) -> io::Result<Duration> {
        let mut c = self.cmd();
        c.args(["run", "--rm", "--network", "none", "busybox", "--", "/bin/true"]);
        let t = Instant::now();
        run_quiet(&mut c, "mayfly run --rm busybox -- /bin/true")?;
        Ok(t.elapsed())
    }

    /// `launch busybox --name N`, `stop N`, `rm N`: three durations.
    pub fn lifecycle_once(&self, name: &str) -> io::Result<[Duration; 3]> {
        let mut launch = self.cmd();
        launch.args(["launch", "busybox", "--network", "none", "--name", name]);
        let mut stop = self.cmd();
        stop.args(["stop", name]);
        let mut rm = self.cmd();
        rm.args(["rm", name]);
        let t0 = Instant::now();
        run_quiet(&mut launch, &format!("mayfly launch busybox --name {name}"))?;
        let t1 = Instant::now();
        run_quiet(&mut stop, &format!("mayfly stop {name}"))?;
        let t2 = Instant::now();
        run_quiet(&mut rm, &format!("mayfly rm {name}"))?;
        let t3 = Instant::now();
        Ok([t1 - t0, t2 - t1, t3 - t2])
    }

    /// `mayfly info --json`, parsed.
    pub fn info(&self) -> io::Result<serde_json::Value> {
        self.call_json(&["info", "--json"]).map(|(_, v)| v)
    }

    /// One whole CLI invocation `mayfly ARGS…` (stdin from /dev/null, stdout and stderr
    /// captured): its wall time, from spawning the CLI to reaping it, and its output. A
    /// non-zero exit is an error that quotes the CLI's stderr.
    pub fn call(&self, args: &[&str]) -> io::Result<(Duration, Vec<u8>)> {
        let mut c = self.cmd();
        c.args(args).stdin(Stdio::null());
        let t = Instant::now();
        let out = c
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("mayfly {}: {e}", args.join(" "))))?;
        let elapsed = t.elapsed();
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "mayfly {}: {} {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok((elapsed, out.stdout))
    }

    /// `call`, with stdout parsed as one JSON document.
    pub fn call_json(&self, args: &[&str]) -> io::Result<(Duration, serde_json::Value)> {
        let (d, out) = self.call(args)?;
        let v = serde_json::from_slice(&out)
            .map_err(|e| io::Error::other(format!("mayfly {}: bad JSON: {e}", args.join(" "))))?;
        Ok((d, v))
    }

    /// Like `call` with a JSON-lines stream on stdout (`template rollout --json`): every line
    /// parsed, with the time it arrived (since the CLI was spawned). Also returns the total
    /// wall time and whether the CLI exited with 0; a failed rollout still has its events.
    pub fn call_stream(&self, args: &[&str]) -> io::Result<Stream> {
        use std::io::BufRead;
        let mut c = self.cmd();
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let t = Instant::now();
        let mut child = c
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("mayfly {}: {e}", args.join(" "))))?;
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        // stderr on a thread, so that neither pipe can fill up and block the CLI.
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let mut events = Vec::new();
        for line in io::BufReader::new(stdout).lines() {
            let line = line?;
            let at = t.elapsed();
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str(&line).map_err(|e| {
                io::Error::other(format!(
                    "mayfly {}: bad JSON line {line:?}: {e}",
                    args.join(" ")
                ))
            })?;
            events.push((at, v));
        }
        let status = child.wait()?;
        let elapsed = t.elapsed();
        let stderr = err.join().unwrap_or_default();
        if !status.success() && events.is_empty() {
            return Err(io::Error::other(format!(
                "mayfly {}: {status} {}",
                args.join(" "),
                stderr.trim()
            )));
        }
        Ok((elapsed, status.success(), events))
    }

    /// The `name` fields of a JSON array that `mayfly ARGS…` prints (`list --json`).
    pub fn names(&self, args: &[&str]) -> io::Result<Vec<String>> {
        let (_, v) = self.call_json(args)?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// The layer directory of a single-layer template's current version (the built-in
    /// busybox): `<state>/layers/blake3-<hex>`.
    pub fn single_layer(&self, state: &Path, template: &str) -> io::Result<PathBuf> {
        let (_, t) = self.call_json(&["template", "info", template, "--json"])?;
        let current = t["current_version"].as_u64();
        let layers: Vec<&str> = t["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["version"].as_u64() == current)
            .flat_map(|v| v["layers"].as_array().into_iter().flatten())
            .filter_map(|l| l["digest"].as_str())
            .collect();
        match layers.as_slice() {
            [digest] => {
                let dir = state.join("layers").join(digest.replace(':', "-"));
                if dir.is_dir() {
                    Ok(dir)
                } else {
                    Err(io::Error::other(format!(
                        "layer {digest} of template {template} is not at {}",
                        dir.display()
                    )))
                }
            }
            other => Err(io::Error::other(format!(
                "template {template}: expected one layer in its current version, found {}",
                other.len()
            ))),
        }
    }
}

/// Fresh upper and work directories for one iteration, owned by the container's root.
fn fresh_dirs(dir: &Path, owner: Option<u32>) -> io::Result<(PathBuf, PathBuf)> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    std::fs::create_dir(dir)?;
    std::fs::create_dir(&upper)?;
    std::fs::create_dir(&work)?;
    if let Some(id) = owner {
        sys::chown(&upper, id)?;
        sys::chown(&work, id)?;
    }
    Ok((upper, work))
}

/// crun, each iteration on a freshly mounted overlay.
#[derive(Debug)]
pub struct Crun {
    pub bin: PathBuf,
    /// Holds config.json and the `rootfs` mount point.
    pub bundle: PathBuf,
    /// crun's state directory (`--root`), a tmpfs private to the benchmark.
    pub state: PathBuf,
    /// Where the per-iteration upper/work directories go.
    pub scratch: PathBuf,
    pub layer: PathBuf,
    /// Present when the containers get a user namespace (idmapped lower, mapped ids).
    pub userns: Option<(OwnedFd, u32)>,
    pub seccomp: bool,
    /// Parent cgroup of the containers' cgroups (removed at the end).
    pub cgroup_parent: String,
}

impl Crun {
    pub fn version(&self) -> String {
        Command::new(&self.bin)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into())
    }

    /// Writes the bundle's config.json for container `id` (not timed).
    pub fn write_config(&self, id: &str) -> io::Result<()> {
        let config = crun_config(
            self.userns.as_ref().map(|(_, base)| *base),
            self.seccomp,
            &format!("/{}/{id}", self.cgroup_parent),
        );
        std::fs::write(
            self.bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).map_err(io::Error::other)?,
        )
    }

    /// One timed iteration: fresh dirs, overlay mount, `crun run`, umount, removal.
    pub fn once(&self, id: &str) -> io::Result<Duration> {
        self.write_config(id)?;
        let dir = self.scratch.join(id);
        let rootfs = self.bundle.join("rootfs");
        let t = Instant::now();
        let (upper, work) = fresh_dirs(&dir, self.userns.as_ref().map(|(_, b)| *b))?;
        let tree = sys::build_overlay(
            &self.layer,
            &upper,
            &work,
            self.userns.as_ref().map(|(fd, _)| fd),
        )?;
        sys::attach(&tree, &rootfs)?;
        drop(tree);
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(&self.state)
            .arg("run")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(id);
        let ran = run_quiet(&mut c, &format!("crun run {id}"));
        let unmounted = sys::umount(&rootfs, 0);
        let removed = std::fs::remove_dir_all(&dir);
        let elapsed = t.elapsed();
        if ran.is_err() {
            // Leave nothing behind even when crun failed half-way.
            let _ = Command::new(&self.bin)
                .arg("--root")
                .arg(&self.state)
                .args(["delete", "--force", id])
                .stderr(Stdio::null())
                .status();
        }
        ran?;
        unmounted?;
        removed?;
        Ok(elapsed)
    }
}

/// The OCI configuration given to crun: `crun spec`'s defaults (mounts, masked and read-only
/// paths, rlimits, no new privileges) running `/bin/true`, with mayfly's capability set, the
/// same namespaces as a mayfly instance (pid, ipc, uts, mount, network, and user with a
/// 65536-id mapping when `id_base` is given), and, with `seccomp`, a deny-list profile
/// equivalent to mayfly's default filter.
pub fn crun_config(id_base: Option<u32>, seccomp: bool, cgroups_path: &str) -> serde_json::Value {
    use serde_json::json;
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "network"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    let mut linux = json!({
        "cgroupsPath": cgroups_path,
        "resources": {"devices": [{"allow": false, "access": "rwm"}]},
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
            "/proc/scsi", "/proc/interrupts", "/sys/devices/virtual/powercap"
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    });
    if let Some(base) = id_base {
        namespaces.push(json!({"type": "user"}));
        let map = json!([{"containerID": 0, "hostID": base, "size": ID_COUNT}]);
        linux["uidMappings"] = map.clone();
        linux["gidMappings"] = map;
    }
    linux["namespaces"] = json!(namespaces);
    if seccomp {
        let denied = [
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "swapon",
            "swapoff",
            "syslog",
            "acct",
            "settimeofday",
            "clock_settime",
            "clock_adjtime",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "keyctl",
            "add_key",
            "request_key",
            "open_by_handle_at",
            "name_to_handle_at",
            "lookup_dcookie",
            "quotactl",
            "fanotify_init",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "move_pages",
            "migrate_pages",
            "vmsplice",
            "iopl",
            "ioperm",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "nfsservctl",
        ];
        linux["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": &denied[..], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                 "args": [{"index": 1, "value": 0x5412, "op": "SCMP_CMP_EQ"}]},
                {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                 "args": [{"index": 1, "value": 0x541C, "op": "SCMP_CMP_EQ"}]}
            ]
        });
    }
    json!({
        "ociVersion": "1.0.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/true"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "inheritable": [], "permitted": caps, "ambient": []
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "crun",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": linux
    })
}

/// The floor: the same work without a runtime. The benchmark itself clones a child into new
/// user (mapped like the others), mount, pid, uts, ipc and network namespaces; it builds the
/// overlay as a detached mount (idmapped lower, as mayfly does); the child attaches it,
/// pivots into it and executes `/bin/true`; the parent waits and removes the directories.
/// The overlay lives only in the child's mount namespace and goes away with it, so there is
/// nothing left to unmount in the parent (mayfly works the same way). No /proc, /dev, cgroup,
/// seccomp or capability work: that is what the runtimes add on top.
#[derive(Debug)]
pub struct Floor {
    pub scratch: PathBuf,
    /// The mount point (the child attaches its root there in its own namespace).
    pub mount_point: PathBuf,
    pub layer: PathBuf,
    pub userns: Option<(OwnedFd, u32)>,
}

// Exit codes of the floor child, naming the step that failed.
const FLOOR_STEPS: &[&str] = &[
    "wait for the id maps",
    "open the mount point",
    "setresgid/setresuid 0",
    "make / private",
    "attach the root",
    "enter the root",
    "pivot_root",
    "detach the old root",
    "chdir /",
    "exec /bin/true",
];

impl Floor {
    pub fn once(&self, id: &str) -> io::Result<Duration> {
        let dir = self.scratch.join(id);
        let mp = sys::cstr(&self.mount_point);
        let prog = CString::new("/bin/true").expect("no NUL");
        let argv = [prog.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        let userns = self.userns.is_some();
        let mut flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWNET;
        if userns {
            flags |= libc::CLONE_NEWUSER;
        }

        let t = Instant::now();
        let (upper, work) = fresh_dirs(&dir, self.userns.as_ref().map(|(_, b)| *b))?;
        let tree = sys::build_overlay(
            &self.layer,
            &upper,
            &work,
            self.userns.as_ref().map(|(fd, _)| fd),
        )?;
        let (r, w) = sys::pipe()?;
        let pid = sys::clone(flags)?;
        if pid == 0 {
            // The child: raw system calls only, then exec or _exit(100 + step).
            // SAFETY: every pointer is to a live CString/array built before the clone; the
            // process is a fork-like copy of a single-threaded parent.
            unsafe {
                let fail = |step: i32| -> ! { libc::_exit(100 + step) };
                drop(w);
                let mut b = [0u8; 1];
                if libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) != 1 {
                    fail(0)
                }
                // Resolve the mount point while still the host's root (the scratch directory
                // may be private to it), as mayfly's forker child does.
                let mpfd = libc::open(
                    mp.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                if mpfd < 0 {
                    fail(1)
                }
                if userns && (libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0) {
                    fail(2)
                }
                if libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    fail(3)
                }
                if libc::syscall(
                    libc::SYS_move_mount,
                    tree.as_raw_fd(),
                    c"".as_ptr(),
                    mpfd,
                    c"".as_ptr(),
                    sys::MOVE_MOUNT_F_EMPTY_PATH | sys::MOVE_MOUNT_T_EMPTY_PATH,
                ) != 0
                {
                    fail(4)
                }
                if libc::fchdir(tree.as_raw_fd()) != 0 {
                    fail(5)
                }
                if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0 {
                    fail(6)
                }
                if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
                    fail(7)
                }
                if libc::chdir(c"/".as_ptr()) != 0 {
                    fail(8)
                }
                libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
                fail(9)
            }
        }
        drop(r);
        drop(tree);
        let mapped = match &self.userns {
            Some((_, base)) => sys::write_id_maps(pid, *base, ID_COUNT),
            None => Ok(()),
        };
        if mapped.is_ok() {
            // SAFETY: one byte from a local buffer.
            unsafe { libc::write(w.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        }
        drop(w);
        let code = sys::wait(pid)?;
        let removed = std::fs::remove_dir_all(&dir);
        let elapsed = t.elapsed();
        mapped?;
        if code != 0 {
            let step = usize::try_from(code - 100)
                .ok()
                .and_then(|i| FLOOR_STEPS.get(i))
                .copied()
                .unwrap_or("unknown");
            return Err(io::Error::other(format!(
                "floor child exited with {code} (step: {step}; errno is not reported, try strace -f)"
            )));
        }
        removed?;
        Ok(elapsed)
    }
}
