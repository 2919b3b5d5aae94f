//! The only source of randomness in the simulator: a seeded xoshiro256** generator.
//!
//! We keep our own generator (instead of pulling in `rand`) so that a seed replays the same run
//! forever, whatever version of an external crate is resolved.

/// xoshiro256** (Blackman & Vigna), seeded through splitmix64 so that any `u64` is a good seed.
#[derive(Clone, Debug)]
pub struct Prng {
    s: [u64; 4],
}

impl Prng {
    pub fn new(seed: u64) -> Prng {
        let mut sm = seed;
        let mut s = [0u64; 4];
        for word in &mut s {
            *word = splitmix64(&mut sm);
        }
        // The all-zero state is the one fixed point of xoshiro; splitmix never yields four zeros,
        // but keep the guarantee explicit.
        assert!(s.iter().any(|w| *w != 0));
        Prng { s }
    }

    /// A generator for a sub-system, so that drawing more values in one place does not shift the
    /// values another place sees (TigerBeetle hands out sub-seeds the same way).
    pub fn fork(&mut self) -> Prng {
        Prng::new(self.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift; the tiny bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "range({lo}, {hi})");
        if hi - lo == u64::MAX {
            return self.next_u64();
        }
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_million` / 1_000_000.
    pub fn chance(&mut self, per_million: u32) -> bool {
        self.below(1_000_000) < u64::from(per_million)
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// Index drawn with the given weights; all-zero weights pick index 0.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        if total == 0 {
            return 0;
        }
        let mut pick = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if pick < u64::from(*w) {
                return i;
            }
            pick -= u64::from(*w);
        }
        unreachable!("pick < total by construction")
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_different_seeds_differ() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut p = Prng::new(7);
                move |_| p.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut p = Prng::new(7);
                move |_| p.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..8)
            .map({
                let mut p = Prng::new(8);
                move |_| p.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn below_and_range_stay_in_bounds_and_hit_both_ends() {
        let mut p = Prng::new(1);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = p.range(10, 14);
            assert!((10..=14).contains(&v));
            seen[(v - 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn weighted_never_picks_zero_weight() {
        let mut p = Prng::new(3);
        for _ in 0..1000 {
            assert_ne!(p.weighted(&[5, 0, 5]), 1);
        }
    }
}
