//! Freezing a running instance for a copy (snapshot, clone, publish), journalled with the
//! instance so that no interruption can leave it frozen.
//!
//! Before the freezer is touched, a `freeze` journal entry names the instance; it is closed
//! only once the instance is thawed again. A daemon killed in between finds the entry at its
//! next start and thaws the instance (a thaw reaches the instance's group whether or not the
//! forker tracks it), closing the entry only when that worked: an entry stays until its
//! instance runs again. A user's pause, once mayfly has one, is state of the instance, not a
//! journal entry, so recovery never undoes it.

use std::sync::Arc;
use std::time::Duration;

use crate::recovery::kind;
use crate::slot::Slot;
use crate::{Engine, EngineError};

/// How long start-up waits for the thaws of interrupted operations before serving (they go
/// on in the background: one instance that thaws slowly does not hold up the daemon).
const STARTUP_THAW_WAIT: Duration = Duration::from_secs(2);

/// A frozen instance and the journal entry that says so.
#[derive(Debug)]
pub(crate) struct Frozen {
    journal: i64,
}

impl Engine {
    /// Freezes running instance `slot` (the caller holds its operation lock).
    pub(crate) async fn freeze_instance(&self, slot: &Slot) -> Result<Frozen, EngineError> {
        let id = slot.id.clone();
        let journal = self
            .db(move |s| s.journal_begin(kind::FREEZE, &id, &[]))
            .await?;
        let frozen = Frozen { journal };
        if let Err(e) = self.driver.freeze(&slot.id, true).await {
            // The forker thaws what it could not freeze completely; make sure, and close the
            // entry.
            self.thaw_instance(slot, frozen).await;
            return Err(EngineError::Driver(e));
        }
        crate::failpoint("capture:frozen");
        Ok(frozen)
    }

    /// Thaws an instance frozen by [`Self::freeze_instance`]. A thaw that fails is retried
    /// (a forker being replaced answers a moment later); if it still fails, the journal entry
    /// stays open and the next start of the daemon thaws the instance.
    pub(crate) async fn thaw_instance(&self, slot: &Slot, frozen: Frozen) {
        if self.thaw_retrying(&slot.id).await {
            self.journal_end(frozen.journal).await;
        } else {
            tracing::error!(
                instance = %slot.name,
                "cannot thaw the instance after a copy; it stays frozen until the daemon's next start thaws it"
            );
        }
    }

    async fn thaw_retrying(&self, id: &str) -> bool {
        let mut delay = Duration::from_millis(50);
        for attempt in 0..4 {
            match self.driver.freeze(id, false).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(
                        "thaw of instance {id} failed (attempt {}): {}",
                        attempt + 1,
                        mayfly_driver::error_chain(&e)
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
            }
        }
        false
    }

    /// Thaws the instances that interrupted operations left frozen (`(journal entry,
    /// instance id)`; entry 0 for entries of an older daemon, already closed), waiting at
    /// most [`STARTUP_THAW_WAIT`] before letting start-up go on.
    pub(crate) async fn thaw_interrupted(self: &Arc<Self>, entries: Vec<(i64, String)>) {
        if entries.is_empty() {
            return;
        }
        let engine = self.clone();
        let all = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for (journal, id) in entries {
                let engine = engine.clone();
                tasks.push(tokio::spawn(async move {
                    if engine.thaw_retrying(&id).await {
                        tracing::warn!(
                            "thawed instance {id}: an interrupted snapshot, clone or publish left it frozen"
                        );
                        if journal != 0 {
                            engine.journal_end(journal).await;
                        }
                    } else {
                        tracing::error!(
                            "cannot thaw instance {id}, left frozen by an interrupted operation; the next start of the daemon tries again"
                        );
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        let _ = tokio::time::timeout(STARTUP_THAW_WAIT, all).await;
    }
}
