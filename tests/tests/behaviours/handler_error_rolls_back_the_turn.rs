//! A `&mut self` handler that returns `Err` leaves no trace: the state is rolled back to its
//! last committed value and nothing is written.

use gears::CallError;
use gears_tests::{Counter, TooBig, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_rolls_back_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let c = rt.get::<Counter>("c");
    assert_eq!(c.add_checked(5, 10).await.unwrap(), 5);
    let writes = rt.stats().writes;
    match c.add_checked(6, 10).await {
        Err(CallError::Handler(TooBig { limit: 10 })) => {}
        other => panic!("expected the handler error, got {other:?}"),
    }
    assert_eq!(
        c.get().await.unwrap(),
        5,
        "the failed turn's change was rolled back"
    );
    assert_eq!(
        rt.stats().writes,
        writes,
        "a rolled-back turn writes nothing"
    );
    assert_eq!(c.add_checked(5, 10).await.unwrap(), 10);
    rt.shutdown().await.unwrap();
    let rt = open(dir.path()).await;
    assert_eq!(rt.get::<Counter>("c").get().await.unwrap(), 10);
    rt.shutdown().await.unwrap();
}
