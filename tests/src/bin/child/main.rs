//! The child processes the tests start, as one binary: `child <role> <arguments...>`, where
//! the role is one of the modules below (each says what it does and what it takes).
//!
//! One binary instead of one per role: each of ten binaries compiled the runtime's generic
//! code for the test actors and linked it again, ~18 s of a 2-core CI build apiece.

mod cluster_http_node;
mod cluster_node;
mod corrupt_child;
mod crash_child;
mod exactly_once_child;
mod fault_child;
mod http_signal_child;
mod saga_child;
mod send_child;
mod upgrade_child;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Waits for the first of `tasks` to end and gives its result: the roles' tasks run until one
/// fails (a failed call, or the reader of their output gone).
async fn first_end(mut tasks: tokio::task::JoinSet<Result<(), BoxError>>) -> Result<(), BoxError> {
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(join)) => Err(join.into()),
        None => Ok(()),
    }
}

const USAGE: &str = "usage: child <cluster_http_node|cluster_node|corrupt_child|crash_child|\
                     exactly_once_child|fault_child|http_signal_child|saga_child|send_child|\
                     upgrade_child> <arguments...>";

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args();
    args.next(); // the program
    let role = args.next().ok_or(USAGE)?;
    match role.as_str() {
        "cluster_http_node" => cluster_http_node::run(args),
        "cluster_node" => cluster_node::run(args),
        "corrupt_child" => {
            corrupt_child::run(args);
            Ok(())
        }
        "crash_child" => crash_child::run(args),
        "exactly_once_child" => exactly_once_child::run(args),
        "fault_child" => fault_child::run(args),
        "http_signal_child" => http_signal_child::run(args),
        "saga_child" => saga_child::run(args),
        "send_child" => send_child::run(args),
        "upgrade_child" => {
            upgrade_child::run(args);
            Ok(())
        }
        other => Err(format!("unknown role {other:?}; {USAGE}").into()),
    }
}
