use gears::prelude::*;

#[derive(Serialize, Deserialize, StateVersion)]
#[state(previous = OrderV1)]
pub struct OrderV2 {
    lines: u32,
}

#[derive(Serialize, Deserialize, StateVersion)]
#[state(version = 1)]
pub struct OrderV1 {
    lines: u16,
}

impl From<OrderV1> for OrderV2 {
    fn from(v1: OrderV1) -> Self {
        OrderV2 { lines: v1.lines.into() }
    }
}

fn main() {}
