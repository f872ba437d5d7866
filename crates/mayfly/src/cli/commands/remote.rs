//! `mayfly remote …` (part R of issue 24).

use crate::cli::args::remote::RemoteCommand;
use crate::cli::client::{Client, ClientError};

pub(super) async fn remote(client: &Client, command: RemoteCommand) -> Result<i32, ClientError> {
    let _ = (client, command);
    eprintln!("error: not implemented yet");
    Ok(1)
}
