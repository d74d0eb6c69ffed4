//! Subcommands. Each file holds one command's `Args` and `run`; they belong to the binary crate.

pub mod backtest;
pub mod bad_versions;
#[cfg(feature = "demo")]
pub mod demo;
pub mod explain;
pub mod explain_live;
mod ha;
pub mod import;
pub mod rollback;
pub mod run;
#[cfg(feature = "sim")]
pub mod sim;
pub mod status;
pub mod validate;

/// Stands in for a subcommand this binary was built without (`--no-default-features`, the daemon
/// image): takes any arguments so the user gets the reason, not a usage error.
#[cfg(any(not(feature = "demo"), not(feature = "sim")))]
#[derive(clap::Args)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

#[cfg(any(not(feature = "demo"), not(feature = "sim")))]
pub fn not_built(command: &str, feature: &str) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!(
        "`backout {command}` is not built into this binary (built without the `{feature}` \
         feature, as the daemon image is); build with default features: `cargo run -- {command}`"
    )
}
