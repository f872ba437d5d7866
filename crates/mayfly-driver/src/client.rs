//! The daemon's connection to its forker: requests with replies matched by sequence number,
//! events forwarded to the engine, and a new forker started (and reported) when the old one
//! is gone.
//!
//! Every request has a deadline ([`Request::deadline`]); one that passes fails that request
//! only. A request too large to send fails before anything is sent, and a reply that cannot
//! be read fails its own request (or, without a readable sequence number, is dropped and
//! its request ends at its deadline): the connection, and every other request and exec
//! session on it, goes on. Events reach the engine through a bounded channel: when the
//! engine falls behind, this side stops reading, and the forker queues (bounded too).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use tokio::io::unix::AsyncFd;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::cgroup::{CgroupLayout, CgroupMode, Cgroups};
use crate::forker::ForkerPaths;
use crate::protocol::{
    self, ContainerState, Envelope, Event, Failure, FromForker, PROTOCOL_VERSION, Reply, Request,
};
use crate::{DriverError, DriverEvent};

/// How long connecting may take, a forker's start included.
const FORKER_START: Duration = Duration::from_secs(15);

/// A reply and the descriptors that came with it.
type Answer = (Result<Reply, Failure>, Vec<OwnedFd>);
type Pending = std::sync::Mutex<HashMap<u64, oneshot::Sender<Answer>>>;

#[derive(Debug)]
struct Conn {
    sock: AsyncFd<OwnedFd>,
    seq: AtomicU64,
    pending: Pending,
    send_lock: Mutex<()>,
    closed: AtomicBool,
}

/// A client of the forker of one state directory.
#[derive(Debug)]
pub struct ForkerClient {
    state_dir: PathBuf,
    exe: PathBuf,
    cgroup_parent: String,
    cgroup_layout: CgroupLayout,
    conn: Mutex<Option<Arc<Conn>>>,
    events: mpsc::Sender<DriverEvent>,
    forker_pid: std::sync::atomic::AtomicI32,
    /// Shortens every deadline (tests).
    deadline_cap: Option<Duration>,
}

impl ForkerClient {
    /// A client that starts `exe forker` for `state_dir` when no forker runs, driving the
    /// cgroups of `cgroup_layout`. Events go to `events`.
    pub fn new(
        state_dir: &Path,
        exe: &Path,
        cgroup_parent: &str,
        cgroup_layout: CgroupLayout,
        events: mpsc::Sender<DriverEvent>,
    ) -> Self {
        ForkerClient {
            state_dir: state_dir.to_owned(),
            exe: exe.to_owned(),
            cgroup_parent: cgroup_parent.to_owned(),
            cgroup_layout,
            conn: Mutex::new(None),
            events,
            forker_pid: std::sync::atomic::AtomicI32::new(0),
            deadline_cap: None,
        }
    }

    /// The pid of the forker last connected to (0 before the first connection).
    pub fn forker_pid(&self) -> i32 {
        self.forker_pid.load(Ordering::Relaxed)
    }

    /// Connects (starting a forker if needed) and returns what it tracks.
    pub async fn hello(&self) -> Result<Vec<ContainerState>, DriverError> {
        match self
            .call(
                Request::Hello {
                    protocol: PROTOCOL_VERSION,
                },
                Vec::new(),
            )
            .await?
        {
            Reply::Hello {
                protocol,
                pid,
                cgroup_mode,
                containers,
            } => {
                if protocol != PROTOCOL_VERSION {
                    return Err(DriverError::ProtocolMismatch {
                        expected: PROTOCOL_VERSION,
                        found: protocol,
                    });
                }
                // A forker outlives daemons: one started with another --cgroup-layout keeps
                // its instances in other hierarchies, where this daemon would not find them.
                // (A forker of an older mayfly says nothing: it always detected the layout.)
                let theirs = match cgroup_mode.as_str() {
                    "" => Cgroups::detect().map(|c| c.mode()).ok(),
                    m => CgroupMode::parse(m),
                };
                let ours = Cgroups::detect_as(self.cgroup_layout)
                    .map(|c| c.mode())
                    .ok();
                if let (Some(theirs), Some(ours)) = (theirs, ours)
                    && theirs.hierarchies() != ours.hierarchies()
                {
                    return Err(DriverError::CgroupMismatch {
                        pid,
                        forker: theirs.hierarchies(),
                        wanted: ours.hierarchies(),
                    });
                }
                self.forker_pid.store(pid, Ordering::Relaxed);
                Ok(containers)
            }
            other => Err(DriverError::Failed(Failure::other(format!(
                "unexpected answer to hello: {other:?}"
            )))),
        }
    }

    /// Sends `request` with `fds` and waits for the reply.
    pub async fn call(&self, request: Request, fds: Vec<OwnedFd>) -> Result<Reply, DriverError> {
        self.call_with_fds(request, fds)
            .await
            .map(|(reply, _)| reply)
    }

    /// Like [`Self::call`], and also returns the descriptors that came with the reply.
    ///
    /// A request that only asks (hello, probe, log reader) is sent again, to a new
    /// connection, when the forker went away before answering: a forker that was leaving as
    /// this daemon connected must not fail a daemon's start.
    pub async fn call_with_fds(
        &self,
        request: Request,
        fds: Vec<OwnedFd>,
    ) -> Result<(Reply, Vec<OwnedFd>), DriverError> {
        let retry = match &request {
            Request::Hello { protocol } => Some(Request::Hello {
                protocol: *protocol,
            }),
            Request::ProbeIdmap { path } => Some(Request::ProbeIdmap { path: path.clone() }),
            Request::LogReader { id } => Some(Request::LogReader { id: id.clone() }),
            _ => None,
        };
        let first = self.call_once(request, fds).await;
        match (first, retry) {
            (Err(DriverError::HelperLost | DriverError::Helper(_)), Some(again)) => {
                tracing::debug!("the forker went away before answering; asking again");
                self.call_once(again, Vec::new()).await
            }
            (first, _) => first,
        }
    }

    async fn call_once(
        &self,
        request: Request,
        fds: Vec<OwnedFd>,
    ) -> Result<(Reply, Vec<OwnedFd>), DriverError> {
        let what = request.name();
        let deadline = match self.deadline_cap {
            Some(cap) => request.deadline().min(cap),
            None => request.deadline(),
        };
        let conn = self.connection().await?;
        let seq = conn.seq.fetch_add(1, Ordering::Relaxed);
        let bytes = serde_json::to_vec(&Envelope { seq, request })
            .map_err(|e| DriverError::Helper(io::Error::other(e)))?;
        if bytes.len() > protocol::MAX_MESSAGE {
            return Err(DriverError::TooLarge(format!(
                "the {what} request takes {} bytes, more than the {} the forker protocol carries",
                bytes.len(),
                protocol::MAX_MESSAGE
            )));
        }
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(seq, tx);
        // Whatever happens from here, the entry goes with this request.
        let _forget = Forget { conn: &conn, seq };
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        let sent = tokio::time::timeout(deadline, async {
            let _guard = conn.send_lock.lock().await;
            loop {
                let mut ready = conn.sock.writable().await?;
                match ready.try_io(|s| protocol::send(s.get_ref().as_fd(), &bytes, &borrowed)) {
                    Ok(result) => return result,
                    Err(_would_block) => continue,
                }
            }
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) if protocol::refused_message(&e) => {
                return Err(DriverError::TooLarge(format!(
                    "the forker protocol refused the {what} request: {e}"
                )));
            }
            Ok(Err(e)) => {
                conn.closed.store(true, Ordering::Relaxed);
                return Err(DriverError::Helper(e));
            }
            Err(_) => {
                return Err(DriverError::TimedOut {
                    request: what,
                    after: deadline,
                });
            }
        }
        drop(borrowed);
        drop(fds);
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok((Ok(reply), fds))) => Ok((reply, fds)),
            Ok(Ok((Err(failure), _))) => Err(DriverError::Failed(failure)),
            Ok(Err(_)) => Err(DriverError::HelperLost),
            Err(_) => Err(DriverError::TimedOut {
                request: what,
                after: deadline,
            }),
        }
    }

    async fn connection(&self) -> Result<Arc<Conn>, DriverError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref()
            && !conn.closed.load(Ordering::Relaxed)
        {
            return Ok(conn.clone());
        }
        // A forker that is leaving (idle, its daemon gone) may still hold the lock while it
        // no longer answers, so a start can lose a race with it: try again for a moment.
        // At most this long in all: a forker that never gets ready fails the request, it does
        // not hold every request behind this lock.
        let deadline = tokio::time::Instant::now() + FORKER_START;
        let mut attempt = 0;
        let sock = loop {
            match connect(&self.state_dir) {
                Ok(sock) => {
                    tracing::debug!("connected to a running forker");
                    break sock;
                }
                Err(e) => {
                    tracing::debug!("no forker answers ({e}); starting one");
                    attempt += 1;
                    let out_of_time = || tokio::time::Instant::now() >= deadline;
                    match self.start_forker(deadline).await {
                        Ok(()) => {
                            if let Ok(sock) = connect(&self.state_dir) {
                                break sock;
                            }
                        }
                        Err(e) if attempt >= 20 || out_of_time() => return Err(e),
                        Err(_) => {}
                    }
                    if attempt >= 20 || out_of_time() {
                        return Err(DriverError::Helper(io::Error::other(
                            "the forker started but does not answer",
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let conn = Arc::new(Conn {
            sock: mayfly_sys::asyncfd::register(sock).map_err(DriverError::Helper)?,
            seq: AtomicU64::new(1),
            pending: std::sync::Mutex::new(HashMap::new()),
            send_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(read_loop(conn.clone(), self.events.clone()));
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn start_forker(&self, deadline: tokio::time::Instant) -> Result<(), DriverError> {
        let paths = ForkerPaths::new(&self.state_dir);
        std::fs::create_dir_all(&paths.run_dir).map_err(DriverError::Helper)?;
        let log_path = self.state_dir.join("forker.log");
        if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > 1 << 20) {
            let _ = std::fs::rename(&log_path, self.state_dir.join("forker.log.1"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(DriverError::Helper)?;
        let mut child = tokio::process::Command::new(&self.exe)
            .arg("forker")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--cgroup-layout")
            .arg(self.cgroup_layout.as_str())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(false)
            .spawn()
            .map_err(DriverError::Helper)?;
        let stdout = child.stdout.take();
        // Reap the forker whenever it leaves, so it never lingers as a zombie of ours.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let Some(stdout) = stdout else {
            return Err(DriverError::Helper(io::Error::other(
                "forker has no stdout",
            )));
        };
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(stdout);
        let read = tokio::time::timeout_at(
            deadline,
            tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line),
        )
        .await;
        match read {
            Ok(Ok(_)) if line.starts_with("ready ") => Ok(()),
            // It may have lost a race with another forker of the same state dir, which is fine
            // if that one answers.
            _ if connect(&self.state_dir).is_ok() => Ok(()),
            _ => Err(DriverError::Helper(io::Error::other(format!(
                "the forker did not start; see {}",
                log_path.display()
            )))),
        }
    }
}

/// Removes a request's entry from the pending table when the request ends, however it ends
/// (answered, failed, timed out, or its future dropped).
struct Forget<'a> {
    conn: &'a Conn,
    seq: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.conn.pending).remove(&self.seq);
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn connect(state_dir: &Path) -> io::Result<OwnedFd> {
    let paths = ForkerPaths::new(state_dir);
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let addr = SocketAddrUnix::new(&paths.socket)?;
    rustix::net::connect(&sock, &addr)?;
    protocol::tune(sock.as_fd());
    Ok(sock)
}

async fn read_loop(conn: Arc<Conn>, events: mpsc::Sender<DriverEvent>) {
    let mut buf = vec![0u8; protocol::MAX_MESSAGE];
    loop {
        let Ok(mut ready) = conn.sock.readable().await else {
            break;
        };
        let received = match ready.try_io(|s| protocol::recv_message(s.get_ref().as_fd(), &mut buf))
        {
            Err(_would_block) => continue,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(_)) => break,
            Ok(Ok(r)) if r.len == 0 && !r.truncated => break,
            Ok(Ok(r)) => r,
        };
        if received.truncated {
            // Only that message is lost: its request, if it was a reply, ends at its deadline.
            tracing::error!(
                "the forker sent a message larger than {} bytes; it was dropped",
                protocol::MAX_MESSAGE
            );
            continue;
        }
        if received.fds_dropped {
            tracing::error!("descriptors sent by the forker were dropped (too many, or no room)");
        }
        let bytes = &buf[..received.len];
        let message = match serde_json::from_slice::<FromForker>(bytes) {
            Ok(m) => m,
            Err(e) => {
                match protocol::seq_of_reply(bytes) {
                    Some(seq) => {
                        if let Some(tx) = lock(&conn.pending).remove(&seq) {
                            let failure = Failure {
                                kind: protocol::FailureKind::Malformed,
                                message: format!("the forker's answer cannot be read: {e}"),
                            };
                            let _ = tx.send((Err(failure), Vec::new()));
                        }
                    }
                    None => tracing::error!("unreadable message from the forker, dropped: {e}"),
                }
                continue;
            }
        };
        match message {
            FromForker::Reply { seq, result } => {
                if let Some(tx) = lock(&conn.pending).remove(&seq) {
                    let _ = tx.send((result, received.fds));
                }
            }
            FromForker::Event(Event::Exited { id, status }) => {
                let _ = events.send(DriverEvent::Exited { id, status }).await;
            }
            FromForker::Event(Event::ExecExited { exec_id, status }) => {
                let _ = events
                    .send(DriverEvent::ExecExited { exec_id, status })
                    .await;
            }
        }
    }
    tracing::debug!("forker connection closed");
    conn.closed.store(true, Ordering::Relaxed);
    // Dropping the senders fails every request in flight with HelperLost.
    lock(&conn.pending).clear();
    let _ = events.send(DriverEvent::HelperLost).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FailureKind, Request};

    /// A forker stand-in on `<dir>/run/forker.sock` that answers `Hello` properly and
    /// `Signal` according to the id: `ok` → done, `garbled` → an unreadable answer that
    /// names its sequence number, `silent` → an unreadable answer without one, `never` →
    /// nothing at all.
    fn fake_forker(dir: &Path) -> std::thread::JoinHandle<()> {
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let addr = SocketAddrUnix::new(dir.join("run/forker.sock")).unwrap();
        rustix::net::bind(&listener, &addr).unwrap();
        rustix::net::listen(&listener, 1).unwrap();
        std::thread::spawn(move || {
            let conn = rustix::net::accept(&listener).unwrap();
            let mut buf = vec![0u8; protocol::MAX_MESSAGE];
            loop {
                let r = match protocol::recv_message(conn.as_fd(), &mut buf) {
                    Ok(r) if r.len > 0 => r,
                    _ => return,
                };
                let Ok(env) = serde_json::from_slice::<Envelope>(&buf[..r.len]) else {
                    continue;
                };
                let seq = env.seq;
                let answer: Vec<u8> = match env.request {
                    Request::Hello { .. } => serde_json::to_vec(&FromForker::Reply {
                        seq,
                        result: Ok(Reply::Hello {
                            protocol: PROTOCOL_VERSION,
                            pid: 1,
                            cgroup_mode: String::new(),
                            containers: Vec::new(),
                        }),
                    })
                    .unwrap(),
                    Request::Signal { id, .. } => match id.as_str() {
                        "garbled" => {
                            format!(r#"{{"reply":{{"seq":{seq},"result":{{"nonsense":1}}}}}}"#)
                                .into_bytes()
                        }
                        "silent" => b"\x00 not even json".to_vec(),
                        "never" => continue,
                        _ => serde_json::to_vec(&FromForker::Reply {
                            seq,
                            result: Ok(Reply::Done),
                        })
                        .unwrap(),
                    },
                    _ => continue,
                };
                if protocol::send(conn.as_fd(), &answer, &[]).is_err() {
                    return;
                }
            }
        })
    }

    fn signal(id: &str) -> Request {
        Request::Signal {
            id: id.to_owned(),
            signal: 15,
        }
    }

    #[tokio::test]
    async fn a_bad_or_missing_answer_fails_its_request_only() {
        let dir = tempfile::tempdir().unwrap();
        let forker = fake_forker(dir.path());
        let (tx, mut events) = mpsc::channel(16);
        let mut client = ForkerClient::new(
            dir.path(),
            Path::new("/nonexistent/mayfly"),
            "mayfly-test",
            CgroupLayout::Auto,
            tx,
        );
        client.deadline_cap = Some(Duration::from_millis(300));
        client.hello().await.unwrap();

        let e = client
            .call(signal("garbled"), Vec::new())
            .await
            .unwrap_err();
        assert_eq!(e.failure_kind(), Some(FailureKind::Malformed), "{e}");
        client.call(signal("ok"), Vec::new()).await.unwrap();

        for id in ["silent", "never"] {
            let e = client.call(signal(id), Vec::new()).await.unwrap_err();
            assert!(matches!(e, DriverError::TimedOut { .. }), "{id}: {e}");
            client.call(signal("ok"), Vec::new()).await.unwrap();
        }

        // Too large to send: refused before anything is sent; the connection goes on.
        let e = client
            .call(signal(&"x".repeat(protocol::MAX_MESSAGE)), Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(e, DriverError::TooLarge(_)), "{e}");
        client.call(signal("ok"), Vec::new()).await.unwrap();

        // Through all of it the helper was never taken for lost.
        assert!(
            events.try_recv().is_err(),
            "no event, HelperLost least of all"
        );
        drop(client);
        drop(forker);
    }
}
