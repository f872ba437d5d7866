//! An instance's console log: where it is and how to read its end.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::{Engine, EngineError};

/// The files of an instance's console log, oldest first.
#[derive(Debug, Clone)]
pub struct LogFiles {
    /// The rotated-out previous file (`console.log.1`).
    pub previous: PathBuf,
    /// The file the forker appends to.
    pub current: PathBuf,
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
        })
    }

    /// Whether instance `name` still exists (for following its log).
    pub fn instance_exists(&self, name: &str) -> bool {
        self.slot(name).is_ok()
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
}
