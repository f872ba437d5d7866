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

/// Most bytes moved per readiness of one pipe.
const PUMP_BUDGET: usize = 256 * 1024;

/// Appends `line` (and a line end) to the log at `path`, best effort (the forker's own
/// messages about a container, such as why its init did not start).
pub(crate) fn append_line(path: &std::path::Path, line: &str) {
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

/// One container's log pump.
#[derive(Debug)]
pub(crate) struct LogPump {
    /// `None` once at EOF while the console still writes here.
    pipe: Option<OwnedFd>,
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    /// Carriage returns from the console not written yet: dropped if a line feed follows.
    console_crs: usize,
}

impl LogPump {
    /// Opens (appending to) the log at `path` for the read end `pipe`.
    pub(crate) fn open(pipe: OwnedFd, path: PathBuf, max_bytes: u64) -> io::Result<LogPump> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        rustix::io::ioctl_fionbio(&pipe, true)?;
        Ok(LogPump {
            pipe: Some(pipe),
            path,
            file,
            size,
            max_bytes: max_bytes.max(4096),
            console_crs: 0,
        })
    }

    /// The pipe to watch for readability (`None` once it was closed at EOF).
    pub(crate) fn pipe(&self) -> Option<&OwnedFd> {
        self.pipe.as_ref()
    }

    /// Closes the pipe (at EOF) while the log stays open for the console.
    pub(crate) fn close_pipe(&mut self) {
        self.pipe = None;
    }

    /// Moves what the pipe holds into the file, up to [`PUMP_BUDGET`] bytes (a container
    /// that writes without pause must not keep the forker from serving the others: the loop
    /// comes back while the pipe stays readable). Returns `false` once the pipe is at EOF
    /// (every writer gone).
    pub(crate) fn pump(&mut self) -> bool {
        let Some(pipe) = self.pipe.take() else {
            return false;
        };
        let open = self.pump_from(&pipe);
        self.pipe = Some(pipe);
        open
    }

    fn pump_from(&mut self, pipe: &OwnedFd) -> bool {
        let mut buf = [0u8; 16 * 1024];
        let mut budget = PUMP_BUDGET;
        while budget > 0 {
            match rustix::io::read(pipe.as_fd(), &mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.write(&buf[..n]);
                    budget = budget.saturating_sub(n);
                }
                Err(rustix::io::Errno::AGAIN) => return true,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return false,
            }
        }
        true
    }

    /// Appends output read from the console (see `console`): a terminal ends lines with
    /// `\r\n` (its ONLCR mode, which programs on a console such as getty set for their
    /// users); the log keeps plain text, so carriage returns right before a line feed are
    /// dropped (even across reads). Other carriage returns are kept.
    pub(crate) fn append_console(&mut self, data: &[u8]) {
        /// Carriage returns held back at most (a run of them longer than that is written).
        const MAX_HELD: usize = 4096;
        let mut out = Vec::with_capacity(data.len() + self.console_crs);
        for &b in data {
            if b == b'\r' {
                self.console_crs += 1;
                if self.console_crs > MAX_HELD {
                    out.extend(std::iter::repeat_n(b'\r', self.console_crs));
                    self.console_crs = 0;
                }
                continue;
            }
            if self.console_crs > 0 && b != b'\n' {
                out.extend(std::iter::repeat_n(b'\r', self.console_crs));
            }
            self.console_crs = 0;
            out.push(b);
        }
        self.write(&out);
    }

    /// Appends `data`, rotating as often as needed so that no file passes the limit (a
    /// chunk larger than the room left is cut, at its last line end inside that room when
    /// there is one).
    fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room =
                usize::try_from(self.max_bytes.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if room == 0 || (room < data.len() && self.size > 0 && !data[..room].contains(&b'\n')) {
                // Full, or the next line would be cut although a fresh file can take more
                // of it: start a new file.
                if !self.rotate() {
                    return; // cannot open a new file: drop the output, never block the init
                }
                continue;
            }
            let take = if data.len() <= room {
                data.len()
            } else {
                data[..room]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(room, |i| i + 1)
            };
            // A full disk or removed directory must not stop the container: drop the output.
            if self.file.write_all(&data[..take]).is_err() {
                return;
            }
            self.size += u64::try_from(take).unwrap_or(u64::MAX);
            data = &data[take..];
        }
    }

    /// Makes the current file the old one and starts a new one; `false` if that failed.
    fn rotate(&mut self) -> bool {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        let _ = std::fs::rename(&self.path, old);
        match OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)
        {
            Ok(file) => {
                self.file = file;
                self.size = 0;
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_line_ends_become_plain_line_feeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let mut pump = LogPump::open(r, path.clone(), 4096).unwrap();
        pump.append_console(b"one\r\ntwo\r");
        pump.append_console(b"\nprogress 1%\rprogress 2%\r\r\n");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"one\ntwo\nprogress 1%\rprogress 2%\n"
        );
    }

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

    #[test]
    fn a_chunk_larger_than_the_limit_never_makes_a_file_pass_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let old = dir.path().join("console.log.1");
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut pump = LogPump::open(r, path.clone(), 4096).unwrap();
        let lines: String = (0..3000).map(|i| format!("line-{i}\n")).collect();
        // One read takes up to 16 KiB: far more than one file may hold.
        rustix::io::write(&w, &lines.as_bytes()[..12 * 1024]).unwrap();
        assert!(pump.pump());
        let previous = String::from_utf8(std::fs::read(&old).unwrap()).unwrap();
        assert!(
            previous.len() <= 4096 && previous.len() > 4000,
            "{}",
            previous.len()
        );
        assert!(previous.ends_with('\n'), "files are cut at line ends");
        assert!(previous.lines().all(|l| l.starts_with("line-")));
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096);

        // Output without any line end is cut where a file must end; the newest stays.
        rustix::io::write(&w, &[b'x'; 9000]).unwrap();
        assert!(pump.pump());
        assert_eq!(std::fs::read(&old).unwrap(), vec![b'x'; 4096]);
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 9000 - 2 * 4096]);
    }
}
