use gears::prelude::*;

#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Session {
    expired: bool,
}

#[handlers]
impl Session {
    pub async fn timeout(&mut self) {
        self.expired = true;
    }

    pub async fn key(&self) -> String {
        String::new()
    }
}

fn main() {}
