//! Invalid keys (empty, over 1 KiB) give `InvalidKey` and never reach the store; a stored
//! record that does not decode gives `Decode` naming the actor type and key, not a panic, and
//! other actors keep working.

use gears::{CallError, KeyError, MAX_KEY_LEN};
use gears_tests::{Counter, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_keys_are_refused_before_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    assert!(matches!(
        rt.get::<Counter>("").add(1).await,
        Err(CallError::InvalidKey(KeyError::Empty))
    ));
    let long = "k".repeat(MAX_KEY_LEN + 1);
    match rt.get::<Counter>(&long).add(1).await {
        Err(CallError::InvalidKey(KeyError::TooLong { len, max })) => {
            assert_eq!((len, max), (MAX_KEY_LEN + 1, MAX_KEY_LEN));
        }
        other => panic!("expected InvalidKey, got {other:?}"),
    }
    let stats = rt.stats();
    assert_eq!((stats.activations, stats.writes), (0, 0), "{stats:?}");
    // The longest valid key works.
    let longest = "k".repeat(MAX_KEY_LEN);
    assert_eq!(rt.get::<Counter>(&longest).add(1).await.unwrap(), 1);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_record_gives_decode_error_naming_the_actor() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    rt.get::<Counter>("good").add(7).await.unwrap();
    rt.get::<Counter>("bad").add(1).await.unwrap();
    rt.shutdown().await.unwrap();
    drop(rt);

    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let state = db
            .keyspace("state", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let key = gears::__private::state_key("counter", "bad");
        assert!(
            state.get(&key).unwrap().is_some(),
            "the key layout is the one Gears writes"
        );
        for garbage in [&[1u8, 1, 0xff, 0xff][..], &[][..], &[99, 1, 2][..]] {
            state.insert(&key, garbage).unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
    }

    let rt = open(dir.path()).await;
    match rt.get::<Counter>("bad").get().await {
        Err(CallError::Decode(e)) => {
            assert_eq!((e.actor, e.key.as_str()), ("counter", "bad"));
            let message = e.to_string();
            assert!(
                message.contains("`counter`") && message.contains("\"bad\""),
                "{message}"
            );
            assert!(message.contains("unknown record format 99"), "{message}");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    // Still refused (nothing was overwritten with a default), and others are unaffected.
    assert!(matches!(
        rt.get::<Counter>("bad").add(1).await,
        Err(CallError::Decode(_))
    ));
    assert_eq!(rt.get::<Counter>("good").get().await.unwrap(), 7);
    rt.shutdown().await.unwrap();
}
