//! Dispatch budget (below).
