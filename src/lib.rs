//! backout: metrics-driven automatic canary rollback for Kubernetes.
//!
//! Data flows one way: sources -> windows -> rules -> verdict -> action plan -> actuator -> audit.
//! The decision engine (`decision`) is pure; everything that touches the network sits at the edges.

pub mod actuator;
pub mod clock;
pub mod policy;
pub mod sample;
pub mod sim;
