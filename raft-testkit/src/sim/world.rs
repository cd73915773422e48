//! The simulated world: its events, the time-ordered queue, the run loop and the event
//! dispatch.

use raft_core::{Message, Role, Term};
use rand::Rng;

use super::workload::Workload;
use super::{Simulator, UNITS_PER_TICK};
use crate::checker::Violation;
use crate::trace::TraceEvent;

#[derive(Debug)]
pub(super) enum Ev {
    Tick {
        node: usize,
        life: u32,
    },
    Deliver {
        msg: Message,
        send_seq: u64,
    },
    SyncDone {
        node: usize,
        life: u32,
    },
    /// The sync after a node stored a snapshot of its own.
    SnapshotSync {
        node: usize,
        life: u32,
    },
    /// A follower's received snapshot file is durable (synced and renamed).
    ReceivedDurable {
        node: usize,
        life: u32,
    },
    /// The `k`th scripted fault.
    Script {
        k: usize,
    },
    /// A crash a scripted trigger fired; `kept_writes` as in [`SimLog::crash_keeping`].
    TriggeredCrash {
        node: usize,
        life: u32,
        kept_writes: Option<usize>,
        down_ticks: u64,
    },
    Fault,
    /// One more fault, outside the regular schedule.
    ExtraFault,
    HealPartition {
        generation: u64,
    },
    Restart {
        node: usize,
    },
    Resume {
        node: usize,
        pause: u64,
    },
    ClientStart {
        client: usize,
    },
    ClientResend {
        client: usize,
        op: u64,
    },
    ClientArrive {
        node: usize,
        client: usize,
        op: u64,
        attempt: u32,
        request: u64,
    },
    ClientTimeout {
        client: usize,
        op: u64,
        attempt: u32,
    },
    /// Crash and quickly restart a node, if partition `generation` is still in force.
    QuickRestart {
        node: usize,
        generation: u64,
    },
    /// Crash a node that just became leader, if it still leads that term.
    CrashNewLeader {
        node: usize,
        term: Term,
    },
    EndSafety,
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub(super) enum Phase {
    Safety,
    Liveness,
    Done,
}

impl<W: Workload> Simulator<W> {
    pub(super) fn run_inner(&mut self) -> Result<(), Violation> {
        while self.phase != Phase::Done {
            let Some(((time, _), ev)) = self.queue.pop_first() else {
                return Err(Violation::Liveness {
                    detail: "the event queue ran dry".into(),
                });
            };
            self.now = time;
            self.events += 1;
            self.handle(ev)?;
            if self.phase == Phase::Liveness {
                self.check_liveness()?;
            }
        }
        self.final_checks()
    }

    // ----- scheduling and bookkeeping ----------------------------------------------------

    pub(super) fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    pub(super) fn schedule_in(&mut self, delay: u64, ev: Ev) {
        self.schedule(self.now + delay, ev);
    }

    pub(super) fn count(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_insert(0) += 1;
    }

    pub(super) fn record(&mut self, event: TraceEvent) {
        if self.verbose {
            println!("{:>9.3} {event}", self.now as f64 / UNITS_PER_TICK as f64);
        }
        self.trace.record(self.now, event);
    }

    pub(super) fn fault_gap(&mut self) -> u64 {
        let (lo, hi) = self.cfg.faults.fault_gap_ticks;
        self.rng
            .gen_range(lo * UNITS_PER_TICK..=hi * UNITS_PER_TICK)
    }

    pub(super) fn hist_time(&mut self) -> u64 {
        self.hist_clock += 1;
        self.hist_clock
    }

    pub(super) fn node_is_up(&self, i: usize) -> bool {
        self.nodes[i].raft.is_some()
    }

    pub(super) fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.paused.is_none())
            .filter_map(|(i, n)| n.raft.as_ref().map(|r| (i, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(i, _)| i)
    }

    // ----- the event loop ----------------------------------------------------------------

    pub(super) fn handle(&mut self, ev: Ev) -> Result<(), Violation> {
        match ev {
            Ev::Tick { node, life } => self.on_tick(node, life),
            Ev::Deliver { msg, send_seq } => self.on_deliver(msg, send_seq),
            Ev::SyncDone { node, life } => self.on_sync_done(node, life),
            Ev::SnapshotSync { node, life } => self.on_snapshot_sync(node, life),
            Ev::ReceivedDurable { node, life } => self.on_received_durable(node, life),
            Ev::Script { k } => self.on_script(k),
            Ev::TriggeredCrash {
                node,
                life,
                kept_writes,
                down_ticks,
            } => {
                if self.nodes[node].life != life || self.phase != Phase::Safety {
                    return Ok(());
                }
                self.count("scripted_crash");
                self.crash_keeping(node, kept_writes)?;
                self.schedule_in(down_ticks * UNITS_PER_TICK, Ev::Restart { node });
                Ok(())
            }
            Ev::Fault => self.on_fault(),
            Ev::ExtraFault => self.inject_fault(),
            Ev::HealPartition { generation } => {
                if generation == self.partition_generation && self.net.is_partitioned() {
                    self.net.heal();
                    self.count("heal");
                    self.record(TraceEvent::Heal);
                }
                Ok(())
            }
            Ev::Restart { node } => {
                if self.node_is_up(node) || self.phase != Phase::Safety {
                    return Ok(());
                }
                self.count("restart");
                self.start_node(node)
            }
            Ev::Resume { node, pause } => {
                if self.nodes[node].paused == Some(pause) {
                    self.resume(node)?;
                }
                Ok(())
            }
            Ev::ClientStart { client } => {
                self.client_start(client);
                Ok(())
            }
            Ev::ClientResend { client, op } => {
                self.client_send(client, op);
                Ok(())
            }
            Ev::ClientArrive {
                node,
                client,
                op,
                attempt,
                request,
            } => self.on_client_arrive(node, client, op, attempt, request),
            Ev::ClientTimeout {
                client,
                op,
                attempt,
            } => {
                self.on_client_timeout(client, op, attempt);
                Ok(())
            }
            Ev::CrashNewLeader { node, term } => {
                let leads = self.nodes[node]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() == Role::Leader && r.term() == term);
                if !leads || self.phase != Phase::Safety {
                    return Ok(());
                }
                self.count("crash_new_leader");
                self.crash(node)?;
                let d = self.rng.gen_range(UNITS_PER_TICK / 4..=5 * UNITS_PER_TICK);
                self.schedule_in(d, Ev::Restart { node });
                Ok(())
            }
            Ev::QuickRestart { node, generation } => {
                if generation != self.partition_generation
                    || !self.net.is_partitioned()
                    || !self.node_is_up(node)
                    || self.phase != Phase::Safety
                {
                    return Ok(());
                }
                self.count("quick_restart");
                self.crash(node)?;
                let d = self.rng.gen_range(UNITS_PER_TICK / 10..=UNITS_PER_TICK);
                self.schedule_in(d, Ev::Restart { node });
                Ok(())
            }
            Ev::EndSafety => self.start_liveness(),
        }
    }
}
