//! Decision-quality benchmark: synthetic Prometheus data with known ground truth, and the rules
//! of backout and its peers applied to the same series. Pure; the harness binary prints tables.

pub mod bench;
pub mod ceiling;
pub mod draw;
pub mod frontier;
pub mod judges;
pub mod policies;
pub mod promql;
pub mod scenario;
pub mod trace;
