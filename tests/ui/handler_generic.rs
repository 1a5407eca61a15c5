use gears::prelude::*;

#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Log {
    lines: Vec<String>,
}

#[handlers]
impl Log {
    pub async fn append<T: ToString>(&mut self, line: T) {
        self.lines.push(line.to_string());
    }
}

fn main() {}
