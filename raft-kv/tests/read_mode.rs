//! `read_mode` in the config file (issue 19): a cluster started with lease reads serves
//! linearizable `get`s through every node, and a bad value is a clear error (exit code
//! 2) from `raft-kv init`, `raft-kv node` and the clients alike.

mod common;

use common::*;
use raft_kv::config::{ClusterConfig, ReadModeName};

#[test]
fn a_cluster_with_lease_reads_serves_get() {
    let (mut cluster, out) = Cluster::init(
        3,
        &["--no-encrypt", "--ephemeral", "--read-mode", "lease"],
        &[],
    );
    assert!(stdout(&out).contains("Reads: lease"), "{}", stdout(&out));
    let file = std::fs::read_to_string(&cluster.config).unwrap();
    assert!(file.contains("read_mode = \"lease\""), "{file}");
    let config = ClusterConfig::load(&cluster.config).unwrap();
    assert_eq!(config.protocol.read_mode, ReadModeName::Lease);
    cluster.start_all();
    // Each node says how it serves reads as it starts.
    for name in cluster.names.clone() {
        let line = cluster.lines(&name).wait_for(0, &["starting on"], WAIT);
        let line = line.unwrap_or_else(|| panic!("{name} never logged its start"));
        assert!(line.contains("lease reads"), "{line}");
    }
    let names: Vec<String> = cluster.names.clone();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let leader = cluster.agreed_leader(&refs);
    cluster.put(&leader, "Hello", "World");
    // A linearizable read through every node (followers ask the leader, which answers
    // from its lease) sees the acknowledged write.
    for name in &refs {
        let out = cluster.cli(&["get", "Hello", "--node", name]);
        assert!(out.status.success(), "get via {name}: {}", stderr(&out));
        assert_eq!(stdout(&out), "World\n", "get via {name}");
    }
    cluster.put(&leader, "Hello", "again");
    let out = cluster.cli(&["get", "Hello", "--node", &leader]);
    assert_eq!(stdout(&out), "again\n", "{}", stderr(&out));
}

#[test]
fn the_default_is_read_index_and_a_bad_read_mode_is_a_clear_error() {
    let (mut cluster, out) = Cluster::init(1, &["--no-encrypt", "--ephemeral"], &[]);
    assert!(
        stdout(&out).contains("Reads: read_index"),
        "{}",
        stdout(&out)
    );
    let file = std::fs::read_to_string(&cluster.config).unwrap();
    assert!(file.contains("read_mode = \"read_index\""), "{file}");

    // `raft-kv init --read-mode` refuses an unknown mode, naming the flag and the choices.
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("c.toml");
    let o = raft_kv(
        &[
            "init",
            "--out",
            out_path.to_str().unwrap(),
            "--cluster-name",
            "c",
            "--nodes",
            "1",
            "--read-mode",
            "fast",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("--read-mode") && err.contains("read_index"),
        "{err}"
    );
    assert!(!out_path.exists());

    // A file with an unknown mode: the node and the clients refuse it with exit code 2,
    // naming the field, the value and the choices; nothing panics.
    let bad = file.replace("read_mode = \"read_index\"", "read_mode = \"fast\"");
    assert_ne!(bad, file);
    let bad_path = cluster.dir.path().join("bad.toml");
    std::fs::write(&bad_path, bad).unwrap();
    cluster.start_with("node1", &bad_path, "info", &[]);
    let code = cluster.proc_mut("node1").wait_exit(WAIT);
    assert_eq!(code, Some(2), "the node must refuse the config");
    // The process has exited; its last lines may still be on their way through the pipe.
    // (TOML's message spans lines; its last one names the choices.)
    let last = cluster
        .lines("node1")
        .wait_for(0, &["unknown variant"], WAIT);
    assert!(last.is_some(), "{:#?}", cluster.lines("node1").all());
    let lines = cluster.lines("node1").all().join("\n");
    for part in ["read_mode", "fast", "read_index", "lease"] {
        assert!(
            lines.contains(part),
            "the error should name {part}: {lines}"
        );
    }
    assert!(!lines.contains("panicked"), "{lines}");
    let o = raft_kv(&["get", "k", "--config", bad_path.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("read_mode"), "{}", stderr(&o));
}
