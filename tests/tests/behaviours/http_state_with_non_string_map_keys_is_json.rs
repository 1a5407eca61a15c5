//! `GET /{type}/{key}` shows a state holding maps whose keys are not strings: keys that are
//! numbers or booleans become object keys in their text form (as serde_json writes integer
//! keys), keys that are tuples or structs make the map an array of `[key, value]` pairs, at
//! any depth; a handler's reply holding such a map is JSON the same way.

use crate::support;

use std::collections::{BTreeMap, HashMap};

use gears::http::HttpConfig;
use gears::prelude::*;
use serde_json::json;
use support::serve;

/// A map key that is a struct.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seat {
    row: u8,
    number: u8,
}

/// A state of maps keyed by everything but strings.
#[derive(Actor, Default, Serialize, Deserialize)]
#[actor(name = "board")]
pub struct Board {
    scores: BTreeMap<u32, String>,
    flags: BTreeMap<bool, u8>,
    cells: HashMap<(u8, u8), char>,
    seats: BTreeMap<Seat, String>,
    rounds: Vec<BTreeMap<(u8, u8), u32>>,
}

#[handlers]
impl Board {
    /// Fills every map.
    pub async fn fill(&mut self) {
        self.scores = BTreeMap::from([(7, "seven".into()), (30, "thirty".into())]);
        self.flags = BTreeMap::from([(false, 0), (true, 1)]);
        self.cells = HashMap::from([((0, 1), 'x'), ((2, 3), 'o')]);
        self.seats = BTreeMap::from([(Seat { row: 1, number: 4 }, "ann".into())]);
        self.rounds = vec![BTreeMap::from([((1, 1), 10)]), BTreeMap::new()];
    }

    /// The cells, as a reply.
    pub async fn cells(&self) -> HashMap<(u8, u8), char> {
        self.cells.clone()
    }
}

/// An array of pairs, sorted (a `HashMap`'s order is not fixed).
fn sorted(pairs: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut pairs = pairs
        .as_array()
        .unwrap_or_else(|| panic!("an array of pairs: {pairs}"))
        .clone();
    pairs.sort_by_key(|pair| pair.to_string());
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_replies_with_non_string_map_keys_are_json() {
    let s = serve(HttpConfig::default(), |b| b.register::<Board>()).await;
    let (status, _, body) = s.post("/board/b-1/fill", "").await;
    assert_eq!(status, 200, "{body}");

    let (status, _, state) = s.get("/board/b-1").await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["scores"], json!({"7": "seven", "30": "thirty"}));
    assert_eq!(state["flags"], json!({"false": 0, "true": 1}));
    assert_eq!(
        sorted(&state["cells"]),
        vec![json!([[0, 1], "x"]), json!([[2, 3], "o"])]
    );
    assert_eq!(state["seats"], json!([[{"row": 1, "number": 4}, "ann"]]));
    assert_eq!(state["rounds"], json!([[[[1, 1], 10]], {}]));

    let (status, _, reply) = s.post("/board/b-1/cells", "").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        sorted(&reply),
        vec![json!([[0, 1], "x"]), json!([[2, 3], "o"])]
    );

    // A state never written is its `Default`, with empty maps as `{}`.
    let (status, _, fresh) = s.get("/board/b-2").await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["cells"], json!({}));
    s.stop().await;
}
