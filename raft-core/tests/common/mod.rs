//! A hand-driven network of Raft nodes for the protocol's integration tests.
//!
//! The [`Network`] is a faithful driver of the `Ready` contract: for every ready it
//! appends the entries and stores the hard state into the node's `MemLog`, syncs, and
//! only then puts the messages in flight. Messages stay in flight until a test delivers
//! them, so a test decides what arrives, in what order, how often, or not at all.
//!
//! Every ready is also checked against the global safety properties: at most one leader
//! per term (election safety) and every node applies the same entry at each index
//! (state machine safety). A violation panics with both sides.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raft_core::protocol::ForwardedProposal;
use raft_core::{
    Config, Entry, EntryKind, HardState, InMemoryInstaller, Log, LogIndex, MemLog, Message,
    MessageBody, NodeId, Raft, ReadState, Role, Snapshot, Term,
};

/// One node of the network.
pub type Node = Raft<MemLog>;

/// The seed every network uses unless a test says otherwise.
pub const SEED: u64 = 0x5EED;

/// A command entry with no payload.
pub fn entry(index: LogIndex, term: Term) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Command,
        data: Bytes::new(),
    }
}

/// Command entries `1..=terms.len()` with the given terms.
pub fn entries_with_terms(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &t)| entry(i as LogIndex + 1, t))
        .collect()
}

/// A `MemLog` that already holds entries with `terms` and the given hard state, as if the
/// node had run before (Figure 7 and 8 style setups).
pub fn preloaded_log(terms: &[Term], hard_state: HardState) -> MemLog {
    let mut log = MemLog::new();
    log.append(&entries_with_terms(terms)).unwrap();
    log.set_hard_state(hard_state).unwrap();
    log.sync().unwrap();
    log
}

/// A hard state at `term` with no vote and nothing committed.
pub fn at_term(term: Term) -> HardState {
    HardState {
        term,
        vote: None,
        commit: 0,
    }
}

/// The plain Raft of the paper's §5: no pre-vote, no check-quorum.
pub fn paper_config(c: &mut Config) {
    c.pre_vote = false;
    c.check_quorum = false;
}

/// Sets the append size limit, shrinking the snapshot chunk size with it (a chunk may
/// not be larger than an append).
pub fn set_append_bytes_max(c: &mut Config, bytes: u64) {
    c.append_bytes_max = bytes;
    c.snapshot_chunk_bytes = c.snapshot_chunk_bytes.min(bytes);
}

/// The harness's state machine snapshot: the applied entries, encoded.
pub fn encode_entries(entries: &[Entry]) -> Bytes {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.index.to_le_bytes());
        out.extend_from_slice(&e.term.to_le_bytes());
        out.push(u8::from(e.kind == EntryKind::Noop));
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.data);
    }
    out.into()
}

/// Decodes what [`encode_entries`] encoded.
pub fn decode_entries(mut bytes: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let take = |n: usize, bytes: &mut &[u8]| {
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        head.to_vec()
    };
    while !bytes.is_empty() {
        let index = u64::from_le_bytes(take(8, &mut bytes).try_into().unwrap());
        let term = u64::from_le_bytes(take(8, &mut bytes).try_into().unwrap());
        let kind = if take(1, &mut bytes)[0] == 1 {
            EntryKind::Noop
        } else {
            EntryKind::Command
        };
        let len = u32::from_le_bytes(take(4, &mut bytes).try_into().unwrap()) as usize;
        let data = Bytes::from(take(len, &mut bytes));
        out.push(Entry {
            term,
            index,
            kind,
            data,
        });
    }
    out
}

/// What a delivery filter does with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Hand it to its receiver.
    Deliver,
    /// Lose it.
    Drop,
    /// Hand it to its receiver twice.
    Duplicate,
    /// Keep it in flight for a later delivery.
    Hold,
}

/// Builds a [`Network`]: node ids `1..=n`, a config tweak and pre-loaded logs.
pub struct NetworkBuilder {
    ids: Vec<NodeId>,
    tweak: Box<dyn Fn(&mut Config)>,
    logs: BTreeMap<NodeId, MemLog>,
    seed: u64,
    /// The initial configuration's voters; `None`: every node.
    voters: Option<Vec<NodeId>>,
}

impl NetworkBuilder {
    /// Applies `tweak` to every node's config.
    pub fn config(mut self, tweak: impl Fn(&mut Config) + 'static) -> Self {
        self.tweak = Box::new(tweak);
        self
    }

    /// Node `id` starts from `log` instead of an empty one.
    pub fn log(mut self, id: NodeId, log: MemLog) -> Self {
        self.logs.insert(id, log);
        self
    }

    /// Node `id` starts with entries of `terms` and stored term `term`.
    pub fn log_terms(self, id: NodeId, terms: &[Term], term: Term) -> Self {
        self.log(id, preloaded_log(terms, at_term(term)))
    }

    /// Only `voters` form the initial configuration; the other nodes start outside the
    /// cluster (to join it through membership changes).
    pub fn initial_voters(mut self, voters: &[NodeId]) -> Self {
        self.voters = Some(voters.to_vec());
        self
    }

    /// The seed every node's RNG derives from.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn build(mut self) -> Network {
        let mut net = Network {
            nodes: BTreeMap::new(),
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            forwarded: BTreeMap::new(),
            delivered: Vec::new(),
            leaders: BTreeMap::new(),
            applied_terms: BTreeMap::new(),
            installers: BTreeMap::new(),
        };
        for &id in &self.ids {
            let voters = self.voters.clone().unwrap_or_else(|| self.ids.clone());
            let mut config = Config::new(id, voters);
            (self.tweak)(&mut config);
            let log = self.logs.remove(&id).unwrap_or_default();
            let node = Raft::new(config, log, self.seed).expect("valid test config");
            net.nodes.insert(id, node);
            net.applied.insert(id, Vec::new());
            net.read_states.insert(id, Vec::new());
            net.forwarded.insert(id, Vec::new());
        }
        assert!(self.logs.is_empty(), "logs for unknown nodes");
        net.flush();
        net
    }
}

/// N nodes, the messages between them, and what each applied.
pub struct Network {
    nodes: BTreeMap<NodeId, Node>,
    /// Messages sent and not yet delivered, oldest first.
    pub in_flight: Vec<Message>,
    /// Cut links as (from, to): messages on them are dropped at delivery.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Committed entries each node handed to its state machine, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Read answers each node got.
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    /// Forwarded-proposal answers each node got.
    pub forwarded: BTreeMap<NodeId, Vec<ForwardedProposal>>,
    /// Every message delivered, in order (for counting round trips).
    pub delivered: Vec<Message>,
    /// Election safety: the leader seen for each term.
    leaders: BTreeMap<Term, NodeId>,
    /// State machine safety: the term of the entry applied at each index, by anyone.
    applied_terms: BTreeMap<LogIndex, (Term, NodeId)>,
    /// Each node's received snapshots, in memory.
    installers: BTreeMap<NodeId, InMemoryInstaller>,
}

impl Network {
    /// `n` nodes with the default config.
    pub fn new(n: u64) -> Network {
        Self::builder(n).build()
    }

    /// A builder for `n` nodes with ids `1..=n`.
    pub fn builder(n: u64) -> NetworkBuilder {
        NetworkBuilder {
            ids: (1..=n).collect(),
            tweak: Box::new(|_| {}),
            logs: BTreeMap::new(),
            seed: SEED,
            voters: None,
        }
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    /// Direct access; call [`Network::flush`] after changing the node.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("known node")
    }

    pub fn role(&self, id: NodeId) -> Role {
        self.node(id).role()
    }

    pub fn term(&self, id: NodeId) -> Term {
        self.node(id).term()
    }

    /// The nodes that currently believe they lead.
    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role() == Role::Leader)
            .map(|n| n.id())
            .collect()
    }

    /// The terms of node `id`'s log, from index 1.
    pub fn log_terms(&self, id: NodeId) -> Vec<Term> {
        let node = self.node(id);
        (1..=node.last_index())
            .map(|i| node.term_at(i).expect("entry present"))
            .collect()
    }

    /// Node `id`'s whole log (from its first index, after any compaction).
    pub fn log_entries(&self, id: NodeId) -> Vec<Entry> {
        let node = self.node(id);
        let first = node.log().first_index();
        node.entries(first, node.last_index() + 1, u64::MAX)
            .unwrap()
    }

    /// Whether two nodes' logs end at the same index and agree wherever both still hold
    /// an entry (compaction may have dropped different prefixes).
    pub fn logs_agree(&self, a: NodeId, b: NodeId) -> bool {
        let (na, nb) = (self.node(a), self.node(b));
        if na.last_index() != nb.last_index() {
            return false;
        }
        let first = na.log().first_index().max(nb.log().first_index());
        (first..=na.last_index()).all(|i| na.term_at(i) == nb.term_at(i))
    }

    /// Node `id` snapshots its state machine at its applied index and compacts its log
    /// up to `keep` entries behind it, as a driver would. Returns whether it did.
    pub fn take_snapshot(&mut self, id: NodeId, keep: u64) -> bool {
        let node = self.nodes.get_mut(&id).expect("known node");
        let index = node.applied_index();
        let Some(term) = node.term_at(index) else {
            return false;
        };
        if index == 0 {
            return false;
        }
        let covered: Vec<Entry> = self.applied[&id]
            .iter()
            .filter(|e| e.index <= index)
            .cloned()
            .collect();
        assert_eq!(
            covered.last().map(|e| e.index),
            Some(index),
            "n{id}: the harness's state machine is not at the applied index"
        );
        let snapshot = Snapshot {
            meta: node
                .snapshot_meta_at(index)
                .expect("the applied index is in the log"),
            data: encode_entries(&covered),
        };
        assert_eq!(snapshot.meta.last_term, term);
        let log = node.log_mut();
        log.save_snapshot(&snapshot).unwrap();
        log.sync().unwrap();
        if let Some(meta) = node.compaction_meta(index.saturating_sub(keep)) {
            let log = node.log_mut();
            log.compact(meta).unwrap();
            log.sync().unwrap();
        }
        true
    }

    /// The payloads of the commands node `id` applied.
    pub fn applied_data(&self, id: NodeId) -> Vec<Bytes> {
        self.applied[&id]
            .iter()
            .filter(|e| e.kind == EntryKind::Command)
            .map(|e| e.data.clone())
            .collect()
    }

    /// One line per node: role, term, commit and log terms. For readable assertions.
    pub fn describe(&self) -> String {
        self.nodes
            .values()
            .map(|n| {
                format!(
                    "n{} {:?} term {} commit {} log {:?}\n",
                    n.id(),
                    n.role(),
                    n.term(),
                    n.commit_index(),
                    self.log_terms(n.id())
                )
            })
            .collect()
    }

    // ----- driving ---------------------------------------------------------------------

    /// Handles every node's ready until none has work: persist, then queue the messages.
    pub fn flush(&mut self) {
        for _ in 0..1000 {
            let mut busy = false;
            for id in self.ids() {
                busy |= self.handle_ready(id);
            }
            if !busy {
                return;
            }
        }
        panic!("nodes kept producing readies: a livelock in the protocol?");
    }

    /// Handles one ready of node `id` as the `Ready` contract says. Returns whether there
    /// was one.
    fn handle_ready(&mut self, id: NodeId) -> bool {
        let node = self.nodes.get_mut(&id).expect("known node");
        if !node.has_ready() {
            return false;
        }
        let ready = node.ready();
        let installer = self.installers.entry(id).or_default();
        if let Some(snapshot) = &installer.persist(node.log_mut(), &ready).unwrap() {
            // The state machine is restored from the snapshot.
            let restored = decode_entries(&snapshot.data);
            assert_eq!(
                restored.last().map(|e| (e.index, e.term)),
                Some((snapshot.meta.last_index, snapshot.meta.last_term)),
                "n{id} got a snapshot whose data does not end at its meta"
            );
            self.applied.insert(id, restored);
        }
        node.log_mut().append(&ready.entries).unwrap();
        if let Some(hs) = ready.hard_state {
            node.log_mut().set_hard_state(hs).unwrap();
        }
        node.log_mut().sync().unwrap();
        if let Some(ss) = ready.soft_state {
            if ss.role == Role::Leader {
                let previous = *self.leaders.entry(ss.term).or_insert(id);
                assert_eq!(
                    previous, id,
                    "election safety broken: n{previous} and n{id} both led term {}",
                    ss.term
                );
            }
        }
        let applied = self.applied.get_mut(&id).unwrap();
        for e in &ready.committed {
            let expected = applied.last().map_or(1, |last| last.index + 1);
            assert_eq!(e.index, expected, "n{id} applied out of order");
            let (term, by) = *self.applied_terms.entry(e.index).or_insert((e.term, id));
            assert_eq!(
                term, e.term,
                "state machine safety broken: n{by} applied term {term} at index {} but n{id} applied term {}",
                e.index, e.term
            );
            applied.push(e.clone());
        }
        self.read_states
            .get_mut(&id)
            .unwrap()
            .extend(ready.read_states.iter().copied());
        self.forwarded
            .get_mut(&id)
            .unwrap()
            .extend(ready.forwarded.iter().copied());
        for m in &ready.messages {
            assert_eq!(m.from, id, "n{id} sent a message as n{}", m.from);
        }
        self.in_flight.extend(ready.messages.iter().cloned());
        node.advance(ready);
        self.installers
            .get_mut(&id)
            .expect("inserted above")
            .after_advance(node);
        true
    }

    /// Hands `m` to its receiver unless the link is cut; then flushes. Returns whether it
    /// was delivered.
    pub fn step(&mut self, m: Message) -> bool {
        if self.cut.contains(&(m.from, m.to)) {
            return false;
        }
        self.delivered.push(m.clone());
        self.nodes
            .get_mut(&m.to)
            .expect("message to a known node")
            .step(m);
        self.flush();
        true
    }

    /// Takes every message in flight (for a test to inspect, reorder or step by hand).
    pub fn take_in_flight(&mut self) -> Vec<Message> {
        self.flush();
        std::mem::take(&mut self.in_flight)
    }

    /// Delivers the messages in flight now (not those they cause), each by its fate
    /// (asked once per message). Returns how many were delivered.
    pub fn deliver_round_with(&mut self, mut fate: impl FnMut(&Message) -> Fate) -> usize {
        let msgs = self.take_in_flight();
        let fates: Vec<Fate> = msgs.iter().map(&mut fate).collect();
        self.apply_fates(msgs, fates)
    }

    fn apply_fates(&mut self, msgs: Vec<Message>, fates: Vec<Fate>) -> usize {
        let mut held = Vec::new();
        let mut delivered = 0;
        for (m, fate) in msgs.into_iter().zip(fates) {
            match fate {
                Fate::Deliver => delivered += usize::from(self.step(m)),
                Fate::Drop => {}
                Fate::Duplicate => {
                    delivered += usize::from(self.step(m.clone()));
                    delivered += usize::from(self.step(m));
                }
                Fate::Hold => held.push(m),
            }
        }
        held.append(&mut self.in_flight);
        self.in_flight = held;
        delivered
    }

    /// Delivers until nothing but held messages is left in flight. `fate` is asked once
    /// per message per round, so it may keep state. Returns how many were delivered.
    pub fn deliver_all_with(&mut self, mut fate: impl FnMut(&Message) -> Fate) -> usize {
        let mut total = 0;
        for _ in 0..10_000 {
            let msgs = self.take_in_flight();
            let fates: Vec<Fate> = msgs.iter().map(&mut fate).collect();
            if fates.iter().all(|f| *f == Fate::Hold) {
                self.in_flight = msgs;
                return total;
            }
            total += self.apply_fates(msgs, fates);
        }
        panic!("messages kept flowing: a livelock in the protocol?");
    }

    /// Delivers everything (except on cut links) until the network is quiet.
    pub fn deliver_all(&mut self) -> usize {
        self.deliver_all_with(|_| Fate::Deliver)
    }

    /// Drops everything in flight.
    pub fn drop_in_flight(&mut self) {
        self.take_in_flight();
    }

    /// Ticks node `id` once and flushes.
    pub fn tick(&mut self, id: NodeId) {
        self.node_mut(id).tick();
        self.flush();
    }

    /// Ticks every node once and flushes.
    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.node_mut(id).tick();
        }
        self.flush();
    }

    /// `ticks` rounds of: tick every node, then deliver everything.
    pub fn run(&mut self, ticks: u32) {
        for _ in 0..ticks {
            self.tick_all();
            self.deliver_all();
        }
    }

    /// Node `id` campaigns and every message is delivered; it must win.
    pub fn elect(&mut self, id: NodeId) {
        self.node_mut(id).campaign();
        self.deliver_all();
        assert_eq!(
            self.role(id),
            Role::Leader,
            "n{id} did not win its election:\n{}",
            self.describe()
        );
    }

    /// Leader `id` proposes `data`; returns where it was placed.
    pub fn propose(&mut self, id: NodeId, data: &str) -> (LogIndex, Term) {
        let placed = self
            .node_mut(id)
            .propose(Bytes::copy_from_slice(data.as_bytes()))
            .unwrap_or_else(|e| panic!("n{id} refused a proposal: {e}"));
        self.flush();
        placed
    }

    /// Crashes node `id` and starts it again from what its log made durable. Messages it
    /// had not sent yet are lost; its state machine starts over from the log.
    pub fn restart(&mut self, id: NodeId, seed: u64) {
        let old = self.nodes.remove(&id).expect("known node");
        let config = old.config().clone();
        let log = old.log().clone();
        let restored = log
            .snapshot()
            .unwrap()
            .map(|s| decode_entries(&s.data))
            .unwrap_or_default();
        let node = Raft::new(config, log, seed).expect("the config was valid before");
        self.nodes.insert(id, node);
        // The state machine starts from the stored snapshot (or empty).
        self.applied.insert(id, restored);
        self.flush();
    }

    // ----- partitions ------------------------------------------------------------------

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts one direction only.
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Cuts `id` off from everyone.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.cut(id, other);
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }
}

/// Whether `m` is of the kind named (see [`MessageBody::kind`]).
pub fn is(m: &Message, kind: &str) -> bool {
    m.body.kind() == kind
}

/// A message from `from` to `to` at `term`.
pub fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// An append message.
pub fn append(
    from: NodeId,
    to: NodeId,
    term: Term,
    prev: (LogIndex, Term),
    entries: Vec<Entry>,
    commit: LogIndex,
) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::Append {
            prev_index: prev.0,
            prev_term: prev.1,
            entries,
            commit,
        },
    )
}

/// Takes node's ready, handles it like a driver would, and returns its messages.
pub fn drain_messages(node: &mut Node) -> Vec<Message> {
    let mut out = Vec::new();
    let mut installer = InMemoryInstaller::default();
    while node.has_ready() {
        let ready = node.ready();
        installer.persist(node.log_mut(), &ready).unwrap();
        node.log_mut().append(&ready.entries).unwrap();
        if let Some(hs) = ready.hard_state {
            node.log_mut().set_hard_state(hs).unwrap();
        }
        node.log_mut().sync().unwrap();
        out.extend(ready.messages.iter().cloned());
        node.advance(ready);
        installer.after_advance(node);
    }
    out
}

/// A single node with `voters`, starting from `log`, outside any network.
pub fn lone_node(id: NodeId, voters: &[NodeId], log: MemLog, tweak: impl Fn(&mut Config)) -> Node {
    let mut config = Config::new(id, voters.iter().copied());
    tweak(&mut config);
    Raft::new(config, log, SEED).expect("valid test config")
}

// ----- transcripts -----------------------------------------------------------------------

/// A compact, readable line for a message: `n1->n2 t3 append after 4@2 [5@3 6@3] commit 4`.
pub fn describe_message(m: &Message) -> String {
    let body = match &m.body {
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => format!("pre_vote last {last_log_index}@{last_log_term}"),
        MessageBody::Vote {
            last_log_index,
            last_log_term,
            transfer,
        } => format!(
            "vote last {last_log_index}@{last_log_term}{}",
            if *transfer { " (transfer)" } else { "" }
        ),
        MessageBody::PreVoteResponse { granted } | MessageBody::VoteResponse { granted } => {
            format!(
                "{} {}",
                m.body.kind(),
                if *granted { "granted" } else { "refused" }
            )
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            let entries: Vec<String> = entries
                .iter()
                .map(|e| format!("{}@{}", e.index, e.term))
                .collect();
            format!(
                "append after {prev_index}@{prev_term} [{}] commit {commit}",
                entries.join(" ")
            )
        }
        MessageBody::AppendResponse {
            index,
            reject: None,
        } => format!("append_response ok {index}"),
        MessageBody::AppendResponse {
            index,
            reject: Some(h),
        } => format!(
            "append_response reject {index} (last {}, conflict {} term {:?})",
            h.last_index, h.conflict_index, h.conflict_term
        ),
        MessageBody::Heartbeat { commit, read_round } => {
            format!("heartbeat commit {commit} round {read_round}")
        }
        MessageBody::HeartbeatResponse {
            read_round,
            last_index,
        } => format!("heartbeat_response round {read_round} last {last_index}"),
        other => format!("{other:?}"),
    };
    format!("n{}->n{} t{} {body}", m.from, m.to, m.term)
}

/// Compares `actual` with the transcript stored in `tests/transcripts/<name>.txt`. Run
/// with `RAFT_TRANSCRIPTS=rewrite` to write the file from the actual output instead (then
/// review the diff).
pub fn assert_transcript(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/transcripts")
        .join(format!("{name}.txt"));
    if std::env::var("RAFT_TRANSCRIPTS").as_deref() == Ok("rewrite") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run with RAFT_TRANSCRIPTS=rewrite to create it",
            path.display()
        )
    });
    if expected != actual {
        let first_diff = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "transcript {name} differs from {} at line {}; rerun with \
             RAFT_TRANSCRIPTS=rewrite and review the diff.\n--- actual ---\n{actual}",
            path.display(),
            first_diff + 1
        );
    }
}

impl Network {
    /// Delivers everything until quiet, writing each delivered message (or `dropped` for
    /// a cut link) to `out`, one round per block.
    pub fn deliver_all_logged(&mut self, out: &mut String) {
        for _ in 0..1000 {
            let msgs = self.take_in_flight();
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                let line = describe_message(&m);
                let delivered = self.step(m);
                out.push_str(&format!(
                    "  {line}{}\n",
                    if delivered { "" } else { "  (dropped)" }
                ));
            }
        }
        panic!("messages kept flowing");
    }
}
