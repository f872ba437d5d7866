//! The console log of an attached run: what the relay sends to the client is appended to the
//! instance's `console.log` too (rotated like the forker's logs, at most twice the limit kept),
//! so that `mayfly logs NAME` shows a `run`'s output while the instance exists, from another
//! terminal or after the client was lost, as it does for a launched instance.

use std::path::PathBuf;
use std::sync::Arc;

use mayfly_engine::LogFiles;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// A shared appender to one instance's console log (stdout and stderr pumps write through
/// it, in the order they get the lock).
#[derive(Clone)]
pub(super) struct LogTee {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    files: LogFiles,
    file: Option<tokio::fs::File>,
    size: u64,
    /// A write failed (a full disk, a removed directory): the log is given up, never the
    /// stream.
    broken: bool,
}

impl LogTee {
    pub(super) fn new(files: LogFiles) -> LogTee {
        LogTee {
            inner: Arc::new(Mutex::new(Inner {
                files,
                file: None,
                size: 0,
                broken: false,
            })),
        }
    }

    /// Appends `data`, starting a new file first when it would pass the limit.
    pub(super) async fn write(&self, data: &[u8]) {
        let mut inner = self.inner.lock().await;
        if inner.broken {
            return;
        }
        if inner.write(data).await.is_err() {
            inner.broken = true;
            inner.file = None;
        }
    }
}

impl Inner {
    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let max = self.files.max_bytes.max(4096);
        if self.file.is_none() {
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.files.current)
                .await?;
            self.size = file.metadata().await?.len();
            self.file = Some(file);
        }
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if self.size > 0 && self.size.saturating_add(len) > max {
            self.file = None;
            let previous: PathBuf = self.files.previous.clone();
            tokio::fs::rename(&self.files.current, previous).await?;
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.files.current)
                .await?;
            self.file = Some(file);
            self.size = 0;
        }
        // One chunk is at most a frame (64 KiB): a limit below that keeps its end.
        let keep = usize::try_from(max).unwrap_or(usize::MAX);
        let data = &data[data.len().saturating_sub(keep)..];
        if let Some(file) = self.file.as_mut() {
            file.write_all(data).await?;
            file.flush().await?;
            self.size += u64::try_from(data.len()).unwrap_or(u64::MAX);
        }
        Ok(())
    }
}
