//! The kinds of fault a [`Simulation`](super::Simulation) injects, as a set.

use super::*;

/// One kind of fault a [`Simulation`] can inject. [`Faults`] is a set of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Messages lost.
    Loss,
    /// Messages delivered twice.
    Duplication,
    /// Messages delayed by a long tail (so overtaken by later ones: reordering).
    Delay,
    /// Network partitions: symmetric, one-way, an isolated leader, a bridge node.
    Partitions,
    /// Crashes that lose a random part of the unsynced writes (torn writes), with
    /// restarts after a while; new leaders crashed right after their election.
    Crashes,
    /// Process restarts: a crash followed by a restart within a tick.
    Restarts,
    /// Nodes paused (a stopped process, a long GC), then resumed.
    Pauses,
    /// Stalled syncs: a node blocked in a long fsync misses ticks and queues messages.
    Stalls,
    /// Node clocks running at different rates.
    ClockSkew,
    /// Elections forced on random nodes.
    Elections,
    /// Leadership transfers.
    Transfers,
    /// Membership changes: learners added and promoted, voters removed and replaced,
    /// joint configurations.
    Membership,
    /// Snapshots every so many entries and log compaction, so that lagging nodes catch
    /// up by snapshots sent over the faulty network, and restarted nodes restore from
    /// their stored snapshot.
    Snapshots,
}

impl Fault {
    /// Every kind, in the order shrinking tries to drop them.
    pub const ALL: [Fault; 13] = [
        Fault::Loss,
        Fault::Duplication,
        Fault::Delay,
        Fault::Partitions,
        Fault::Crashes,
        Fault::Restarts,
        Fault::Pauses,
        Fault::Stalls,
        Fault::ClockSkew,
        Fault::Elections,
        Fault::Transfers,
        Fault::Membership,
        Fault::Snapshots,
    ];

    /// The kind's name in [`REPLAY_FAULTS_VAR`] (`loss`, `clock-skew`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Fault::Loss => "loss",
            Fault::Duplication => "duplication",
            Fault::Delay => "delay",
            Fault::Partitions => "partitions",
            Fault::Crashes => "crashes",
            Fault::Restarts => "restarts",
            Fault::Pauses => "pauses",
            Fault::Stalls => "stalls",
            Fault::ClockSkew => "clock-skew",
            Fault::Elections => "elections",
            Fault::Transfers => "transfers",
            Fault::Membership => "membership",
            Fault::Snapshots => "snapshots",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The faults a [`Simulation`] injects: a set of [`Fault`] kinds. Each seed draws its
/// own mix and intensity of the kinds in the set ("swarm testing"), so some runs hammer
/// one kind and others combine many.
///
/// ```
/// use raft_testkit::{Fault, Faults};
///
/// let no_crashes = Faults::all().without(Fault::Crashes).without(Fault::Restarts);
/// assert!(!no_crashes.contains(Fault::Crashes));
/// assert_eq!(no_crashes.to_string().parse::<Faults>(), Ok(no_crashes));
/// assert_eq!(Faults::none().to_string(), "none");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Faults(u16);

impl Faults {
    /// Every kind the simulator knows.
    pub fn all() -> Self {
        Fault::ALL.iter().fold(Faults(0), |f, k| f.with(*k))
    }

    /// None: a calm cluster (a first smoke test of the state machine). The protocol
    /// options and the clients are still drawn from the seed.
    pub fn none() -> Self {
        Faults(0)
    }

    /// Only the given kinds.
    pub fn only(kinds: &[Fault]) -> Self {
        kinds.iter().fold(Faults(0), |f, k| f.with(*k))
    }

    /// This set and `kind`.
    #[must_use]
    pub fn with(self, kind: Fault) -> Self {
        Faults(self.0 | kind.bit())
    }

    /// This set without `kind`.
    #[must_use]
    pub fn without(self, kind: Fault) -> Self {
        Faults(self.0 & !kind.bit())
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: Fault) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set.
    pub fn kinds(self) -> impl Iterator<Item = Fault> {
        Fault::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    /// Turns off in `cfg` every fault this set leaves out. With every kind it changes
    /// nothing, so [`Faults::all`] runs exactly what [`SimConfig::random`] drew.
    pub(super) fn restrict(self, cfg: &mut SimConfig) {
        let f = &mut cfg.faults;
        if !self.contains(Fault::Loss) {
            f.link.loss = 0.0;
        }
        if !self.contains(Fault::Duplication) {
            f.link.duplicate = 0.0;
        }
        if !self.contains(Fault::Delay) {
            f.link.long_tail = 0.0;
        }
        if !self.contains(Fault::Partitions) {
            f.partition_symmetric = false;
            f.partition_one_way = false;
            f.isolate_leader = false;
            f.bridge = false;
        }
        if !self.contains(Fault::Crashes) {
            f.crash = false;
            f.new_leader_crash = 0.0;
        }
        if !self.contains(Fault::Restarts) {
            f.quick_restart = false;
        }
        if !self.contains(Fault::Pauses) {
            f.pause = false;
        }
        if !self.contains(Fault::Stalls) {
            f.stall = false;
        }
        if !self.contains(Fault::ClockSkew) {
            f.clock_skew_max = 0.0;
        }
        if !self.contains(Fault::Elections) {
            f.campaign = false;
        }
        if !self.contains(Fault::Transfers) {
            f.transfer = false;
        }
        if !self.contains(Fault::Membership) {
            f.membership = false;
            cfg.spare_nodes = 0;
        }
        if !self.contains(Fault::Snapshots) {
            cfg.snapshots = None;
        }
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults::all()
    }
}

impl fmt::Display for Faults {
    /// `all`, `none`, or the kinds' names separated by commas (what
    /// [`REPLAY_FAULTS_VAR`] takes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Faults::all() {
            return f.write_str("all");
        }
        if self.is_none() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.kinds().map(Fault::name).collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faults({self})")
    }
}

impl FromStr for Faults {
    type Err = String;

    /// Parses what [`Faults`]' `Display` writes.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => return Ok(Faults::all()),
            "none" | "" => return Ok(Faults::none()),
            _ => {}
        }
        s.split(',').try_fold(Faults::none(), |set, name| {
            let name = name.trim();
            Fault::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .map(|k| set.with(k))
                .ok_or_else(|| {
                    let known: Vec<&str> = Fault::ALL.iter().map(|k| k.name()).collect();
                    format!("unknown fault kind {name:?} (known: {})", known.join(", "))
                })
        })
    }
}
