use gears::prelude::*;

#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Ledger {
    entries: u32,
}

#[handlers]
impl Ledger {
    #[handler(commit_errors)]
    pub async fn record(&mut self) -> u32 {
        self.entries += 1;
        self.entries
    }
}

fn main() {}
