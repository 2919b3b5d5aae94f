//! The Secondary's write epochs (spec §7.2): writes received between two `P_BARRIER`s form an
//! epoch; once all are written and flushed, `P_BARRIER_ACK(n, writes)` goes back, strictly in
//! order. An epoch without writes is never acknowledged.

use std::collections::VecDeque;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxEpoch {
    /// Local id (the `epoch` of a `PeerWrite`).
    pub id: u64,
    /// The peer's barrier number bytes, once its `P_BARRIER` arrived.
    pub barrier: Option<[u8; 4]>,
    pub writes: u32,
    pub pending: u32,
    /// The flush for this epoch is in flight.
    pub flushing: bool,
}

#[derive(Clone, Debug, Default)]
pub struct RxEpochs {
    pub list: VecDeque<RxEpoch>,
    next_id: u64,
}

impl RxEpochs {
    pub fn reset(&mut self) {
        self.list.clear();
        self.open();
    }
    fn open(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        self.list.push_back(RxEpoch {
            id,
            barrier: None,
            writes: 0,
            pending: 0,
            flushing: false,
        });
    }
    /// A received write joins the current epoch; returns its id.
    pub fn add_write(&mut self, pending: bool) -> u64 {
        if self.list.is_empty() {
            self.open();
        }
        let e = self.list.back_mut().expect("opened above");
        e.writes += 1;
        if pending {
            e.pending += 1;
        }
        e.id
    }
    /// `P_BARRIER`: the current epoch gets its number and a new one opens. A barrier for an
    /// empty epoch is ignored (the kernel never acks it).
    pub fn barrier(&mut self, nr: [u8; 4]) {
        if self.list.is_empty() {
            self.open();
        }
        let e = self.list.back_mut().expect("opened above");
        if e.writes == 0 {
            return;
        }
        e.barrier = Some(nr);
        self.open();
    }
    pub fn write_done(&mut self, id: u64) {
        if let Some(e) = self.list.iter_mut().find(|e| e.id == id) {
            e.pending = e.pending.saturating_sub(1);
        }
    }
    /// The oldest epoch if it is closed, complete and not yet flushing: ready for its flush.
    pub fn ready_to_flush(&mut self) -> Option<u64> {
        let e = self.list.front_mut()?;
        if e.barrier.is_some() && e.pending == 0 && !e.flushing {
            e.flushing = true;
            return Some(e.id);
        }
        None
    }
    /// The flush of the oldest epoch finished: returns (barrier bytes, set size) to ack.
    pub fn flushed(&mut self, id: u64) -> Option<([u8; 4], u32)> {
        let e = self.list.front()?;
        if e.id != id {
            return None;
        }
        let e = self.list.pop_front()?;
        if self.list.is_empty() {
            self.open();
        }
        Some((e.barrier?, e.writes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrier_acks_in_order_with_set_size() {
        let mut r = RxEpochs::default();
        r.reset();
        let a = r.add_write(true);
        let _ = r.add_write(true);
        r.barrier([1, 0, 0, 0]);
        assert_eq!(r.ready_to_flush(), None, "writes still pending");
        r.write_done(a);
        r.write_done(a);
        let id = r.ready_to_flush().expect("complete");
        assert_eq!(r.flushed(id), Some(([1, 0, 0, 0], 2)));
    }

    #[test]
    fn empty_epoch_barrier_is_never_acked() {
        let mut r = RxEpochs::default();
        r.reset();
        r.barrier([9, 0, 0, 0]);
        assert_eq!(r.ready_to_flush(), None);
    }
}
