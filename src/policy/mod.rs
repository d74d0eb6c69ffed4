//! Policy files: the TOML an SRE writes, loaded, defaulted and validated.

mod builder;
pub mod model;

pub use model::*;
