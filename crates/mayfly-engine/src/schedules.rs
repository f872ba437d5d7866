//! Schedules: reset, restart or snapshot an instance at the times of a cron expression.
//!
//! (Skeleton: filled in by the schedules work.)

use crate::{Engine, EngineError};

/// Turns `--reset-at HH:MM` into the cron expression of a daily schedule.
pub(crate) fn daily_at(time: &str) -> Result<String, EngineError> {
    Err(EngineError::invalid(
        format!("--reset-at `{time}` is not supported yet"),
        "leave --reset-at out",
    ))
}

impl Engine {
    /// Starts the scheduler and re-arms pending restarts (once, at daemon start).
    pub(crate) fn start_timers(self: &std::sync::Arc<Self>) {}
}
