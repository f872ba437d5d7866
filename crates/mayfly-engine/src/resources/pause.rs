//! Pause and resume: every process of a running instance frozen (no CPU used, memory kept),
//! then thawed.
//!
//! A pause is state of the instance, kept in the catalogue (`paused`) before the freezer is
//! touched, so that it survives a daemon restart (recovery freezes a paused running instance
//! again, and never thaws it: `freeze.rs` thaws only what an interrupted copy froze). The
//! runtime keeps `paused` beside `running`; `list` and `info` show `paused`. What the other
//! actions do with a paused instance:
//! - stop, restart, reset, restore and rm (`--force`) thaw it first and clear the pause (a
//!   frozen process cannot act on its stop signal, nor die of a kill on cgroup v1);
//! - snapshot, clone and publish copy it as it is, without freezing or thawing it, and
//!   leave it paused;
//! - exec and console are refused, with a hint to resume it;
//! - any end of its run clears the pause.

use std::sync::Arc;

use mayfly_api::{InstanceInfo, InstanceState};

use crate::error::from_driver;
use crate::instance::wrong_state;
use crate::slot::Slot;
use crate::{Engine, EngineError, lock};

/// What a pause or resume does with an instance in some state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Freeze (pause) or thaw (resume) it.
    Act,
    /// Nothing to do; the answer's note says why.
    Nothing(&'static str),
    /// Refused: the instance is in this (shown) state.
    Refuse(InstanceState),
}

/// What `pause` does with an instance in `state`, `paused` or not.
pub(crate) fn pause_step(state: InstanceState, paused: bool) -> Step {
    match (state, paused) {
        (InstanceState::Running, true) => Step::Nothing("already paused"),
        (InstanceState::Running, false) => Step::Act,
        (s, _) => Step::Refuse(s),
    }
}

/// What `resume` does with an instance in `state`, `paused` or not.
pub(crate) fn resume_step(state: InstanceState, paused: bool) -> Step {
    match (state, paused) {
        (InstanceState::Running, true) => Step::Act,
        (InstanceState::Running, false) => Step::Nothing("not paused"),
        (s, _) => Step::Refuse(s),
    }
}

impl Engine {
    /// Freezes every process of a running instance.
    pub async fn pause_instance(self: &Arc<Self>, name: &str) -> Result<InstanceInfo, EngineError> {
        let slot = self.slot(name)?;
        let note = {
            let _guard = slot.acquire("pause").await?;
            self.settle(&slot).await;
            let (state, paused) = {
                let rt = lock(&slot.rt);
                (rt.state, rt.paused)
            };
            match pause_step(state, paused) {
                Step::Refuse(s) => return Err(wrong_state(&slot, s, "pause")),
                Step::Nothing(note) => Some(note),
                Step::Act => {
                    // Recorded first: a daemon that dies between the two finds the pause and
                    // freezes the instance again, never a frozen instance it does not know of.
                    self.record_pause(&slot.id, true).await?;
                    // `MAYFLY_FAIL_AT=pause:freeze` fails the freeze (tests of the undo).
                    let frozen = match crate::inject("pause:freeze") {
                        Ok(()) => self
                            .driver
                            .freeze(&slot.id, true)
                            .await
                            .map_err(from_driver),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = frozen {
                        if let Err(undo) = self.record_pause(&slot.id, false).await {
                            tracing::error!(instance = %slot.name, "cannot undo the record of a failed pause: {undo}");
                        }
                        return Err(e);
                    }
                    lock(&slot.rt).paused = true;
                    self.emit(crate::events::Ev::new("instance.pause").on("instance", name));
                    None
                }
            }
        };
        self.answer(name, note).await
    }

    /// Thaws a paused instance.
    pub async fn resume_instance(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<InstanceInfo, EngineError> {
        let slot = self.slot(name)?;
        let note = {
            let _guard = slot.acquire("resume").await?;
            self.settle(&slot).await;
            let (state, paused) = {
                let rt = lock(&slot.rt);
                (rt.state, rt.paused)
            };
            match resume_step(state, paused) {
                Step::Refuse(s) => return Err(wrong_state(&slot, s, "resume")),
                Step::Nothing(note) => Some(note),
                Step::Act => {
                    self.driver
                        .freeze(&slot.id, false)
                        .await
                        .map_err(from_driver)?;
                    if let Err(e) = self.record_pause(&slot.id, false).await {
                        // Kept paused rather than running with a pause on record, which the
                        // next daemon start would bring back.
                        let _ = self.driver.freeze(&slot.id, true).await;
                        return Err(e);
                    }
                    let mut rt = lock(&slot.rt);
                    rt.paused = false;
                    if rt
                        .last_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("its pause could not be restored"))
                    {
                        rt.last_error = None;
                    }
                    drop(rt);
                    self.emit(crate::events::Ev::new("instance.resume").on("instance", name));
                    None
                }
            }
        };
        self.answer(name, note).await
    }

    /// Thaws a paused instance and clears its pause, before an action that ends its run (the
    /// caller holds the operation lock). Nothing to do for one that is not paused.
    pub(crate) async fn unpause_locked(&self, slot: &Slot) -> Result<(), EngineError> {
        if !lock(&slot.rt).paused {
            return Ok(());
        }
        self.driver
            .freeze(&slot.id, false)
            .await
            .map_err(from_driver)?;
        lock(&slot.rt).paused = false;
        if let Err(e) = self.record_pause(&slot.id, false).await {
            // The end of the run that follows clears it too.
            tracing::warn!(instance = %slot.name, "cannot clear the record of its pause: {e}");
        }
        Ok(())
    }

    /// At start-up (and after a new forker): a running instance whose pause is on record is
    /// frozen again (its freezer state may have been lost with the group's helper).
    pub(crate) async fn repause(&self, slot: &Slot) {
        lock(&slot.rt).paused = true;
        if let Err(e) = self.driver.freeze(&slot.id, true).await {
            let why = mayfly_driver::error_chain(&e);
            tracing::error!(
                instance = %slot.name,
                "cannot freeze the paused instance again: {why}"
            );
            // `info` says so: it is on record as paused, but may run.
            lock(&slot.rt).last_error = Some(format!(
                "its pause could not be restored after a restart of the daemon ({why}); it may be running: `mayfly resume {}` then `mayfly pause {}`",
                slot.name, slot.name
            ));
        }
    }

    async fn record_pause(&self, id: &str, paused: bool) -> Result<(), EngineError> {
        let id = id.to_owned();
        self.db(move |s| s.set_paused(&id, paused)).await
    }

    async fn answer(&self, name: &str, note: Option<&str>) -> Result<InstanceInfo, EngineError> {
        let mut info = self.instance_info(name).await?;
        info.note = note.map(str::to_owned);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_instance_is_paused_and_only_a_paused_one_resumed() {
        use InstanceState::*;
        assert_eq!(pause_step(Running, false), Step::Act);
        assert_eq!(pause_step(Running, true), Step::Nothing("already paused"));
        for s in [Stopped, Starting, Stopping] {
            assert_eq!(pause_step(s, false), Step::Refuse(s));
        }
        assert_eq!(resume_step(Running, true), Step::Act);
        assert_eq!(resume_step(Running, false), Step::Nothing("not paused"));
        for s in [Stopped, Starting, Stopping] {
            assert_eq!(resume_step(s, false), Step::Refuse(s));
        }
    }

    #[test]
    fn a_refused_pause_hints_what_to_do_first() {
        let slot = crate::slot::Slot::new("0123456789abcdef", "web");
        let hint = |state| match wrong_state(&slot, state, "pause") {
            EngineError::WrongState { hint, .. } => hint.unwrap_or_default(),
            other => panic!("not a state refusal: {other}"),
        };
        assert!(hint(InstanceState::Stopped).contains("mayfly start web"));
        assert!(hint(InstanceState::Paused).contains("mayfly resume web"));
    }

    #[test]
    fn a_paused_running_instance_shows_as_paused_and_nothing_else_does() {
        let mut rt = crate::slot::Runtime {
            state: InstanceState::Running,
            ..crate::slot::Runtime::default()
        };
        assert_eq!(rt.shown_state(), InstanceState::Running);
        rt.paused = true;
        assert_eq!(rt.shown_state(), InstanceState::Paused);
        rt.state = InstanceState::Stopping;
        assert_eq!(rt.shown_state(), InstanceState::Stopping);
    }
}
