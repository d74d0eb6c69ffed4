//! Mann-Whitney.
