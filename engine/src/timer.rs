//! Time as an argument, and the engine's timers as a closed enum indexing a table (quinn's
//! `connection/timer.rs` shape): `poll_timeout` is the minimum armed entry.

/// Nanoseconds on the caller's monotonic clock. The engine never reads a clock itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

impl Instant {
    pub const fn from_millis(ms: u64) -> Instant {
        Instant(ms * 1_000_000)
    }
    pub fn saturating_add_ns(self, ns: u64) -> Instant {
        Instant(self.0.saturating_add(ns))
    }
    pub fn as_nanos(self) -> u64 {
        self.0
    }
}

/// Tenths of a second (the unit of DRBD's `timeout`, `ping-timeout`, `c-plan-ahead`) in ns.
pub const DECISECOND_NS: u64 = 100_000_000;
pub const SECOND_NS: u64 = 1_000_000_000;
/// The resync controller ticks every 100 ms (drbd_worker.c: `SLEEP_TIME` = HZ/10).
pub const RESYNC_TICK_NS: u64 = 100_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// No packet received for `ping-int` seconds: send `P_PING`.
    PingInterval = 0,
    /// A `P_PING` is outstanding; no `P_PING_ACK` within `ping-timeout` drops the connection.
    PingTimeout = 1,
    /// The handshake must finish within 4 × `ping-timeout` per packet wait (spec §2.4).
    Handshake = 2,
    /// SyncTarget request planning (every 100 ms).
    ResyncTick = 3,
    /// ko-count × timeout: the oldest request waiting for an ack or barrier ack.
    RequestTimeout = 4,
}

impl Timer {
    pub const VALUES: [Timer; 5] = [
        Timer::PingInterval,
        Timer::PingTimeout,
        Timer::Handshake,
        Timer::ResyncTick,
        Timer::RequestTimeout,
    ];
}

#[derive(Clone, Debug, Default)]
pub struct TimerTable {
    data: [Option<Instant>; 5],
}

impl TimerTable {
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.data[timer as usize] = Some(at);
    }
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.data[timer as usize]
    }
    pub fn stop(&mut self, timer: Timer) {
        self.data[timer as usize] = None;
    }
    pub fn stop_all(&mut self) {
        self.data = [None; 5];
    }
    pub fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().filter_map(|t| *t).min()
    }
    /// Whether `timer` is armed and due at `now`; a due timer is disarmed.
    pub fn take_expired(&mut self, timer: Timer, now: Instant) -> bool {
        match self.data[timer as usize] {
            Some(at) if at <= now => {
                self.data[timer as usize] = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_timeout_is_minimum_and_expiry_disarms() {
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::ResyncTick, Instant(50));
        t.set(Timer::PingInterval, Instant(20));
        assert_eq!(t.next_timeout(), Some(Instant(20)));
        assert!(!t.take_expired(Timer::PingInterval, Instant(19)));
        assert!(t.take_expired(Timer::PingInterval, Instant(20)));
        assert_eq!(t.next_timeout(), Some(Instant(50)));
    }
}
