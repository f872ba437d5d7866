//! mayfly's init (`--init`): the PID 1 of an instance that runs the command as its child,
//! forwards signals to it, reaps every process that ends up as its child (orphans are
//! re-parented to PID 1), and exits with the command's status.
//!
//! It is not a program of its own: a static binary copied into the instance would depend on
//! the template (its libc, its paths), and one exec'd from the host would be visible there.
//! The forker's container child, already inside the instance (after `pivot_root`, confined
//! like the command), forks: the child becomes the command, the parent stays here. Used in
//! this order:
//!
//! 1. [`block_signals`], before the fork: every signal waits for the loop (the command's side
//!    restores the defaults, see [`crate::signal::reset_all`]);
//! 2. [`shed`], in the init after the fork and the confinement: not dumpable, renamed, the
//!    memory inherited from the forker given back, no descriptors (the caller makes the
//!    command wait for that);
//! 3. [`serve`], the loop: `sigwaitinfo` and `waitpid`, no allocation, no descriptor.

use std::io;

/// Whether the init passes signal `sig` on to the command: every signal that can be caught,
/// except SIGCHLD (its own business) and the ones the kernel raises for a fault of the
/// receiving process itself.
pub fn forwards(sig: i32) -> bool {
    (1..=libc::SIGRTMAX()).contains(&sig)
        && !matches!(
            sig,
            libc::SIGKILL
                | libc::SIGSTOP
                | libc::SIGCHLD
                | libc::SIGSEGV
                | libc::SIGBUS
                | libc::SIGILL
                | libc::SIGFPE
                | libc::SIGTRAP
                | libc::SIGSYS
        )
}

/// A handler that never runs (the signals are blocked and taken by `sigwaitinfo`): it only
/// makes the kernel deliver them. A pid namespace's init does not get a signal whose action
/// is the default one, whoever sends it; with a handler installed, `mayfly stop`'s signal
/// and the client's forwarded ones arrive (and `SigCgt` in `/proc/PID/status` says so).
extern "C" fn never_runs(_: libc::c_int) {}

/// Blocks every signal of the calling (single-threaded) process and installs a handler for
/// each forwarded one. Signals sent from now on wait for [`serve`].
pub fn block_signals() -> io::Result<()> {
    // SAFETY: sigfillset/sigprocmask work on a local, initialised set; the handler installed
    // is a function that does nothing (async-signal-safe), and it never runs while the
    // signals are blocked anyway. Numbers the C library reserves fail with EINVAL, ignored.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        if libc::sigprocmask(libc::SIG_SETMASK, &raw const all, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        for sig in 1..=libc::SIGRTMAX() {
            if !forwards(sig) {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = never_runs as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigfillset(&raw mut action.sa_mask);
            libc::sigaction(sig, &raw const action, std::ptr::null_mut());
        }
    }
    Ok(())
}

/// Gives up what the init does not need, once it is confined. It makes the process
/// non-dumpable (nobody in the instance may trace it or read its memory; the credentials
/// just changed, which may have reset the flag), replaces the forker's command line and name,
/// which the instance would see in `/proc/1`, with `name`, gives the forker's heap and the
/// unused part of the stack back (a forked copy of the forker would otherwise keep them, page
/// by page as the forker changes its own), and closes every file descriptor last (the
/// forker's, the command's stdio, the start-up socket, whose closing tells the forker that
/// the init is ready, and whatever the command's side waits on before it goes on).
///
/// The caller must not allocate (or free) after this: the heap is gone.
pub fn shed(name: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    rename(name);
    release_memory();
    // SAFETY: close_range closes descriptors; the caller owns no descriptor it will use
    // again (it only waits for signals and children from now on).
    if unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The loop of the init: forwards every signal it receives to `child`, reaps every child that
/// ends, and exits with `child`'s status (128 + N when signal N ended it) once it ends. The
/// kernel then ends whatever else is left in the pid namespace.
pub fn serve(child: i32) -> ! {
    // SAFETY: only system calls on local, initialised values; nothing allocates.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&raw const all, &raw mut info);
            if sig == libc::SIGCHLD {
                loop {
                    let mut status: libc::c_int = 0;
                    let pid = libc::waitpid(-1, &raw mut status, libc::WNOHANG);
                    if pid <= 0 {
                        break;
                    }
                    if pid == child {
                        let code = if libc::WIFSIGNALED(status) {
                            128 + libc::WTERMSIG(status)
                        } else {
                            libc::WEXITSTATUS(status)
                        };
                        libc::_exit(code);
                    }
                }
            } else if sig > 0 && forwards(sig) {
                libc::kill(child, sig);
            }
        }
    }
}

/// Drops the pages of the heap and of the stack below the current frame (with a margin):
/// after the fork they are the forker's, kept alive by copy-on-write for as long as the
/// init lives. Best effort: what cannot be read or released stays.
fn release_memory() {
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let mut heap: Option<(usize, usize)> = None;
    let mut stack: Option<(usize, usize)> = None;
    each_mapping(|start, end, tail| {
        if tail == b"[heap]" {
            heap = Some((start, end));
        } else if tail == b"[stack]" {
            stack = Some((start, end));
        }
    });
    if let Some((start, end)) = heap {
        discard(start, end);
    }
    if let Some((start, end)) = stack {
        // 64 KiB below the current frame is room for what the loop and the kernel's signal
        // frames may still use; the rest was the forker's deeper calls.
        let keep_from = sp.saturating_sub(64 << 10) & !4095;
        if keep_from > start && keep_from < end {
            discard(start, keep_from);
        }
    }
}

fn discard(start: usize, end: usize) {
    if end > start {
        // SAFETY: MADV_DONTNEED on private anonymous pages of this process: later reads see
        // zero pages. The heap is never used again (see `shed`), and stack pages below the
        // live frames hold nothing anyone reads.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Calls `f(start, end, last word)` for each line of `/proc/self/maps`, reading through a
/// stack buffer (no allocation). Lines longer than the buffer's line limit are skipped.
fn each_mapping(mut f: impl FnMut(usize, usize, &[u8])) {
    let Some(fd) = open_read(c"/proc/self/maps") else {
        return;
    };
    let mut chunk = [0u8; 4096];
    let mut line = [0u8; 512];
    let mut len = 0usize;
    let mut overlong = false;
    loop {
        // SAFETY: reads into a local buffer of the given size.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        let Ok(n) = usize::try_from(n) else { break };
        if n == 0 {
            break;
        }
        for &b in chunk.iter().take(n) {
            if b == b'\n' {
                if !overlong {
                    parse_mapping(line.get(..len).unwrap_or_default(), &mut f);
                }
                len = 0;
                overlong = false;
            } else if let Some(slot) = line.get_mut(len) {
                *slot = b;
                len += 1;
            } else {
                overlong = true;
            }
        }
    }
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
}

fn parse_mapping(line: &[u8], f: &mut impl FnMut(usize, usize, &[u8])) {
    let Some(dash) = line.iter().position(|&b| b == b'-') else {
        return;
    };
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return;
    };
    let (Some(start), Some(end)) = (
        hex(line.get(..dash).unwrap_or_default()),
        hex(line.get(dash + 1..space).unwrap_or_default()),
    ) else {
        return;
    };
    let tail = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    f(start, end, tail);
}

fn hex(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut v = 0usize;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | usize::from(n);
    }
    Some(v)
}

fn open_read(path: &std::ffi::CStr) -> Option<libc::c_int> {
    // SAFETY: opens a NUL-terminated path read-only.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    (fd >= 0).then_some(fd)
}

/// Overwrites the command line the process inherited (what `/proc/PID/cmdline` shows) with
/// `name`, and sets its short name (`comm`) too. The environment it inherited (the forker's,
/// the daemon's) is wiped as well: not dumpable, nobody may read it, and then there is
/// nothing to read either.
fn rename(name: &std::ffi::CStr) {
    // SAFETY: PR_SET_NAME copies at most 16 bytes of a NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    let Some([start, end, env_start, env_end]) = argument_area() else {
        return;
    };
    if env_end > env_start {
        // SAFETY: [env_start, env_end) is this process's environment block (from its own
        // /proc/self/stat) at the top of its stack; nothing of the init reads it, and no
        // Rust reference covers it (std reads `environ` only when asked).
        unsafe { std::ptr::write_bytes(env_start as *mut u8, 0, env_end - env_start) };
    }
    let bytes = name.to_bytes_with_nul();
    if end <= start {
        return;
    }
    let len = end - start;
    // SAFETY: [start, end) is the argument area of this process (from its own
    // /proc/self/stat), writable memory at the top of its stack that no Rust reference
    // covers; nothing of the init reads its arguments.
    unsafe {
        let area = start as *mut u8;
        std::ptr::write_bytes(area, 0, len);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), area, bytes.len().min(len));
        // A last byte that is not NUL makes the kernel show the area up to its first NUL
        // (as for `setproctitle`): the name alone, not the name and a run of NULs.
        if len > bytes.len() {
            *area.add(len - 1) = b' ';
        }
    }
}

/// `arg_start`, `arg_end`, `env_start` and `env_end` (fields 48 to 51) of `/proc/self/stat`.
fn argument_area() -> Option<[usize; 4]> {
    let fd = open_read(c"/proc/self/stat")?;
    let mut buf = [0u8; 2048];
    // SAFETY: reads into a local buffer of the given size, then closes the descriptor.
    let n = unsafe {
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let stat = buf.get(..usize::try_from(n).ok()?)?;
    // The name (field 2) may hold spaces and parentheses: count from the last `)`, which is
    // followed by field 3.
    let after = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat
        .get(after + 1..)?
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let start = decimal(fields.nth(48 - 3)?)?;
    let end = decimal(fields.next()?)?;
    let env_start = decimal(fields.next()?)?;
    let env_end = decimal(fields.next()?)?;
    Some([start, end, env_start, env_end])
}

fn decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut v = 0usize;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_signals_are_the_catchable_ones_but_sigchld_and_faults() {
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGWINCH,
        ] {
            assert!(forwards(sig), "{sig}");
        }
        assert!(forwards(libc::SIGRTMIN()) && forwards(libc::SIGRTMAX()));
        for sig in [
            0,
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGCHLD,
            libc::SIGSEGV,
            65,
        ] {
            assert!(!forwards(sig), "{sig}");
        }
    }

    #[test]
    fn maps_lines_parse_without_allocating() {
        let mut seen = Vec::new();
        parse_mapping(
            b"55d1c6a41000-55d1c6a62000 rw-p 00000000 00:00 0                          [heap]",
            &mut |s, e, t| seen.push((s, e, t.to_vec())),
        );
        assert_eq!(
            seen,
            vec![(0x55d1_c6a4_1000, 0x55d1_c6a6_2000, b"[heap]".to_vec())]
        );
        let mut found = false;
        each_mapping(|_, _, tail| found |= tail == b"[stack]");
        assert!(found, "this process's stack is in its maps");
        let [start, end, env_start, env_end] = argument_area().expect("argument area");
        assert!(end > start && env_end > env_start && env_start >= end);
    }
}
