//! backout: metrics-driven automatic canary rollback for Kubernetes.
//!
//! Data flows one way: sources -> windows -> rules -> verdict -> action plan -> actuator -> audit.
//! The decision engine (`decision`) is pure; everything that touches the network sits at the edges.

// No unsafe code, so memory safety rests on the compiler (the Prometheus lifeline in `promserver`
// shows how a parent-death signal was had without `prctl`).
#![forbid(unsafe_code)]

pub mod actuator;
pub mod audit;
pub mod backtest;
pub mod clock;
pub mod daemon;
pub mod decision;
pub mod demo;
pub mod diagnostic;
pub mod ha;
pub mod hash;
pub mod kubeclient;
pub mod lifecycle;
pub mod lifeline;
pub mod notify;
pub mod policy;
pub mod promserver;
pub mod quality;
pub mod sample;
pub mod settings;
pub mod sim;
pub mod source;
pub mod stats;
pub mod telemetry;
