use gears::prelude::*;

#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Wallet {
    balance: u64,
}

#[handlers]
impl Wallet {
    pub async fn drain(self) -> u64 {
        self.balance
    }
}

fn main() {}
