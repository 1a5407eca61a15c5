use gears::prelude::*;

#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(nmae = "x")]
pub struct Counter {
    value: u64,
}

fn main() {}
