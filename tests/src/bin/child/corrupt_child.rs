//! Child of `corrupted_store_files_are_refused_or_read_back_correctly`: opens each store given
//! on the command line, reads `Counter` keys `c0..c<keys>`, and reports one line per outcome,
//! so that an abort inside the store (which no `catch_unwind` can contain) ends only this
//! process and names the case that caused it.
//!
//! Usage: `child corrupt_child <keys> <first case number> <store dir>...`. Output lines:
//! `case N start`, `case N refused <error>`, `case N value <key> <value>`,
//! `case N error <key> <error>`, `case N panic <message>` (a panic anywhere, even one the
//! runtime contained), `case N hung <what>` (then exits 3), `case N done`.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gears::CallError;
use gears_tests::{Counter, builder};

static CASE: AtomicUsize = AtomicUsize::new(0);
const BOUND: Duration = Duration::from_secs(20);

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.replace('\n', " "));
    let _ = out.flush();
}

fn hung(case: usize, what: &str) -> ! {
    say(format!("case {case} hung {what}"));
    std::process::exit(3);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn run(mut args: std::env::Args) {
    let usage = "usage: child corrupt_child <keys> <first case> <store dir>...";
    let keys: usize = args.next().and_then(|k| k.parse().ok()).expect(usage);
    let first: usize = args.next().and_then(|k| k.parse().ok()).expect(usage);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        say(format!("case {} panic {info}", CASE.load(Ordering::SeqCst)));
        default_hook(info);
    }));
    for (i, dir) in args.enumerate() {
        let case = first + i;
        CASE.store(case, Ordering::SeqCst);
        say(format!("case {case} start"));
        let opened = tokio::time::timeout(BOUND, builder(dir.as_ref()).open()).await;
        let rt = match opened {
            Err(_) => hung(case, "open"),
            Ok(Err(e)) => {
                say(format!("case {case} refused {e}"));
                say(format!("case {case} done"));
                continue;
            }
            Ok(Ok(rt)) => rt,
        };
        for k in 0..keys {
            let key = format!("c{k}");
            match tokio::time::timeout(BOUND, rt.get::<Counter>(&key).get()).await {
                Err(_) => hung(case, &format!("get {key}")),
                Ok(Ok(v)) => say(format!("case {case} value {key} {v}")),
                Ok(Err(e @ (CallError::Decode(_) | CallError::Storage(_)))) => {
                    say(format!("case {case} error {key} {e}"))
                }
                // Any other failure is not a clear report of corruption.
                Ok(Err(e)) => say(format!("case {case} unexpected {key} {e:?}")),
            }
        }
        match tokio::time::timeout(BOUND, rt.shutdown()).await {
            Err(_) => hung(case, "shutdown"),
            // A store that cannot sync at shutdown is reported, not a failure of the case.
            Ok(r) => say(format!("case {case} shutdown {r:?}")),
        }
        say(format!("case {case} done"));
    }
}
