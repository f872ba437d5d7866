//! The harness of the integration tests: a private daemon per test, helpers to drive the real
//! `mayfly` binary and the REST API, and a teardown that fails the test when anything leaks.
//!
//! Every test starts its own daemon on its own state directory (`/tmp/mft-XXXXXX/state`, a
//! short path because unix socket paths are limited to 108 bytes), so tests run in parallel.
//! [`TestDaemon::finish`] (and, as a fallback, `Drop`) removes every instance, stops the
//! daemon, waits for the forker to leave, and then asserts that nothing remains: no process
//! that mentions the test directory, no cgroup of this daemon in any hierarchy, no mount that
//! mentions the test directory, an empty `<state>/tmp`. On failure it prints the daemon's and
//! the forker's logs, and cleans up by force so that a failing test does not poison the host.
#![allow(dead_code)]

pub mod images;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mayfly")
}

/// How long one CLI command may take before the test fails (a hang must fail loudly).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// What a finished command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (128 + signal when killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Runs `cmd` with `stdin` (or /dev/null), failing the test if it takes longer than `timeout`.
pub fn run_command(cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    try_run_command(cmd, stdin, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` with `stdin` (or /dev/null); an error if it cannot run or takes longer than
/// `timeout` (then it is killed). Never panics (teardown uses it while unwinding).
pub fn try_run_command(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, String> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let described = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {described}: {e}"))?;
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(format!("{described}: no output pipes"));
    };
    let out = reader_thread(stdout);
    let err = reader_thread(stderr);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
                let stderr = err.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
                return Err(format!(
                    "{described} did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                ));
            }
            Err(e) => return Err(format!("cannot wait for {described}: {e}")),
        }
    };
    // Background processes may keep the pipes open; do not wait for them forever.
    let stdout = out
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    let stderr = err
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    Ok(Output {
        code: exit_code(status),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn reader_thread(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes; returns whether it
/// held.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`poll_until`], but fails the test (naming `what`) on timeout.
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, cond),
        "timed out after {timeout:?} waiting for {what}"
    );
}

// ---- processes -------------------------------------------------------------------------------

/// Processes (pid, command line) whose command line contains `needle`, except this one.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if u32::try_from(pid).ok() == Some(me) || !pid_alive(pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            out.push((pid, cmdline.trim().to_owned()));
        }
    }
    out
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Sends `signal` to `pid` (ignoring a process that is already gone).
pub fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// A field of /proc/<pid>/status (e.g. `Uid`), trimmed.
pub fn proc_status_field(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

// ---- cgroups ---------------------------------------------------------------------------------

/// The cgroup parent of a daemon on `state_dir`, as `cgroup_parent()` in mayfly-engine
/// computes it (FNV-1a over the path, top 32 bits).
pub fn cgroup_parent(state_dir: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("mayfly-{:08x}", h >> 32)
}

/// Every cgroup hierarchy root under /sys/fs/cgroup (each v1 controller directory, the unified
/// tree, or /sys/fs/cgroup itself on a pure v2 host).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_owned()];
    }
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path();
            // Skip the symlinks of co-mounted controllers (cpu -> cpu,cpuacct).
            if p.is_dir() && !p.is_symlink() {
                out.push(p);
            }
        }
    }
    out
}

/// The hierarchies in which group `rel` exists.
pub fn cgroup_present(rel: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

// ---- mounts ----------------------------------------------------------------------------------

/// Lines of /proc/self/mountinfo that contain `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

// ---- HTTP over the unix socket ---------------------------------------------------------------

/// A raw HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) on the unix socket `socket`.
pub fn http(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> HttpResponse {
    let mut s = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()));
    s.set_read_timeout(Some(CLI_TIMEOUT)).expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: mayfly\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write request");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer to {method} {path}: {e}"));
    parse_http(&raw).unwrap_or_else(|e| {
        panic!(
            "bad HTTP answer to {method} {path}: {e}\n{}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Parses a complete HTTP/1.1 response.
pub fn parse_http(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not HTTP/1.x: {status_line}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
        let len: usize = len.parse().map_err(|_| "bad content-length")?;
        if rest.len() < len {
            return Err(format!("body of {} bytes, expected {len}", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_line = std::str::from_utf8(&data[..eol]).map_err(|e| e.to_string())?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size `{size_line}`"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---- the daemon ------------------------------------------------------------------------------

/// A private daemon on a fresh state directory.
#[derive(Debug)]
pub struct TestDaemon {
    /// The test's directory (`/tmp/mft-XXXXXX`).
    pub dir: PathBuf,
    /// `<dir>/state`.
    pub state: PathBuf,
    /// `<dir>/sock`.
    pub socket: PathBuf,
    /// `<dir>/daemon.log` (stderr of every daemon of this test).
    pub log: PathBuf,
    extra_args: Vec<String>,
    /// Environment of the daemons started from now on (fault injection).
    env: Vec<(String, String)>,
    daemon: Option<Child>,
    finished: bool,
}

impl TestDaemon {
    /// Starts a daemon with the default options.
    pub fn start() -> TestDaemon {
        Self::start_with(&[])
    }

    /// Starts a daemon with `extra` arguments and environment `env` (e.g. fault injection
    /// with `MAYFLY_FAIL_AT`); restarts keep both until [`Self::set_env`] changes them.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> TestDaemon {
        let mut d = Self::create(extra);
        d.set_env(env);
        d.spawn_daemon();
        d
    }

    /// The environment of the daemons started from now on (a running one keeps its own).
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }

    /// Starts a daemon with `extra` arguments (e.g. `--log-max-size 4096`).
    pub fn start_with(extra: &[&str]) -> TestDaemon {
        let mut d = Self::create(extra);
        d.spawn_daemon();
        d
    }

    fn create(extra: &[&str]) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("mft-")
            .tempdir_in("/tmp")
            .expect("create the test directory")
            .keep();
        TestDaemon {
            state: dir.join("state"),
            socket: dir.join("sock"),
            log: dir.join("daemon.log"),
            dir,
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            daemon: None,
            finished: false,
        }
    }

    fn spawn_daemon(&mut self) {
        if let Err(e) = self.try_spawn_daemon() {
            panic!("{e}\n{}", self.logs());
        }
    }

    fn try_spawn_daemon(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open the daemon log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot open the daemon log: {e}"))?;
        let mut cmd = Command::new(bin());
        cmd.arg("daemon")
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--log-level")
            .arg("debug")
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("MAYFLY_STATE_DIR")
            .env_remove("MAYFLY_SOCKET")
            .env_remove("MAYFLY_LOG")
            .stdin(Stdio::null())
            .stdout(log2)
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the daemon: {e}"))?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.daemon = None;
                return Err(format!("the daemon exited at start-up ({status})"));
            }
            if UnixStream::connect(&self.socket).is_ok() {
                let answered = self
                    .try_mayfly(&["info", "--json"], None, CLI_TIMEOUT)
                    .is_ok_and(|o| o.success());
                if answered {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err("the daemon did not answer within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's pid, while it runs.
    pub fn daemon_pid(&self) -> Option<i32> {
        self.daemon
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
    }

    /// Whether a daemon of this test runs.
    pub fn daemon_running(&mut self) -> bool {
        match self.daemon.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the daemon with SIGTERM and waits for it (instances keep running).
    pub fn stop_daemon(&mut self) {
        if let Err(e) = self.try_stop_daemon() {
            panic!("{e}\n{}", self.logs());
        }
    }

    fn try_stop_daemon(&mut self) -> Result<(), String> {
        let Some(mut child) = self.daemon.take() else {
            return Ok(());
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            signal(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("the daemon exited with {status} after SIGTERM"));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("the daemon did not stop within 15 s of SIGTERM".into());
                }
            }
        }
    }

    /// Kills the daemon with SIGKILL and reaps it.
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new daemon on the same directories (after [`Self::stop_daemon`] or
    /// [`Self::kill_daemon`]).
    pub fn restart(&mut self) {
        assert!(self.daemon.is_none(), "restart() while the daemon runs");
        self.spawn_daemon();
    }

    /// Runs the CLI with `args` against this daemon.
    pub fn mayfly(&self, args: &[&str]) -> Output {
        run_command(self.command(args), None, CLI_TIMEOUT)
    }

    /// Runs the CLI with `input` on its stdin.
    pub fn mayfly_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        run_command(self.command(args), Some(input), CLI_TIMEOUT)
    }

    /// The CLI command for `args` (to spawn it yourself).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("MAYFLY_SOCKET", &self.socket)
            .env_remove("MAYFLY_STATE_DIR");
        cmd
    }

    fn try_mayfly(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, String> {
        try_run_command(self.command(args), input, timeout)
    }

    /// Runs the CLI and fails the test unless it exits 0; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.mayfly(args);
        assert!(out.success(), "`mayfly {}` failed: {out}", args.join(" "));
        out.stdout
    }

    /// Runs the CLI and fails the test if it exits 0; returns what it printed.
    pub fn fails(&self, args: &[&str]) -> Output {
        let out = self.mayfly(args);
        assert!(
            !out.success(),
            "`mayfly {}` should have failed: {out}",
            args.join(" ")
        );
        out
    }

    /// Runs the CLI with `--json` output and parses it.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`mayfly {}` printed no JSON ({e}): {out}", args.join(" ")))
    }

    /// `info NAME --json`.
    pub fn info(&self, name: &str) -> Value {
        self.json(&["info", name, "--json"])
    }

    /// `info --json` (the daemon).
    pub fn daemon_info(&self) -> Value {
        self.json(&["info", "--json"])
    }

    /// An instance's state (`running`, `stopped`, …), `None` when it does not exist.
    pub fn state_of(&self, name: &str) -> Option<String> {
        let out = self.mayfly(&["info", name, "--json"]);
        if !out.success() {
            return None;
        }
        let v: Value = serde_json::from_str(&out.stdout).ok()?;
        v["state"].as_str().map(str::to_owned)
    }

    /// Host pid of a running instance's init.
    pub fn pid_of(&self, name: &str) -> i32 {
        let info = self.info(name);
        info["pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_else(|| panic!("instance {name} has no pid: {info}"))
    }

    /// Names of all instances (`list --json`).
    pub fn instance_names(&self) -> Vec<String> {
        let list = self.json(&["list", "--json"]);
        list.as_array()
            .expect("list --json is an array")
            .iter()
            .filter_map(|i| i["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Runs `sh -c script` in a running instance; returns its stdout (fails the test on a
    /// non-zero exit).
    pub fn sh(&self, name: &str, script: &str) -> String {
        self.ok(&["exec", name, "--", "sh", "-c", script])
    }

    /// The API: `method path` with a JSON `body`; returns the status and the JSON answer.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let r = http(&self.socket, method, path, "application/json", &bytes);
        (r.status, r.json())
    }

    /// The API with a raw body; the whole answer.
    pub fn api_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> HttpResponse {
        http(&self.socket, method, path, content_type, body)
    }

    /// Entries of a directory of the state dir (`instances`, `layers`, `tmp`, …).
    pub fn state_entries(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.state.join(sub))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Waits until `<state>/instances` holds exactly `count` directories and the trash is empty.
    pub fn wait_instance_dirs(&self, count: usize) {
        let ok = poll_until(Duration::from_secs(10), || {
            self.state_entries("instances").len() == count && self.state_entries("trash").is_empty()
        });
        assert!(
            ok,
            "expected {count} instance dir(s) and an empty trash, found instances {:?}, trash {:?}",
            self.state_entries("instances"),
            self.state_entries("trash")
        );
    }

    /// The daemon's cgroup parent.
    pub fn cgroup_parent(&self) -> String {
        cgroup_parent(&self.state)
    }

    /// The forker's pid (from `info`).
    pub fn forker_pid(&self) -> Option<i32> {
        self.daemon_info()["forker_pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
    }

    /// The forker processes of this state directory (by scanning /proc).
    pub fn forker_processes(&self) -> Vec<(i32, String)> {
        processes_mentioning(&format!("{}/", self.dir.display()))
            .into_iter()
            .filter(|(_, c)| c.contains(" forker "))
            .collect()
    }

    /// The daemon's and the forker's logs, for failure messages.
    pub fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| format!("({e})"));
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            let start = lines.len().saturating_sub(300);
            lines[start..].join("\n")
        };
        format!(
            "===== daemon log ({}) =====\n{}\n===== forker.log =====\n{}\n===== forker.log.1 =====\n{}",
            self.log.display(),
            tail(read(&self.log)),
            tail(read(&self.state.join("forker.log"))),
            tail(read(&self.state.join("forker.log.1"))),
        )
    }

    /// Removes everything, stops the daemon and asserts that nothing leaked.
    pub fn finish(mut self) {
        self.finished = true;
        let problems = self.teardown();
        if !problems.is_empty() {
            let logs = self.logs();
            self.force_cleanup();
            panic!(
                "teardown found leaks or failures:\n  - {}\n{logs}",
                problems.join("\n  - ")
            );
        }
        self.remove_dir();
    }

    /// Everything the teardown finds wrong (empty: all clean). Never panics.
    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.daemon_running() {
            self.daemon = None;
            // A test that stopped or killed the daemon: bring one back to remove what is left.
            if let Err(e) = self.try_spawn_daemon() {
                problems.push(format!("cannot restart the daemon for the teardown: {e}"));
            }
        }
        if self.daemon.is_some() {
            self.remove_all_instances(&mut problems);
            if let Err(e) = self.try_stop_daemon() {
                problems.push(e);
            }
        }
        let dir = format!("{}/", self.dir.display());
        let gone = poll_until(Duration::from_secs(10), || {
            processes_mentioning(&dir).is_empty()
        });
        if !gone {
            problems.push(format!(
                "processes remain after the daemon stopped: {:?}",
                processes_mentioning(&dir)
            ));
        }
        let parent = self.cgroup_parent();
        let no_cgroup = poll_until(Duration::from_secs(5), || {
            cgroup_present(&parent).is_empty()
        });
        if !no_cgroup {
            problems.push(format!(
                "cgroup parent {parent} remains in {:?}",
                cgroup_present(&parent)
            ));
        }
        let mounts = mounts_mentioning(&dir);
        if !mounts.is_empty() {
            problems.push(format!("mounts remain: {mounts:#?}"));
        }
        let tmp = self.state_entries("tmp");
        if !tmp.is_empty() {
            problems.push(format!(
                "{}/tmp is not empty: {tmp:?}",
                self.state.display()
            ));
        }
        problems
    }

    fn remove_all_instances(&mut self, problems: &mut Vec<String>) {
        let list = match self.try_mayfly(&["list", "--json"], None, CLI_TIMEOUT) {
            Ok(out) => out,
            Err(e) => {
                problems.push(e);
                return;
            }
        };
        match serde_json::from_str::<Value>(&list.stdout) {
            Ok(Value::Array(all)) => {
                for i in all {
                    let Some(name) = i["name"].as_str() else {
                        continue;
                    };
                    match self.try_mayfly(&["rm", "--force", name], None, CLI_TIMEOUT) {
                        Ok(out) if out.success() => {}
                        Ok(out) => problems.push(format!("rm --force {name} failed: {out}")),
                        Err(e) => problems.push(e),
                    }
                }
            }
            _ => problems.push(format!("list --json failed: {list}")),
        }
        match self.try_mayfly(&["list", "--json"], None, CLI_TIMEOUT) {
            Ok(left) if left.stdout.trim() == "[]" => {}
            Ok(left) => problems.push(format!("instances remain after rm --force: {left}")),
            Err(e) => problems.push(e),
        }
        let drained = poll_until(Duration::from_secs(10), || {
            self.state_entries("instances").is_empty() && self.state_entries("trash").is_empty()
        });
        if !drained {
            problems.push(format!(
                "state not empty after removing every instance: instances {:?}, trash {:?}",
                self.state_entries("instances"),
                self.state_entries("trash")
            ));
        }
    }

    /// Kills whatever this test left (its daemon, its forker, processes in its cgroups) and
    /// removes its cgroups and mounts, so that a failed test does not leak onto the host.
    fn force_cleanup(&mut self) {
        self.kill_daemon();
        let dir = format!("{}/", self.dir.display());
        for (pid, _) in processes_mentioning(&dir) {
            signal(pid, rustix::process::Signal::KILL);
        }
        let parent = self.cgroup_parent();
        for _ in 0..50 {
            let groups = cgroup_present(&parent);
            if groups.is_empty() {
                break;
            }
            for g in &groups {
                remove_cgroup_tree(g);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for line in mounts_mentioning(&dir) {
            if let Some(point) = line.split(' ').nth(4) {
                let _ = rustix::mount::unmount(point, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }

    fn remove_dir(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills the processes of a cgroup tree and removes its groups, deepest first.
fn remove_cgroup_tree(group: &Path) {
    if let Ok(entries) = std::fs::read_dir(group) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(group.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            signal(pid, rustix::process::Signal::KILL);
        }
    }
    let _ = std::fs::remove_dir(group);
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let panicking = std::thread::panicking();
        let problems = self.teardown();
        let logs = self.logs();
        if panicking || !problems.is_empty() {
            eprintln!("{logs}");
        }
        if !problems.is_empty() {
            self.force_cleanup();
        }
        self.remove_dir();
        if !problems.is_empty() && !panicking {
            panic!(
                "teardown found leaks or failures (the test did not call finish()):\n  - {}",
                problems.join("\n  - ")
            );
        }
    }
}

// ---- root filesystems and archives -------------------------------------------------------

/// Busybox applets linked in test root filesystems.
const APPLETS: &[&str] = &[
    "sh", "cat", "ls", "echo", "sleep", "true", "false", "test", "id", "ps", "touch", "mkdir",
    "rm", "mount", "hostname", "wc", "grep", "env", "pwd", "head", "tail",
];

/// Builds a small root filesystem at `root`: busybox and some applets in /bin, /proc, /sys,
/// /dev, /etc/passwd, and `/marker` containing `marker`.
pub fn make_rootfs(root: &Path, marker: &str) {
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).expect("symlink");
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("marker"), format!("{marker}\n")).expect("marker");
}

/// A tar of the tree at `root` (entries relative to it, symlinks kept).
pub fn tar_of(root: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", root).expect("tar the tree");
    b.into_inner().expect("finish the tar")
}

/// `data` gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// `data` zstd-compressed.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).expect("zstd")
}

/// A tar entry built by hand (ustar), for archives the `tar` crate refuses to write.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// Path as stored.
    pub name: String,
    /// `b'0'` file, `b'5'` directory, `b'2'` symlink, `b'1'` hard link.
    pub kind: u8,
    /// Link target for symlinks and hard links.
    pub link: String,
    /// File content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

impl RawEntry {
    /// A regular file.
    pub fn file(name: &str, data: &[u8]) -> RawEntry {
        RawEntry {
            name: name.into(),
            kind: b'0',
            link: String::new(),
            data: data.to_vec(),
            mode: 0o644,
        }
    }
    /// A directory.
    pub fn dir(name: &str) -> RawEntry {
        RawEntry {
            name: name.into(),
            kind: b'5',
            link: String::new(),
            data: Vec::new(),
            mode: 0o755,
        }
    }
    /// A symbolic link.
    pub fn symlink(name: &str, target: &str) -> RawEntry {
        RawEntry {
            name: name.into(),
            kind: b'2',
            link: target.into(),
            data: Vec::new(),
            mode: 0o777,
        }
    }
    /// A hard link.
    pub fn hardlink(name: &str, target: &str) -> RawEntry {
        RawEntry {
            name: name.into(),
            kind: b'1',
            link: target.into(),
            data: Vec::new(),
            mode: 0o644,
        }
    }
}

/// Writes `value` into a tar header `field`: zero-padded octal and a NUL.
pub fn octal(field: &mut [u8], value: u64) {
    let n = field.len() - 1;
    let s = format!("{value:0n$o}");
    assert_eq!(s.len(), n, "{value} does not fit the field");
    field[..n].copy_from_slice(s.as_bytes());
    field[n] = 0;
}

/// A ustar archive of `entries`, byte by byte.
pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        assert!(e.name.len() <= 100 && e.link.len() <= 100, "name too long");
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        octal(&mut h[100..108], u64::from(e.mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], e.data.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// Names of the entries of a directory (sorted), empty when it does not exist.
pub fn dir_entries(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A set of the layer directory names of a daemon.
pub fn layer_dirs(d: &TestDaemon) -> HashSet<String> {
    d.state_entries("layers").into_iter().collect()
}

// ---- instances and templates, shared by the test files --------------------------------------

/// How long an instance may take to reach a state it is expected to reach.
pub const SETTLE: Duration = Duration::from_secs(10);

/// Launches `name` from busybox with `extra` arguments before `--`, and `cmd` (a `sh -c`
/// script) as its init when given.
pub fn launch(d: &TestDaemon, name: &str, extra: &[&str], cmd: Option<&str>) {
    let mut args = vec!["launch", "busybox", "--name", name];
    args.extend_from_slice(extra);
    if let Some(script) = cmd {
        args.extend_from_slice(&["--", "sh", "-c", script]);
    }
    d.ok(&args);
}

/// Waits until instance `name` is in `state`.
pub fn wait_state(d: &TestDaemon, name: &str, state: &str) {
    let ok = poll_until(SETTLE, || d.state_of(name).as_deref() == Some(state));
    assert!(
        ok,
        "instance {name} did not become {state}: {:?}\n{}",
        d.state_of(name),
        d.logs()
    );
}

/// Whether `info NAME` says the instance does not exist.
pub fn is_gone(d: &TestDaemon, name: &str) -> bool {
    let out = d.mayfly(&["info", name, "--json"]);
    out.code == 1 && out.stderr.contains("does not exist")
}

/// Whether `path` exists inside running instance `name`.
pub fn exists_in(d: &TestDaemon, name: &str, path: &str) -> bool {
    let out = d.mayfly(&["exec", name, "--", "test", "-e", path]);
    assert!(
        out.code == 0 || out.code == 1,
        "`test -e {path}` in {name} failed to run: {out}"
    );
    out.code == 0
}

/// The host id base of an instance's user namespace (0 without one).
pub fn id_base(d: &TestDaemon, name: &str) -> u32 {
    d.info(name)["isolation"]["host_id_base"]
        .as_u64()
        .and_then(|b| u32::try_from(b).ok())
        .unwrap_or(0)
}

/// `template info NAME --json`.
pub fn template_info(d: &TestDaemon, name: &str) -> Value {
    d.json(&["template", "info", name, "--json"])
}

/// One version of a template's info.
pub fn version(info: &Value, n: u64) -> Value {
    info["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["version"] == n)
        .cloned()
        .unwrap_or_else(|| panic!("no version {n} in {info}"))
}

/// The layer digests of a version, lowest first.
pub fn digests(v: &Value) -> Vec<String> {
    v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

/// The directory name of a layer in `<state>/layers` (`blake3:x` → `blake3-x`).
pub fn layer_dir_name(digest: &str) -> String {
    digest.replace(':', "-")
}

// ---- faults ----------------------------------------------------------------------------------

impl TestDaemon {
    /// Runs `args` against a daemon started with `MAYFLY_CRASH_AT=point`, which aborts there
    /// (the command must fail); then brings the test's own daemon back.
    pub fn crash_at(&mut self, point: &str, args: &[&str]) {
        self.stop_daemon();
        let saved = std::mem::take(&mut self.env);
        let mut env: Vec<(&str, &str)> = saved
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.push(("MAYFLY_CRASH_AT", point));
        self.set_env(&env);
        self.spawn_daemon();
        self.env = saved;
        let out = self.mayfly(args);
        assert!(
            !out.success(),
            "`{}` should have been interrupted at {point}: {out}",
            args.join(" ")
        );
        let mut daemon = self.daemon.take().expect("the crashing daemon");
        let status = daemon.wait().expect("wait for the crashing daemon");
        assert!(
            !status.success(),
            "the daemon should have aborted at {point}"
        );
        self.restart();
    }
}

/// The freezer file of instance `name`'s group and its thawed and frozen values (v1
/// `freezer.state`, or v2 `cgroup.freeze`), if the group exists.
pub fn freezer_file(d: &TestDaemon, name: &str) -> Option<(PathBuf, &'static str, &'static str)> {
    let id = d.info(name)["id"].as_str().unwrap_or_default().to_owned();
    let rel = format!("{}/{id}", d.cgroup_parent());
    for h in cgroup_present(&rel) {
        if h.join("freezer.state").exists() {
            return Some((h.join("freezer.state"), "THAWED", "FROZEN"));
        }
        if h.join("cgroup.freeze").exists() {
            return Some((h.join("cgroup.freeze"), "0", "1"));
        }
    }
    None
}

/// Whether instance `name` is thawed (a group without a freezer counts as thawed).
pub fn freezer_thawed(d: &TestDaemon, name: &str) -> bool {
    match freezer_file(d, name) {
        Some((file, thawed, _)) => std::fs::read_to_string(&file)
            .map(|s| s.trim() == thawed)
            .unwrap_or(true),
        None => true,
    }
}

/// Freezes or thaws instance `name` behind mayfly's back, as an operator (or another tool)
/// could.
pub fn freeze_by_hand(d: &TestDaemon, name: &str, frozen: bool) {
    let (file, thawed, frozen_value) =
        freezer_file(d, name).unwrap_or_else(|| panic!("instance {name} has no freezer"));
    std::fs::write(&file, if frozen { frozen_value } else { thawed })
        .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
}
