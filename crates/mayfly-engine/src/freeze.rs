//! Freezing a running instance for a copy (snapshot, clone, publish), journalled with the
//! instance so that no interruption can leave it frozen.
//!
//! Before the freezer is touched, a `freeze` journal entry names the instance; it is closed
//! only once the instance is thawed again. A daemon killed in between finds the entry at its
//! next start and thaws the instance (a thaw reaches the instance's group whether or not the
//! forker tracks it), closing the entry only when that worked: an entry stays until its
//! instance runs again. A user's pause (`resources/pause.rs`) is state of the instance, not a
//! journal entry, so recovery never undoes it: a paused instance is copied as it is (no
//! freeze, no thaw, no entry), and an entry left for an instance paused since is closed
//! without a thaw.

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
    /// `None`: the instance was paused, nothing was done.
    journal: Option<i64>,
}

impl Engine {
    /// Freezes running instance `slot` (the caller holds its operation lock).
    /// A paused instance is frozen already: nothing is done (and nothing undone after).
    pub(crate) async fn freeze_instance(&self, slot: &Slot) -> Result<Frozen, EngineError> {
        if crate::lock(&slot.rt).paused {
            return Ok(Frozen { journal: None });
        }
        let id = slot.id.clone();
        let journal = self
            .db(move |s| s.journal_begin(kind::FREEZE, &id, &[]))
            .await?;
        let frozen = Frozen {
            journal: Some(journal),
        };
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
        let Some(journal) = frozen.journal else {
            return; // paused: it stays so
        };
        if self.thaw_retrying(&slot.id).await {
            self.journal_end(journal).await;
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
        // A user's pause since then wins: its entry is closed without a thaw.
        let mut entries = entries;
        let paused: Vec<(i64, String)> = {
            let slots = crate::lock(&self.slots);
            let (paused, others) = entries
                .into_iter()
                .partition(|(_, id)| slots.by_id(id).is_some_and(|s| crate::lock(&s.rt).paused));
            entries = others;
            paused
        };
        for (journal, id) in paused {
            tracing::warn!("instance {id} is paused: not thawing it after an interrupted copy");
            if journal != 0 {
                self.journal_end(journal).await;
            }
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
