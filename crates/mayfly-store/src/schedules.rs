//! Schedules: actions run on an instance at the times of a cron expression.
//!
//! (Skeleton: filled in by the schedules work.)

use crate::{Store, StoreError};

impl Store {
    /// Adds a schedule to instance `instance_id`; returns its id.
    pub fn add_schedule(
        &mut self,
        _instance_id: &str,
        _action: mayfly_api::ScheduleAction,
        _cron: &str,
        _keep: Option<u32>,
    ) -> Result<u64, StoreError> {
        Ok(0)
    }
}
