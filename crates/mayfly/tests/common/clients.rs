//! A `mayfly run` or `mayfly exec` client running in the background, as a user's terminal or
//! a script would have it: its output read line by line as it comes, signals sent to it, its
//! end awaited with a deadline.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};

use super::*;

/// A spawned client.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Spawned {
    /// Runs `mayfly ARGS` against `d` with stdin from /dev/null.
    pub fn start(d: &TestDaemon, args: &[&str]) -> Spawned {
        let mut cmd = d.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run mayfly");
        let stdout = child.stdout.take().expect("stdout pipe");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr pipe");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Spawned {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The client's pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    /// Sends `sig` to the client.
    pub fn signal(&self, sig: rustix::process::Signal) {
        signal(self.pid(), sig);
    }

    /// Waits for a line equal to `want` on stdout; fails the test after `timeout`.
    pub fn expect_line(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line == want;
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "`{want}` did not come within {timeout:?}; stdout so far: {:?}; stderr: {}",
            self.seen,
            self.stderr()
        );
    }

    /// Every stdout line seen so far (and what arrives within `wait`).
    pub fn stdout_lines(&mut self, wait: Duration) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(wait) {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// What the client wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Its exit code once it ends, or `None` if it has not ended within `timeout` (it is
    /// left running).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                return Some(
                    status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                );
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
