//! An instance's console log: where it is and how to read its end.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::{Engine, EngineError};

/// The files of an instance's console log, oldest first.
#[derive(Debug, Clone)]
pub struct LogFiles {
    /// The rotated-out previous file (`console.log.1`).
    pub previous: PathBuf,
    /// The file the forker (or, for an attached run, the daemon) appends to.
    pub current: PathBuf,
    /// The size at which `current` becomes `previous`.
    pub max_bytes: u64,
}

impl LogFiles {
    /// The log's content, or its last `tail` lines.
    pub fn read(&self, tail: Option<u64>) -> std::io::Result<Vec<u8>> {
        let mut all = Vec::new();
        for path in [&self.previous, &self.current] {
            match std::fs::File::open(path) {
                Ok(mut f) => {
                    f.read_to_end(&mut all)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(n) = tail {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let body = all.strip_suffix(b"\n").unwrap_or(&all);
            let start = body
                .iter()
                .enumerate()
                .rev()
                .filter(|(_, b)| **b == b'\n')
                .nth(n.saturating_sub(1))
                .map(|(i, _)| i + 1);
            all = match (n, start) {
                (0, _) => Vec::new(),
                (_, Some(i)) => all[i..].to_vec(),
                (_, None) => all,
            };
        }
        Ok(all)
    }

    /// Bytes appended to the current file since `offset` (and the new offset). A rotation
    /// (the file shrank) restarts from its beginning.
    pub fn read_from(&self, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
        let mut f = match std::fs::File::open(&self.current) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = if len < offset { 0 } else { offset };
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let end = start + u64::try_from(buf.len()).unwrap_or(0);
        Ok((buf, end))
    }

    /// The current file's size.
    pub fn current_len(&self) -> u64 {
        std::fs::metadata(&self.current)
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

/// Most bytes [`LogFollower::read_new`] returns at once.
const FOLLOW_CHUNK: u64 = 1 << 20;

/// Follows a console log through an open descriptor of its current file, so that what was
/// written before the file was rotated or removed (with its instance) is still read: the
/// final output of an ephemeral instance reaches `mayfly logs -f`.
#[derive(Debug)]
pub struct LogFollower {
    files: LogFiles,
    file: Option<std::fs::File>,
}

impl LogFollower {
    /// Follows from `offset` of the current file (created empty when it does not exist yet,
    /// so that even the first output of a short-lived instance is held).
    pub fn new(files: LogFiles, offset: u64) -> std::io::Result<LogFollower> {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&files.current)
        {
            Ok(mut f) => {
                f.seek(SeekFrom::Start(offset))?;
                Some(f)
            }
            // The instance's directory is gone already: nothing more will come.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(LogFollower { files, file })
    }

    /// What was appended since the last call (at most 1 MiB at once); empty when nothing was.
    /// At the end of a rotated-out file, goes on with the new current one.
    pub fn read_new(&mut self) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::MetadataExt;
        let mut buf = Vec::new();
        if let Some(f) = self.file.as_mut() {
            f.take(FOLLOW_CHUNK).read_to_end(&mut buf)?;
            if !buf.is_empty() {
                return Ok(buf);
            }
            let held = f.metadata()?.ino();
            match std::fs::metadata(&self.files.current) {
                Ok(m) if m.ino() != held => {}
                _ => return Ok(buf),
            }
        }
        // Rotated (or not there before): the current file is a new one, read from its start.
        match std::fs::File::open(&self.files.current) {
            Ok(f) => {
                let f = self.file.insert(f);
                f.take(FOLLOW_CHUNK).read_to_end(&mut buf)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(buf)
    }
}

impl Engine {
    /// The console log of instance `name`.
    pub fn log_files(&self, name: &str) -> Result<LogFiles, EngineError> {
        let slot = self.slot(name)?;
        let current = self.driver.log_path(&self.layout.instance_dir(&slot.id));
        let mut previous = current.clone().into_os_string();
        previous.push(".1");
        Ok(LogFiles {
            previous: previous.into(),
            current,
            max_bytes: self.config.log_max_bytes,
        })
    }

    /// The id of instance `name` (a log is followed by id: a later instance may take the
    /// name, never the id).
    pub fn instance_id(&self, name: &str) -> Result<String, EngineError> {
        Ok(self.slot(name)?.id.clone())
    }

    /// Whether the instance with id `id` still exists (for following its log).
    pub fn instance_id_exists(&self, id: &str) -> bool {
        crate::lock(&self.slots).by_id(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_returns_the_last_lines_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles {
            previous: dir.path().join("console.log.1"),
            current: dir.path().join("console.log"),
            max_bytes: 4096,
        };
        std::fs::write(&files.previous, "a\nb\n").unwrap();
        std::fs::write(&files.current, "c\nd\n").unwrap();
        assert_eq!(files.read(None).unwrap(), b"a\nb\nc\nd\n");
        assert_eq!(files.read(Some(3)).unwrap(), b"b\nc\nd\n");
        assert_eq!(files.read(Some(0)).unwrap(), b"");
        assert_eq!(files.read(Some(10)).unwrap(), b"a\nb\nc\nd\n");
        let (bytes, off) = files.read_from(2).unwrap();
        assert_eq!((bytes.as_slice(), off), (&b"d\n"[..], 4));
    }

    #[test]
    fn a_follower_reads_through_rotation_and_removal() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles {
            previous: dir.path().join("console.log.1"),
            current: dir.path().join("console.log"),
            max_bytes: 4096,
        };
        std::fs::write(&files.current, "old\n").unwrap();
        let mut follower = LogFollower::new(files.clone(), 4).unwrap();
        assert!(follower.read_new().unwrap().is_empty());
        let append = |text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&files.current)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        append("a\n");
        // Rotated right after: the rest of the old file, then the new one.
        std::fs::rename(&files.current, &files.previous).unwrap();
        append("b\n");
        assert_eq!(follower.read_new().unwrap(), b"a\n");
        assert_eq!(follower.read_new().unwrap(), b"b\n");
        // Written, then removed before it was read: still read.
        append("last\n");
        std::fs::remove_file(&files.current).unwrap();
        std::fs::remove_file(&files.previous).unwrap();
        assert_eq!(follower.read_new().unwrap(), b"last\n");
        assert!(follower.read_new().unwrap().is_empty());
    }
}
