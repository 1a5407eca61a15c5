//! Opens a store of an older format and dies (`abort`, as a crash) right after the upgrade
//! wrote batch number `die_after`; used by `a_store_of_format_1_is_upgraded_in_place.rs`.
//!
//! Usage: `child upgrade_child <store dir> <die_after>`. Exits 0 if the upgrade needed fewer
//! batches (nothing to interrupt).

use std::sync::Arc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn run(mut args: std::env::Args) {
    let dir = args.next().expect("a store dir");
    let die_after: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("the batch to die after");
    let rt = gears_tests::builder(dir.as_ref())
        .__upgrade_hook(Arc::new(move |written| {
            if written >= die_after {
                eprintln!("upgrade_child: dying after upgrade batch {written}");
                std::process::abort();
            }
        }))
        .open()
        .await
        .expect("open");
    rt.shutdown().await.expect("shutdown");
}
