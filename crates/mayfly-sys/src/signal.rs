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

/// Restores SIGPIPE's default action (the Rust runtime ignores it), so that a command whose
/// output goes to a reader that left (`mayfly list | head -1`) ends quietly, as `ls` does,
/// instead of failing on EPIPE.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Signal `sig` as rustix sends it: a named signal, or a real-time one from this libc's
/// `SIGRTMIN` to `SIGRTMAX` (systemd's halt request is `SIGRTMIN+3`); `None` for anything
/// else, including the numbers the C library keeps for itself (32 and 33 with glibc).
pub fn sendable(sig: i32) -> Option<rustix::process::Signal> {
    rustix::process::Signal::from_named_raw(sig).or_else(|| {
        (libc::SIGRTMIN()..=libc::SIGRTMAX())
            .contains(&sig)
            // SAFETY: a valid, non-zero signal number outside the C library's reserved range;
            // the result is only ever sent to another process.
            .then(|| unsafe { rustix::process::Signal::from_raw_unchecked(sig) })
    })
}

/// Waits at most `timeout` for one of the calling process's blocked signals (see
/// [`crate::init::block_signals`]) and takes it: its number, or `None` when none came.
pub fn wait_blocked(timeout: std::time::Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    };
    // SAFETY: `set` is a valid, initialised sigset_t and `ts` a valid timespec; a null
    // siginfo pointer is allowed.
    let sig = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut set);
        libc::sigtimedwait(&raw const set, std::ptr::null_mut(), &raw const ts)
    };
    (sig > 0).then_some(sig)
}

/// Like [`wait_blocked`], with the sender: `(signal, sender's pid as the caller sees it)`.
/// The pid is 0 when the sender is outside the caller's pid namespace (the host) or the
/// kernel.
pub fn wait_blocked_from(timeout: std::time::Duration) -> Option<(i32, i32)> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    };
    // SAFETY: `set` is a valid, initialised sigset_t, `info` a writable siginfo_t and `ts` a
    // valid timespec; `si_pid` is read only once the call filled `info`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut set);
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let sig = libc::sigtimedwait(&raw const set, &raw mut info, &raw const ts);
        (sig > 0).then(|| (sig, info.si_pid()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn real_time_signals_can_be_sent_and_reserved_ones_cannot() {
        assert_eq!(super::sendable(15).map(|s| s.as_raw()), Some(15));
        let rtmin = libc::SIGRTMIN();
        assert_eq!(
            super::sendable(rtmin + 3).map(|s| s.as_raw()),
            Some(rtmin + 3)
        );
        assert!(super::sendable(rtmin - 1).is_none());
        assert!(super::sendable(0).is_none());
        assert!(super::sendable(65).is_none());
    }
}
