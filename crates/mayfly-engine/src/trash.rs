//! Background deletion. Discarding a writable layer or an instance must be instant whatever
//! its size, so trees are renamed into `<state>/trash/` (same filesystem: one rename) and a
//! thread deletes them there. What the thread has not finished when the daemon stops is
//! deleted at the next start.

use std::path::PathBuf;
use std::sync::mpsc;

/// Handle to the deleting thread.
#[derive(Debug, Clone)]
pub(crate) struct Trash {
    dir: PathBuf,
    wake: mpsc::Sender<()>,
}

impl Trash {
    /// Starts the thread for `dir` (and empties what is already there).
    pub(crate) fn start(dir: PathBuf) -> Trash {
        let (wake, rx) = mpsc::channel::<()>();
        let thread_dir = dir.clone();
        let spawned = std::thread::Builder::new()
            .name("trash".into())
            .spawn(move || {
                loop {
                    empty(&thread_dir);
                    if rx.recv().is_err() {
                        return;
                    }
                    while rx.try_recv().is_ok() {}
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the trash thread: {e}");
        }
        let _ = wake.send(());
        Trash { dir, wake }
    }

    /// The trash directory.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Moves `path` (if it exists) into the trash and wakes the thread. When the trash is on
    /// another filesystem (a state directory whose parts are separate mounts), the tree is
    /// deleted where it is, in the background.
    pub(crate) fn discard(&self, path: &std::path::Path) -> Result<(), crate::EngineError> {
        match mayfly_driver::container::move_to_trash(path, &self.dir) {
            Ok(()) => {
                self.wake();
                Ok(())
            }
            Err(mayfly_driver::DriverError::Files { source, .. })
                if source.raw_os_error() == Some(libc::EXDEV) =>
            {
                let path = path.to_owned();
                std::thread::spawn(move || {
                    if let Err(e) = mayfly_image::remove_tree(&path) {
                        tracing::warn!(
                            "cannot delete {}: {}",
                            path.display(),
                            mayfly_driver::error_chain(&e)
                        );
                    }
                });
                Ok(())
            }
            Err(e) => Err(crate::EngineError::Driver(e)),
        }
    }

    /// Asks the thread to delete what arrived.
    pub(crate) fn wake(&self) {
        let _ = self.wake.send(());
    }
}

fn empty(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Err(e) = mayfly_image::remove_tree(&path) {
            tracing::warn!(
                "cannot delete {}: {}",
                path.display(),
                mayfly_driver::error_chain(&e)
            );
        }
    }
}
