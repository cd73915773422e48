//! A fixed-rate game loop that replicates its players' moves without blocking a frame:
//! each frame submits the moves made since the last one through a `Submitter` and
//! drains whatever outcomes arrived, never waiting past the frame's end.
//! Run: `cargo run -p raft-core --example game_loop`
use std::time::{Duration, Instant};

use raft_core::node::{ChannelNetwork, KvCommand, KvStore, Node, NodeConfig, NodeError};
use raft_core::MemLog;

const FRAME: Duration = Duration::from_millis(16);
const FRAMES: u32 = 120;
const MOVES_PER_FRAME: u32 = 40;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let net = ChannelNetwork::new();
    let nodes = (1..=3)
        .map(|id| {
            Node::builder(NodeConfig::new(id, [1, 2, 3]))
                .log(MemLog::new())
                .transport(net.transport(id))
                .state_machine(KvStore::<String, u32>::new())
                .start()
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The game runs next to node 1, whether it leads or not (a follower forwards).
    let node = &nodes[0];
    node.wait_for_leader(Duration::from_secs(10))?;
    let mut submitter = node.submitter();
    let mut completions = Vec::new();
    let (mut applied, mut retried, mut deferred) = (0u64, 0u64, 0u64);
    let mut next_frame = Instant::now();
    for frame in 0..FRAMES {
        next_frame += FRAME;
        // This frame's moves: one key per player, its latest position.
        for player in 0..MOVES_PER_FRAME {
            let command = KvCommand::Put {
                key: format!("player-{player}"),
                value: frame,
            }
            .encode();
            if let Err(NodeError::Busy) = submitter.submit(command) {
                // Too many in flight: this move waits for a later frame (a newer
                // position will replace it anyway).
                deferred += 1;
            }
        }
        // Collect what completed, waiting at most until the frame ends.
        completions.clear();
        submitter.drain_until(&mut completions, next_frame);
        for (_ticket, result) in completions.drain(..) {
            match result {
                Ok(_) => applied += 1,
                // Did not take effect (a leader change): the next frame's move replaces it.
                Err(NodeError::Dropped | NodeError::NoLeader | NodeError::Rejected(_)) => {
                    retried += 1
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(wait) = next_frame.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // Shutting down: collect the last outcomes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while submitter.in_flight() > 0 && Instant::now() < deadline {
        submitter.drain_until(&mut completions, deadline);
    }
    applied += completions.iter().filter(|(_, r)| r.is_ok()).count() as u64;
    println!(
        "{FRAMES} frames: {applied} moves applied, {retried} to redo, {deferred} deferred, {} still in flight",
        submitter.in_flight()
    );
    for n in &nodes {
        n.stop();
    }
    Ok(())
}
