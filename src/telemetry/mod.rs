//! backout's own observability: metrics, health endpoints, logs and traces.

pub mod admin;
mod health;
mod judged;
mod metrics;
pub mod tracing_setup;

pub use admin::AdminServer;
pub use health::{Health, Readiness};
pub use metrics::*;
