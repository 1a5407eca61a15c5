//! A tiny deterministic random number generator (SplitMix64): workloads pick keys at
//! random, reproducibly, without another dependency.

/// SplitMix64: fast, statistically fine for picking keys, not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for key choice, no division.
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// `take` distinct numbers of `0..n` in random order (all of them if `take >= n`).
    pub(crate) fn sample_distinct(&mut self, n: u64, take: usize) -> Vec<u64> {
        if (take as u64).saturating_mul(4) < n && take <= 64 {
            // A few out of many (an order's lines): draw again on a repeat, no big buffer.
            let mut picked = Vec::with_capacity(take);
            while picked.len() < take {
                let i = self.below(n);
                if !picked.contains(&i) {
                    picked.push(i);
                }
            }
            return picked;
        }
        let mut all: Vec<u64> = (0..n).collect();
        let take = take.min(all.len());
        for i in 0..take {
            let j = i + self.below((all.len() - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(take);
        all
    }
}
