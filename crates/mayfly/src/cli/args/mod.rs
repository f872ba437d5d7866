//! The clap definitions of the nouns that have several subcommands, one file per noun (as
//! `commands/` has their implementations); `cli/mod.rs` keeps the top level and the
//! instance verbs.

pub mod network;
pub mod snapshot;
pub mod template;
