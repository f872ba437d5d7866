//! `mayfly schedule …`.
//!
//! (Skeleton: filled in by the schedules work.)

use crate::cli::ScheduleCommand;
use crate::cli::client::{Client, ClientError};

/// `mayfly schedule …`.
pub(super) async fn schedule(_client: &Client, _c: ScheduleCommand) -> Result<i32, ClientError> {
    Ok(2)
}
