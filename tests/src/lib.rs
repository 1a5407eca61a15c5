//! Shared actors and helpers for the integration tests.
