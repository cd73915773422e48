//! A user's state machine, workload and model as a [`Workload`] of the simulator.

use super::*;

/// One node's state machine as the simulator holds it: the user's machine, the index it
/// applied, and the operations it applied (so that a retried command takes effect once).
pub(crate) struct Replica<S: StateMachine> {
    machine: S,
    applied: LogIndex,
    /// Operation id -> the index where it took effect and its response (unknown after a
    /// restore from a snapshot: responses are not in snapshots).
    sessions: BTreeMap<u64, (LogIndex, Option<S::Response>)>,
}

/// A user's state machine, workload and model as a [`Workload`] of the simulator.
pub(crate) struct UserWorkload<'a, S: StateMachine, M> {
    pub(super) make: &'a dyn Fn() -> S,
    pub(super) commands: &'a Commands,
    pub(super) invariant: Option<&'a Invariant<S>>,
    pub(super) model: Option<M>,
}

/// What clients propose: one command drawn from the seed's RNG per call.
pub(super) type Commands = dyn Fn(&mut ChaCha8Rng) -> Vec<u8> + Send + Sync;

/// A check of a state machine's own state, run after every command it applies.
pub(super) type Invariant<S> = dyn Fn(&S) -> Result<(), String> + Send + Sync;

/// The operation id of a harness-only command that the user's machine never sees (the
/// liveness phase's marker write).
const HARNESS_OP: u64 = u64::MAX;

impl<S: StateMachine, M> UserWorkload<'_, S, M> {
    fn user_bytes(&self, m: &S) -> Vec<u8> {
        m.snapshot().expect(
            "the simulator compares nodes through StateMachine::snapshot: \
             implement snapshot and restore",
        )
    }
}

impl<S, M> Workload for UserWorkload<'_, S, M>
where
    S: StateMachine,
    S::Response: Clone + fmt::Debug + PartialEq,
    M: Model<S::Response>,
{
    type Machine = Replica<S>;
    type Input = Vec<u8>;
    type Output = S::Response;

    fn fresh(&self) -> Replica<S> {
        Replica {
            machine: (self.make)(),
            applied: 0,
            sessions: BTreeMap::new(),
        }
    }

    fn apply(&self, m: &mut Replica<S>, index: LogIndex, data: &[u8]) {
        assert_eq!(
            index,
            m.applied + 1,
            "applying {index} after {}: entries must be applied in order",
            m.applied
        );
        m.applied = index;
        let Some((op, command)) = data.split_first_chunk::<8>() else {
            return; // not a command
        };
        let op = u64::from_le_bytes(*op);
        if op == HARNESS_OP || m.sessions.contains_key(&op) {
            return;
        }
        let response = m.machine.apply(index, command);
        m.sessions.insert(op, (index, Some(response)));
        if let Some(invariant) = self.invariant {
            if let Err(broken) = invariant(&m.machine) {
                // Caught by the simulator and reported as the run's failure.
                panic!("the state machine's invariant broke applying index {index}: {broken}");
            }
        }
    }

    fn applied_index(&self, m: &Replica<S>) -> LogIndex {
        m.applied
    }

    fn applied_at(&self, m: &Replica<S>, op: u64) -> Option<LogIndex> {
        m.sessions.get(&op).map(|s| s.0)
    }

    fn write_output(&self, m: &Replica<S>, op: u64) -> Option<S::Response> {
        m.sessions.get(&op).and_then(|s| s.1.clone())
    }

    fn snapshot(&self, m: &Replica<S>, broken: Option<BrokenSnapshot>) -> Bytes {
        let mut b = Vec::new();
        b.extend_from_slice(&m.applied.to_le_bytes());
        if broken == Some(BrokenSnapshot::WithoutSessions) {
            b.extend_from_slice(&0u64.to_le_bytes());
        } else {
            b.extend_from_slice(&(m.sessions.len() as u64).to_le_bytes());
            for (op, (index, _)) in &m.sessions {
                b.extend_from_slice(&op.to_le_bytes());
                b.extend_from_slice(&index.to_le_bytes());
            }
        }
        b.extend_from_slice(&self.user_bytes(&m.machine));
        b.into()
    }

    fn restore(&self, data: &[u8]) -> Result<Replica<S>, String> {
        let mut rest = data;
        let mut word = || -> Result<u64, String> {
            let (w, tail) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| format!("snapshot of {} bytes is truncated", data.len()))?;
            rest = tail;
            Ok(u64::from_le_bytes(*w))
        };
        let applied = word()?;
        let count = word()?;
        let mut sessions = BTreeMap::new();
        for _ in 0..count {
            let op = word()?;
            let index = word()?;
            sessions.insert(op, (index, None));
        }
        let mut machine = (self.make)();
        machine.restore(rest).map_err(|e| e.to_string())?;
        Ok(Replica {
            machine,
            applied,
            sessions,
        })
    }

    fn duplicate(&self, m: &Replica<S>) -> Replica<S> {
        let mut machine = (self.make)();
        machine
            .restore(&self.user_bytes(&m.machine))
            .expect("a state machine restores its own snapshot");
        Replica {
            machine,
            applied: m.applied,
            sessions: m.sessions.clone(),
        }
    }

    fn same(&self, a: &Replica<S>, b: &Replica<S>) -> bool {
        a.applied == b.applied
            && a.sessions.len() == b.sessions.len()
            && a.sessions
                .iter()
                .zip(&b.sessions)
                .all(|(x, y)| x.0 == y.0 && x.1 .0 == y.1 .0)
            && self.user_bytes(&a.machine) == self.user_bytes(&b.machine)
    }

    fn describe(&self, m: &Replica<S>) -> String {
        let bytes = self.user_bytes(&m.machine);
        format!(
            "{} commands applied, a {}-byte snapshot with digest {:016x}",
            m.sessions.len(),
            bytes.len(),
            crate::checker::digest(&bytes)
        )
    }

    fn draw(&mut self, rng: &mut ChaCha8Rng, _op: u64, ops: &mut OpCounts) -> Vec<u8> {
        ops.writes += 1;
        (self.commands)(rng)
    }

    fn request(&self, op: u64, input: &Vec<u8>) -> Request {
        let mut b = Vec::with_capacity(8 + input.len());
        b.extend_from_slice(&op.to_le_bytes());
        b.extend_from_slice(input);
        Request::Write(b.into())
    }

    fn read(&self, _m: &Replica<S>, _input: &Vec<u8>) -> S::Response {
        unreachable!("a user workload only writes: request() never asks for a read")
    }

    fn marker(&self, _op: u64) -> Bytes {
        Bytes::copy_from_slice(&HARNESS_OP.to_le_bytes())
    }

    fn input_words(&self, input: &Vec<u8>) -> [u64; 2] {
        [input.len() as u64, crate::checker::digest(input)]
    }

    fn output_word(&self, output: Option<&S::Response>) -> u64 {
        output.map_or(1, |o| crate::checker::digest(format!("{o:?}").as_bytes()))
    }

    fn check(&self, history: &[Call<Vec<u8>, S::Response>], budget_steps: u64) -> LinResult {
        match &self.model {
            Some(model) => check_model(history, model.clone(), budget_steps),
            None => LinResult::Ok,
        }
    }

    fn explain(&self, history: &[Call<Vec<u8>, S::Response>], _key: u64) -> Vec<String> {
        history
            .iter()
            .rev()
            .take(12)
            .map(|c| {
                let when = match c.ret {
                    Some(r) => format!("[{}, {r}]", c.call),
                    None => format!("[{}, never returned]", c.call),
                };
                format!("c{} {:?} -> {:?} {when}", c.client, c.input, c.output)
            })
            .collect()
    }
}

/// Checks a history of commands against `model` (Wing-Gong-Lowe, as for the key/value
/// histories): some order of the commands that respects real time must give every
/// returned output. A command that never returned may have taken effect or not; one that
/// returned without an output (its first answer was lost) may have answered anything.
fn check_model<R: PartialEq + fmt::Debug, M: Model<R>>(
    history: &[Call<Vec<u8>, R>],
    model: M,
    budget_steps: u64,
) -> LinResult {
    let step = |state: &M, c: &Call<Vec<u8>, R>| {
        let mut next = state.clone();
        let answer = next.step(&c.input);
        match &c.output {
            Some(output) if *output != answer => None,
            _ => Some(next),
        }
    };
    match search(history, |c| (c.call, c.ret), model, step, budget_steps) {
        Search::Ok => LinResult::Ok,
        Search::Unknown => LinResult::Unknown { key: 0 },
        Search::Illegal { depth, stuck } => {
            let stuck = stuck.map_or_else(|| "?".to_string(), |i| format!("{:?}", history[i]));
            LinResult::Illegal {
                key: 0,
                detail: format!(
                    "{} commands; at most {depth} could be linearized; stuck before {stuck}",
                    history.len()
                ),
            }
        }
    }
}
