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

    #[handler(name = "add")]
    pub async fn add_twice(&mut self, n: u64) -> u64 {
        self.value += 2 * n;
        self.value
    }
}

fn main() {}
