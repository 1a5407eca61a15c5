//! `Context::turn_id`: a saga step tagged with it is made once when its turn runs again (the
//! re-run makes the same call, answered from the result the callee kept), while a tag drawn
//! at random per run makes the re-run's call differ and the runtime refuses it (the control:
//! what the order demo's random attempt ids ran into under chaos). Every other turn, and
//! every plain call, gets an id of its own; within a turn it does not change.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gears::Runtime;
use gears::prelude::*;

/// Per tagger key: turns still to panic after their call (so the turn runs again), and
/// turns run so far.
static PANICS: Mutex<BTreeMap<String, (u32, u32)>> = Mutex::new(BTreeMap::new());

fn panics() -> std::sync::MutexGuard<'static, BTreeMap<String, (u32, u32)>> {
    PANICS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts a run of `key`'s turn; whether it must panic.
fn run_and_take_panic(key: &str) -> bool {
    let mut panics = panics();
    let (left, runs) = panics.entry(key.to_string()).or_default();
    *runs += 1;
    let panic = *left > 0;
    *left = left.saturating_sub(1);
    panic
}

fn runs(key: &str) -> u32 {
    panics().get(key).map_or(0, |&(_, runs)| runs)
}

/// Records the tags it is given, with no bookkeeping of repeats (a repeated call that ran
/// would record twice).
#[derive(Actor, Default, Serialize, Deserialize, Debug, Clone)]
#[actor(name = "turn_id_ledger")]
struct Ledger {
    tags: Vec<u64>,
}

#[handlers]
impl Ledger {
    /// Records `tag`; returns how many it has.
    async fn record(&mut self, tag: u64) -> usize {
        self.tags.push(tag);
        self.tags.len()
    }

    /// The tags recorded, in order.
    async fn tags(&self) -> Vec<u64> {
        self.tags.clone()
    }
}

#[derive(Actor, Default, Serialize, Deserialize, Debug, Clone)]
#[actor(name = "turn_id_tagger")]
struct Tagger {
    /// The tag its committed turn recorded.
    tag: Option<u64>,
}

#[handlers]
impl Tagger {
    /// Records a tag at `Ledger(key)`: this turn's id, or a random one per run. Panics
    /// after the call while panics are injected for this key.
    async fn tag(&mut self, ctx: &Context, random: bool) -> Result<(), String> {
        let tag = if random {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        } else {
            ctx.turn_id() as u64
        };
        ctx.get::<Ledger>(ctx.key())
            .record(tag)
            .await
            .map_err(|e| e.to_string())?;
        if run_and_take_panic(ctx.key()) {
            panic!("injected: after the call, before the turn commits");
        }
        self.tag = Some(tag);
        Ok(())
    }

    /// The tag of its committed turn, if any.
    async fn tagged(&self) -> Option<u64> {
        self.tag
    }

    /// This turn's id, asked twice.
    async fn ids(&self, ctx: &Context) -> (String, String) {
        (
            format!("{:x}", ctx.turn_id()),
            format!("{:x}", ctx.turn_id()),
        )
    }
}

async fn open(dir: &std::path::Path) -> Runtime {
    Runtime::builder()
        .path(dir)
        .register::<Ledger>()
        .register::<Tagger>()
        .open()
        .await
        .unwrap()
}

/// Waits until `Tagger(key)`'s turn committed its tag (panics after 30 s).
async fn tagged(rt: &Runtime, key: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(tag) = rt.get::<Tagger>(key).tagged().await.unwrap() {
            return tag;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never tagged: {:?}",
            rt.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_runs_again_tags_its_call_with_the_same_turn_id() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    panics().insert("same".into(), (2, 0));
    rt.send::<Tagger>("same").tag(false).await.unwrap();
    let tag = tagged(&rt, "same").await;
    assert_eq!(runs("same"), 3, "the turn ran three times");
    // The ledger recorded once: the re-runs' calls were answered from its kept result.
    assert_eq!(rt.get::<Ledger>("same").tags().await.unwrap(), vec![tag]);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_drawn_at_random_per_run_is_refused_when_the_turn_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    panics().insert("random".into(), (1, 0));
    rt.send::<Tagger>("random").tag(true).await.unwrap();
    // The first run panics after its call; the next one makes a call with another tag at
    // the same position, which fails, and so does the handler: the message is consumed
    // with that error, its step never done.
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs("random") < 1 || rt.stats().handler_errors < 1 {
        assert!(Instant::now() < deadline, "no second run: {:?}", rt.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runs("random"), 1, "the re-run failed at its call");
    assert_eq!(rt.get::<Tagger>("random").tagged().await.unwrap(), None);
    assert_eq!(rt.get::<Ledger>("random").tags().await.unwrap().len(), 1);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plain_call_and_every_send_has_an_id_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path()).await;
    let tagger = rt.get::<Tagger>("plain");
    let (first, again) = tagger.ids().await.unwrap();
    assert_eq!(first, again, "one id per turn");
    let (second, _) = tagger.ids().await.unwrap();
    assert_ne!(first, second, "each plain call's turn has its own id");

    // Two sends to the same tagger: two turns, two tags, both recorded.
    for key in ["a", "b"] {
        panics().insert(format!("two-{key}"), (0, 0));
    }
    rt.send::<Tagger>("two-a").tag(false).await.unwrap();
    rt.send::<Tagger>("two-b").tag(false).await.unwrap();
    assert_ne!(tagged(&rt, "two-a").await, tagged(&rt, "two-b").await);
    rt.shutdown().await.unwrap();
}
