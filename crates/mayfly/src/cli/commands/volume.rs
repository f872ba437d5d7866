//! `mayfly volume …`.
//!
//! (Skeleton: filled in by the volumes work.)

use crate::cli::VolumeCommand;
use crate::cli::client::{Client, ClientError};

/// `mayfly volume …`.
pub(super) async fn volume(_client: &Client, _c: VolumeCommand) -> Result<i32, ClientError> {
    Ok(2)
}
