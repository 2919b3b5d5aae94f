//! The simulated network between two nodes: one DRBD connection = two TCP sockets.
//!
//! Model:
//! - A node asks to connect (`want_connect`); when both want it and no partition separates them,
//!   the pair of sockets is established after a drawn delay and both nodes learn it in the same
//!   instant (the daemon's socket pairing, spec §2.2, is transport and not simulated).
//! - Bytes sent on a socket arrive in order, each message after a drawn delay, never before the
//!   previous one on that socket (TCP). Messages may be split into smaller chunks.
//! - A partition holds traffic (TCP retransmits); healing it releases the held bytes in order.
//! - A cut kills the connection: what was not delivered yet is lost, and both nodes see the
//!   connection close after a short delay. A node closing its sockets (`close`) lets the bytes it
//!   already sent arrive first, then the peer sees the close (FIN after data).
//! - Every connection has an id; anything left over from an older connection is discarded.

use std::collections::VecDeque;

use crate::prng::Prng;

/// The two sockets of a DRBD connection (spec §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sock {
    Data = 0,
    Meta = 1,
}

#[derive(Clone, Debug, Default)]
pub struct NetFaults {
    pub delay_min_ns: u64,
    pub delay_max_ns: u64,
    pub connect_delay_min_ns: u64,
    pub connect_delay_max_ns: u64,
    /// Probability (ppm) that a message is delivered in two chunks instead of one.
    pub split_ppm: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    Connected,
    Received { sock: Sock, bytes: Vec<u8> },
    ConnectionLost,
}

#[derive(Clone, Debug)]
struct Msg {
    deliver_at_ns: u64,
    bytes: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// No connection.
    Down,
    /// Sockets will be paired at this time.
    Connecting { at_ns: u64 },
    /// The connection is up.
    Up,
    /// The connection is going away; node i learns it at `lost_at_ns[i]` (None: it knows).
    /// `fin[i]`: that news travels over the network (a FIN), so a partition holds it.
    Closing {
        lost_at_ns: [Option<u64>; 2],
        fin: [bool; 2],
    },
}

pub struct Net {
    faults: NetFaults,
    prng: Prng,
    phase: Phase,
    want: [bool; 2],
    pending_connected: [bool; 2],
    partitioned: bool,
    /// queues[from][sock]
    queues: [[VecDeque<Msg>; 2]; 2],
    conn_id: u64,
    pub stats: NetStats,
}

#[derive(Clone, Debug, Default)]
pub struct NetStats {
    pub connections: u64,
    pub messages: u64,
    pub bytes: u64,
    pub cuts: u64,
    pub partitions: u64,
    pub dropped_messages: u64,
}

impl Net {
    pub fn new(faults: NetFaults, prng: Prng) -> Net {
        assert!(faults.delay_min_ns <= faults.delay_max_ns);
        assert!(faults.connect_delay_min_ns <= faults.connect_delay_max_ns);
        Net {
            faults,
            prng,
            phase: Phase::Down,
            want: [false; 2],
            pending_connected: [false; 2],
            partitioned: false,
            queues: Default::default(),
            conn_id: 0,
            stats: NetStats::default(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    pub fn is_down(&self) -> bool {
        self.phase == Phase::Down
    }

    pub fn is_partitioned(&self) -> bool {
        self.partitioned
    }

    pub fn connection_id(&self) -> u64 {
        self.conn_id
    }

    pub fn wants(&self, n: usize) -> bool {
        self.want[n]
    }

    /// Node `n` starts (or stops) listening and connecting.
    pub fn want_connect(&mut self, now_ns: u64, n: usize, want: bool) {
        self.want[n] = want;
        if !want {
            if let Phase::Connecting { .. } = self.phase {
                self.phase = Phase::Down;
            }
        }
        self.maybe_start_connecting(now_ns);
    }

    /// Node `n` sends bytes to its peer on `sock`. Dropped when the connection is not up (a send
    /// on a dead socket fails; the node learns about the loss separately).
    pub fn send(&mut self, now_ns: u64, from: usize, sock: Sock, bytes: Vec<u8>) {
        let closing_sender =
            matches!(self.phase, Phase::Closing { lost_at_ns, .. } if lost_at_ns[from].is_some());
        if !(self.is_up() || closing_sender) || bytes.is_empty() {
            self.stats.dropped_messages += 1;
            return;
        }
        self.stats.messages += 1;
        self.stats.bytes += bytes.len() as u64;
        let delay = self.delay();
        let split = bytes.len() > 1 && self.prng.chance(self.faults.split_ppm);
        let cut_at = if split {
            self.prng.range(1, bytes.len() as u64 - 1) as usize
        } else {
            0
        };
        let queue = &mut self.queues[from][sock as usize];
        let floor = queue.back().map_or(0, |m| m.deliver_at_ns);
        let at = (now_ns + delay).max(floor);
        if split {
            let (a, b) = bytes.split_at(cut_at);
            queue.push_back(Msg {
                deliver_at_ns: at,
                bytes: a.to_vec(),
            });
            queue.push_back(Msg {
                deliver_at_ns: at,
                bytes: b.to_vec(),
            });
        } else {
            queue.push_back(Msg {
                deliver_at_ns: at,
                bytes,
            });
        }
    }

    /// Node `n` closes both sockets (the engine's Disconnect); it knows, so it is not told. The
    /// bytes `n` sent before arrive, then the peer learns of the close.
    pub fn close(&mut self, now_ns: u64, n: usize) {
        self.want[n] = false;
        let peer = 1 - n;
        match self.phase.clone() {
            Phase::Up => {
                // Bytes towards n are discarded (its socket is gone); bytes from n drain first.
                self.drop_queue(peer);
                let last = self.queues[n]
                    .iter()
                    .filter_map(|q| q.back())
                    .map(|m| m.deliver_at_ns)
                    .max();
                let fin_at = last.unwrap_or(now_ns).max(now_ns) + self.delay();
                let mut lost_at_ns = [None, None];
                lost_at_ns[peer] = Some(fin_at);
                let mut fin = [false, false];
                fin[peer] = true;
                self.pending_connected = [false, false];
                self.phase = Phase::Closing { lost_at_ns, fin };
            }
            Phase::Connecting { .. } => self.phase = Phase::Down,
            Phase::Closing {
                mut lost_at_ns,
                fin,
            } => {
                lost_at_ns[n] = None;
                self.drop_queue(peer);
                self.phase = Phase::Closing { lost_at_ns, fin };
                self.maybe_finish_closing(now_ns);
            }
            Phase::Down => {}
        }
    }

    /// A fault: the connection breaks. Undelivered bytes are lost and both nodes see the socket
    /// error after a short delay.
    pub fn cut(&mut self, now_ns: u64) {
        match self.phase {
            Phase::Up => {
                self.stats.cuts += 1;
                self.drop_queue(0);
                self.drop_queue(1);
                let a = now_ns + self.delay();
                let b = now_ns + self.delay();
                self.pending_connected = [false, false];
                self.phase = Phase::Closing {
                    lost_at_ns: [Some(a), Some(b)],
                    fin: [false, false],
                };
            }
            Phase::Connecting { .. } => {
                // A failed attempt: the connect loop tries again.
                self.phase = Phase::Down;
                self.maybe_start_connecting(now_ns);
            }
            _ => {}
        }
    }

    pub fn set_partitioned(&mut self, now_ns: u64, partitioned: bool) {
        if partitioned && !self.partitioned {
            self.stats.partitions += 1;
            if let Phase::Connecting { .. } = self.phase {
                self.phase = Phase::Down;
            }
        }
        self.partitioned = partitioned;
        if !partitioned {
            // Held traffic resumes; nothing may arrive in the past.
            for queue in self.queues.iter_mut().flatten() {
                for m in queue.iter_mut() {
                    m.deliver_at_ns = m.deliver_at_ns.max(now_ns);
                }
            }
            if let Phase::Closing { lost_at_ns, fin } = &mut self.phase {
                for i in 0..2 {
                    if fin[i] {
                        if let Some(t) = &mut lost_at_ns[i] {
                            *t = (*t).max(now_ns);
                        }
                    }
                }
            }
            self.maybe_start_connecting(now_ns);
        }
    }

    /// The earliest time something is due.
    pub fn next_event_ns(&self) -> Option<u64> {
        match &self.phase {
            Phase::Down => None,
            Phase::Connecting { at_ns } => Some(*at_ns),
            Phase::Up | Phase::Closing { .. } => {
                if self.pending_connected.iter().any(|p| *p) {
                    return Some(0);
                }
                let mut next = None;
                if !self.partitioned {
                    next = self
                        .queues
                        .iter()
                        .flatten()
                        .filter_map(|q| q.front())
                        .map(|m| m.deliver_at_ns)
                        .min();
                }
                if let Phase::Closing { lost_at_ns, fin } = &self.phase {
                    for i in 0..2 {
                        if fin[i] && self.partitioned {
                            continue;
                        }
                        if let Some(t) = lost_at_ns[i] {
                            next = Some(next.map_or(t, |n: u64| n.min(t)));
                        }
                    }
                }
                next
            }
        }
    }

    /// The next due event (at most one, so the caller can feed it and let the node react before
    /// anything else happens), with the node it is for.
    pub fn poll(&mut self, now_ns: u64) -> Option<(usize, NetEvent)> {
        if let Phase::Connecting { at_ns } = self.phase {
            if at_ns > now_ns {
                return None;
            }
            // Both nodes learn it in this instant, before any byte can flow.
            self.conn_id += 1;
            self.stats.connections += 1;
            self.phase = Phase::Up;
            self.pending_connected = [true, true];
        }
        if let Some(n) = self.pending_connected.iter().position(|p| *p) {
            self.pending_connected[n] = false;
            return Some((n, NetEvent::Connected));
        }
        match self.phase {
            Phase::Up | Phase::Closing { .. } => self.poll_traffic(now_ns),
            _ => None,
        }
    }

    fn poll_traffic(&mut self, now_ns: u64) -> Option<(usize, NetEvent)> {
        // Earliest due message (ties: lower sender, Data before Meta), unless partitioned.
        let mut best: Option<(u64, usize, usize)> = None;
        if !self.partitioned {
            for from in 0..2 {
                for sock in 0..2 {
                    if let Some(m) = self.queues[from][sock].front() {
                        if m.deliver_at_ns <= now_ns
                            && best.map_or(true, |(t, _, _)| m.deliver_at_ns < t)
                        {
                            best = Some((m.deliver_at_ns, from, sock));
                        }
                    }
                }
            }
        }
        let mut lost: Option<(u64, usize)> = None;
        if let Phase::Closing { lost_at_ns, fin } = &self.phase {
            for i in 0..2 {
                if fin[i] && self.partitioned {
                    continue;
                }
                if let Some(t) = lost_at_ns[i] {
                    if t <= now_ns && lost.map_or(true, |(lt, _)| t < lt) {
                        lost = Some((t, i));
                    }
                }
            }
        }
        // Bytes due no later than the close go first (data before FIN).
        match (best, lost) {
            (Some((t, from, sock)), l) if l.map_or(true, |(lt, _)| t <= lt) => {
                let m = self.queues[from][sock]
                    .pop_front()
                    .expect("front seen above");
                let sock = if sock == 0 { Sock::Data } else { Sock::Meta };
                Some((
                    1 - from,
                    NetEvent::Received {
                        sock,
                        bytes: m.bytes,
                    },
                ))
            }
            (_, Some((_, i))) => {
                if let Phase::Closing { lost_at_ns, .. } = &mut self.phase {
                    lost_at_ns[i] = None;
                }
                // Once told, the node's socket is gone: nothing more arrives for it.
                self.drop_queue(1 - i);
                self.maybe_finish_closing(now_ns);
                Some((i, NetEvent::ConnectionLost))
            }
            _ => None,
        }
    }

    fn maybe_finish_closing(&mut self, now_ns: u64) {
        if let Phase::Closing {
            lost_at_ns: [None, None],
            ..
        } = self.phase
        {
            self.drop_queue(0);
            self.drop_queue(1);
            self.phase = Phase::Down;
            self.maybe_start_connecting(now_ns);
        }
    }

    fn maybe_start_connecting(&mut self, now_ns: u64) {
        if self.phase == Phase::Down && self.want[0] && self.want[1] && !self.partitioned {
            let d = self.prng.range(
                self.faults.connect_delay_min_ns,
                self.faults.connect_delay_max_ns,
            );
            self.phase = Phase::Connecting { at_ns: now_ns + d };
        }
    }

    /// Discards everything sent by `from` that has not arrived.
    fn drop_queue(&mut self, from: usize) {
        for q in &mut self.queues[from] {
            self.stats.dropped_messages += q.len() as u64;
            q.clear();
        }
    }

    fn delay(&mut self) -> u64 {
        self.prng
            .range(self.faults.delay_min_ns, self.faults.delay_max_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Net {
        let faults = NetFaults {
            delay_min_ns: 10,
            delay_max_ns: 1000,
            connect_delay_min_ns: 5,
            connect_delay_max_ns: 5,
            split_ppm: 0,
        };
        Net::new(faults, Prng::new(9))
    }

    /// Runs the network until nothing is due, returning every event with its time.
    fn drain(n: &mut Net, mut now: u64) -> Vec<(u64, usize, NetEvent)> {
        let mut out = Vec::new();
        while let Some(t) = n.next_event_ns() {
            now = now.max(t);
            while let Some((node, ev)) = n.poll(now) {
                out.push((now, node, ev));
            }
        }
        out
    }

    fn connect(n: &mut Net) -> u64 {
        n.want_connect(0, 0, true);
        n.want_connect(0, 1, true);
        let ev = drain(n, 0);
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|(_, _, e)| *e == NetEvent::Connected));
        assert!(n.is_up());
        ev[1].0
    }

    #[test]
    fn connects_only_when_both_want_and_not_partitioned() {
        let mut n = net();
        n.want_connect(0, 0, true);
        assert_eq!(n.next_event_ns(), None);
        n.set_partitioned(0, true);
        n.want_connect(0, 1, true);
        assert_eq!(n.next_event_ns(), None);
        n.set_partitioned(100, false);
        let ev = drain(&mut n, 100);
        assert_eq!(ev.len(), 2);
        assert_eq!(n.connection_id(), 1);
    }

    #[test]
    fn bytes_arrive_in_order_per_socket() {
        let mut n = net();
        let t = connect(&mut n);
        for i in 0..50u8 {
            n.send(t, 0, Sock::Data, vec![i]);
            n.send(t, 0, Sock::Meta, vec![100 + i]);
            n.send(t, 1, Sock::Data, vec![200 - i]);
        }
        let ev = drain(&mut n, t);
        let data0: Vec<u8> = ev
            .iter()
            .filter_map(|(_, to, e)| match e {
                NetEvent::Received {
                    sock: Sock::Data,
                    bytes,
                } if *to == 1 => Some(bytes[0]),
                _ => None,
            })
            .collect();
        assert_eq!(data0, (0..50).collect::<Vec<u8>>());
        let meta0: Vec<u8> = ev
            .iter()
            .filter_map(|(_, to, e)| match e {
                NetEvent::Received {
                    sock: Sock::Meta,
                    bytes,
                } if *to == 1 => Some(bytes[0]),
                _ => None,
            })
            .collect();
        assert_eq!(meta0, (100..150).collect::<Vec<u8>>());
        assert_eq!(ev.iter().filter(|(_, to, _)| *to == 0).count(), 50);
        // Times never go backwards.
        assert!(ev.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn split_messages_reassemble_to_the_same_stream() {
        let mut n = net();
        n.faults.split_ppm = 1_000_000;
        let t = connect(&mut n);
        let sent: Vec<u8> = (0..=255).collect();
        for chunk in sent.chunks(16) {
            n.send(t, 1, Sock::Data, chunk.to_vec());
        }
        let got: Vec<u8> = drain(&mut n, t)
            .into_iter()
            .flat_map(|(_, _, e)| match e {
                NetEvent::Received { bytes, .. } => bytes,
                _ => vec![],
            })
            .collect();
        assert_eq!(got, sent);
    }

    #[test]
    fn cut_loses_undelivered_bytes_and_tells_both() {
        let mut n = net();
        let t = connect(&mut n);
        n.send(t, 0, Sock::Data, vec![1, 2, 3]);
        n.cut(t);
        let ev = drain(&mut n, t);
        // Both are told; both still want to connect, so a new connection comes up.
        assert_eq!(ev.len(), 4);
        assert!(ev[..2]
            .iter()
            .all(|(_, _, e)| *e == NetEvent::ConnectionLost));
        assert!(ev[2..].iter().all(|(_, _, e)| *e == NetEvent::Connected));
        assert_eq!(n.connection_id(), 2);
        assert!(n.is_up());
    }

    #[test]
    fn graceful_close_delivers_sent_bytes_before_the_close() {
        let mut n = net();
        let t = connect(&mut n);
        n.send(t, 0, Sock::Data, vec![7]);
        n.send(t, 1, Sock::Data, vec![8]);
        n.close(t, 0);
        let ev = drain(&mut n, t);
        let to1: Vec<&NetEvent> = ev
            .iter()
            .filter(|(_, to, _)| *to == 1)
            .map(|(_, _, e)| e)
            .collect();
        assert_eq!(
            to1,
            vec![
                &NetEvent::Received {
                    sock: Sock::Data,
                    bytes: vec![7]
                },
                &NetEvent::ConnectionLost
            ]
        );
        // Node 0 closed, so it is not told and does not get the peer's late bytes.
        assert!(ev.iter().all(|(_, to, _)| *to == 1));
        // Once both ends know, the connection is gone; node 1's own close is then harmless.
        assert!(n.is_down());
        n.close(t + 5000, 1);
        assert!(n.is_down());
    }

    #[test]
    fn partition_holds_traffic_until_healed() {
        let mut n = net();
        let t = connect(&mut n);
        n.set_partitioned(t, true);
        n.send(t, 0, Sock::Meta, vec![1]);
        assert_eq!(n.next_event_ns(), None);
        assert!(drain(&mut n, t).is_empty());
        n.set_partitioned(t + 1_000_000, false);
        let ev = drain(&mut n, t + 1_000_000);
        assert_eq!(
            ev,
            vec![(
                t + 1_000_000,
                1,
                NetEvent::Received {
                    sock: Sock::Meta,
                    bytes: vec![1]
                }
            )]
        );
    }

    #[test]
    fn closing_under_partition_holds_the_fin() {
        let mut n = net();
        let t = connect(&mut n);
        n.set_partitioned(t, true);
        n.close(t, 0);
        assert!(drain(&mut n, t).is_empty());
        // The other side times out on its own and closes too: the connection is gone.
        n.close(t + 10, 1);
        assert!(n.is_down());
    }

    #[test]
    fn stale_bytes_never_reach_a_new_connection() {
        let mut n = net();
        let t = connect(&mut n);
        n.set_partitioned(t, true);
        n.send(t, 0, Sock::Data, vec![1]);
        n.close(t, 0);
        n.close(t, 1);
        n.want_connect(t, 0, true);
        n.want_connect(t, 1, true);
        n.set_partitioned(t + 100, false);
        let ev = drain(&mut n, t + 100);
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|(_, _, e)| *e == NetEvent::Connected));
    }
}
