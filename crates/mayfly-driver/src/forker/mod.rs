//! The forker: a single-threaded helper process (the same binary, `mayfly forker`) that
//! creates containers and exec'd processes, parents them, reaps them, and pumps their
//! console logs.
//!
//! Why a separate process: creating a container means forking and running code in the child
//! before `execve`, which is only sound in a single-threaded process; the daemon is a tokio
//! program with many threads. Why long-lived and detached (its own session, not killed with
//! the daemon): it is the parent of every container init, so instances keep running, their
//! logs keep flowing and their exit statuses are kept while the daemon restarts. One forker
//! serves one state directory (an flock on `run/forker.lock`); it leaves when no daemon is
//! connected and it tracks nothing, removing its cgroup parent on the way out.
//!
//! The loop waits (epoll) on: the listening socket, the daemon's connection, one pidfd per
//! container init and exec'd process, and one log pipe per detached container.

mod child;
mod logs;
mod spawn;

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use crate::cgroup::{CgroupLayout, Cgroups};
use crate::protocol::{
    self, ContainerState, Envelope, Event, Failure, FailureKind, FromForker, PROTOCOL_VERSION,
    Reply, Request,
};
use crate::spec::{ExitStatus, StdioSpec};

/// Where the forker of a state directory listens and locks.
#[derive(Debug, Clone)]
pub struct ForkerPaths {
    /// `<state>/run`.
    pub run_dir: PathBuf,
    /// `<state>/run/forker.sock`.
    pub socket: PathBuf,
    /// `<state>/run/forker.lock`.
    pub lock: PathBuf,
}

impl ForkerPaths {
    /// The paths for state directory `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        let run_dir = state_dir.join("run");
        ForkerPaths {
            socket: run_dir.join("forker.sock"),
            lock: run_dir.join("forker.lock"),
            run_dir,
        }
    }
}

/// A forker that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForkerError {
    /// Another forker holds the lock of this state directory.
    #[error("another forker serves this state directory")]
    AlreadyRunning,
    /// A start-up step failed.
    #[error("forker start-up: {step}")]
    Startup {
        /// The step.
        step: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn startup(step: &str) -> impl FnOnce(io::Error) -> ForkerError + '_ {
    move |source| ForkerError::Startup {
        step: step.to_owned(),
        source,
    }
}

#[derive(Debug)]
struct Container {
    pid: Pid,
    /// `None` for an adopted init whose pidfd could not be opened (it already ended).
    pidfd: Option<OwnedFd>,
    start_time: u64,
    cgroup: String,
    log: Option<logs::LogPump>,
    exited: Option<Option<ExitStatus>>,
    /// Not our child (a previous forker started it): its status cannot be collected.
    adopted: bool,
}

#[derive(Debug)]
struct ExecProcess {
    pidfd: OwnedFd,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Listener,
    Conn,
    Init(String),
    Log(String),
    Exec(u64),
}

struct Forker {
    cgroups: Cgroups,
    cgroup_parent: String,
    epoll: OwnedFd,
    listener: OwnedFd,
    conn: Option<OwnedFd>,
    containers: HashMap<String, Container>,
    execs: HashMap<u64, ExecProcess>,
    sources: HashMap<u64, Source>,
    next_token: u64,
    ever_connected: bool,
    started: Instant,
    /// Descriptors that go with the answer being made (an exec'd process's terminal).
    reply_fds: Vec<OwnedFd>,
}

/// Runs the forker for `state_dir` until it has nothing left to do. `cgroup_parent` is the
/// group under which instance groups live (removed when the forker leaves, if empty), in the
/// hierarchies of `cgroup_layout`.
///
/// Prints `ready <pid>` on standard output once it accepts connections, then points standard
/// output at standard error.
pub fn run(
    state_dir: &Path,
    cgroup_parent: &str,
    cgroup_layout: CgroupLayout,
) -> Result<(), ForkerError> {
    // Seal our executable into a memfd first: a container process that reaches a forker child
    // before exec (through /proc/<pid>/exe) must not be able to overwrite mayfly on the host
    // (CVE-2019-5736). This re-executes the process once.
    pentacle::ensure_sealed().map_err(startup("seal executable"))?;
    let _ = rustix::process::setsid();
    mayfly_sys::signal::ignore_sigpipe();
    let paths = ForkerPaths::new(state_dir);
    std::fs::create_dir_all(&paths.run_dir).map_err(startup("create run directory"))?;
    let lock = rustix::fs::open(
        &paths.lock,
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| startup("open lock")(e.into()))?;
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(ForkerError::AlreadyRunning);
    }
    let cgroups = Cgroups::detect_as(cgroup_layout)
        .map_err(|e| startup("detect cgroups")(io::Error::other(e)))?;
    let listener = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| startup("create socket")(e.into()))?;
    let _ = std::fs::remove_file(&paths.socket);
    let addr = SocketAddrUnix::new(&paths.socket).map_err(|e| startup("socket path")(e.into()))?;
    let old_umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let bound = rustix::net::bind(&listener, &addr);
    rustix::process::umask(old_umask);
    bound.map_err(|e| startup("bind socket")(e.into()))?;
    rustix::net::listen(&listener, 4).map_err(|e| startup("listen")(e.into()))?;
    let epoll =
        epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| startup("epoll")(e.into()))?;

    let mut forker = Forker {
        cgroups,
        cgroup_parent: cgroup_parent.to_owned(),
        epoll,
        listener,
        conn: None,
        containers: HashMap::new(),
        execs: HashMap::new(),
        sources: HashMap::new(),
        next_token: 1,
        ever_connected: false,
        started: Instant::now(),
        reply_fds: Vec::new(),
    };
    let listener_fd = forker
        .listener
        .try_clone()
        .map_err(startup("dup listener"))?;
    forker.watch(&listener_fd, Source::Listener);
    drop(listener_fd);

    // Tell the daemon we are ready, then get off its pipe.
    let mut out = io::stdout();
    let _ = writeln!(out, "ready {}", rustix::process::getpid().as_raw_nonzero());
    let _ = out.flush();
    let _ = mayfly_sys::process::dup_onto(io::stderr().as_fd(), 1);

    forker.serve();
    let _ = std::fs::remove_file(&paths.socket);
    drop(lock);
    Ok(())
}

impl Forker {
    fn watch(&mut self, fd: &impl AsFd, source: Source) {
        let token = self.next_token;
        self.next_token += 1;
        if epoll::add(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        )
        .is_ok()
        {
            self.sources.insert(token, source);
        }
    }

    fn unwatch(&mut self, fd: BorrowedFd<'_>, source: &Source) {
        let _ = epoll::delete(&self.epoll, fd);
        self.sources.retain(|_, s| s != source);
    }

    fn idle(&self) -> bool {
        self.conn.is_none() && self.containers.is_empty() && self.execs.is_empty()
    }

    fn serve(&mut self) {
        let mut events = Vec::with_capacity(64);
        loop {
            if self.idle()
                && (self.ever_connected || self.started.elapsed() > Duration::from_secs(30))
            {
                // Nothing to serve: remove our cgroup parent (if no group is left in it) and go.
                self.cgroups.remove_if_unused(&self.cgroup_parent);
                return;
            }
            events.clear();
            let timeout = rustix::event::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            };
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&timeout),
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    eprintln!("forker: epoll_wait: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let ready: Vec<u64> = events.iter().map(|e| e.data.u64()).collect();
            for token in ready {
                let Some(source) = self.sources.get(&token).cloned() else {
                    continue;
                };
                match source {
                    Source::Listener => self.accept(),
                    Source::Conn => self.read_conn(),
                    Source::Init(id) => self.init_exited(&id),
                    Source::Log(id) => self.pump_log(&id),
                    Source::Exec(exec_id) => self.exec_exited(exec_id),
                }
            }
        }
    }

    fn accept(&mut self) {
        let Ok(conn) = rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC) else {
            return;
        };
        if let Some(old) = self.conn.take() {
            // A new daemon replaces a vanished one (its lock guarantees there is one).
            self.unwatch(old.as_fd(), &Source::Conn);
        }
        self.watch(&conn, Source::Conn);
        self.conn = Some(conn);
        self.ever_connected = true;
    }

    fn drop_conn(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.unwatch(conn.as_fd(), &Source::Conn);
        }
    }

    fn send(&mut self, msg: &FromForker) {
        self.send_with(msg, &[]);
    }

    fn send_with(&mut self, msg: &FromForker, fds: &[BorrowedFd<'_>]) {
        let Some(conn) = &self.conn else { return };
        if protocol::send_json(conn, msg, fds).is_err() {
            self.drop_conn();
        }
    }

    /// A duplicate of the read end of container `id`'s output pipe, if it has one.
    fn log_reader(&self, id: &str) -> Option<OwnedFd> {
        self.containers
            .get(id)
            .and_then(|c| c.log.as_ref())
            .and_then(|l| l.pipe().try_clone().ok())
    }

    /// Reports an event to the connected daemon. With none connected the event is dropped:
    /// the next daemon learns container ends from the `Hello` state list, and exec sessions
    /// do not outlive the daemon that streamed them.
    fn emit(&mut self, event: Event) {
        self.send(&FromForker::Event(event));
    }

    fn read_conn(&mut self) {
        let Some(conn) = &self.conn else { return };
        let mut buf = vec![0u8; protocol::MAX_MESSAGE];
        let (n, fds) = match protocol::recv(conn.as_fd(), &mut buf) {
            Ok((0, _)) => {
                self.drop_conn();
                return;
            }
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => {
                self.drop_conn();
                return;
            }
        };
        let envelope: Envelope = match serde_json::from_slice(&buf[..n]) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("forker: unreadable request: {e}");
                self.drop_conn();
                return;
            }
        };
        // Spawns and log-reader requests answer with a duplicate of the output pipe's read
        // end: the daemon holds it so that the pipe never loses its last reader.
        let reader_of = match &envelope.request {
            Request::Spawn(spec) => Some(spec.id.clone()),
            Request::LogReader { id } => Some(id.clone()),
            _ => None,
        };
        let result = self.handle(envelope.request, fds);
        let reader = match (&result, reader_of) {
            (Ok(_), Some(id)) => self.log_reader(&id),
            _ => None,
        };
        let extra = std::mem::take(&mut self.reply_fds);
        let attached: Vec<BorrowedFd<'_>> = reader
            .iter()
            .chain(extra.iter())
            .map(|f| f.as_fd())
            .collect();
        self.send_with(
            &FromForker::Reply {
                seq: envelope.seq,
                result,
            },
            &attached,
        );
    }

    fn handle(&mut self, request: Request, fds: Vec<OwnedFd>) -> Result<Reply, Failure> {
        match request {
            Request::Hello { .. } => {
                let containers = self
                    .containers
                    .iter()
                    .map(|(id, c)| ContainerState {
                        id: id.clone(),
                        pid: c.pid.as_raw_nonzero().get(),
                        start_time: c.start_time,
                        exited: c.exited.flatten(),
                    })
                    .collect();
                Ok(Reply::Hello {
                    protocol: PROTOCOL_VERSION,
                    pid: rustix::process::getpid().as_raw_nonzero().get(),
                    cgroup_mode: self.cgroups.mode().as_str().to_owned(),
                    containers,
                })
            }
            Request::Spawn(spec) => {
                if self.containers.contains_key(&spec.id) {
                    return Err(Failure::other(format!(
                        "container {} is already running",
                        spec.id
                    )));
                }
                let spawned = spawn::spawn_container(&self.cgroups, &spec, fds)?;
                let log = match (&spec.stdio, spawned.log_pipe) {
                    (StdioSpec::Log { path, max_bytes }, Some(pipe)) => {
                        match logs::LogPump::open(pipe, path.clone(), *max_bytes) {
                            Ok(pump) => Some(pump),
                            Err(e) => {
                                eprintln!("forker: log {}: {e}", path.display());
                                None
                            }
                        }
                    }
                    _ => None,
                };
                self.watch(&spawned.pidfd, Source::Init(spec.id.clone()));
                if let Some(pump) = &log {
                    let fd = pump.pipe().try_clone();
                    if let Ok(fd) = fd {
                        self.watch(&fd, Source::Log(spec.id.clone()));
                    }
                }
                let pid = spawned.pid.as_raw_nonzero().get();
                self.containers.insert(
                    spec.id.clone(),
                    Container {
                        pid: spawned.pid,
                        pidfd: Some(spawned.pidfd),
                        start_time: spawned.start_time,
                        cgroup: spec.cgroup.clone(),
                        log,
                        exited: None,
                        adopted: false,
                    },
                );
                Ok(Reply::Spawned {
                    pid,
                    start_time: spawned.start_time,
                })
            }
            Request::Signal { id, signal } => {
                let c = self.running(&id)?;
                let sig = Signal::from_named_raw(signal)
                    .ok_or_else(|| Failure::other(format!("unknown signal {signal}")))?;
                if let Some(pidfd) = &c.pidfd {
                    rustix::process::pidfd_send_signal(pidfd, sig)
                        .map_err(|e| Failure::other(format!("signal {id}: {e}")))?;
                }
                Ok(Reply::Done)
            }
            Request::KillAll { id } => {
                let c = self.running(&id)?;
                if let Some(pidfd) = &c.pidfd {
                    let _ = rustix::process::pidfd_send_signal(pidfd, Signal::KILL);
                }
                let cgroup = c.cgroup.clone();
                self.cgroups
                    .kill_all(&cgroup)
                    .map_err(|e| Failure::other(crate::error_chain(&e)))?;
                Ok(Reply::Done)
            }
            Request::Exec {
                id,
                exec_id,
                process,
            } => {
                let c = self.running(&id)?;
                let Some(pidfd) = &c.pidfd else {
                    return Err(Failure::other(format!("container {id} is not running")));
                };
                let pid = c.pid.as_raw_nonzero().get();
                let spawned =
                    spawn::spawn_exec(&self.cgroups, &c.cgroup, pid, pidfd, &process, fds)?;
                self.watch(&spawned.pidfd, Source::Exec(exec_id));
                let pid = spawned.pid.as_raw_nonzero().get();
                self.reply_fds.extend(spawned.terminal);
                self.execs.insert(
                    exec_id,
                    ExecProcess {
                        pidfd: spawned.pidfd,
                    },
                );
                Ok(Reply::ExecStarted { pid })
            }
            Request::SignalExec { exec_id, signal } => {
                let e = self.execs.get(&exec_id).ok_or(Failure {
                    kind: FailureKind::UnknownContainer,
                    message: format!("no exec'd process {exec_id}"),
                })?;
                let sig = Signal::from_named_raw(signal)
                    .ok_or_else(|| Failure::other(format!("unknown signal {signal}")))?;
                let _ = rustix::process::pidfd_send_signal(&e.pidfd, sig);
                Ok(Reply::Done)
            }
            Request::Freeze { id, frozen } => {
                let cgroup = self.running(&id)?.cgroup.clone();
                self.cgroups
                    .set_frozen(&cgroup, frozen)
                    .map_err(|e| Failure::other(crate::error_chain(&e)))?;
                Ok(Reply::Done)
            }
            Request::Adopt {
                id,
                pid,
                start_time,
                cgroup,
                log,
            } => self.adopt(id, pid, start_time, cgroup, log, fds),
            Request::LogReader { id } => {
                self.running(&id)?;
                Ok(Reply::Done)
            }
            Request::ProbeIdmap { path } => Ok(Reply::Probe {
                unsupported: spawn::probe_idmap(&path).err(),
            }),
            Request::Release { id } => {
                match self.containers.get(&id) {
                    Some(c) if c.exited.is_some() => {}
                    Some(_) => {
                        return Err(Failure::other(format!("container {id} is still running")));
                    }
                    None => return Ok(Reply::Done),
                }
                if let Some(c) = self.containers.remove(&id) {
                    self.cgroups
                        .remove(&c.cgroup)
                        .map_err(|e| Failure::other(crate::error_chain(&e)))?;
                }
                Ok(Reply::Done)
            }
        }
    }

    fn running(&self, id: &str) -> Result<&Container, Failure> {
        match self.containers.get(id) {
            Some(c) if c.exited.is_none() => Ok(c),
            _ => Err(Failure {
                kind: FailureKind::UnknownContainer,
                message: format!("container {id} is not running"),
            }),
        }
    }

    fn adopt(
        &mut self,
        id: String,
        pid: i32,
        start_time: u64,
        cgroup: String,
        log: Option<protocol::LogTarget>,
        mut fds: Vec<OwnedFd>,
    ) -> Result<Reply, Failure> {
        if self.containers.contains_key(&id) {
            return Ok(Reply::Done);
        }
        let alive = Pid::from_raw(pid)
            .filter(|_| spawn::start_time(pid).ok() == Some(start_time))
            .and_then(|p| {
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                    .ok()
                    .map(|fd| (p, fd))
            });
        let Some((p, pidfd)) = alive else {
            // It ended while nobody watched; make sure nothing of it is left.
            let _ = self.cgroups.kill_all(&cgroup);
            let _ = self.cgroups.remove(&cgroup);
            return Err(Failure {
                kind: FailureKind::UnknownContainer,
                message: format!("container {id} is no longer running"),
            });
        };
        self.watch(&pidfd, Source::Init(id.clone()));
        // The daemon kept a reader of the output pipe while no forker did; pump it again.
        let pump = match (log, fds.pop()) {
            (Some(target), Some(pipe)) => {
                logs::LogPump::open(pipe, target.path.clone(), target.max_bytes)
                    .map_err(|e| eprintln!("forker: log {}: {e}", target.path.display()))
                    .ok()
            }
            _ => None,
        };
        if let Some(fd) = pump.as_ref().and_then(|l| l.pipe().try_clone().ok()) {
            self.watch(&fd, Source::Log(id.clone()));
        }
        self.containers.insert(
            id,
            Container {
                pid: p,
                pidfd: Some(pidfd),
                start_time,
                cgroup,
                log: pump,
                exited: None,
                adopted: true,
            },
        );
        Ok(Reply::Done)
    }

    fn init_exited(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let Some(pidfd) = c.pidfd.take() else { return };
        let status = if c.adopted {
            None
        } else {
            match rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED) {
                Ok(Some(st)) => Some(exit_status(&st)),
                _ => None,
            }
        };
        c.exited = Some(status);
        let log = c.log.take();
        let cgroup = c.cgroup.clone();
        let source = Source::Init(id.to_owned());
        self.unwatch(pidfd.as_fd(), &source);
        if let Some(mut pump) = log {
            // The namespace is gone, so every writer is gone: drain what is left.
            while pump.pump() {}
            let log_source = Source::Log(id.to_owned());
            self.unwatch(pump.pipe().as_fd(), &log_source);
        }
        // Nothing can run in the group any more; empty it of stragglers (processes that
        // joined through exec without being in the pid namespace cannot exist, but be sure).
        let _ = self.cgroups.kill_all(&cgroup);
        self.emit(Event::Exited {
            id: id.to_owned(),
            status,
        });
    }

    fn pump_log(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let Some(pump) = c.log.as_mut() else { return };
        if !pump.pump() {
            let pump = c.log.take();
            if let Some(pump) = pump {
                self.unwatch(pump.pipe().as_fd(), &Source::Log(id.to_owned()));
            }
        }
    }

    fn exec_exited(&mut self, exec_id: u64) {
        let Some(e) = self.execs.remove(&exec_id) else {
            return;
        };
        let status =
            match rustix::process::waitid(WaitId::PidFd(e.pidfd.as_fd()), WaitIdOptions::EXITED) {
                Ok(Some(st)) => exit_status(&st),
                _ => ExitStatus::exited(-1),
            };
        self.unwatch(e.pidfd.as_fd(), &Source::Exec(exec_id));
        self.emit(Event::ExecExited { exec_id, status });
    }
}

fn exit_status(st: &rustix::process::WaitIdStatus) -> ExitStatus {
    if let Some(code) = st.exit_status() {
        ExitStatus::exited(code)
    } else if let Some(sig) = st.terminating_signal() {
        ExitStatus::killed(sig)
    } else {
        ExitStatus::exited(-1)
    }
}
