//! Fake network: drops, duplicates, delays (and so reorders) messages, and blocks links
//! to model symmetric and one-way partitions. Delivery order is fully determined by the
//! seeded RNG: messages are keyed by (delivery tick, send sequence number).

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::Rng;

use super::storage::Entry;
use crate::raft::Message;

/// Fault rates of the network; all probabilities are per message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetFaults {
    pub drop: f64,
    pub duplicate: f64,
    /// Probability of an extra, long delay (the message overtakes nothing and is overtaken).
    pub reorder: f64,
    pub delay_ticks_min: u64,
    pub delay_ticks_max: u64,
}

impl NetFaults {
    /// A healed network: no loss, no duplicates, short bounded delays.
    pub fn healed() -> Self {
        NetFaults {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay_ticks_min: 1,
            delay_ticks_max: 2,
        }
    }
}

/// A message on the wire with the payloads of the records it carries (AppendEntries only),
/// as the sender's driver attached them from its log.
#[derive(Clone, Debug)]
pub struct Packet {
    pub msg: Message,
    pub payload: Vec<Entry>,
}

/// The simulated network between `n` replicas, addressed by position `0..n`.
#[derive(Debug)]
pub struct Network {
    in_flight: BTreeMap<(u64, u64), (usize, usize, Packet)>,
    seq: u64,
    /// `blocked[from][to]`: the link drops everything.
    blocked: Vec<Vec<bool>>,
    pub faults: NetFaults,
    pub sent: u64,
    pub dropped: u64,
    pub delivered: u64,
}

impl Network {
    pub fn new(n: usize, faults: NetFaults) -> Self {
        Network {
            in_flight: BTreeMap::new(),
            seq: 0,
            blocked: vec![vec![false; n]; n],
            faults,
            sent: 0,
            dropped: 0,
            delivered: 0,
        }
    }

    fn delay(&self, rng: &mut SmallRng) -> u64 {
        let f = &self.faults;
        let mut d = rng.gen_range(f.delay_ticks_min..=f.delay_ticks_max);
        if f.reorder > 0.0 && rng.gen_bool(f.reorder) {
            d += rng.gen_range(5..40);
        }
        d
    }

    /// Put a packet on the wire from replica position `from` to `to`.
    pub fn send(&mut self, from: usize, to: usize, packet: Packet, now: u64, rng: &mut SmallRng) {
        self.sent += 1;
        if self.faults.drop > 0.0 && rng.gen_bool(self.faults.drop) {
            self.dropped += 1;
            return;
        }
        if self.faults.duplicate > 0.0 && rng.gen_bool(self.faults.duplicate) {
            let at = now + self.delay(rng);
            self.seq += 1;
            self.in_flight
                .insert((at, self.seq), (from, to, packet.clone()));
        }
        let at = now + self.delay(rng);
        self.seq += 1;
        self.in_flight.insert((at, self.seq), (from, to, packet));
    }

    /// Next packet due at `now` whose link is open; packets on blocked links are lost.
    pub fn pop_due(&mut self, now: u64) -> Option<(usize, usize, Packet)> {
        loop {
            let entry = self.in_flight.first_entry()?;
            if entry.key().0 > now {
                return None;
            }
            let (from, to, packet) = entry.remove();
            if self.blocked[from][to] {
                self.dropped += 1;
                continue;
            }
            self.delivered += 1;
            return Some((from, to, packet));
        }
    }

    /// Drop every packet from or to `who` (a crash loses the process's socket buffers).
    pub fn drop_involving(&mut self, who: usize) {
        let before = self.in_flight.len();
        self.in_flight
            .retain(|_, (from, to, _)| *from != who && *to != who);
        self.dropped += (before - self.in_flight.len()) as u64;
    }

    pub fn set_blocked(&mut self, from: usize, to: usize, blocked: bool) {
        self.blocked[from][to] = blocked;
    }

    pub fn is_blocked(&self, from: usize, to: usize) -> bool {
        self.blocked[from][to]
    }

    /// Whether any link is blocked.
    pub fn partitioned(&self) -> bool {
        self.blocked.iter().flatten().any(|b| *b)
    }

    pub fn heal_partitions(&mut self) {
        for row in &mut self.blocked {
            row.fill(false);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}
