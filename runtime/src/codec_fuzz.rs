//! Every decoder of stored or received bytes, fed truncated, bit-flipped and random input:
//! an error, never a panic or a huge allocation.
//!
//! Seeds are valid encodings (the golden fixtures of every stored format, and records of a
//! state type with strings, sequences, maps and enums); each case mutates one seed
//! (truncation, bit flips, byte overwrites, splices of random bytes, a length prefix turned
//! huge) or is random bytes, and goes through every decoder. A decoder may accept a mutated
//! input (postcard is not checksummed); it must not panic, and no single allocation while
//! decoding may reserve gigabytes (a length prefix must not be trusted: the process's peak
//! virtual memory is checked, see [`MAX_PEAK_GROWTH`]).
//!
//! `GEARS_FUZZ_CASES` sets the number of cases (default 200,000; the extended run uses
//! 1,000,000: `GEARS_FUZZ_CASES=1000000 cargo test --release -p gears codec_fuzz`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::frontier::FrontierRecord;

use crate::codec::{
    ActorMeta, KeptResult, OUTBOX_PROCESSED, OutboxId, OutboxRecord, decode_arguments,
    decode_envelope, decode_outbox, decode_record, decode_state, decode_timer, encode_record,
    encode_state, group_len, kept_expiry, kept_key_of_expiry, outbox_seq_v1, split_variant,
    timer_due, timer_key_state_key,
};

/// Most the process's peak virtual memory may grow while decoding inputs of at most a few
/// hundred bytes. Trusting a length prefix of `u32::MAX` would reserve 4 GiB (virtual memory
/// counts a reservation even if it is never touched); the bound leaves room for other tests
/// of this binary running meanwhile. `unsafe_code` is forbidden, so no counting allocator.
const MAX_PEAK_GROWTH: u64 = 1 << 30;
const DEFAULT_CASES: u64 = 200_000;

/// The process's peak virtual memory (`VmPeak`), in bytes, where /proc exists.
fn peak_virtual_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmPeak:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A state with every shape a user's state may have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rich {
    name: String,
    levels: Vec<u32>,
    holds: BTreeMap<String, Vec<u8>>,
    note: Option<String>,
    phase: Phase,
    big: u128,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Phase {
    Idle,
    Busy { since: u64 },
    Done(String, i64),
}

fn rich() -> Rich {
    Rich {
        name: "sku-42".into(),
        levels: vec![1, 300, 70_000, u32::MAX],
        holds: BTreeMap::from([
            ("o-1".to_string(), vec![1, 2, 3]),
            ("o-2".to_string(), vec![]),
        ]),
        note: Some("fragile".into()),
        phase: Phase::Busy { since: 1 << 40 },
        big: u128::MAX - 7,
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut meta = ActorMeta::default();
    meta.dedup.push("payment-7".into());
    meta.dedup.push("payment-8".into());
    let mut done = rich();
    done.phase = Phase::Done("shipped".into(), -3);
    vec![
        include_bytes!("../../tests/fixtures/state_v1_counter_300.bin").to_vec(),
        include_bytes!("../../tests/fixtures/state_v2_counter_300_with_meta.bin").to_vec(),
        include_bytes!("../../tests/fixtures/outbox_v1_message.bin").to_vec(),
        include_bytes!("../../tests/fixtures/timer_v1_one_shot.bin").to_vec(),
        encode_state(3, &rich()).unwrap(),
        encode_record(3, &meta, &done).unwrap(),
        encode_state(1, &u64::MAX).unwrap(),
        postcard::to_allocvec(&rich()).unwrap(),
        include_bytes!("../../tests/fixtures/state_v3_counter_300_with_replies.bin").to_vec(),
        include_bytes!("../../tests/fixtures/kept_v1_http_result.bin").to_vec(),
        include_bytes!("../../tests/fixtures/outbox_v1_named_message.bin").to_vec(),
        include_bytes!("../../tests/fixtures/timer_v2_named_periodic.bin").to_vec(),
        include_bytes!("../../tests/fixtures/state_v4_counter_300_with_kept_timer.bin").to_vec(),
        include_bytes!("../../tests/fixtures/state_v5_counter_300_with_processed.bin").to_vec(),
        include_bytes!("../../tests/fixtures/outbox_frontier_v1.bin").to_vec(),
        include_bytes!("../../tests/fixtures/outbox_v2_group_of_two.bin").to_vec(),
    ]
}

/// xorshift64*: small, fast, reproducible from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One fuzz input: a mutation of a seed, or random bytes.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = seeds[rng.below(seeds.len())].clone();
    match rng.below(7) {
        // Truncated.
        0 => bytes.truncate(rng.below(bytes.len())),
        // 1-4 bits flipped.
        1 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
        }
        // A byte overwritten with an interesting value.
        2 => {
            let i = rng.below(bytes.len());
            bytes[i] = [0, 1, 2, 3, 0x7f, 0x80, 0xfe, 0xff][rng.below(8)];
        }
        // A huge varint (a length or count prefix) spliced in.
        3 => {
            let i = rng.below(bytes.len());
            bytes.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0x0f]);
        }
        // Random bytes inserted.
        4 => {
            let i = rng.below(bytes.len());
            let noise: Vec<u8> = (0..=rng.below(16)).map(|_| rng.next() as u8).collect();
            bytes.splice(i..i, noise);
        }
        // Extended with trailing garbage.
        5 => bytes.extend((0..=rng.below(8)).map(|_| rng.next() as u8)),
        // Random bytes, usually behind a valid format byte.
        _ => {
            let len = rng.below(64);
            bytes = (0..len).map(|_| rng.next() as u8).collect();
            if let (Some(first), true) = (bytes.first_mut(), rng.below(4) > 0) {
                *first = 1 + rng.below(2) as u8;
            }
        }
    }
    bytes
}

/// Runs every decoder on `bytes`; returns how many accepted it.
fn decode_all(bytes: &[u8]) -> usize {
    [
        decode_record::<u64>(bytes).is_ok(),
        decode_record::<Rich>(bytes).is_ok(),
        decode_state::<Rich>(bytes).is_ok(),
        decode_state::<Vec<String>>(bytes).is_ok(),
        decode_envelope::<OutboxRecord>(bytes).is_ok(),
        decode_timer(bytes).is_ok(),
        decode_envelope::<KeptResult>(bytes).is_ok(),
        decode_arguments::<(Rich,)>("h", bytes).is_ok(),
        decode_arguments::<(BTreeMap<String, Vec<u64>>, u32)>("h", bytes).is_ok(),
        split_variant(bytes).is_ok(),
        outbox_seq_v1(bytes).is_some(),
        OutboxId::of_key(bytes).is_some(),
        timer_due(bytes).is_some(),
        timer_key_state_key(bytes).is_some(),
        kept_expiry(bytes).is_some(),
        kept_key_of_expiry(bytes).is_some(),
        FrontierRecord::decode(bytes).is_ok(),
        decode_outbox(bytes).is_ok(),
        group_len(bytes).is_some(),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count()
}

fn cases() -> u64 {
    std::env::var("GEARS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

#[test]
fn seeds_decode() {
    let seeds = seeds();
    assert_eq!(decode_record::<u64>(&seeds[0]).unwrap().2, 300);
    assert_eq!(decode_record::<u64>(&seeds[1]).unwrap().2, 300);
    assert!(decode_envelope::<OutboxRecord>(&seeds[2]).is_ok());
    assert!(decode_timer(&seeds[3]).is_ok());
    assert_eq!(decode_state::<Rich>(&seeds[4]).unwrap(), (3, rich()));
    assert_eq!(decode_record::<Rich>(&seeds[5]).unwrap().1.dedup.len(), 2);
    assert_eq!(
        decode_arguments::<(Rich,)>("h", &seeds[7]).unwrap().0,
        rich()
    );
    assert_eq!(decode_record::<u64>(&seeds[8]).unwrap().1.replies.len(), 1);
    assert!(decode_envelope::<KeptResult>(&seeds[9]).unwrap().ok);
    assert!(decode_envelope::<OutboxRecord>(&seeds[10]).is_ok());
    assert!(decode_timer(&seeds[11]).is_ok());
    let (_, meta, _) = decode_record::<u64>(&seeds[12]).unwrap();
    assert!(meta.indexed.is_some() && meta.timers[0].message.is_some());
    let (_, meta, _) = decode_record::<u64>(&seeds[13]).unwrap();
    assert_eq!(meta.processed.len(), 2);
    assert_eq!(FrontierRecord::decode(&seeds[14]).unwrap().behind.len(), 1);
    assert_eq!(group_len(&seeds[15]), Some(2));
    assert!(decode_outbox(&seeds[15]).is_ok());
}

#[test]
fn every_truncation_of_every_seed_is_an_error() {
    for seed in seeds() {
        for len in 0..seed.len() {
            let cut = &seed[..len];
            assert!(decode_record::<u64>(cut).is_err() || len > 1);
            assert!(decode_state::<Rich>(cut).is_err(), "{cut:?}");
            assert!(decode_envelope::<OutboxRecord>(cut).is_err(), "{cut:?}");
            assert!(
                decode_outbox(cut).is_err() || cut == OUTBOX_PROCESSED,
                "{cut:?}"
            );
            assert!(decode_timer(cut).is_err(), "{cut:?}");
            assert!(decode_envelope::<KeptResult>(cut).is_err(), "{cut:?}");
            assert!(decode_arguments::<(Rich,)>("h", cut).is_err(), "{cut:?}");
        }
    }
}

#[test]
fn mutated_and_random_inputs_never_panic_or_allocate_hugely() {
    let seeds = seeds();
    let cases = cases();
    let seed = std::env::var("GEARS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15_u64);
    let mut rng = Rng(seed | 1);
    let started = std::time::Instant::now();
    let mut accepted = 0u64;
    let peak_before = peak_virtual_memory();
    for case in 0..cases {
        let input = mutate(&mut rng, &seeds);
        match std::panic::catch_unwind(|| decode_all(&input)) {
            Ok(n) => accepted += n as u64,
            Err(_) => panic!("case {case} (seed {seed}): a decoder panicked on {input:?}"),
        }
    }
    let growth = peak_virtual_memory()
        .zip(peak_before)
        .map(|(after, before)| after.saturating_sub(before));
    if let Some(growth) = growth {
        assert!(
            growth <= MAX_PEAK_GROWTH,
            "peak virtual memory grew by {growth} bytes while decoding small inputs"
        );
    }
    eprintln!(
        "codec fuzz: {cases} cases x 19 decoders in {:.1} s, {accepted} decodes accepted, \
         peak virtual memory grew by {growth:?} bytes",
        started.elapsed().as_secs_f64(),
    );
}
