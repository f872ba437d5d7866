//! The bounded console log of a detached container: the forker reads the init's output pipe
//! and appends to `<path>`; when the file would pass its limit, it becomes `<path>.1`
//! (replacing the older one) and a new file starts. At most twice the limit is kept.
//!
//! The forker, not the daemon, holds the pipe, so output keeps flowing (and the init never
//! blocks on a full pipe) while the daemon restarts.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

/// One container's log pump.
#[derive(Debug)]
pub(crate) struct LogPump {
    pipe: OwnedFd,
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
}

impl LogPump {
    /// Opens (appending to) the log at `path` for the read end `pipe`.
    pub(crate) fn open(pipe: OwnedFd, path: PathBuf, max_bytes: u64) -> io::Result<LogPump> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        rustix::io::ioctl_fionbio(&pipe, true)?;
        Ok(LogPump {
            pipe,
            path,
            file,
            size,
            max_bytes: max_bytes.max(4096),
        })
    }

    /// The pipe to watch for readability.
    pub(crate) fn pipe(&self) -> &OwnedFd {
        &self.pipe
    }

    /// Moves what the pipe holds into the file. Returns `false` once the pipe is at EOF
    /// (every writer gone).
    pub(crate) fn pump(&mut self) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match rustix::io::read(self.pipe.as_fd(), &mut buf) {
                Ok(0) => return false,
                Ok(n) => self.write(&buf[..n]),
                Err(rustix::io::Errno::AGAIN) => return true,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return false,
            }
        }
    }

    fn write(&mut self, data: &[u8]) {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate();
        }
        // A full disk or removed directory must not stop the container: drop the output.
        if self.file.write_all(data).is_ok() {
            self.size += len;
        }
    }

    fn rotate(&mut self) {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        let _ = std::fs::rename(&self.path, old);
        if let Ok(file) = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)
        {
            self.file = file;
            self.size = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rotates_and_keeps_at_most_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut pump = LogPump::open(r, path.clone(), 4096).unwrap();
        for chunk in 0..5u8 {
            rustix::io::write(&w, &[b'a' + chunk; 3000]).unwrap();
            assert!(pump.pump());
        }
        drop(w);
        assert!(!pump.pump());
        let current = std::fs::read(&path).unwrap();
        let previous = std::fs::read(dir.path().join("console.log.1")).unwrap();
        assert_eq!(current, vec![b'e'; 3000]);
        assert_eq!(previous, vec![b'd'; 3000]);
    }
}
