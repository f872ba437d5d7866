//! `mayfly events` (part E of issue 24).

use crate::cli::args::events::EventsArgs;
use crate::cli::client::{Client, ClientError};

pub(super) async fn events(client: &Client, args: EventsArgs) -> Result<i32, ClientError> {
    let _ = (client, args);
    eprintln!("error: not implemented yet");
    Ok(1)
}
