use gears::prelude::*;

#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Counter {
    value: u64,
}

#[handlers]
impl Counter {
    #[handler(interal)]
    pub async fn add(&mut self, n: u64) -> u64 {
        self.value += n;
        self.value
    }
}

fn main() {}
