//! The stored formats are pinned: a golden record of format version 1 decodes to the same
//! state and the same state encodes to the same bytes; the storage key layout is fixed.

use gears::__private::{decode_state, encode_state, shard_of, state_key};
use gears_tests::Counter;

const RECORD_V1: &[u8] = include_bytes!("../../fixtures/state_v1_counter_300.bin");

#[test]
fn state_record_v1_is_stable() {
    // [format 1][schema varint 1][postcard Counter { value: 300 } = varint 300]
    assert_eq!(RECORD_V1, &[1, 1, 0xAC, 0x02]);
    let state: Counter = decode_state(RECORD_V1).unwrap();
    assert_eq!(state, Counter { value: 300 });
    assert_eq!(encode_state(&Counter { value: 300 }), RECORD_V1);
}

#[test]
fn storage_keys_are_stable() {
    // The seeded shard hash is part of the format: a change here moves every key.
    assert_eq!(shard_of("counter", "a"), 17);
    assert_eq!(shard_of("inventory_item", "sku-1"), 144);
    let key = state_key("counter", "a");
    assert_eq!(key, [&[0u8, 17, 7][..], b"counter", b"a"].concat());
}
