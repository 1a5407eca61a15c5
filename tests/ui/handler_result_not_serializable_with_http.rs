use gears::prelude::*;

/// Not `Serialize`: with the `http` feature, a handler's result travels as JSON.
pub struct Receipt {
    pub total: u64,
}

#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Till {
    total: u64,
}

#[handlers]
impl Till {
    pub async fn ring_up(&mut self, amount: u64) -> Receipt {
        self.total += amount;
        Receipt { total: self.total }
    }
}

fn main() {}
