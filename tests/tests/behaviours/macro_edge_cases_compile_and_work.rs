//! Valid but unusual handler blocks compile and work: an empty `#[handlers]` block, an
//! argument named `ctx` beside the context, `self: &mut Self` receivers, a `Result` handler
//! with a plain `String` error.

// `self: &mut Self` is spelled out on purpose: the macro must accept it.
#![allow(clippy::needless_arbitrary_self_type)]

use gears::prelude::*;

#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "quiet")]
/// An actor without handlers.
pub struct Quiet {}

#[handlers]
impl Quiet {}

/// An actor with unusual but valid handlers.
#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Edge {
    total: u32,
}

#[handlers]
impl Edge {
    /// The context parameter may have any name, and `ctx` may be an ordinary argument.
    pub async fn add(self: &mut Self, c: &Context, ctx: u32) -> String {
        self.total += ctx;
        format!("{}:{}", c.key(), self.total)
    }

    /// `Result` handlers map their error into `CallError::Handler`.
    pub async fn fail(&mut self, why: String) -> Result<(), String> {
        Err(why)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_blocks_work() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::builder()
        .path(dir.path())
        .register::<Quiet>()
        .register::<Edge>()
        .open()
        .await
        .unwrap();
    assert_eq!(rt.get::<Edge>("e").add(5).await.unwrap(), "e:5");
    assert_eq!(rt.get::<Edge>("e").add(2).await.unwrap(), "e:7");
    match rt.get::<Edge>("e").fail("nope".into()).await {
        Err(CallError::Handler(why)) => assert_eq!(why, "nope"),
        other => panic!("{other:?}"),
    }
    // The default storage name is the type's name.
    assert_eq!(<Edge as gears::Actor>::NAME, "Edge");
    assert_eq!(<Quiet as gears::Actor>::NAME, "quiet");
    rt.shutdown().await.unwrap();
}
