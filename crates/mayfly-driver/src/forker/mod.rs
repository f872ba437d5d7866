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
//! container init, exec'd process and other child to reap, one log pipe and one console
//! (with its attached client, if any) per detached container, and the sync socket of every container or exec'd process being started.
//!
//! Invariants:
//! - **The loop never waits for one instance.** Whatever depends on an instance's processes
//!   (a child's set-up, an exec helper joining a cgroup, a freeze, a cgroup emptying) is a
//!   *pending operation*: its request is answered when it completes or its deadline passes,
//!   and the loop serves everyone else meanwhile.
//! - **Every child is reaped.** Each pid the forker makes or learns is opened as a pidfd at
//!   once and watched until `waitid` collects it: a process nobody reports on anymore is an
//!   *orphan*, reaped all the same (an unreaped exec'd process would keep its instance's pid
//!   namespace, and so its init, from ever ending).
//! - **One bad request hurts only itself** (see `protocol`), and the daemon's connection
//!   never blocks the loop (see `conn`).

pub(crate) mod boot_mounts;
mod child;
mod children;
mod conn;
mod console;
mod exec;
mod file_mounts;
mod handle;
mod identity;
mod logs;
mod machine_identity;
mod pending;
mod probe;
mod spawn;
mod user_data;

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use rustix::process::Pid;

use crate::cgroup::{CgroupLayout, Cgroups};
use crate::protocol::{self, Event, Failure, FromForker, Reply};
use crate::spec::ExitStatus;

use conn::{Conn, Sent};
use pending::Pending;

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

/// Faults the tests inject through `MAYFLY_FORKER_FAULTS` (a comma-separated list), to prove
/// that one stuck instance does not stall the others.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Faults {
    /// A freeze never completes (as when a process sits in uninterruptible sleep).
    pub freeze_stall: bool,
    /// The first ended container's group does not empty while its `Release` waits (it does
    /// later).
    pub remove_busy: bool,
    /// An exec helper whose process has `MAYFLY_FAULT_STALL=1` in its environment never gets
    /// on (as when it joined a frozen group).
    pub exec_stall: bool,
    /// An `--init` takes a while before it lets go of what it inherited from the forker (to
    /// prove that the command does not run before it has).
    pub init_slow: bool,
}

impl Faults {
    fn from_env() -> Faults {
        let v = std::env::var("MAYFLY_FORKER_FAULTS").unwrap_or_default();
        let has = |name: &str| v.split(',').any(|f| f.trim() == name);
        Faults {
            freeze_stall: has("freeze-stall"),
            remove_busy: has("remove-busy"),
            exec_stall: has("exec-stall"),
            init_slow: has("init-slow"),
        }
    }
}

#[derive(Debug)]
struct Container {
    pid: Pid,
    /// `None` once the init has ended (or for an adopted init already gone).
    pidfd: Option<OwnedFd>,
    start_time: u64,
    cgroup: String,
    log: Option<logs::LogPump>,
    /// The console of a detached container (none for an attached one, or an adopted one:
    /// the console went with the forker that made it).
    console: Option<console::Console>,
    exited: Option<Option<ExitStatus>>,
    /// Not our child (a previous forker started it): its status cannot be collected.
    adopted: bool,
}

#[derive(Debug)]
struct ExecProcess {
    /// Host pid: also its process group (it starts its own session), which stays ours to
    /// signal until the process is reaped (its pid cannot be reused before).
    pid: Pid,
    pidfd: OwnedFd,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Listener,
    Conn,
    Init(String),
    Log(String),
    /// The master side of a container's console.
    Console(String),
    /// The socket of the client attached to a container's console.
    ConsoleClient(String),
    Exec(u64),
    /// The sync socket of pending operation `op`.
    Pending(u64),
    /// A child to reap, by its key in `orphans`.
    Orphan(u64),
}

struct Forker {
    cgroups: Cgroups,
    cgroup_parent: String,
    faults: Faults,
    epoll: OwnedFd,
    listener: OwnedFd,
    conn: Option<Conn>,
    connections: u64,
    containers: HashMap<String, Container>,
    execs: HashMap<u64, ExecProcess>,
    /// What each epoll token stands for, with the descriptor registered for it: a duplicate
    /// the loop owns, so that changing or removing the registration always names the very
    /// descriptor it was made with (epoll keys registrations by descriptor number, and a
    /// registration made through a descriptor since closed could never be removed).
    sources: HashMap<u64, (Source, OwnedFd)>,
    next_token: u64,
    /// Operations whose answer waits, by operation id.
    pending: HashMap<u64, Pending>,
    next_op: u64,
    /// Children nobody reports on, to reap when they end.
    orphans: HashMap<u64, OwnedFd>,
    next_orphan: u64,
    /// Sources that were ready without being able to make progress (a pidfd readable before
    /// its process can be collected): polled on a timer instead, so they cannot spin the loop.
    slow: Vec<Source>,
    /// Groups to remove once they empty, with when they were given up on.
    leftover_cgroups: Vec<(String, Instant)>,
    /// Children of ours that nothing tracks, and since when: an exec'd process whose helper
    /// died before it could name it. Reaped (or ended) once they have been strays for longer
    /// than any start may take to name its processes.
    strays: HashMap<i32, Instant>,
    last_sweep: Instant,
    ever_connected: bool,
    started: Instant,
    buf: Vec<u8>,
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
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
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
        faults: Faults::from_env(),
        epoll,
        listener,
        conn: None,
        connections: 0,
        containers: HashMap::new(),
        execs: HashMap::new(),
        sources: HashMap::new(),
        next_token: 1,
        pending: HashMap::new(),
        next_op: 1,
        orphans: HashMap::new(),
        next_orphan: 1,
        slow: Vec::new(),
        leftover_cgroups: Vec::new(),
        strays: HashMap::new(),
        last_sweep: Instant::now(),
        ever_connected: false,
        started: Instant::now(),
        buf: vec![0u8; protocol::MAX_MESSAGE],
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

/// How often sources that could not make progress, and groups that do not empty, are looked
/// at again.
const SLOW_POLL: Duration = Duration::from_millis(50);

/// How long a group that does not empty is retried before the forker stops waiting for it
/// to leave (it keeps trying while it runs).
const LEFTOVER_PATIENCE: Duration = Duration::from_secs(60);

impl Forker {
    /// Watches `fd` for `source` (through a duplicate of it that the loop keeps).
    fn watch(&mut self, fd: &impl AsFd, source: Source) {
        self.watch_with(fd, source, epoll::EventFlags::IN);
    }

    fn watch_with(&mut self, fd: &impl AsFd, source: Source, flags: epoll::EventFlags) {
        let own = match fd.as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("forker: cannot watch {source:?}: {e}");
                return;
            }
        };
        let token = self.next_token;
        self.next_token += 1;
        match epoll::add(&self.epoll, &own, epoll::EventData::new_u64(token), flags) {
            Ok(()) => {
                self.sources.insert(token, (source, own));
            }
            Err(e) => eprintln!("forker: cannot watch {source:?}: {e}"),
        }
    }

    /// Stops watching everything registered for `source`.
    fn unwatch(&mut self, source: &Source) {
        let tokens: Vec<u64> = self
            .sources
            .iter()
            .filter(|(_, (s, _))| s == source)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            if let Some((_, fd)) = self.sources.remove(&t) {
                let _ = epoll::delete(&self.epoll, &fd);
            }
        }
        self.slow.retain(|s| s != source);
    }

    /// Changes what is watched for `source` (`flags`).
    fn rewatch(&mut self, source: &Source, flags: epoll::EventFlags) {
        for (token, (s, fd)) in &self.sources {
            if s == source {
                let _ = epoll::modify(&self.epoll, fd, epoll::EventData::new_u64(*token), flags);
            }
        }
    }

    fn idle(&self) -> bool {
        self.conn.is_none()
            && self.containers.is_empty()
            && self.execs.is_empty()
            && self.pending.is_empty()
            && self
                .leftover_cgroups
                .iter()
                .all(|(_, since)| since.elapsed() > LEFTOVER_PATIENCE)
    }

    fn serve(&mut self) {
        let mut events = Vec::with_capacity(64);
        let mut last_slow = Instant::now();
        loop {
            if self.idle()
                && (self.ever_connected || self.started.elapsed() > Duration::from_secs(30))
            {
                // A daemon may have connected as the last one left: serve it instead.
                self.accept();
                if self.conn.is_some() {
                    continue;
                }
                // Nothing to serve: remove our cgroup parent (if no group is left in it) and go.
                // Orphans still unreaped are reparented to the host's init, which reaps them.
                for (cgroup, _) in std::mem::take(&mut self.leftover_cgroups) {
                    eprintln!("forker: leaving cgroup {cgroup} behind: it never emptied");
                }
                self.cgroups.remove_if_unused(&self.cgroup_parent);
                return;
            }
            events.clear();
            let wait = self.next_wakeup();
            let timeout = rustix::event::Timespec {
                tv_sec: i64::try_from(wait.as_secs()).unwrap_or(1),
                tv_nsec: i64::from(wait.subsec_nanos()),
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
            let ready: Vec<(u64, epoll::EventFlags)> =
                events.iter().map(|e| (e.data.u64(), e.flags)).collect();
            for (token, flags) in ready {
                let Some(source) = self.sources.get(&token).map(|(s, _)| s.clone()) else {
                    continue;
                };
                self.dispatch(source, flags);
            }
            self.poll_pending();
            if last_slow.elapsed() >= SLOW_POLL {
                last_slow = Instant::now();
                for source in std::mem::take(&mut self.slow) {
                    self.dispatch(source, epoll::EventFlags::IN);
                }
                self.retry_leftover_cgroups();
            }
            if self.last_sweep.elapsed() >= children::SWEEP_EVERY {
                self.last_sweep = Instant::now();
                self.sweep_strays();
            }
        }
    }

    fn dispatch(&mut self, source: Source, flags: epoll::EventFlags) {
        match source {
            Source::Listener => self.accept(),
            Source::Conn => {
                if flags.contains(epoll::EventFlags::OUT) {
                    self.flush_conn();
                }
                if flags.intersects(
                    epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                ) {
                    self.read_conn();
                }
            }
            Source::Init(id) => self.init_exited(&id),
            Source::Log(id) => self.pump_log(&id),
            Source::Console(id) => self.pump_console(&id),
            Source::ConsoleClient(id) => self.console_client_ready(&id, flags),
            Source::Exec(exec_id) => self.exec_exited(exec_id),
            Source::Pending(op) => self.pending_ready(op),
            Source::Orphan(key) => self.reap_orphan(key),
        }
    }

    /// How long the loop may sleep: until the next pending deadline or poll, at most a second.
    fn next_wakeup(&self) -> Duration {
        let mut wait = Duration::from_secs(1);
        if !self.slow.is_empty() || !self.leftover_cgroups.is_empty() {
            wait = wait.min(SLOW_POLL);
        }
        for p in self.pending.values() {
            wait = wait.min(p.wakeup());
        }
        wait.max(Duration::from_millis(1))
    }

    // ---- the daemon's connection -------------------------------------------------------

    fn accept(&mut self) {
        let Ok(fd) = rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC) else {
            return;
        };
        if self.conn.is_some() {
            // A new daemon replaces a vanished one (its lock guarantees there is one).
            self.drop_conn();
        }
        self.connections += 1;
        match Conn::new(fd, self.connections) {
            Ok(conn) => {
                self.watch(&conn.fd(), Source::Conn);
                self.conn = Some(conn);
                self.ever_connected = true;
            }
            Err(e) => eprintln!("forker: cannot set up a connection: {e}"),
        }
    }

    fn drop_conn(&mut self) {
        if self.conn.take().is_some() {
            self.unwatch(&Source::Conn);
        }
    }

    /// The generation of the current connection (0: none).
    fn generation(&self) -> u64 {
        self.conn.as_ref().map_or(0, |c| c.generation)
    }

    /// Sends `msg` with `fds` to the daemon, if one is connected (and still the one of
    /// `generation`, for answers).
    fn send_to(&mut self, generation: Option<u64>, msg: &FromForker, fds: Vec<OwnedFd>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if generation.is_some_and(|g| g != conn.generation) {
            return;
        }
        let bytes = match serde_json::to_vec(msg) {
            Ok(b) if b.len() <= protocol::MAX_MESSAGE => b,
            Ok(b) => {
                // Only an answer can grow (a Hello listing very many containers): refuse it
                // instead of breaking the connection.
                let FromForker::Reply { seq, .. } = msg else {
                    eprintln!("forker: dropping an event of {} bytes", b.len());
                    return;
                };
                let failure = Failure::other(format!(
                    "the answer is {} bytes, more than the forker protocol's {}",
                    b.len(),
                    protocol::MAX_MESSAGE
                ));
                let Ok(b) = serde_json::to_vec(&FromForker::Reply {
                    seq: *seq,
                    result: Err(failure),
                }) else {
                    return;
                };
                b
            }
            Err(e) => {
                eprintln!("forker: cannot encode a message: {e}");
                return;
            }
        };
        let before = conn.has_queued();
        match conn.send(bytes, fds) {
            Sent::Broken => self.drop_conn(),
            Sent::Ok => {
                if !before && conn.has_queued() {
                    self.set_conn_interest(true);
                }
            }
        }
    }

    fn flush_conn(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match conn.flush() {
            Sent::Broken => self.drop_conn(),
            Sent::Ok => {
                if !conn.has_queued() {
                    self.set_conn_interest(false);
                }
            }
        }
    }

    fn set_conn_interest(&mut self, writable: bool) {
        let mut flags = epoll::EventFlags::IN;
        if writable {
            flags |= epoll::EventFlags::OUT;
        }
        self.rewatch(&Source::Conn, flags);
    }

    /// Answers request `seq` of connection `generation`.
    fn reply(
        &mut self,
        generation: u64,
        seq: u64,
        result: Result<Reply, Failure>,
        fds: Vec<OwnedFd>,
    ) {
        self.send_to(Some(generation), &FromForker::Reply { seq, result }, fds);
    }

    /// Reports an event to the connected daemon. With none connected the event is dropped:
    /// the next daemon learns container ends from the `Hello` state list, and exec sessions
    /// do not outlive the daemon that streamed them.
    fn emit(&mut self, event: Event) {
        self.send_to(None, &FromForker::Event(event), Vec::new());
    }

    fn read_conn(&mut self) {
        let Some(conn) = &self.conn else { return };
        let generation = conn.generation;
        let received = match protocol::recv_message(conn.fd(), &mut self.buf) {
            Ok(r) if r.len == 0 && !r.truncated => {
                self.drop_conn();
                return;
            }
            Ok(r) => r,
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::WouldBlock =>
            {
                return;
            }
            Err(e) => {
                eprintln!("forker: read from the daemon: {e}");
                self.drop_conn();
                return;
            }
        };
        let bytes = self.buf[..received.len].to_vec();
        if received.truncated {
            // Only this message is lost; its sender's deadline ends the request.
            eprintln!(
                "forker: a request larger than {} bytes was cut; ignored",
                protocol::MAX_MESSAGE
            );
            return;
        }
        let envelope: protocol::Envelope = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                match protocol::seq_of_request(&bytes) {
                    Some(seq) => self.reply(
                        generation,
                        seq,
                        Err(Failure {
                            kind: protocol::FailureKind::Malformed,
                            message: format!("the forker cannot read this request: {e}"),
                        }),
                        Vec::new(),
                    ),
                    None => eprintln!("forker: unreadable request without a sequence number: {e}"),
                }
                return;
            }
        };
        if received.fds_dropped {
            self.reply(
                generation,
                envelope.seq,
                Err(Failure {
                    kind: protocol::FailureKind::Malformed,
                    message: format!(
                        "the request came with more descriptors than the forker takes ({} at most) or than it may hold",
                        protocol::MAX_FDS
                    ),
                }),
                Vec::new(),
            );
            return;
        }
        self.handle(generation, envelope, received.fds);
    }

    /// Stops watching a source that was ready without progress; it is polled on a timer.
    fn go_slow(&mut self, source: Source) {
        if !self.slow.contains(&source) {
            self.unwatch(&source);
            self.slow.push(source);
        }
    }

    // ---- cgroups that do not empty at once ----------------------------------------------

    /// Removes group `cgroup` now if it is empty, else later (the kernel empties a group a
    /// moment after its last process is reaped).
    fn remove_cgroup_later(&mut self, cgroup: String) {
        if !self.try_remove_cgroup(&cgroup) {
            self.leftover_cgroups.push((cgroup, Instant::now()));
        }
    }

    /// One attempt at removing `cgroup`; whether it is gone.
    fn try_remove_cgroup(&self, cgroup: &str) -> bool {
        match self.cgroups.try_remove(cgroup) {
            Ok(gone) => gone,
            Err(e) => {
                eprintln!("forker: {}", crate::error_chain(&e));
                false
            }
        }
    }

    fn retry_leftover_cgroups(&mut self) {
        let left = std::mem::take(&mut self.leftover_cgroups);
        for (cgroup, since) in left {
            if !self.try_remove_cgroup(&cgroup) {
                self.leftover_cgroups.push((cgroup, since));
            }
        }
    }
}
