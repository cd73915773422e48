//! Bad input to every raft-kv command (issue 16): a missing or malformed config, a wrong
//! field, a node id not in the config, ports already in use, a data directory that is a
//! file, damaged or another cluster's, a wrong or missing password, and `init` over an
//! existing file. Each gives exit code 2 and ONE line on stderr (`raft-kv: error: ...`),
//! and nothing on disk is lost or overwritten. docs/operations.md ("raft-kv: bad input")
//! has the table of these cases. Every run is bounded by a deadline.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use raft_kv::config::ClusterConfig;

/// Asserts the run failed with exit code 2 and exactly one stderr line, the error, which
/// contains every one of `parts`; returns that line.
fn assert_one_error(r: &Run, parts: &[&str]) -> String {
    assert_eq!(r.code, Some(2), "exit code; stderr: {}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line on stderr:\n{}", r.stderr);
    let line = lines[0];
    assert!(line.starts_with("raft-kv: error: "), "{line}");
    for p in parts {
        assert!(line.contains(p), "{line:?} does not mention {p:?}");
    }
    assert!(r.stdout.is_empty(), "stdout: {}", r.stdout);
    line.to_string()
}

/// Every file under `dir` with its bytes (empty when `dir` does not exist).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                files.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// raft-store's own files of a data dir: everything but sled's `db`, `conf` and
/// `snap.*`, which sled rewrites as it opens them, before raft-store can refuse the
/// directory (docs/operations.md, "raft-kv: bad input").
fn raft_store_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    tree(dir)
        .into_iter()
        .filter(|(p, _)| {
            let name = p.to_string_lossy();
            !(name == "db" || name == "conf" || name.starts_with("snap."))
        })
        .collect()
}

/// Asserts two trees hold the same files with the same bytes, naming the differences
/// (never printing the bytes).
fn assert_same_files(now: &BTreeMap<PathBuf, Vec<u8>>, before: &BTreeMap<PathBuf, Vec<u8>>) {
    let differ: Vec<_> = before
        .keys()
        .chain(now.keys())
        .filter(|p| now.get(*p) != before.get(*p))
        .collect();
    assert!(differ.is_empty(), "the refused start changed {differ:?}");
}

/// A cluster config with `nodes` nodes on free ports, written by `raft-kv init`.
fn cluster(nodes: usize, extra: &[&str]) -> Cluster {
    Cluster::init(nodes, extra, &[]).0
}

fn node_args<'a>(c: &'a Cluster, id: &'a str) -> Vec<&'a str> {
    vec!["node", "--config", c.config_str(), "--id", id, "--headless"]
}

#[test]
fn a_missing_config_fails_every_command_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let m = missing.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["node", "--config", m, "--id", "node1", "--headless"],
        vec!["put", "k", "v", "--config", m],
        vec!["get", "k", "--config", m],
        vec!["del", "k", "--config", m],
        vec!["status", "--config", m],
        vec!["status", "--json", "--config", m],
        vec!["stop", "--config", m],
        vec!["start", "--config", m],
        vec!["log-level", "debug", "--config", m],
        vec!["bench", "--config", m],
    ];
    for args in commands {
        let r = run_bounded(&args, &[]);
        assert_one_error(&r, &["no cluster config at", m, "raft-kv init"]);
    }
    assert!(!missing.exists(), "a failed command created the config");
}

#[test]
fn malformed_toml_names_the_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "cluster_name = \"x\"\n[[nodes]\nid = 1\n").unwrap();
    let b = bad.to_str().unwrap();
    for args in [
        vec!["node", "--config", b, "--id", "node1", "--headless"],
        vec!["get", "k", "--config", b],
    ] {
        let r = run_bounded(&args, &[]);
        assert_one_error(
            &r,
            &[b, "line 2, column 8 (`[[nodes]`)", "invalid table header"],
        );
    }
}

#[test]
fn a_wrong_field_value_is_named() {
    let c = cluster(1, &["--ephemeral"]);
    let text = std::fs::read_to_string(&c.config).unwrap();
    let text = text.replace("read_mode = \"read_index\"", "read_mode = \"fast\"");
    std::fs::write(&c.config, &text).unwrap();
    let r = run_bounded(&node_args(&c, "node1"), &[]);
    // The line is quoted, so the message names the key even though TOML's does not.
    assert_one_error(
        &r,
        &["read_mode = \"fast\"", "unknown variant `fast`", "line "],
    );
}

#[test]
fn a_node_id_not_in_the_config_is_refused() {
    let c = cluster(3, &["--ephemeral"]);
    for id in ["node9", "9"] {
        let r = run_bounded(&node_args(&c, id), &[]);
        assert_one_error(&r, &[&format!("no node \"{id}\""), "node1, node2, node3"]);
    }
}

#[test]
fn a_raft_port_in_use_fails_before_the_log_is_touched() {
    let c = cluster(1, &["--persistent"]);
    let config = ClusterConfig::load(&c.config).unwrap();
    let entry = &config.nodes[0];
    let data = config.storage_dir(entry);
    let _taken = std::net::UdpSocket::bind(&entry.raft_addr).unwrap();
    let r = run_bounded(&node_args(&c, "node1"), &[]);
    assert_one_error(&r, &["Raft (UDP) port", &entry.raft_addr, "in use"]);
    assert!(!data.exists(), "the node created its data dir {data:?}");
}

#[test]
fn a_client_port_in_use_fails_before_the_log_is_touched() {
    let c = cluster(1, &["--persistent"]);
    let config = ClusterConfig::load(&c.config).unwrap();
    let entry = &config.nodes[0];
    let data = config.storage_dir(entry);
    let _taken = std::net::TcpListener::bind(&entry.client_addr).unwrap();
    let r = run_bounded(&node_args(&c, "node1"), &[]);
    assert_one_error(&r, &["client (TCP) port", &entry.client_addr, "in use"]);
    assert!(!data.exists(), "the node created its data dir {data:?}");
}

#[test]
fn a_data_dir_that_is_a_file_is_left_alone() {
    let c = cluster(1, &["--persistent"]);
    let config = ClusterConfig::load(&c.config).unwrap();
    let data = config.storage_dir(&config.nodes[0]);
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    std::fs::write(&data, b"not a directory").unwrap();
    let r = run_bounded(&node_args(&c, "node1"), &[]);
    assert_one_error(&r, &["cannot open node1's persistent log"]);
    assert_eq!(std::fs::read(&data).unwrap(), b"not a directory");
}

/// A one-node persistent cluster that committed two writes, then was killed: its
/// config, and node1's data dir.
fn written_cluster(extra: &[&str], envs: &[(&str, &str)]) -> (Cluster, PathBuf) {
    let mut flags = vec!["--persistent"];
    flags.extend_from_slice(extra);
    let (mut c, _) = Cluster::init(1, &flags, envs);
    c.start_all();
    c.agreed_leader(&["node1"]);
    c.put("node1", "a", "1");
    c.put("node1", "b", "2");
    c.kill("node1");
    let config = ClusterConfig::load(&c.config).unwrap();
    let data = config.storage_dir(&config.nodes[0]);
    (c, data)
}

#[test]
fn another_clusters_data_dir_is_refused_and_keeps_its_entries() {
    let (mut c, data) = written_cluster(&["--no-encrypt"], &[]);
    let before = raft_store_files(&data);
    assert!(!before.is_empty());
    // The same directory, now claimed by a config of another name.
    let text = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(
        &c.config,
        text.replace("My first cluster", "Somebody else's cluster"),
    )
    .unwrap();
    let r = run_bounded(&node_args(&c, "node1"), &[]);
    assert_one_error(&r, &["cannot open node1's persistent log"]);
    assert_same_files(&raft_store_files(&data), &before);
    // Under its own config the node starts with everything it had.
    std::fs::write(&c.config, text).unwrap();
    c.start("node1");
    c.wait_value("node1", "a", "1");
    c.wait_value("node1", "b", "2");
}

#[test]
fn a_damaged_data_dir_is_refused_every_time() {
    let (c, data) = written_cluster(&["--no-encrypt"], &[]);
    // Damage sled's data file where the records are.
    let db = data.join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let end = bytes.len().min(400);
    for b in &mut bytes[60..end] {
        *b = 0xff;
    }
    std::fs::write(&db, &bytes).unwrap();
    let before = raft_store_files(&data);
    for _ in 0..2 {
        let r = run_bounded(&node_args(&c, "node1"), &[]);
        assert_one_error(&r, &["cannot open node1's persistent log", "corrupt"]);
        assert_same_files(&raft_store_files(&data), &before);
    }
}

#[test]
fn a_wrong_password_is_refused_and_writes_nothing() {
    let mut flags = encrypted_flags();
    flags.push("--ephemeral");
    let (mut c, _) = Cluster::init(1, &flags, &PASSWORD_ENV);
    c.start_all();
    c.agreed_leader(&["node1"]);
    let cfg = c.config_str();
    let wrong = [("RAFT_KV_PASSWORD", "not the right password")];
    let r = run_bounded(
        &["put", "k", "v", "--config", cfg, "--node", "node1"],
        &wrong,
    );
    assert_one_error(&r, &["password differs"]);
    let r = run_bounded(&["get", "k", "--config", cfg], &wrong);
    assert_one_error(&r, &["password differs"]);
    // No password at all: the client says where it looked.
    let r = run_bounded(&["put", "k", "v", "--config", cfg], &[]);
    assert_one_error(&r, &["RAFT_KV_PASSWORD", "not set"]);
    // Nothing was written.
    let r = run_bounded(&["get", "k", "--config", cfg], &PASSWORD_ENV);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    // A node started without the password does not start.
    c.kill("node1");
    let r = run_bounded(&node_args(&c, "node1"), &[]);
    assert_one_error(&r, &["RAFT_KV_PASSWORD", "not set"]);
}

#[test]
fn init_never_overwrites_and_names_what_is_missing() {
    let c = cluster(3, &["--ephemeral"]);
    let before = std::fs::read(&c.config).unwrap();
    let cfg = c.config_str();
    let args = [
        "init",
        "--out",
        cfg,
        "--cluster-name",
        "other",
        "--nodes",
        "5",
        "--non-interactive",
    ];
    let r = run_bounded(&args, &[]);
    assert_one_error(&r, &["already exists", "--force"]);
    assert_eq!(std::fs::read(&c.config).unwrap(), before);
    let fresh = c.dir.path().join("fresh.toml");
    let r = run_bounded(
        &[
            "init",
            "--out",
            fresh.to_str().unwrap(),
            "--nodes",
            "3",
            "--non-interactive",
        ],
        &[],
    );
    assert_one_error(&r, &["--cluster-name"]);
    assert!(!fresh.exists());
    let r = run_bounded(
        &[
            "init",
            "--out",
            c.dir.path().join("no/such/dir/c.toml").to_str().unwrap(),
            "--cluster-name",
            "x",
            "--nodes",
            "3",
            "--non-interactive",
        ],
        &[],
    );
    assert_one_error(&r, &["cannot write"]);
}

#[test]
fn a_bad_log_level_is_refused() {
    let c = cluster(1, &["--ephemeral"]);
    let mut args = node_args(&c, "node1");
    args.extend_from_slice(&["--log-level", "loud"]);
    let r = run_bounded(&args, &[]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("loud"), "{}", r.stderr);
}
