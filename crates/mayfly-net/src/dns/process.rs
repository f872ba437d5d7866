//! Finding, starting and stopping a network's dnsmasq.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal};

use super::{PID, START_LOG, conf_arg};
use crate::{NetError, Result};

/// How long dnsmasq may take to start (it daemonizes once it listens).
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long it may take to end after SIGTERM, then after SIGKILL.
const TERM_DEADLINE: Duration = Duration::from_secs(5);
const KILL_DEADLINE: Duration = Duration::from_secs(2);
/// How much of the start log goes into an error.
const LOG_LIMIT: usize = 4096;

/// The user dnsmasq drops to: `dnsmasq` (Debian's) or `nobody`; `root` when that user could
/// not read the hosts directory `hosts` because a directory above it lets others nothing
/// (the state directory is private): said in the log, since the server then keeps root.
pub(super) fn run_as(hosts: &Path) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let user = if passwd.lines().any(|l| l.starts_with("dnsmasq:")) {
        "dnsmasq"
    } else {
        "nobody"
    };
    let readable = hosts.ancestors().enumerate().all(|(i, d)| {
        let need = if i == 0 { 0o005 } else { 0o001 };
        std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & need == need)
    });
    if readable {
        user.to_owned()
    } else {
        tracing::warn!(
            "{} is not reachable by other users (a private state directory): its dnsmasq keeps root instead of running as {user}",
            hosts.display()
        );
        "root".to_owned()
    }
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Whether process `pid` is the dnsmasq of `dir`.
fn is_ours(pid: i32, dir: &Path) -> bool {
    let want = conf_arg(dir);
    cmdline(pid).is_some_and(|args| {
        args.first()
            .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "dnsmasq"))
            && args.contains(&want)
    })
}

/// The dnsmasq processes of `dir`: the one its pid file names, and any other whose command
/// line names its configuration (a pid file lost in a crash must not leave one running).
pub(super) fn find(dir: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = from_pid_file(dir).into_iter().collect();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if !out.contains(&pid) && is_ours(pid, dir) {
                out.push(pid);
            }
        }
    }
    out
}

/// The server that `dir`'s pid file names, if that process is alive and is ours.
pub(super) fn from_pid_file(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join(PID))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|pid| is_ours(*pid, dir))
}

/// Whether `pidfd`'s process ended within `deadline`.
fn wait_exit(pidfd: &OwnedFd, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let mut fds = [rustix::event::PollFd::new(
            pidfd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(rustix::io::Errno::INTR) if Instant::now() < end => continue,
            Err(_) => return false,
        }
    }
}

/// Ends processes `pids` (each checked again to be `dir`'s dnsmasq once held by a pidfd, so
/// a reused pid is never signalled): SIGTERM, then SIGKILL after a while.
pub(super) fn kill_all(dir: &Path, pids: &[i32]) -> Result<()> {
    for &pid in pids {
        let Some(raw) = Pid::from_raw(pid) else {
            continue;
        };
        let Ok(pidfd) = rustix::process::pidfd_open(raw, PidfdFlags::empty()) else {
            continue; // gone already
        };
        if !is_ours(pid, dir) {
            continue;
        }
        let _ = rustix::process::pidfd_send_signal(pidfd.as_fd(), Signal::TERM);
        if wait_exit(&pidfd, TERM_DEADLINE) {
            continue;
        }
        let _ = rustix::process::pidfd_send_signal(pidfd.as_fd(), Signal::KILL);
        if !wait_exit(&pidfd, KILL_DEADLINE) {
            return Err(NetError::Tool {
                what: format!("stop dnsmasq (pid {pid}) of {}", dir.display()),
                message: "it did not end after SIGKILL".into(),
            });
        }
    }
    let _ = std::fs::remove_file(dir.join(PID));
    Ok(())
}

/// Starts the dnsmasq of `dir` (network `network`) and waits until it has daemonized.
pub(super) fn start(dir: &Path, network: &str) -> Result<()> {
    let what = format!("start the name server (dnsmasq) of network {network}");
    let tool = |message: String| NetError::Tool {
        what: what.clone(),
        message,
    };
    let log_path = dir.join(START_LOG);
    let log = File::create(&log_path).map_err(|source| NetError::Io {
        what: format!("create {}", log_path.display()),
        source,
    })?;
    let log2 = log.try_clone().map_err(|source| NetError::Io {
        what: format!("open {}", log_path.display()),
        source,
    })?;
    let mut child = Command::new("dnsmasq")
        .arg(conf_arg(dir))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| {
            tool(format!(
                "cannot run `dnsmasq` ({e}); install the dnsmasq-base package"
            ))
        })?;
    let end = Instant::now() + START_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = kill_all(dir, &find(dir));
                return Err(tool(format!(
                    "it did not start within {} s",
                    START_DEADLINE.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(tool(format!("cannot wait for it: {e}"))),
        }
    };
    if !status.success() {
        let mut said = std::fs::read_to_string(&log_path).unwrap_or_default();
        if said.len() > LOG_LIMIT {
            let mut cut = LOG_LIMIT;
            while !said.is_char_boundary(cut) {
                cut -= 1;
            }
            said.truncate(cut);
        }
        let _ = kill_all(dir, &find(dir));
        return Err(tool(format!("{status}: {}", said.trim())));
    }
    // The daemon writes its pid file as it detaches.
    let end = Instant::now() + Duration::from_secs(2);
    while find(dir).is_empty() {
        if Instant::now() >= end {
            return Err(tool(
                "it started but no process runs with its configuration".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
