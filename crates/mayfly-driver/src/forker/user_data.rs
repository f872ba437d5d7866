//! mayfly's own user-data runner, in the container's first process between setting up the
//! root and executing the init (for templates without cloud-init; see the engine's
//! `user_data` module for what it runs).
//!
//! The program and the status file are opened before the child leaves the host's view (its
//! identity still the host root that owns the instance's directory); inside, the program
//! runs from a memory file (nothing of it lands in the instance's filesystem), as root in the
//! instance's namespaces with the same confinement as the init, its output going where the
//! init's goes. It has a deadline: then its process group is killed. However it ends, the
//! init starts afterwards (cloud-init's behaviour too), and the status file says how it went.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

use super::child::{ChildFailure, ChildResult, ChildStdio, Step};
use crate::spec::{UserDataOutcome, UserDataRun};
use crate::user::Identity;

/// `MFD_EXEC` (Linux 6.3).
const MFD_EXEC: u32 = 0x10;

/// How often the waiting side looks whether the program ended.
const POLL: Duration = Duration::from_millis(20);

/// What the runner needs, taken before the child enters the container.
#[derive(Debug)]
pub(super) struct Prepared {
    script: Vec<u8>,
    status: std::fs::File,
    timeout: Duration,
}

/// Reads the program and opens the status file of `run` (host paths).
pub(super) fn prepare(run: &UserDataRun) -> ChildResult<Prepared> {
    let script = std::fs::read(&run.script)
        .map_err(|e| ChildFailure::io(format!("read user data {}", run.script.display()), e))?;
    let status = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&run.status)
        .map_err(|e| ChildFailure::io(format!("open {}", run.status.display()), e))?;
    Ok(Prepared {
        script,
        status,
        timeout: Duration::from_secs(run.timeout_secs.max(1)),
    })
}

use std::os::unix::fs::OpenOptionsExt;

/// Runs the prepared program inside the container (root is `/` already) and records how it
/// ended; never fails the start (problems go to the output and the status).
pub(super) fn run(p: Prepared, stdio: &ChildStdio) {
    let out = output_of(stdio);
    let mut status = p.status;
    record(
        &mut status,
        &UserDataOutcome {
            state: "running".into(),
            code: None,
            at: None,
            error: None,
        },
    );
    let mut stop = None;
    let outcome = match spawn_and_wait(&p.script, out, p.timeout) {
        Ok(ended) => {
            stop = ended.stop;
            UserDataOutcome {
                state: if ended.code == 0 && ended.why.is_none() {
                    "done"
                } else {
                    "failed"
                }
                .into(),
                code: Some(ended.code),
                at: Some(unix_now()),
                error: ended.why,
            }
        }
        Err(f) => UserDataOutcome {
            state: "failed".into(),
            code: None,
            at: Some(unix_now()),
            error: Some(format!("cannot {}: {}", f.step, f.detail)),
        },
    };
    if let Some(e) = &outcome.error {
        say(
            out,
            &format!("mayfly: user data: {e}; the init starts anyway\n"),
        );
    } else if outcome.code != Some(0) {
        say(
            out,
            &format!(
                "mayfly: user data exited with status {}; the init starts anyway\n",
                outcome.code.unwrap_or(-1)
            ),
        );
    }
    record(&mut status, &outcome);
    if let Some(sig) = stop {
        mayfly_sys::process::exit_immediately(128 + sig);
    }
}

/// A duplicate (close-on-exec) of where `stdio` writes, to report a failure after it is gone.
pub(super) fn duplicate_output(stdio: &ChildStdio) -> Option<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(output_of(stdio), 3).ok()
}

fn output_of(stdio: &ChildStdio) -> BorrowedFd<'_> {
    match stdio {
        ChildStdio::Three(_, o, _) => o.as_fd(),
        ChildStdio::Tty(t) => t.as_fd(),
        ChildStdio::Log(o) => o.as_fd(),
    }
}

fn say(out: BorrowedFd<'_>, text: &str) {
    let _ = rustix::io::write(out, text.as_bytes());
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn record(file: &mut std::fs::File, outcome: &UserDataOutcome) {
    let Ok(bytes) = serde_json::to_vec(outcome) else {
        return;
    };
    let _ = file.set_len(0);
    let _ = rustix::fs::seek(&*file, rustix::fs::SeekFrom::Start(0));
    let _ = file.write_all(&bytes);
}

/// How the user data's run ended.
struct Ended {
    /// Shell-style code.
    code: i32,
    /// When mayfly ended it: why.
    why: Option<String>,
    /// The signal that stops the instance, received meanwhile.
    stop: Option<i32>,
}

/// Runs `script` from a memory file and waits for it.
fn spawn_and_wait(script: &[u8], out: BorrowedFd<'_>, timeout: Duration) -> ChildResult<Ended> {
    // Executable memory files must say so where the host restricts them (vm.memfd_noexec);
    // kernels before 6.3 do not know the flag.
    let mem = match rustix::fs::memfd_create(
        "mayfly-user-data",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::from_bits_retain(MFD_EXEC),
    ) {
        Err(rustix::io::Errno::INVAL) => {
            rustix::fs::memfd_create("mayfly-user-data", rustix::fs::MemfdFlags::CLOEXEC)
        }
        other => other,
    }
    .step(|| "create the user data's memory file".into())?;
    let mut written = 0;
    while written < script.len() {
        written += rustix::io::write(&mem, &script[written..])
            .step(|| "write the user data's memory file".into())?;
    }
    // A file open for writing cannot be executed: only a read-only descriptor is kept.
    let ro = rustix::fs::open(
        format!("/proc/self/fd/{}", mem.as_raw_fd()).as_str(),
        OFlags::RDONLY,
        Mode::empty(),
    )
    .step(|| "reopen the user data's memory file".into())?;
    drop(mem);
    // This process is the instance's PID 1 until the init is executed: with handlers, a
    // `mayfly stop` meanwhile reaches it (the runner's side restores the defaults).
    mayfly_sys::init::block_signals().step(|| "block signals".into())?;
    // The script runs as the instance's root: it must not ptrace this process (which holds
    // descriptors of the host) or read its memory.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .step(|| "make the runner not dumpable".into())?;
    let started = Instant::now();
    let pid = match mayfly_sys::process::clone_process(mayfly_sys::process::CloneFlags::default())
        .step(|| "fork the user data".into())?
    {
        mayfly_sys::process::Forked::Child => {
            let f = become_user_data(&ro, out);
            say(
                out,
                &format!("mayfly: user data: cannot {}: {}\n", f.step, f.detail),
            );
            mayfly_sys::process::exit_immediately(127)
        }
        mayfly_sys::process::Forked::Parent(pid) => pid,
    };
    drop(ro);
    let mut killed = false;
    loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG) {
            Ok(Some((_, st))) => {
                let code = if let Some(c) = st.exit_status() {
                    c
                } else {
                    128 + st.terminating_signal().unwrap_or(0)
                };
                let why = killed.then(|| {
                    format!(
                        "ran longer than its {}s deadline: its processes were killed",
                        timeout.as_secs()
                    )
                });
                return Ok(Ended {
                    code,
                    why,
                    stop: None,
                });
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(ChildFailure::io("wait for the user data", e)),
        }
        // Only a signal from outside the instance's pid namespace (mayfly's stop: its sender
        // shows as pid 0) stops it; the script's own (`kill -HUP 1`) are ignored, as a
        // container's PID 1 ignores signals it has no handler for.
        if let Some((sig, from)) = mayfly_sys::signal::wait_blocked_from(POLL)
            && from == 0
            && ends_the_instance(sig)
        {
            // Stopped while the user data runs: it ends, and so does the instance (the init
            // never starts).
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
            return Ok(Ended {
                code: 128 + sig,
                why: Some(format!(
                    "the instance was stopped (signal {sig}) while it ran: the init did not start"
                )),
                stop: Some(sig),
            });
        }
        if !killed && started.elapsed() >= timeout {
            // Its own session and group (setsid): everything it started that stayed in it.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            killed = true;
        }
    }
}

/// Whether signal `sig`, received while the user data runs, stops the instance (not the
/// terminal and job-control ones).
fn ends_the_instance(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGCHLD
            | libc::SIGWINCH
            | libc::SIGCONT
            | libc::SIGURG
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
            | libc::SIGPIPE
    )
}

/// Turns the forked child into the user data's program; returns only on failure.
fn become_user_data(program: &OwnedFd, out: BorrowedFd<'_>) -> ChildFailure {
    let prepare = || -> ChildResult<()> {
        rustix::process::setsid().step(|| "start a session".into())?;
        let null = rustix::fs::open(
            c"/dev/null",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .step(|| "open /dev/null".into())?;
        mayfly_sys::process::dup_onto(null.as_fd(), 0).step(|| "set up stdin".into())?;
        mayfly_sys::process::dup_onto(out, 1).step(|| "set up stdout".into())?;
        mayfly_sys::process::dup_onto(out, 2).step(|| "set up stderr".into())?;
        rustix::process::chdir(c"/").step(|| "chdir /".into())?;
        super::child::conventional_nofile();
        let root = Identity {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/root".into(),
        };
        super::child::confine(&root)?;
        mayfly_sys::signal::reset_all().step(|| "reset signals".into())?;
        mayfly_sys::process::cloexec_from(3).step(|| "close inherited descriptors".into())?;
        // The interpreter of a `#!` script opens the program by its path: keep it open.
        rustix::io::fcntl_setfd(program, rustix::io::FdFlags::empty())
            .step(|| "keep the program open".into())?;
        Ok(())
    };
    if let Err(f) = prepare() {
        return f;
    }
    let path = format!("/proc/self/fd/{}", program.as_raw_fd());
    let Ok(cpath) = CString::new(path.clone()) else {
        return ChildFailure::io("exec", std::io::Error::other("bad path"));
    };
    let envp: Vec<CString> = [
        format!("PATH={}", crate::DEFAULT_PATH),
        "HOME=/root".to_owned(),
        "USER=root".to_owned(),
        "LOGNAME=root".to_owned(),
    ]
    .into_iter()
    .filter_map(|e| CString::new(e).ok())
    .collect();
    let err = mayfly_sys::process::execve(&cpath, std::slice::from_ref(&cpath), &envp);
    let detail = match err.raw_os_error() {
        Some(libc::ENOENT) => {
            "its interpreter (the `#!` line) does not exist in the instance".to_owned()
        }
        Some(libc::ENOEXEC) => "it is not a program (does it start with `#!`?)".to_owned(),
        _ => err.to_string(),
    };
    ChildFailure {
        step: "run the user data".into(),
        errno: err.raw_os_error(),
        detail,
    }
}
