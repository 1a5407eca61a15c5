//! A panic outside the handler itself (here: in the state's `Serialize`, while committing)
//! fails that call with `Panicked` and never wedges the key: later calls work, other keys
//! are unaffected, and shutdown completes.

use gears::prelude::*;
use serde::Serializer;

/// A state whose serialization panics when `poisoned` is set.
#[derive(Actor, Default, Deserialize)]
#[actor(name = "touchy")]
pub struct Touchy {
    value: u64,
    poisoned: bool,
}

impl Serialize for Touchy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert!(!self.poisoned, "injected panic in Serialize");
        (self.value, self.poisoned).serialize(s)
    }
}

#[handlers]
impl Touchy {
    /// Adds `n`; `poison` makes the commit's serialization panic.
    pub async fn add(&mut self, n: u64, poison: bool) -> u64 {
        self.value += n;
        self.poisoned = poison;
        self.value
    }

    /// The value.
    pub async fn get(&self) -> u64 {
        self.value
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_serialize_fails_one_call_only() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::builder()
        .path(dir.path())
        .register::<Touchy>()
        .open()
        .await
        .unwrap();
    let t = rt.get::<Touchy>("t");
    assert_eq!(t.add(1, false).await.unwrap(), 1);
    match t.add(10, true).await {
        Err(CallError::Panicked {
            actor: "touchy",
            handler: "add",
        }) => {}
        other => panic!("expected Panicked, got {other:?}"),
    }
    // The key reloads its durable state and keeps working.
    assert_eq!(t.get().await.unwrap(), 1);
    assert_eq!(t.add(1, false).await.unwrap(), 2);
    assert_eq!(rt.get::<Touchy>("other").add(5, false).await.unwrap(), 5);
    rt.shutdown().await.unwrap();
}
