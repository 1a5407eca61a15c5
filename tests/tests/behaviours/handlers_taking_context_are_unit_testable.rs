//! A handler that takes `&Context` can be called directly on a plain value in a test: the
//! context from `gears::testing::TestRuntime::context` sends its calls to the test runtime's
//! actors, records the turn's sends, timers, events, subscriptions and deletion without
//! applying them, reports a refused request, and the test runtime's temporary store is
//! removed when it shuts down or is dropped.

use std::time::{Duration, SystemTime};

use gears::prelude::*;
use gears::testing::{SubscriptionRequest, TestRuntime, TimerRequest};

/// The event of a [`Shop`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restocked {
    /// How many came in.
    pub qty: u32,
}

#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "shop", events = Restocked)]
struct Shop {
    stock: u32,
    ledger_total: u64,
}

#[handlers]
impl Shop {
    /// Everything a turn can ask for, plus a call to another actor.
    async fn restock(&mut self, ctx: &Context, qty: u32, notify: String) -> Result<u32, String> {
        self.ledger_total = ctx
            .get::<Ledger>("main")
            .record(u64::from(qty))
            .await
            .map_err(|e| e.to_string())?;
        self.stock += qty;
        ctx.publish(Restocked { qty });
        ctx.send::<Shopper>(notify)
            .note(format!("{qty} in {}", ctx.key()));
        ctx.timer::<Self>("recount", Timer::every(Duration::from_secs(60)))
            .recount();
        ctx.cancel_timer("closing");
        ctx.subscribe::<Shop>("supplier", "supplier_restocked");
        ctx.unsubscribe::<Shop>("old-supplier");
        Ok(self.stock)
    }

    /// The periodic timer's handler.
    async fn recount(&mut self) {}

    /// Where a supplier's events arrive.
    async fn supplier_restocked(&mut self, _event: Restocked) {}

    /// Asks for something the runtime refuses: a send to a type that is not registered.
    async fn tell_stranger(&mut self, ctx: &Context) {
        ctx.send::<Stranger>("x").hello();
    }

    /// Deletes the shop.
    async fn close(&mut self, ctx: &Context) {
        ctx.delete();
    }
}

#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "ledger")]
struct Ledger {
    total: u64,
}

#[handlers]
impl Ledger {
    /// Adds `n` to the total.
    async fn record(&mut self, n: u64) -> u64 {
        self.total += n;
        self.total
    }

    /// The total.
    async fn total(&self) -> u64 {
        self.total
    }
}

#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "shopper")]
struct Shopper {
    inbox: Vec<String>,
}

#[handlers]
impl Shopper {
    /// Keeps a note.
    async fn note(&mut self, text: String) {
        self.inbox.push(text);
    }

    /// The notes.
    async fn inbox(&self) -> Vec<String> {
        self.inbox.clone()
    }
}

/// Never registered.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "stranger")]
struct Stranger {}

#[handlers]
impl Stranger {
    /// Never called.
    async fn hello(&mut self) {}
}

async fn test_runtime() -> TestRuntime {
    TestRuntime::new(|b| {
        b.register::<Shop>()
            .register::<Ledger>()
            .register::<Shopper>()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_called_directly_records_its_effects_and_calls_the_test_runtime() {
    let t = test_runtime().await;
    let ctx = t.context::<Shop>("s-1");
    assert_eq!(ctx.key(), "s-1");
    assert_eq!(ctx.actor_name(), "shop");
    let fresh = ctx.recorded();
    assert!(fresh.sends.is_empty() && fresh.timers.is_empty() && fresh.events.is_empty());

    let before = SystemTime::now();
    let mut shop = Shop::default();
    assert_eq!(shop.restock(&ctx, 3, "ann".into()).await, Ok(3));
    assert_eq!((shop.stock, shop.ledger_total), (3, 3));
    // The call went to the test runtime's `Ledger("main")`, which committed it.
    let ledger = t.runtime().get::<Ledger>("main");
    assert_eq!(ledger.total().await.unwrap(), 3);

    let recorded = ctx.recorded();
    assert_eq!(recorded.events, [Restocked { qty: 3 }]);
    assert_eq!(recorded.sends.len(), 1);
    let send = &recorded.sends[0];
    assert_eq!((send.actor.as_str(), send.key.as_str()), ("shopper", "ann"));
    assert_eq!(send.message.handler, "note");
    match send.message::<Shopper>() {
        Some(ShopperMessage::Note { text }) => assert_eq!(text, "3 in s-1"),
        _ => panic!("expected a note to the shopper"),
    }
    assert!(
        send.message::<Ledger>().is_none(),
        "not a message to a ledger"
    );
    match &recorded.timers[..] {
        [
            TimerRequest::Set {
                name,
                due,
                every,
                message,
            },
            TimerRequest::Cancel { name: cancelled },
        ] => {
            assert_eq!(name, "recount");
            assert_eq!(*every, Some(Duration::from_secs(60)));
            let expected = before + Duration::from_secs(59);
            assert!(*due >= expected, "due one period from now: {due:?}");
            assert!(matches!(
                message.decode::<Shop>(),
                Ok(ShopMessage::Recount {})
            ));
            assert_eq!(cancelled, "closing");
        }
        other => panic!("expected a timer set and one cancelled: {other:?}"),
    }
    assert_eq!(
        recorded.subscriptions,
        [
            SubscriptionRequest::Subscribe {
                actor: "shop".into(),
                key: "supplier".into(),
                handler: "supplier_restocked".into(),
            },
            SubscriptionRequest::Unsubscribe {
                actor: "shop".into(),
                key: "old-supplier".into(),
            },
        ]
    );
    assert!(!recorded.deleted);
    assert!(recorded.refused.is_none());

    // Recorded, never applied: nothing was sent, no timer was set on `Shop("s-1")`.
    let rt = t.runtime();
    assert_eq!(rt.stats().sends, 0);
    assert!(rt.timers::<Shop>("s-1").await.unwrap().is_empty());
    assert!(rt.get::<Shopper>("ann").inbox().await.unwrap().is_empty());

    // A second handler on the same context adds to the same turn's record.
    shop.close(&ctx).await;
    assert!(ctx.recorded().deleted);
    assert_eq!(ctx.recorded().events.len(), 1);
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_and_a_call_cycle_are_reported_as_in_a_turn() {
    let t = test_runtime().await;
    let ctx = t.context::<Shop>("s-2");
    Shop::default().tell_stranger(&ctx).await;
    let recorded = ctx.recorded();
    assert!(recorded.sends.is_empty(), "a refused send is not recorded");
    assert!(
        matches!(recorded.refused, Some(CallError::NotRegistered("stranger"))),
        "{:?}",
        recorded.refused
    );

    // The context's actor is in the call chain of its calls: calling back into it is a cycle.
    let ctx = t.context::<Ledger>("main");
    match ctx.get::<Ledger>("main").total().await {
        Err(CallError::Cycle(chain)) => assert!(chain.contains("ledger(\"main\")"), "{chain}"),
        other => panic!("expected a cycle, got {other:?}"),
    }
    assert_eq!(ctx.get::<Ledger>("other").total().await.unwrap(), 0);
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_store_survives_a_restart_and_is_removed_at_the_end() {
    let mut t = test_runtime().await;
    let path = t.path().to_path_buf();
    assert!(path.is_dir());
    t.runtime().get::<Ledger>("main").record(7).await.unwrap();
    t.restart().await.unwrap();
    assert_eq!(
        t.runtime().get::<Ledger>("main").total().await.unwrap(),
        7,
        "committed before the restart"
    );
    t.shutdown().await.unwrap();
    assert!(!path.exists(), "shutdown removes the store");

    // Dropped without a shutdown: stopped, and its store removed, all the same.
    let t = test_runtime().await;
    let path = t.path().to_path_buf();
    let rt = t.runtime().clone();
    rt.get::<Ledger>("main").record(1).await.unwrap();
    drop(t);
    assert!(!path.exists(), "dropping removes the store");
    assert!(matches!(
        rt.get::<Ledger>("main").total().await,
        Err(CallError::ShuttingDown)
    ));

    // Two test runtimes at once have stores of their own.
    let (a, b) = (test_runtime().await, test_runtime().await);
    assert_ne!(a.path(), b.path());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "keys must not be empty")]
async fn a_context_for_an_invalid_key_is_refused() {
    let t = test_runtime().await;
    let _ = t.context::<Shop>("");
}

#[test]
fn the_test_types_can_move_between_tasks() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<TestRuntime>();
    send_and_sync::<gears::testing::TestContext<Shop>>();
    send_and_sync::<gears::testing::Recorded<Shop>>();
}
