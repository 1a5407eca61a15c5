use gears::prelude::*;

#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Counter {
    value: u64,
}

#[handlers]
impl Counter {
    pub async fn add(&mut self, n: u64) -> u64 {
        self.value += n;
        self.value
    }
}

// A type's handlers are one block: the second is one error, here.
#[handlers]
impl Counter {
    pub async fn get(&self) -> u64 {
        self.value
    }
}

fn main() {}
