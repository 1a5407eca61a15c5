#![deny(unused_must_use)]

use std::time::Duration;

use gears::prelude::*;

#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Counter {
    value: u64,
}

#[handlers]
impl Counter {
    pub async fn add(&mut self, ctx: &Context, n: u64) -> u64 {
        // Each of these forgets the handler call: nothing would be sent or scheduled.
        ctx.send::<Counter>("other");
        ctx.timer::<Self>("later", Timer::after(Duration::from_secs(1)));
        ctx.get::<Counter>("other");
        self.value += n;
        self.value
    }
}

async fn outside(rt: Runtime) {
    rt.send::<Counter>("c-1");
    rt.get::<Counter>("c-1");
    // The handler is named but the send is never awaited.
    rt.send::<Counter>("c-1").add(1);
}

fn main() {
    let _ = outside;
}
