//! backout: metrics-driven automatic canary rollback for Kubernetes.
//!
//! Data flows one way: sources -> windows -> rules -> verdict -> action plan -> actuator -> audit.
//! The decision engine (`decision`) is pure; everything that touches the network sits at the edges.
//!
//! The daemon is the product (`--no-default-features`). Test and demo harness sits behind
//! features, one per module: `sim`, `promserver`, `demo`, `quality`, and `testkit` (test-data
//! builders); see docs/architecture.md.

// No unsafe code, so memory safety rests on the compiler (the Prometheus lifeline in `promserver`
// shows how a parent-death signal was had without `prctl`).
#![forbid(unsafe_code)]

pub mod actuator;
pub mod audit;
pub mod backtest;
pub mod clock;
pub mod daemon;
pub mod decision;
#[cfg(feature = "demo")]
pub mod demo;
pub mod diagnostic;
pub mod ha;
pub mod hash;
pub mod import;
pub mod judge;
pub mod kubeclient;
pub mod lifecycle;
pub mod lifeline;
pub mod notify;
pub mod policy;
#[cfg(feature = "promserver")]
pub mod promserver;
#[cfg(feature = "quality")]
pub mod quality;
pub mod sample;
pub mod settings;
#[cfg(feature = "sim")]
pub mod sim;
pub mod source;
pub mod stats;
pub mod status;
pub mod telemetry;
