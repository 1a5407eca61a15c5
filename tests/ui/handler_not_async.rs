use gears::prelude::*;

#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Counter {
    value: u64,
}

#[handlers]
impl Counter {
    pub fn get(&self) -> u64 {
        self.value
    }
}

fn main() {}
