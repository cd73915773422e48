//! Issue 19 over real UDP with real processes: a raft-kv cluster with lease reads whose
//! leader process is stopped (SIGSTOP) while the other two elect a leader and commit
//! `k=2`. A read of `k` sent to the stopped old leader after that commit (its connection
//! waits in the node's listen backlog) and served once the process continues (SIGCONT)
//! must not return the old value `1`: on resuming, the node's WaitLoop first catches up
//! on the time that passed, finds its lease long gone, and no longer leads.
//!
//! `RAFT_KV_PAUSE_TRIALS` sets the trials (default 2).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// The client port of node `name` in the cluster's config file.
fn client_port(config: &Path, name: &str) -> u16 {
    let text = std::fs::read_to_string(config).expect("read the config");
    let value: toml::Value = toml::from_str(&text).expect("parse the config");
    let nodes = value["nodes"].as_array().expect("nodes");
    let node = nodes
        .iter()
        .find(|n| n["name"].as_str() == Some(name))
        .expect("node in config");
    let addr = node["client_addr"].as_str().expect("client_addr");
    addr.rsplit(':').next().unwrap().parse().expect("port")
}

/// Whether the kernel holds an established connection to local port `port` (the reader
/// connected to the stopped node: the kernel completed the handshake into the listen
/// backlog), from /proc/net/tcp.
fn connection_waiting_on(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 4 {
            return false;
        }
        let port_of = |addr: &str| {
            addr.rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
        };
        port_of(cols[1]) == Some(port) && cols[3] == "01"
    })
}

fn one_trial(trial: u64) {
    let (mut c, _) = Cluster::init(
        3,
        &["--no-encrypt", "--ephemeral", "--read-mode", "lease"],
        &[],
    );
    c.start_all();
    let all = ["node1", "node2", "node3"];
    let leader = c.agreed_leader(&all);
    c.put(&leader, "k", "1");
    // A linearizable read on the leader: a quorum acknowledges a round, the lease starts.
    let out = c.cli(&["get", "k", "--node", &leader]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1");

    let pid = c.proc_mut(&leader).pid();
    signal(pid, "STOP");
    let others: Vec<&str> = all.iter().copied().filter(|n| *n != leader).collect();
    let new_leader = c.agreed_leader(&others);
    assert_ne!(new_leader, leader);
    c.put(&new_leader, "k", "2");

    // Invoked after k=2 was acknowledged: a linearizable read must not return 1.
    let port = client_port(&c.config, &leader);
    let reader = Command::new(BIN)
        .args(["get", "k", "--node", &leader, "--timeout-ms", "15000"])
        .args(["--config", c.config_str()])
        .env_remove("RAFT_KV_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the reader");
    wait_until("the reader connects to the stopped node", WAIT, || {
        connection_waiting_on(port).then_some(())
    });
    signal(pid, "CONT");
    let out = reader.wait_with_output().expect("reader output");
    let value = stdout(&out).trim().to_string();
    assert_ne!(
        value, "1",
        "trial {trial}: the paused old leader {leader} served a stale lease read after k=2 \
         was acknowledged"
    );
    if out.status.success() {
        assert_eq!(value, "2", "trial {trial}: {}", stderr(&out));
    }
    println!(
        "trial {trial}: old leader {leader} answered {:?} ({})",
        value,
        stderr(&out).trim()
    );
}

#[test]
fn a_paused_lease_leader_serves_no_stale_read() {
    let trials = std::env::var("RAFT_KV_PAUSE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for trial in 0..trials {
        one_trial(trial);
    }
}
