//! Subcommands. Each file holds one command's `Args` and `run`; they belong to the binary crate.

pub mod backtest;
pub mod demo;
pub mod explain;
pub mod explain_live;
mod ha;
pub mod rollback;
pub mod run;
pub mod sim;
pub mod validate;
