//! The simulated network's link model and partitions.
//!
//! Delivery itself is scheduled by the simulator's event queue; this module decides,
//! for each message, whether it is lost, duplicated and how long it takes, and which
//! directed links are cut. Times are in simulator units ([`crate::sim::UNITS_PER_TICK`]
//! per tick).

use std::collections::BTreeSet;

use raft_core::NodeId;
use rand::Rng;

/// How a link behaves. Probabilities are in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkProfile {
    /// Chance a message is lost.
    pub loss: f64,
    /// Chance a message is delivered twice (each copy with its own delay).
    pub duplicate: f64,
    /// Chance a message takes the long tail: its delay is multiplied by a heavy-tailed factor.
    pub long_tail: f64,
    /// Largest long-tail delay, in units.
    pub long_tail_max_units: u64,
}

impl LinkProfile {
    /// A clean network: no loss, duplication or long tail.
    pub fn clean() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            long_tail: 0.0,
            long_tail_max_units: 0,
        }
    }
}

/// What happens to one sent message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Dropped (lost or the link is cut).
    Dropped,
    /// Delivered after each of these delays (two for a duplicate).
    Delivered(Vec<u64>),
}

/// The kind of a partition, for counting and traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartitionKind {
    /// Two halves that cannot talk either way.
    Symmetric,
    /// One half cannot reach the other; the other way works.
    OneWay,
    /// The leader is cut off from everyone.
    IsolateLeader,
    /// Two halves that only one "bridge" node can talk to.
    Bridge,
}

/// The network: per-link base delays and the set of cut directed links.
#[derive(Clone, Debug)]
pub struct Network {
    ids: Vec<NodeId>,
    /// Base one-way delay per directed link, `base[from - 1][to - 1]`, in units.
    base_units: Vec<Vec<u64>>,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// The profile in force.
    pub profile: LinkProfile,
    /// The bridge node of the current bridge partition, if that is what is in force.
    pub bridge: Option<NodeId>,
}

impl Network {
    /// A network between `ids` (which must be 1..=n) with random base delays in
    /// `[min_units, max_units]` per directed link.
    pub fn new(ids: &[NodeId], min_units: u64, max_units: u64, rng: &mut impl Rng) -> Self {
        let n = ids.len();
        let base_units = (0..n)
            .map(|_| {
                (0..n)
                    .map(|_| rng.gen_range(min_units..=max_units))
                    .collect()
            })
            .collect();
        Self {
            ids: ids.to_vec(),
            base_units,
            cut: BTreeSet::new(),
            profile: LinkProfile::clean(),
            bridge: None,
        }
    }

    /// Whether messages from `from` to `to` get through the partition.
    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Decides a message's fate now.
    pub fn fate(&self, from: NodeId, to: NodeId, rng: &mut impl Rng) -> Fate {
        if !self.connected(from, to) || rng.gen_bool(self.profile.loss) {
            return Fate::Dropped;
        }
        let copies = if rng.gen_bool(self.profile.duplicate) {
            2
        } else {
            1
        };
        let base = self.base_units[(from - 1) as usize][(to - 1) as usize];
        let delays = (0..copies)
            .map(|_| {
                let jitter = rng.gen_range(0..=base);
                let mut d = base / 2 + jitter;
                if rng.gen_bool(self.profile.long_tail) {
                    // Pareto-like: most tails are short, a few are very long.
                    let u: f64 = rng.gen_range(0.01..1.0);
                    let factor = (1.0 / u).powf(1.2);
                    d = ((d as f64) * (1.0 + factor)) as u64;
                    d = d.min(self.profile.long_tail_max_units.max(base));
                }
                d.max(1)
            })
            .collect();
        Fate::Delivered(delays)
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.bridge = None;
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Cuts every link between `a` and `b`, both ways.
    pub fn cut_between(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    /// Cuts the links from every node of `from` to every node of `to`, one way.
    pub fn cut_one_way(&mut self, from: &[NodeId], to: &[NodeId]) {
        for &x in from {
            for &y in to {
                self.cut.insert((x, y));
            }
        }
    }

    /// Replaces the partition with one of `kind`. `leader` is the node to isolate for
    /// [`PartitionKind::IsolateLeader`] (a random node if none). Returns a description.
    pub fn partition(
        &mut self,
        kind: PartitionKind,
        leader: Option<NodeId>,
        rng: &mut impl Rng,
    ) -> String {
        self.heal();
        let mut ids = self.ids.clone();
        // A random order, then a random split point: two non-empty halves.
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.gen_range(0..=i));
        }
        let split = rng.gen_range(1..ids.len());
        let (a, b) = ids.split_at(split);
        match kind {
            PartitionKind::Symmetric => {
                self.cut_between(a, b);
                format!("symmetric {a:?} | {b:?}")
            }
            PartitionKind::OneWay => {
                self.cut_one_way(a, b);
                format!("one-way {a:?} -/-> {b:?}")
            }
            PartitionKind::IsolateLeader => {
                let x = leader.unwrap_or(ids[0]);
                let others: Vec<NodeId> = self.ids.iter().copied().filter(|&y| y != x).collect();
                self.cut_between(&[x], &others);
                format!("isolate n{x}")
            }
            PartitionKind::Bridge => {
                // The bridge is the first node; the rest split in two halves that only
                // it connects. Needs at least three nodes.
                let bridge = ids[0];
                let rest = &ids[1..];
                if rest.len() < 2 {
                    return "bridge skipped (too few nodes)".into();
                }
                let split = rng.gen_range(1..rest.len());
                let (l, r) = rest.split_at(split);
                self.cut_between(l, r);
                self.bridge = Some(bridge);
                format!("bridge n{bridge} between {l:?} and {r:?}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn partitions_cut_the_right_links() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut net = Network::new(&[1, 2, 3, 4, 5], 10, 20, &mut rng);
        net.partition(PartitionKind::IsolateLeader, Some(2), &mut rng);
        assert!(!net.connected(2, 1) && !net.connected(1, 2));
        assert!(net.connected(1, 3));
        net.cut_one_way(&[1], &[3]);
        assert!(!net.connected(1, 3) && net.connected(3, 1));
        net.heal();
        assert!(!net.is_partitioned());
        for _ in 0..20 {
            let d = net.partition(PartitionKind::Bridge, None, &mut rng);
            let bridge: NodeId = d[8..9].parse().unwrap();
            // The bridge reaches everyone.
            assert!(
                (1..=5)
                    .all(|y| y == bridge || (net.connected(bridge, y) && net.connected(y, bridge))),
                "{d}"
            );
        }
    }

    #[test]
    fn a_clean_network_delivers_once() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let net = Network::new(&[1, 2], 10, 20, &mut rng);
        for _ in 0..100 {
            match net.fate(1, 2, &mut rng) {
                Fate::Delivered(d) => assert_eq!(d.len(), 1),
                Fate::Dropped => panic!("clean network dropped a message"),
            }
        }
    }
}
