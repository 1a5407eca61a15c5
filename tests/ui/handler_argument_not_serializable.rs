use gears::prelude::*;

/// Neither `Serialize` nor `Deserialize`: cannot travel in a message.
pub struct Coupon {
    pub percent: u8,
}

#[derive(Actor, Default, Serialize, Deserialize)]
pub struct Cart {
    discount: u8,
}

#[handlers]
impl Cart {
    pub async fn apply(&mut self, coupon: Coupon) {
        self.discount = coupon.percent;
    }
}

fn main() {}
