//! Resync bookkeeping: the SyncTarget's request planner (fixed `resync-rate` or the
//! `c-plan-ahead` controller of drbd_worker.c drbd_rs_controller) and the bitmap-exchange cursor
//! (spec §11).

use std::collections::VecDeque;

use crate::handshake::PeerSyncParams;

/// Largest resync request (kernel: bounded by max_bio_size; we use 128 KiB = 32 bits).
pub const RS_MAX_REQUEST_BITS: u64 = 32;
/// Resync extent: 16 MiB = 4096 bits; requests never cross one.
pub const RS_EXTENT_BITS: u64 = 4096;

/// Settings the SyncTarget plans with (after the exchange, the peer's; spec §5.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSettings {
    pub resync_rate_kib: u32,
    pub c_plan_ahead_ds: u32,
    pub c_delay_target_ds: u32,
    pub c_fill_target_sect: u32,
    pub c_max_rate_kib: u32,
}

impl From<&PeerSyncParams> for RateSettings {
    fn from(p: &PeerSyncParams) -> Self {
        RateSettings {
            resync_rate_kib: p.resync_rate_kib,
            c_plan_ahead_ds: p.c_plan_ahead_ds,
            c_delay_target_ds: p.c_delay_target_ds,
            c_fill_target_sect: p.c_fill_target_sect,
            c_max_rate_kib: p.c_max_rate_kib,
        }
    }
}

/// The dynamic controller's plan (a FIFO of corrections over `c-plan-ahead` steps).
#[derive(Clone, Debug, Default)]
pub struct Controller {
    plan: VecDeque<i64>,
    total: i64,
}

impl Controller {
    pub fn reset(&mut self) {
        self.plan.clear();
        self.total = 0;
    }

    /// Sectors to request this 100 ms tick. `sect_in`: resync sectors that arrived since the last
    /// tick; `in_flight`: sectors requested and not yet answered.
    pub fn sectors_this_tick(&mut self, s: &RateSettings, sect_in: u64, in_flight: u64) -> u64 {
        if s.c_plan_ahead_ds == 0 {
            // Fixed rate: KiB/s → sectors per 100 ms.
            return s.resync_rate_kib as u64 * 2 / 10;
        }
        let steps = s.c_plan_ahead_ds as i64; // plan-ahead in 100 ms steps
        if self.plan.len() != steps as usize {
            self.plan = VecDeque::from(vec![0; steps as usize]);
            self.total = 0;
        }
        let want: i64 = if in_flight + sect_in == 0 {
            // Start-up: what the fixed rate would deliver over the plan-ahead window.
            (s.resync_rate_kib as i64 * 2 / 10) * steps
        } else if s.c_fill_target_sect != 0 {
            s.c_fill_target_sect as i64
        } else {
            sect_in as i64 * s.c_delay_target_ds as i64
        };
        let correction = want - in_flight as i64 - self.total;
        let cps = correction / steps;
        for v in self.plan.iter_mut() {
            *v += cps;
        }
        self.total += cps * steps;
        let curr = self.plan.pop_front().unwrap_or(0);
        self.plan.push_back(0);
        self.total -= curr;
        let req = (sect_in as i64 + curr).max(0) as u64;
        let max = s.c_max_rate_kib as u64 * 2 / 10;
        req.min(max)
    }
}

/// One volume's resync progress.
#[derive(Clone, Debug, Default)]
pub struct Resync {
    /// Bits set at start (`rs_total`).
    pub total: u64,
    /// Next bit the SyncTarget scans from (`bm_resync_fo`).
    pub cursor: u64,
    /// Requests sent and not answered: (sector, bytes).
    pub in_flight: Vec<(u64, u32)>,
    /// Sectors that arrived since the last tick (controller input).
    pub sect_in: u64,
    /// Blocks that failed (NEG_RS_DREPLY or local write error).
    pub failed: u64,
    pub controller: Controller,
    pub settings: Option<RateSettings>,
    pub paused: bool,
}

impl Resync {
    pub fn in_flight_sectors(&self) -> u64 {
        self.in_flight.iter().map(|(_, l)| *l as u64 / 512).sum()
    }
}

/// Cursor of one direction of the bitmap exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BmCursor {
    pub bit: u64,
    pub word: u64,
    pub done: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(plan: u32) -> RateSettings {
        RateSettings {
            resync_rate_kib: 250,
            c_plan_ahead_ds: plan,
            c_delay_target_ds: 10,
            c_fill_target_sect: 100,
            c_max_rate_kib: 102_400,
        }
    }

    #[test]
    fn fixed_rate_is_rate_per_tick() {
        // 250 KiB/s → 25 KiB per 100 ms = 50 sectors.
        let mut c = Controller::default();
        assert_eq!(c.sectors_this_tick(&settings(0), 0, 0), 50);
    }

    #[test]
    fn controller_follows_the_kernel_plan() {
        // drbd_rs_controller by hand, c-plan-ahead 20, resync-rate 250, c-fill-target 100:
        // tick 1 (nothing in flight): want = 50 × 20 = 1000, cps = 50, request 0 + 50 = 50.
        // tick 2 (50 in flight, none in): want = 100, correction = 100 − 50 − 950 = −900,
        //   cps = −45, head = 50 − 45 = 5, request 0 + 5 = 5.
        let mut c = Controller::default();
        let s = settings(20);
        assert_eq!(c.sectors_this_tick(&s, 0, 0), 50);
        assert_eq!(c.sectors_this_tick(&s, 0, 50), 5);
        // Bounded by c-max-rate (102400 KiB/s = 20480 sectors per tick) whatever comes in.
        for _ in 0..100 {
            assert!(c.sectors_this_tick(&s, 1 << 20, 0) <= 20480);
        }
    }
}
