//! Policy files: the TOML an SRE writes, loaded, defaulted and validated.

#[cfg(any(test, feature = "testkit"))]
mod builder;
pub mod cache;
pub mod defaults;
pub mod error;
pub mod feed;
pub mod kinds;
pub mod load;
pub mod model;
pub mod response;
mod schema;
pub mod template;
pub mod traffic;
pub mod validate;

pub use cache::LoadCache;
pub use error::PolicyError;
pub use feed::{feeds, Feed, Input};
pub use kinds::{BurnRateSpec, Kind, MannWhitneySpec, SequentialSpec};
pub use load::{load, load_cached, load_path, load_templates, load_with, LoadOptions};
pub use model::*;
pub use response::{ActionMode, EscalationStep, Verify};
pub use template::{render_query, render_traffic_query};
pub use traffic::TrafficKind;

#[cfg(test)]
mod tests;
