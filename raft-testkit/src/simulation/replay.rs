//! Replaying one run of a [`Simulation`](super::Simulation): the seed and what a replay
//! or a shrunk run changes, as environment variables.

use super::*;

/// The environment variable that makes [`Simulation::run`] replay one seed with its
/// whole trace printed.
pub const REPLAY_SEED_VAR: &str = "RAFT_SIM_SEED";
/// The environment variable that fixes the safety phase's length of a replay (a shrunk
/// run's).
pub const REPLAY_TICKS_VAR: &str = "RAFT_SIM_SAFETY_TICKS";
/// The environment variable that sets a replay's faults: `none`, `all`, or kinds
/// separated by commas (`crashes,snapshots`; see [`Fault::name`]).
pub const REPLAY_FAULTS_VAR: &str = "RAFT_SIM_FAULTS";
/// The environment variable that sets a replay's client operation budget (a shrunk
/// run's).
pub const REPLAY_OPS_VAR: &str = "RAFT_SIM_OPS";

/// The command a failure report tells to run, after the replay environment, unless
/// [`Simulation::replay_command`] gives another.
pub(super) const DEFAULT_REPLAY_COMMAND: &str = "cargo test <this test> -- --nocapture";

/// One run of a [`Simulation`]: a seed, and what a replay or a shrunk run changes in it
/// (`None`: the simulation's setting). Its `Display` is the replay environment
/// (`RAFT_SIM_SEED=17 RAFT_SIM_SAFETY_TICKS=43 ...`), which `FromStr` parses back.
///
/// ```
/// use raft_testkit::{Fault, Faults, Replay};
///
/// let run = Replay {
///     seed: 17,
///     safety_ticks: Some(43),
///     faults: Some(Faults::only(&[Fault::Crashes, Fault::Snapshots])),
///     ops: Some(12),
/// };
/// let env = run.to_string();
/// assert_eq!(
///     env,
///     "RAFT_SIM_SEED=17 RAFT_SIM_SAFETY_TICKS=43 RAFT_SIM_FAULTS=crashes,snapshots RAFT_SIM_OPS=12"
/// );
/// assert_eq!(env.parse::<Replay>(), Ok(run));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// The seed ([`REPLAY_SEED_VAR`]).
    pub seed: u64,
    /// The safety phase's length in ticks ([`REPLAY_TICKS_VAR`]).
    pub safety_ticks: Option<u64>,
    /// The faults ([`REPLAY_FAULTS_VAR`]).
    pub faults: Option<Faults>,
    /// The client operation budget ([`REPLAY_OPS_VAR`]).
    pub ops: Option<u64>,
}

impl Replay {
    /// `seed` as the simulation sets it up.
    pub fn seed(seed: u64) -> Self {
        Replay {
            seed,
            safety_ticks: None,
            faults: None,
            ops: None,
        }
    }

    /// The run the replay environment variables describe, if [`REPLAY_SEED_VAR`] is
    /// set.
    ///
    /// # Panics
    /// If a variable is set to something that does not parse.
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok();
        let seed = var(REPLAY_SEED_VAR)?;
        let mut text = format!("{REPLAY_SEED_VAR}={seed}");
        for name in [REPLAY_TICKS_VAR, REPLAY_FAULTS_VAR, REPLAY_OPS_VAR] {
            if let Some(v) = var(name) {
                text.push_str(&format!(" {name}={v}"));
            }
        }
        Some(text.parse().unwrap_or_else(|e| panic!("{e}")))
    }
}

impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{REPLAY_SEED_VAR}={}", self.seed)?;
        if let Some(t) = self.safety_ticks {
            write!(f, " {REPLAY_TICKS_VAR}={t}")?;
        }
        if let Some(faults) = self.faults {
            write!(f, " {REPLAY_FAULTS_VAR}={faults}")?;
        }
        if let Some(ops) = self.ops {
            write!(f, " {REPLAY_OPS_VAR}={ops}")?;
        }
        Ok(())
    }
}

impl FromStr for Replay {
    type Err = String;

    /// Parses `NAME=value` words separated by spaces; [`REPLAY_SEED_VAR`] is required.
    fn from_str(s: &str) -> Result<Self, String> {
        let number = |name: &str, v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|e| format!("{name}={v:?}: {e}"))
        };
        let (mut seed, mut run) = (None, Replay::seed(0));
        for word in s.split_whitespace() {
            let (name, value) = word
                .split_once('=')
                .ok_or_else(|| format!("{word:?} is not NAME=value"))?;
            match name {
                REPLAY_SEED_VAR => seed = Some(number(name, value)?),
                REPLAY_TICKS_VAR => run.safety_ticks = Some(number(name, value)?),
                REPLAY_OPS_VAR => run.ops = Some(number(name, value)?),
                REPLAY_FAULTS_VAR => {
                    run.faults = Some(value.parse().map_err(|e| format!("{name}: {e}"))?)
                }
                _ => return Err(format!("unknown replay variable {name}")),
            }
        }
        run.seed = seed.ok_or_else(|| format!("no {REPLAY_SEED_VAR} in {s:?}"))?;
        Ok(run)
    }
}
