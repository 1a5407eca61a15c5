//! The order demo's tests, one module per behaviour, in one test binary: one link instead of
//! one per file. Run one with its module's name as the filter:
//! `cargo test -p order-demo --test behaviours crash_loop_keeps_the_books`.
//!
//! Tests of different modules run side by side in this one process, so a test may not depend
//! on anything process-wide (a global subscriber, the process' peak memory): such a test gets
//! its own file beside this directory.

mod common;

pub mod audit_catches_broken_books;
pub mod audit_checks_recorded_acknowledgements;
pub mod backordered_order_ships_on_restock_or_is_cancelled;
pub mod cluster_chaos_node_kills_keep_the_books;
pub mod cluster_order_flow_keeps_the_books_through_node_and_nats_failures;
pub mod compensations_leave_with_the_turn_and_expired_attempts_never_ship;
pub mod crash_loop_keeps_the_books_under_repeated_sigkill;
pub mod holds_are_idempotent_per_order_and_expire;
pub mod live_page_in_headless_chromium;
pub mod long_order_ids_are_placed_and_too_long_input_is_4xx;
pub mod openapi_document_validates_and_every_route_answers;
pub mod refused_orders_hold_nothing;
pub mod saga_steps_and_catalog_maintenance_are_not_reachable_over_http;
pub mod schemathesis_fuzzes_serve_without_5xx_or_schema_violations;
pub mod serve_drains_and_exits_0_on_sigterm;
pub mod serve_exports_traces_by_otlp;
pub mod serve_off_loopback_needs_a_token;
pub mod serve_places_orders_and_streams_items_over_http;
pub mod serve_refuses_zero_counts_on_the_command_line;
pub mod sigkill_mid_run_then_audit_passes;
pub mod small_simulation_passes_the_audit;
pub mod virtual_time_expires_holds_and_deadlines_in_milliseconds;
