//! `mayfly completion` and `mayfly man` (part C of issue 24).

use crate::cli::args::meta::{CompletionArgs, ManArgs};

pub(super) fn completion(args: CompletionArgs) -> i32 {
    let _ = args;
    eprintln!("error: not implemented yet");
    1
}

pub(super) fn man(args: ManArgs) -> i32 {
    let _ = args;
    eprintln!("error: not implemented yet");
    1
}
