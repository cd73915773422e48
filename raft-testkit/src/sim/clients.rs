//! The client workload: clients that write and read, retry, follow leader hints and
//! record the history the linearizability checker reads.

use raft_core::{LogIndex, NodeId, ProposeError};
use rand::seq::SliceRandom;
use rand::Rng;

use super::workload::{Call, Request, Workload};
use super::world::*;
use super::{Simulator, UNITS_PER_TICK};
use crate::checker::Violation;
use crate::trace::TraceEvent;

/// A client's request in progress at a node.
#[derive(Clone, Copy, Debug)]
pub(super) struct Waiter {
    pub(super) client: usize,
    pub(super) op: u64,
    pub(super) attempt: u32,
}

#[derive(Debug)]
pub(super) enum Reply<O> {
    /// Done: a read's output, or the index where a write took effect.
    Ok(Option<O>, Option<LogIndex>),
    /// Definitely did not take effect (or a read failed): retry, at `hint` if known.
    Retry(Option<NodeId>),
}

pub(super) struct ClientOp {
    pub(super) id: u64,
    pub(super) attempt: u32,
    pub(super) node: usize,
    pub(super) deadline: u64,
}

pub(super) struct Client {
    pub(super) leader_hint: Option<NodeId>,
    pub(super) op: Option<ClientOp>,
}

impl<W: Workload> Simulator<W> {
    // ----- clients -----------------------------------------------------------------------

    pub(super) fn client_start(&mut self, c: usize) {
        if self.phase == Phase::Done || self.clients[c].op.is_some() {
            return;
        }
        let id = self.history.len() as u64;
        if self.cfg.ops_max.is_some_and(|max| id >= max) {
            return; // the run's operation budget is spent
        }
        let input = self.workload.draw(&mut self.rng, id, &mut self.ops);
        let call = self.hist_time();
        self.history.push(Call {
            client: c as u64,
            input,
            output: None,
            call,
            ret: None,
        });
        let deadline = self.now + self.cfg.client_op_timeout_ticks * UNITS_PER_TICK;
        self.clients[c].op = Some(ClientOp {
            id,
            attempt: 0,
            node: 0,
            deadline,
        });
        self.client_send(c, id);
    }

    pub(super) fn client_send(&mut self, c: usize, op: u64) {
        let n = self.nodes.len();
        let hint = self.clients[c].leader_hint.take();
        let pick = self.rng.gen_range(0..n);
        let Some(cur) = self.clients[c].op.as_mut().filter(|o| o.id == op) else {
            return;
        };
        let node = match hint {
            Some(id) => (id - 1) as usize,
            None => pick,
        };
        cur.attempt += 1;
        cur.node = node;
        let attempt = cur.attempt;
        let request = self.next_request;
        self.next_request += 1;
        if attempt == 1 {
            let id = self.nodes[node].id;
            let input = &self.history[op as usize].input;
            let words = self.workload.input_words(input);
            let input = format!("{input:?}");
            self.record(TraceEvent::Invoke {
                client: c,
                op,
                node: id,
                input,
                words,
            });
        }
        let d = self.rng.gen_range(10..=UNITS_PER_TICK / 4);
        self.schedule_in(
            d,
            Ev::ClientArrive {
                node,
                client: c,
                op,
                attempt,
                request,
            },
        );
        self.schedule_in(
            self.cfg.client_attempt_timeout_ticks * UNITS_PER_TICK,
            Ev::ClientTimeout {
                client: c,
                op,
                attempt,
            },
        );
    }

    pub(super) fn on_client_arrive(
        &mut self,
        i: usize,
        client: usize,
        op: u64,
        attempt: u32,
        request: u64,
    ) -> Result<(), Violation> {
        if !self.node_is_up(i) {
            return Ok(()); // the client will time out
        }
        if self.nodes[i].paused.is_some() {
            self.nodes[i].pause_inbox.push(Ev::ClientArrive {
                node: i,
                client,
                op,
                attempt,
                request,
            });
            return Ok(());
        }
        let w = Waiter {
            client,
            op,
            attempt,
        };
        let request_kind = self.workload.request(op, &self.history[op as usize].input);
        let node = &mut self.nodes[i];
        let raft = node.raft.as_mut().expect("up");
        let result = match request_kind {
            Request::Write(cmd) => {
                let r = raft.propose_or_forward(request, cmd);
                if r.is_ok() {
                    node.placing.insert(request, w);
                }
                r
            }
            Request::Read => {
                let r = raft.read_index(request);
                if r.is_ok() {
                    node.reading.insert(request, w);
                }
                r
            }
        };
        if let Err(e) = result {
            let hint = match e {
                ProposeError::NotLeader { leader } => leader,
                _ => None,
            };
            self.client_reply(w, Reply::Retry(hint));
        }
        self.drive(i)?;
        self.after_node_event(i)
    }

    pub(super) fn on_client_timeout(&mut self, c: usize, op: u64, attempt: u32) {
        let Some(cur) = self.clients[c].op.as_ref() else {
            return;
        };
        if cur.id != op || cur.attempt != attempt {
            return;
        }
        if self.now >= cur.deadline {
            self.client_give_up(c);
            return;
        }
        // Try another node: the one asked may be down, cut off or slow.
        let avoid = cur.node;
        let others: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&i| i != avoid)
            .map(|i| self.nodes[i].id)
            .collect();
        self.clients[c].leader_hint = others.choose(&mut self.rng).copied();
        self.client_send(c, op);
    }

    pub(super) fn client_give_up(&mut self, c: usize) {
        let Some(cur) = self.clients[c].op.take() else {
            return;
        };
        self.ops.never_returned += 1;
        self.record(TraceEvent::GiveUp {
            client: c,
            op: cur.id,
        });
        let think = self.rng.gen_range(0..=2 * UNITS_PER_TICK);
        self.schedule_in(think, Ev::ClientStart { client: c });
    }

    pub(super) fn client_reply(&mut self, w: Waiter, reply: Reply<W::Output>) {
        let Some(cur) = self.clients[w.client].op.as_ref() else {
            return;
        };
        if cur.id != w.op {
            return;
        }
        match reply {
            Reply::Ok(output, write_index) => {
                let ret = self.hist_time();
                let word = self.workload.output_word(output.as_ref());
                let shown = output.as_ref().map(|o| format!("{o:?}"));
                let h = &mut self.history[w.op as usize];
                h.ret = Some(ret);
                h.output = output;
                if let Some(index) = write_index {
                    self.acked.push((w.op, index));
                }
                self.clients[w.client].op = None;
                self.ops.ok += 1;
                self.record(TraceEvent::Return {
                    client: w.client,
                    op: w.op,
                    output: shown,
                    word,
                });
                let think = self.rng.gen_range(0..=2 * UNITS_PER_TICK);
                self.schedule_in(think, Ev::ClientStart { client: w.client });
            }
            Reply::Retry(hint) => {
                // Only the answer to the current attempt redirects the client.
                if cur.attempt != w.attempt {
                    return;
                }
                if self.now >= cur.deadline {
                    self.client_give_up(w.client);
                    return;
                }
                self.clients[w.client].leader_hint = hint;
                let backoff = self.rng.gen_range(UNITS_PER_TICK / 2..=2 * UNITS_PER_TICK);
                self.schedule_in(
                    backoff,
                    Ev::ClientResend {
                        client: w.client,
                        op: w.op,
                    },
                );
            }
        }
    }
}
