//! The clap definitions of the nouns that have several subcommands, one file per noun (as
//! `commands/` has their implementations); `cli/mod.rs` keeps the top level;
//! `instance` has the instance verbs' arguments.

pub mod instance;
pub mod network;
pub mod resources;
pub mod schedule;
pub mod snapshot;
pub mod template;
pub mod volume;
