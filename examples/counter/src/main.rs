//! The smallest Gears program: a durable counter per key.
//!
//! `cargo run -p counter-example -- [DATA_DIR] [KEY]` adds one to the counter `KEY` (default
//! `visits`) in the store at `DATA_DIR` (default: a folder under the system temp dir) and
//! prints it. Run it twice: the count survives, because every acknowledged write is durable.

use gears::prelude::*;

/// A counter; the struct is the actor's durable state.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "counter")]
pub struct Counter {
    value: u64,
}

#[handlers]
impl Counter {
    /// Adds `n` and returns the new value.
    pub async fn add(&mut self, n: u64) -> u64 {
        self.value += n;
        self.value
    }

    /// The current value.
    pub async fn get(&self) -> u64 {
        self.value
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("gears-counter-example"));
    let key = args.next().unwrap_or_else(|| "visits".to_string());

    let rt = Runtime::builder()
        .path(&dir)
        .register::<Counter>()
        .open()
        .await?;
    let value = rt.get::<Counter>(&key).add(1).await?;
    println!("counter {key:?} in {} is now {value}", dir.display());
    rt.shutdown().await?;
    Ok(())
}
