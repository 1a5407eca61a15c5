//! Runtime, handles, errors and stats can be shared across tasks and threads.

use gears::{CallError, Error, Runtime, Stats};
use gears_tests::{CounterHandle, TooBig};

fn is_send_sync<T: Send + Sync>() {}
fn is_error<T: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn public_types_are_send_sync() {
    is_send_sync::<Runtime>();
    is_send_sync::<CounterHandle>();
    is_send_sync::<Stats>();
    is_send_sync::<gears::Context>();
    is_error::<Error>();
    is_error::<CallError>();
    is_error::<CallError<TooBig>>();
}
