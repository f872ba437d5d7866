//! Restart policies: start an instance again when its init ends unasked, with back-off.
//!
//! (Skeleton: filled in by the restart-policy work.)

use std::sync::Arc;

use mayfly_api::{Ending, Mode, RestartPolicy};
use mayfly_driver::ExitStatus;
use mayfly_store::InstanceRecord;

use crate::slot::Slot;
use crate::{Engine, EngineError};

/// Refuses a policy that cannot apply to `mode`.
pub(crate) fn check_policy(mode: Mode, policy: RestartPolicy) -> Result<(), EngineError> {
    if mode == Mode::Ephemeral && !policy.is_no() {
        return Err(EngineError::invalid(
            "an ephemeral instance is deleted when it stops: it cannot be restarted",
            "leave --restart out, or launch it transient or persistent",
        ));
    }
    Ok(())
}

impl Engine {
    /// Applies instance `slot`'s restart policy to a run that just ended and was settled
    /// (`ending`: how, as mayfly read it). Called by the end of every run that is not
    /// started again anyway.
    pub(crate) async fn apply_restart_policy(
        self: &Arc<Self>,
        _slot: &Arc<Slot>,
        _status: Option<ExitStatus>,
        _ending: Option<Ending>,
    ) {
    }

    /// What `info` shows of `rec`'s restart policy.
    pub(crate) fn restart_info(&self, _rec: &InstanceRecord) -> Option<mayfly_api::RestartInfo> {
        None
    }
}
