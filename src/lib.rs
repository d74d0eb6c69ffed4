//! backout: metrics-driven automatic canary rollback for Kubernetes.
//!
//! Data flows one way: sources -> windows -> rules -> verdict -> action plan -> actuator -> audit.
//! The decision engine (`decision`) is pure; everything that touches the network sits at the edges.

pub mod audit;
pub mod actuator;
pub mod clock;
pub mod lifecycle;
pub mod notify;
pub mod decision;
pub mod policy;
pub mod quality;
pub mod sample;
pub mod telemetry;
pub mod diagnostic;
pub mod settings;
pub mod stats;
pub mod source;
pub mod sim;
