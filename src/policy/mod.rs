//! Policy files: the TOML an SRE writes, loaded, defaulted and validated.

pub mod model;

pub use model::*;
