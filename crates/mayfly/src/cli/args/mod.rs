//! The clap definitions of the nouns that have several subcommands, one file per noun (as
//! `commands/` has their implementations); `cli/mod.rs` keeps the top level;
//! `instance` has the instance verbs' arguments.

pub mod events;
pub mod instance;
pub mod meta;
pub mod network;
pub mod remote;
pub mod resources;
pub mod schedule;
pub mod snapshot;
pub mod template;
pub mod token;
pub mod volume;
