//! Subcommands. Each file holds one command's `Args` and `run`; they belong to the binary crate.

pub mod explain;
pub mod validate;
pub mod rollback;
pub mod sim;
