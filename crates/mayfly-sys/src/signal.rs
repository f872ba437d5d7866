//! Signal dispositions and masks, which rustix leaves to the runtime.

use std::io;

/// Restores the default action of every signal and unblocks them all.
///
/// An ignored signal stays ignored across `execve` and a blocked one stays blocked, so a
/// helper that ignored SIGPIPE would otherwise hand that to the container's processes.
pub fn reset_all() -> io::Result<()> {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting SIG_DFL installs no handler code; signal numbers that the kernel
        // reserves for the C library simply fail with EINVAL, which we ignore.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: `set` is a valid, initialised sigset_t; a null old-set pointer is allowed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Ignores SIGPIPE, so that writing to a closed pipe or socket fails with EPIPE instead of
/// killing the process.
pub fn ignore_sigpipe() {
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}
