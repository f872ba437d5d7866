//! Power requests of an instance's init: what the end of a run means (a halt, a reboot, a
//! clean stop, a kill) and the new run that a reboot asks for.
//!
//! An instance's init is PID 1 of a pid namespace of its own (always: the forker clones every
//! instance and build container with `CLONE_NEWPID`). There, `reboot(2)` (with CAP_SYS_BOOT in
//! the instance's user namespace, which mayfly keeps for this) does not reach the host: the
//! kernel (`reboot_pid_ns`) kills the namespace's init and reports its end to its parent as a
//! death by SIGHUP for a restart and by SIGINT for a power-off or halt.
//!
//! A SIGHUP or SIGINT sent from the host to an init without a handler for it ends the init the
//! same way; nothing in the status tells them apart. mayfly therefore reads the status as a
//! reboot or a halt only when it sent the init no signal itself during the run (see
//! [`Asked`]): after its own stop signal, an end by SIGINT or SIGHUP (other than the signal it
//! sent) is the init's clean halt in answer to it, and never a reboot. A `kill -HUP` of the
//! init from the host, by hand, still reads as a reboot: the instance starts again.
//!
//! A reboot starts the instance again through the same path as an interrupted restart: a
//! journal entry (kind `restart`) is written before the run is recorded as ended, so that a
//! daemon that dies in between starts it at its next start. A transient instance's writable
//! layer is discarded at the end of every run, so it comes back clean: rebooting a transient
//! instance is how it goes back to its template from inside. An ephemeral instance is deleted
//! when its run ends, whatever the end: a reboot ends it too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mayfly_api::Ending;
use mayfly_driver::ExitStatus;

use crate::slot::Slot;
use crate::{Engine, lock};

/// What mayfly itself did to an instance's init during its current run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Asked {
    /// The last signal mayfly sent it (a stop signal, a signal an attached run forwarded).
    pub signal: Option<i32>,
    /// mayfly killed it (SIGKILL through its cgroup).
    pub killed: bool,
    /// mayfly's stop path (stop, restart, reset, rm) asked it to end: only then is a plain
    /// exit an asked-for end (a signal an attached run forwarded may be ignored by the init,
    /// which can exit on its own much later).
    pub stopping: bool,
}

/// How many reboots in [`REBOOT_WINDOW`] start the instance again; the next one leaves it
/// stopped (an init that reboots at every boot would otherwise run forever).
const REBOOT_BURST: usize = 5;
const REBOOT_WINDOW: Duration = Duration::from_secs(60);

/// How a run that ended with `status` ended, given what mayfly did to it (see the module
/// documentation for why a SIGHUP or SIGINT is read only when mayfly sent nothing).
pub(crate) fn ending(status: &ExitStatus, asked: Asked) -> Ending {
    let Some(sig) = status.signal else {
        return if asked.stopping || asked.killed {
            Ending::Stopped
        } else {
            Ending::Exited
        };
    };
    if sig == libc::SIGKILL && asked.killed {
        return Ending::Killed;
    }
    if asked.signal == Some(sig) {
        // Our own signal ended it (an init without a handler for it, or one that re-raised it).
        return Ending::Stopped;
    }
    match (sig, asked.signal.is_some() || asked.killed) {
        (libc::SIGHUP, false) => Ending::Rebooted,
        (libc::SIGINT, false) => Ending::Halted,
        // After our stop signal: the init shut down and called reboot(2), whichever command.
        (libc::SIGHUP | libc::SIGINT, true) => Ending::Halted,
        _ => Ending::Signalled,
    }
}

/// The halt request of the init a template runs, where it can be told for sure: its default
/// command is `/sbin/init` (or systemd itself) and its Debian packages say what that is
/// (`systemd-sysv`: systemd, which halts on SIGRTMIN+3 and ignores SIGTERM; `sysvinit-core`:
/// sysvinit, whose ctrl-alt-del request SIGINT runs `shutdown` in Debian's inittab, and which
/// ignores SIGTERM). `None`: keep what the template has. busybox init (`/bin/busybox init`,
/// SIGUSR2) is not guessed: its applet is a name inside a multi-call binary.
pub(crate) fn init_stop_signal(
    config: &mayfly_api::TemplateConfig,
    packages: &[String],
) -> Option<&'static str> {
    let (entrypoint, cmd) = config.entrypoint_and_cmd();
    let program = entrypoint.first().or(cmd.first())?;
    let installed = |name: &str| {
        packages
            .iter()
            .any(|p| p.split_whitespace().next() == Some(name))
    };
    match program.as_str() {
        "/lib/systemd/systemd" | "/usr/lib/systemd/systemd" => Some("SIGRTMIN+3"),
        "/sbin/init" | "/usr/sbin/init" if installed("systemd-sysv") => Some("SIGRTMIN+3"),
        "/sbin/init" | "/usr/sbin/init" if installed("sysvinit-core") => Some("SIGINT"),
        _ => None,
    }
}

impl Engine {
    /// Notes that mayfly sends `signal` (or SIGKILL, `None`) to the init of instance `id`.
    pub(crate) fn note_signal(&self, id: &str, signal: Option<i32>) {
        if let Some(slot) = lock(&self.slots).by_id(id) {
            let mut rt = lock(&slot.rt);
            match signal {
                Some(sig) => rt.asked.signal = Some(sig),
                None => rt.asked.killed = true,
            }
        }
    }

    /// Notes that mayfly's stop path asks instance `id`'s init to end.
    pub(crate) fn note_stopping(&self, id: &str) {
        if let Some(slot) = lock(&self.slots).by_id(id) {
            lock(&slot.rt).asked.stopping = true;
        }
    }

    /// The run of `slot` ended with a reboot: decides whether it starts again and, if so,
    /// writes the journal entry that makes sure it does (closed once it runs again). `Err`
    /// says why it stays stopped.
    pub(crate) async fn plan_reboot(&self, slot: &Arc<Slot>) -> Result<Option<i64>, String> {
        {
            let mut rt = lock(&slot.rt);
            if rt.restart_on_exit.is_some() {
                // An interrupted restart starts it anyway.
                return Ok(None);
            }
            let now = Instant::now();
            rt.reboots
                .retain(|t| now.duration_since(*t) < REBOOT_WINDOW);
            if rt.reboots.len() >= REBOOT_BURST {
                rt.reboots.clear();
                return Err(format!(
                    "rebooted {} times within {} s: left stopped (does its init reboot at every boot? see `mayfly logs {}`)",
                    REBOOT_BURST + 1,
                    REBOOT_WINDOW.as_secs(),
                    slot.name
                ));
            }
            rt.reboots.push(now);
        }
        match self.journal_restart(&slot.id).await {
            Ok(j) => Ok(Some(j)),
            Err(e) => Err(format!(
                "cannot start it again after its reboot: {}",
                mayfly_driver::error_chain(&e)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn killed(sig: i32) -> ExitStatus {
        ExitStatus {
            code: 128 + sig,
            signal: Some(sig),
        }
    }

    const NOTHING: Asked = Asked {
        signal: None,
        killed: false,
        stopping: false,
    };

    /// Sent by a stop.
    fn sent(sig: i32) -> Asked {
        Asked {
            signal: Some(sig),
            killed: false,
            stopping: true,
        }
    }

    /// Forwarded by an attached run.
    fn forwarded(sig: i32) -> Asked {
        Asked {
            signal: Some(sig),
            killed: false,
            stopping: false,
        }
    }

    #[test]
    fn a_forwarded_signal_makes_no_later_exit_an_asked_one() {
        assert_eq!(
            ending(&ExitStatus::exited(3), forwarded(libc::SIGINT)),
            Ending::Exited
        );
        assert_eq!(
            ending(&ExitStatus::exited(3), sent(libc::SIGTERM)),
            Ending::Stopped
        );
        // The forwarded signal itself ending it is still asked for (no reboot either).
        assert_eq!(
            ending(&killed(libc::SIGHUP), forwarded(libc::SIGHUP)),
            Ending::Stopped
        );
    }

    #[test]
    fn reboot_2_reads_as_a_reboot_or_a_halt_when_mayfly_sent_nothing() {
        assert_eq!(ending(&killed(libc::SIGHUP), NOTHING), Ending::Rebooted);
        assert_eq!(ending(&killed(libc::SIGINT), NOTHING), Ending::Halted);
        assert_eq!(ending(&ExitStatus::exited(0), NOTHING), Ending::Exited);
        assert_eq!(ending(&killed(libc::SIGKILL), NOTHING), Ending::Signalled);
        assert_eq!(ending(&killed(libc::SIGSEGV), NOTHING), Ending::Signalled);
    }

    #[test]
    fn after_a_stop_signal_nothing_is_a_reboot() {
        // systemd (SIGRTMIN+3) and busybox init (SIGUSR2) halt through reboot(2); busybox
        // init asked with SIGTERM reboots, which is still the end of a stop.
        assert_eq!(ending(&killed(libc::SIGINT), sent(37)), Ending::Halted);
        assert_eq!(
            ending(&killed(libc::SIGHUP), sent(libc::SIGTERM)),
            Ending::Halted
        );
        // Our own SIGHUP (an attached run hung up) or SIGINT (forwarded ^C) is no reboot.
        assert_eq!(
            ending(&killed(libc::SIGHUP), sent(libc::SIGHUP)),
            Ending::Stopped
        );
        assert_eq!(
            ending(&killed(libc::SIGINT), sent(libc::SIGINT)),
            Ending::Stopped
        );
        assert_eq!(
            ending(&ExitStatus::exited(0), sent(libc::SIGTERM)),
            Ending::Stopped
        );
    }

    #[test]
    fn the_stop_signal_of_a_known_init_is_its_halt_request() {
        let config = |cmd: &str| {
            let mut c = mayfly_api::TemplateConfig::default();
            c.set_command(
                Vec::new(),
                cmd.split_whitespace().map(str::to_owned).collect(),
            );
            c
        };
        let pkgs = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let systemd = pkgs(&["dbus 1.14", "systemd-sysv 252.38-1"]);
        let sysv = pkgs(&["sysvinit-core 3.06-4"]);
        assert_eq!(
            init_stop_signal(&config("/sbin/init"), &systemd),
            Some("SIGRTMIN+3")
        );
        assert_eq!(
            init_stop_signal(&config("/sbin/init"), &sysv),
            Some("SIGINT")
        );
        assert_eq!(
            init_stop_signal(&config("/lib/systemd/systemd --log-level=info"), &[]),
            Some("SIGRTMIN+3")
        );
        // Another program, or an init nobody can name: left alone.
        assert_eq!(init_stop_signal(&config("/usr/sbin/nginx"), &systemd), None);
        assert_eq!(init_stop_signal(&config("/sbin/init"), &[]), None);
        assert_eq!(
            init_stop_signal(&config("/sbin/init"), &pkgs(&["systemd-sysvx 1"])),
            None
        );
        assert_eq!(init_stop_signal(&config(""), &systemd), None);
    }

    #[test]
    fn a_kill_is_a_kill() {
        let asked = Asked {
            signal: Some(libc::SIGTERM),
            killed: true,
            stopping: true,
        };
        assert_eq!(ending(&killed(libc::SIGKILL), asked), Ending::Killed);
        let forced = Asked {
            signal: None,
            killed: true,
            stopping: true,
        };
        assert_eq!(ending(&killed(libc::SIGKILL), forced), Ending::Killed);
        // Killed while it was halting by itself: the kernel's word stands.
        assert_eq!(ending(&killed(libc::SIGHUP), forced), Ending::Halted);
    }
}
