//! `mayfly token …` (part R of issue 24).

use crate::cli::args::token::TokenCommand;
use crate::cli::client::{Client, ClientError};

pub(super) async fn token(client: &Client, command: TokenCommand) -> Result<i32, ClientError> {
    let _ = (client, command);
    eprintln!("error: not implemented yet");
    Ok(1)
}
