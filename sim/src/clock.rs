//! Simulated time. The simulator keeps one global time in nanoseconds; each node sees it through
//! its own clock with an offset and a drift, like two machines' monotonic clocks.

/// A node's monotonic clock: `local = global + global * drift_ppm / 1e6 + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeClock {
    pub offset_ns: u64,
    /// Parts per million, −500..=500 (NTP-free quartz is within ±100 ppm; we exaggerate).
    pub drift_ppm: i32,
}

const PPM: i128 = 1_000_000;

impl NodeClock {
    pub fn local(&self, global_ns: u64) -> u64 {
        let g = i128::from(global_ns);
        let local = g + g * i128::from(self.drift_ppm) / PPM + i128::from(self.offset_ns);
        // Offsets are non-negative and drift is far above −100 %, so this never goes negative.
        u64::try_from(local).expect("local clock stays non-negative")
    }

    /// The earliest global time at which the local clock reads at least `local_ns`.
    pub fn global_at(&self, local_ns: u64) -> u64 {
        if local_ns <= self.offset_ns {
            return 0;
        }
        let l = i128::from(local_ns - self.offset_ns);
        let denominator = PPM + i128::from(self.drift_ppm);
        let mut g = u64::try_from((l * PPM) / denominator)
            .unwrap_or(u64::MAX)
            .saturating_sub(2);
        // The division rounds; step forward to the first exact instant (a handful of steps).
        while self.local(g) < local_ns {
            g += 1;
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_is_monotonic_and_global_at_inverts_it() {
        for drift_ppm in [-500, -1, 0, 1, 37, 500] {
            let c = NodeClock {
                offset_ns: 123_456_789,
                drift_ppm,
            };
            let mut last = 0;
            for g in [0u64, 1, 999, 1_000_000, 5_000_000_000, 86_400_000_000_000] {
                let l = c.local(g);
                assert!(l >= last);
                last = l;
                let back = c.global_at(l);
                assert!(back <= g, "drift {drift_ppm}: {back} > {g}");
                assert!(c.local(back) >= l);
                if back > 0 {
                    assert!(c.local(back - 1) < l);
                }
            }
        }
    }

    #[test]
    fn drift_changes_elapsed_time() {
        let fast = NodeClock {
            offset_ns: 0,
            drift_ppm: 100,
        };
        assert_eq!(fast.local(1_000_000_000), 1_000_100_000);
        let slow = NodeClock {
            offset_ns: 5,
            drift_ppm: -100,
        };
        assert_eq!(slow.local(1_000_000_000), 999_900_005);
    }
}
