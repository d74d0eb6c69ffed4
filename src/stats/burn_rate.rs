//! Multi-window, multi-burn-rate alerting.
