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
//!
//! Each daemon runs in a network namespace of its own ([`TestDaemon::netns`]; see
//! `daemon_net.rs`): the teardown removes every network (`mayfly network rm`), then asserts
//! that the namespace holds nothing but `lo` and no nft table, and deletes it.
#![allow(dead_code)]

mod archives;
mod clients;
mod daemon_net;
pub mod debian;
mod events;
mod faults;
pub mod forker_bench;
mod host;
mod http;
pub mod images;
pub mod imports;
mod instances;
pub mod netns;
pub mod quota_fs;
mod refusals;
mod templates;
pub mod tls;
pub mod tools;
pub mod umoci;
pub mod webdriver;
pub mod websocket;

#[allow(unused_imports)]
pub use archives::*;
#[allow(unused_imports)]
pub use clients::*;
#[allow(unused_imports)]
pub use events::*;
#[allow(unused_imports)]
pub use faults::*;
#[allow(unused_imports)]
pub use host::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use instances::*;
#[allow(unused_imports)]
pub use refusals::*;
#[allow(unused_imports)]
pub use templates::*;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use daemon_net::DaemonNet;

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
    /// The network namespace its daemons run in.
    net: DaemonNet,
    daemon: Option<Child>,
    finished: bool,
    /// The filesystem with project quotas mounted at `state` ([`Self::start_on_quota_fs`]).
    quota_fs: Option<quota_fs::QuotaFs>,
}

impl TestDaemon {
    /// Starts a daemon with the default options, in a network namespace of its own.
    pub fn start() -> TestDaemon {
        Self::start_with(&[])
    }

    /// Starts a daemon with `extra` arguments in the machine's own network namespace (the
    /// Debian builds, which download packages through NAT); the teardown checks that it left
    /// none of mayfly's links or nft tables there.
    pub fn start_in_host_netns(extra: &[&str]) -> TestDaemon {
        // No TCP listener in the machine's namespace (the default one would bind its loopback).
        let extra: Vec<&str> = extra.iter().copied().chain(["--listen", "none"]).collect();
        let mut d = Self::create(&extra, false);
        d.spawn_daemon();
        d
    }

    /// The name of the network namespace the daemon runs in (`/run/netns/<name>`; enter it
    /// with `nsenter --net=/run/netns/<name>`, never `ip netns exec`).
    pub fn netns(&self) -> &str {
        self.net
            .name()
            .expect("this daemon runs in the machine's network namespace (start_in_host_netns)")
    }

    /// Starts a daemon with `extra` arguments and environment `env` (e.g. fault injection
    /// with `MAYFLY_FAIL_AT`); restarts keep both until [`Self::set_env`] changes them.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> TestDaemon {
        let mut d = Self::create(extra, true);
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

    /// Starts a daemon with `extra` arguments whose state directory is a fresh filesystem of
    /// `kind` with project quotas (see `quota_fs.rs`), mounted before the daemon starts and
    /// unmounted and detached by the teardown.
    pub fn start_on_quota_fs(kind: quota_fs::QuotaKind, extra: &[&str]) -> TestDaemon {
        let mut d = Self::create(extra, true);
        let image = d.dir.join("quota.img");
        d.quota_fs = Some(quota_fs::QuotaFs::mount(kind, &image, &d.state, 512));
        d.spawn_daemon();
        d
    }

    /// Starts a daemon with `extra` arguments (e.g. `--log-max-size 4096`).
    pub fn start_with(extra: &[&str]) -> TestDaemon {
        let mut d = Self::create(extra, true);
        d.spawn_daemon();
        d
    }

    /// A test directory, and a network namespace named after it when `own_netns`.
    fn create(extra: &[&str], own_netns: bool) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("mft-")
            .tempdir_in("/tmp")
            .expect("create the test directory")
            .keep();
        let net = if own_netns {
            // The directory's name (`mft-XXXXXX`) is unique while it exists: so is this.
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            DaemonNet::own(&name).unwrap_or_else(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("cannot create the test's network namespace: {e}")
            })
        } else {
            DaemonNet::host()
        };
        TestDaemon {
            state: dir.join("state"),
            socket: dir.join("sock"),
            log: dir.join("daemon.log"),
            dir,
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            net,
            daemon: None,
            finished: false,
            quota_fs: None,
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
        let mut cmd = self.net.command(bin());
        cmd.arg("daemon")
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--log-level")
            .arg("debug")
            .args(&self.extra_args);
        // Immune to the machine's configuration (/etc/mayfly/config.toml, MAYFLY_* variables,
        // a service manager's NOTIFY_SOCKET): an empty configuration file unless the test
        // gives one (`--config`, or MAYFLY_CONFIG in its `env`).
        for var in [
            "MAYFLY_STATE_DIR",
            "MAYFLY_SOCKET",
            "MAYFLY_LOG",
            "MAYFLY_CACHE_DIR",
            "MAYFLY_CGROUP_LAYOUT",
            "MAYFLY_USER_NAMESPACES",
            "MAYFLY_MEMORY_OVERCOMMIT",
            "MAYFLY_LISTEN",
            "NOTIFY_SOCKET",
        ] {
            cmd.env_remove(var);
        }
        let empty_config = self.dir.join("empty-config.toml");
        std::fs::write(&empty_config, "")
            .map_err(|e| format!("cannot write {}: {e}", empty_config.display()))?;
        cmd.env("MAYFLY_CONFIG", &empty_config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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
            .env_remove("MAYFLY_STATE_DIR")
            .env_remove("MAYFLY_REMOTE");
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
        dir_entries(&self.state.join(sub))
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
            let netns = self
                .net
                .delete()
                .map(|e| format!("\n  - {e}"))
                .unwrap_or_default();
            panic!(
                "teardown found leaks or failures:\n  - {}{netns}\n{logs}",
                problems.join("\n  - ")
            );
        }
        if let Some(e) = self.remove_dir() {
            panic!("teardown: cannot delete the test's network namespace: {e}");
        }
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
            self.remove_all_networks(&mut problems);
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
                "processes remain after the daemon stopped (a network's dnsmasq too?): {:?}",
                processes_mentioning(&dir)
            ));
        }
        self.net.leaks(&mut problems);
        let tmp = self.state_entries("tmp");
        if !tmp.is_empty() {
            problems.push(format!(
                "{}/tmp is not empty: {tmp:?}",
                self.state.display()
            ));
        }
        if let Some(fs) = self.quota_fs.take() {
            problems.extend(fs.finish());
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
        // Disk images of instances (docs/quotas.md) are loop-mounted: none may stay attached.
        let loops = quota_fs::loop_devices_under(&self.dir);
        if !loops.is_empty() {
            problems.push(format!("loop devices remain: {loops:#?}"));
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
        self.net.force_cleanup();
    }

    /// Deletes the test's network namespace and directory; what failed, if anything.
    fn remove_dir(&self) -> Option<String> {
        let failed = self.net.delete();
        let _ = std::fs::remove_dir_all(&self.dir);
        failed
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
        if let Some(e) = self.remove_dir() {
            eprintln!("teardown: cannot delete the test's network namespace: {e}");
        }
        if !problems.is_empty() && !panicking {
            panic!(
                "teardown found leaks or failures (the test did not call finish()):\n  - {}",
                problems.join("\n  - ")
            );
        }
    }
}
