//! Actors and helpers shared by the integration tests in `tests/tests/`.

use std::path::Path;
use std::time::Duration;

use gears::prelude::*;

/// A counter that also records how many times it was activated in this process.
#[derive(Actor, Default, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[actor(name = "counter")]
pub struct Counter {
    /// The count.
    pub value: u64,
}

/// Handler error of [`Counter::add_checked`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TooBig {
    /// The limit that would have been passed.
    pub limit: u64,
}

impl std::fmt::Display for TooBig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the counter would pass {}", self.limit)
    }
}

#[handlers]
impl Counter {
    /// Adds `n`, returns the new value.
    pub async fn add(&mut self, n: u64) -> u64 {
        self.value += n;
        self.value
    }

    /// Adds `n` unless that passes `limit`; the change is applied first and rolled back by
    /// the runtime on `Err`.
    pub async fn add_checked(&mut self, n: u64, limit: u64) -> Result<u64, TooBig> {
        self.value += n;
        if self.value > limit {
            Err(TooBig { limit })
        } else {
            Ok(self.value)
        }
    }

    /// The value.
    pub async fn get(&self) -> u64 {
        self.value
    }

    /// Adds `n`, then panics if `panic` is set (after mutating, so a reset is observable).
    pub async fn add_then_panic(&mut self, n: u64, panic: bool) -> u64 {
        self.value += n;
        if panic {
            panic!("injected panic");
        }
        self.value
    }

    /// Adds `n` after sleeping `ms` milliseconds (to hold the key busy).
    pub async fn slow_add(&mut self, n: u64, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.value += n;
        self.value
    }

    /// Returns the key this turn ran for.
    pub async fn whoami(&self, ctx: &Context) -> String {
        ctx.key().to_string()
    }
}

/// An actor that calls another actor of its type: `A.forward(B)` calls `B.forward(A)`...
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "relay")]
pub struct Relay {
    hops: u32,
}

#[handlers]
impl Relay {
    /// Calls the first key of `route` with the rest as its onward route; returns the hop
    /// count of the last actor. A failed inner call comes back as its message.
    pub async fn forward(&mut self, ctx: &Context, route: Vec<String>) -> Result<u32, String> {
        self.hops += 1;
        match route.split_first() {
            None => Ok(self.hops),
            Some((next, rest)) => match ctx.get::<Relay>(next).forward(rest.to_vec()).await {
                Ok(hops) => Ok(hops),
                Err(CallError::Handler(inner)) => Err(inner),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// Opens a runtime on `dir` with the test actors registered.
pub async fn open(dir: &Path) -> Runtime {
    builder(dir).open().await.expect("open runtime")
}

/// A builder on `dir` with the test actors registered.
pub fn builder(dir: &Path) -> gears::Builder {
    Runtime::builder()
        .path(dir)
        .register::<Counter>()
        .register::<Relay>()
}
