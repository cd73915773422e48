//! The original prototype's Beta Tests 2 to 15, as automated scenarios against the real
//! `raft-kv` binary: nodes are child processes on loopback UDP, clients are
//! `raft-kv put/get/status` runs, and every wait is on a condition with a deadline.
//!
//! | Beta Test | Scenario | Test |
//! |---|---|---|
//! | 2 Create config, unencrypted/ephemeral | `init` flags | `beta_02_to_05_create_config_variants` |
//! | 3 Create config, encryption | `init --encrypt --password-env` | same |
//! | 4 Create config, persistent storage | `init --persistent` | same |
//! | 5 Create config, encryption + persistent | both | same |
//! | 6 Join from loading config | start 3 nodes, exit node1, 2 and 3 run on | `beta_06_to_14_*` |
//! | 7 Join from creating config | new config file, node1 finds the cluster | `beta_06_to_14_*` |
//! | 8 Append entry | `put Hello World` to the leader ("UAS running") | `beta_06_to_14_*` |
//! | 9 Receive commit entries | every node holds Hello = World | `beta_06_to_14_*` |
//! | 10 Stop node | `raft-kv stop`: stopped, log gone | `beta_06_to_14_*` |
//! | 11 Start node | `raft-kv start`: rejoins, log rebuilt | `beta_06_to_14_*` |
//! | 12 Survive node failure | kill the leader's process; a new leader | `beta_06_to_14_*` |
//! | 13 Re-join, rebuild log | restart it; its log is brought up to date | `beta_06_to_14_*` |
//! | 14 Read developer logs | live switch to debug, then trace | `beta_06_to_14_*` |
//! | 15 Start from persistent storage | 5 entries, stop all, restart in another order | `beta_15_*` |
//!
//! Each cluster scenario runs unencrypted and encrypted (Beta Tests 3 and 5's configs).

mod common;

use common::*;
use raft_kv::config::ClusterConfig;

#[test]
fn beta_02_to_05_create_config_variants() {
    let pw_env = [("RAFT_KV_PASSWORD", PASSWORD)];
    // (Beta Test, flags, encrypted, persistent)
    let variants: Vec<(u32, Vec<&str>, bool, bool)> = vec![
        (2, vec!["--no-encrypt", "--ephemeral"], false, false),
        (
            3,
            vec!["--encrypt", "--password-env", "RAFT_KV_PASSWORD"],
            true,
            false,
        ),
        (4, vec!["--no-encrypt", "--persistent"], false, true),
        (
            5,
            vec![
                "--encrypt",
                "--password-env",
                "RAFT_KV_PASSWORD",
                "--persistent",
            ],
            true,
            true,
        ),
    ];
    for (beta, flags, encrypted, persistent) in variants {
        let (cluster, out) = Cluster::init(3, &flags, &pw_env);
        let text = stdout(&out);
        // "Retry time auto calculates to 25s" (5 join attempts x 5 s).
        assert!(
            text.contains("Join retry time: 25 s (5 attempts x 5 s)"),
            "Beta Test {beta}: {text}"
        );
        assert!(
            text.contains("Cluster \"My first cluster\": 3 node(s)"),
            "{text}"
        );
        let config = ClusterConfig::load(&cluster.config).unwrap();
        assert_eq!(config.cluster_name, "My first cluster");
        assert_eq!(config.nodes.len(), 3);
        assert_eq!(config.timing.join_attempts, 5);
        assert_eq!(config.encryption.enabled, encrypted, "Beta Test {beta}");
        assert_eq!(config.storage.persistent, persistent, "Beta Test {beta}");
        let file = std::fs::read_to_string(&cluster.config).unwrap();
        assert!(
            !file.contains(PASSWORD),
            "Beta Test {beta}: the password must not be written to the config"
        );
        if encrypted {
            assert!(text.contains("password from environment variable RAFT_KV_PASSWORD"));
        }
        // The nodes' ports differ (the original's Start Node window).
        let mut ports: Vec<&str> = config.nodes.iter().map(|n| n.raft_addr.as_str()).collect();
        ports.dedup();
        assert_eq!(ports.len(), 3);
    }
}

#[test]
fn init_refuses_bad_input_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("c.toml");
    let out = out_path.to_str().unwrap();
    // (flags, what the error must name)
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "--cluster-name"),
        (vec!["--cluster-name", "c"], "--nodes"),
        (vec!["--cluster-name", "c", "--nodes", "0"], "--nodes"),
        (
            vec![
                "--cluster-name",
                "c",
                "--nodes",
                "3",
                "--join-attempts",
                "0",
            ],
            "--join-attempts",
        ),
        (
            vec![
                "--cluster-name",
                "c",
                "--nodes",
                "3",
                "--join-attempts",
                "many",
            ],
            "--join-attempts",
        ),
        (
            vec!["--cluster-name", "c", "--nodes", "3", "--store-password"],
            "--store-password",
        ),
        (
            vec![
                "--cluster-name",
                "c",
                "--nodes",
                "2",
                "--addresses",
                "nowhere,127.0.0.1:5",
            ],
            "--addresses",
        ),
    ];
    for (flags, named) in cases {
        let mut args = vec!["init", "--out", out];
        args.extend(flags.iter().copied());
        let o = raft_kv(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert!(err.contains(named), "{args:?} should name {named}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out_path.exists(), "{args:?} wrote a config anyway");
    }
    // A short stored password is refused, naming the rule.
    let o = raft_kv(
        &[
            "init",
            "--out",
            out,
            "--cluster-name",
            "c",
            "--nodes",
            "1",
            "--store-password",
        ],
        &[("RAFT_KV_PASSWORD", "short")],
    );
    assert!(
        stderr(&o).contains("at least 8 characters"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_configs_and_unreachable_nodes_are_clear_errors() {
    let (cluster, _) = Cluster::init(3, &["--no-encrypt", "--ephemeral"], &[]);
    // Nothing runs yet: a client gets exit code 2 and a message, never a panic.
    let o = cluster.cli(&["get", "Hello", "--timeout-ms", "500"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no node answered"), "{}", stderr(&o));

    // An unknown node name lists the real ones.
    let o = raft_kv(
        &[
            "node",
            "--config",
            cluster.config_str(),
            "--id",
            "node9",
            "--headless",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("node1, node2, node3"), "{}", stderr(&o));

    // A typo in the config names the field.
    let text = std::fs::read_to_string(&cluster.config).unwrap();
    let bad = cluster.dir.path().join("bad.toml");
    std::fs::write(&bad, text.replace("join_attempts = 5", "join_atempts = 5")).unwrap();
    let o = raft_kv(
        &[
            "node",
            "--config",
            bad.to_str().unwrap(),
            "--id",
            "node1",
            "--headless",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("join_atempts"), "{}", stderr(&o));

    // An invalid value names the field.
    std::fs::write(&bad, text.replace("join_attempts = 5", "join_attempts = 0")).unwrap();
    let o = raft_kv(&["status", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("timing.join_attempts"),
        "{}",
        stderr(&o)
    );

    // Encryption on, but the password's variable is unset.
    let (enc, _) = Cluster::init(3, &encrypted_flags(), &[]);
    let o = raft_kv(
        &[
            "node",
            "--config",
            enc.config_str(),
            "--id",
            "node1",
            "--headless",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("RAFT_KV_PASSWORD is not set"),
        "{}",
        stderr(&o)
    );
}

/// Beta Tests 6 to 14 on one cluster, as the original ran them one after another.
fn beta_06_to_14(encrypted: bool) {
    let mut flags = vec!["--ephemeral"];
    let envs: Vec<(&str, &str)> = if encrypted {
        flags.extend(encrypted_flags());
        vec![("RAFT_KV_PASSWORD", PASSWORD)]
    } else {
        flags.push("--no-encrypt");
        vec![]
    };
    let (mut c, _) = Cluster::init(3, &flags, &envs);

    // Beta Test 6: start three nodes from the config; exit node1; node2 and node3 run on.
    c.start_all();
    c.agreed_leader(&["node1", "node2", "node3"]);
    for n in ["node1", "node2", "node3"] {
        let line = c.lines(n).wait_for(0, &["found the cluster"], WAIT);
        assert!(line.is_some(), "{n} did not log finding the cluster");
        if encrypted {
            assert!(c.lines(n).wait_for(0, &["encrypted"], WAIT).is_some());
        }
    }
    c.kill("node1");
    let survivors = c.agreed_leader(&["node2", "node3"]);
    assert_ne!(survivors, "node1");

    // Beta Test 7: build a config again (same cluster) and start node1 from it: it
    // finds the cluster as a follower, and one node shows its UAS running.
    let b7 = c.dir.path().join("RaftClusterConfigB7.toml");
    let config = ClusterConfig::load(&c.config).unwrap();
    let raft: Vec<&str> = config.nodes.iter().map(|n| n.raft_addr.as_str()).collect();
    let client: Vec<&str> = config
        .nodes
        .iter()
        .map(|n| n.client_addr.as_str())
        .collect();
    let (raft, client) = (raft.join(","), client.join(","));
    let mut args = vec![
        "init",
        "--out",
        b7.to_str().unwrap(),
        "--cluster-name",
        "My first cluster",
        "--addresses",
        &raft,
        "--client-addresses",
        &client,
        "--join-attempts",
        "5",
    ];
    args.extend(flags.iter().copied());
    let o = raft_kv(&args, &envs);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Join retry time: 25 s"));
    c.start_with("node1", &b7, "info", &[]);
    let found = c
        .lines("node1")
        .wait_for(0, &["n1 found the cluster"], WAIT);
    assert!(found.is_some(), "node1: {:?}", c.lines("node1").all());
    let leader = c.agreed_leader(&["node1", "node2", "node3"]);
    let st = c.status_now("node1");
    if leader != "node1" {
        assert_eq!(st["role"], "follower");
        assert_eq!(st["uas_running"], "false");
    }
    assert_eq!(c.status_now(&leader)["uas_running"], "true");

    // Beta Test 8: append Hello/World on the node whose UAS is running.
    c.put(&leader, "Hello", "World");

    // Beta Test 9: every node's log shows Hello = World.
    for n in ["node1", "node2", "node3"] {
        c.wait_value(n, "Hello", "World");
        let entries = c.entries(n).unwrap();
        assert!(
            entries.iter().any(|e| e.ends_with("\tHello = World")),
            "{n}: {entries:?}"
        );
    }
    // Reads through any node are linearizable by default, and scripts get plain output.
    let o = c.cli(&["get", "Hello", "--node", "node3"]);
    assert_eq!(stdout(&o), "World\n");
    let o = c.cli(&["get", "Nobody"]);
    assert_eq!(o.status.code(), Some(1), "a missing key exits 1");
    assert_eq!(stdout(&o), "");

    // Beta Test 10: stop a follower: it shows as stopped and its log is gone.
    let follower = ["node1", "node2", "node3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let o = c.cli(&["stop", "--node", follower]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = c.status_now(follower);
    assert_eq!(st["running"], "false");
    assert_eq!(st["role"], "stopped");
    assert_eq!(st["uas_running"], "false");
    assert_eq!(c.entries(follower).unwrap(), Vec::<String>::new());
    // Its client port still answers, and says it is stopped.
    let o = c.cli(&["get", "Hello", "--stale", "--node", follower]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("stopped"), "{}", stderr(&o));
    // The others go on: writes still commit.
    c.put(&leader, "while", "stopped");

    // Beta Test 11: start it again: it rejoins and its log is rebuilt.
    let o = c.cli(&["start", "--node", follower]);
    assert!(o.status.success(), "{}", stderr(&o));
    c.wait_value(follower, "Hello", "World");
    c.wait_value(follower, "while", "stopped");
    assert_eq!(c.status_now(follower)["running"], "true");

    // Beta Test 12: the leader fails (its process is killed); the others elect a new one.
    let old_term: u64 = c.status_now(&leader)["term"].parse().unwrap();
    c.kill(&leader);
    let rest: Vec<&str> = ["node1", "node2", "node3"]
        .into_iter()
        .filter(|n| *n != leader)
        .collect();
    let new_leader = c.agreed_leader(&rest);
    assert_ne!(new_leader, leader);
    let new_term: u64 = c.status_now(&new_leader)["term"].parse().unwrap();
    assert!(new_term > old_term, "term {new_term} after {old_term}");
    c.put(rest[0], "after", "failover");

    // Beta Test 13: the failed node comes back and its log is brought up to date.
    c.start(&leader);
    for (k, v) in [
        ("Hello", "World"),
        ("while", "stopped"),
        ("after", "failover"),
    ] {
        c.wait_value(&leader, k, v);
    }
    wait_until("every node shows the same log", WAIT, || {
        let logs: Vec<Vec<String>> = ["node1", "node2", "node3"]
            .iter()
            .map(|n| c.entries(n))
            .collect::<Option<_>>()?;
        (logs.windows(2).all(|w| w[0] == w[1]) && logs[0].len() == 3).then_some(())
    });

    // Beta Test 14: read the developer log at debug, then at trace level, switched live.
    let lines = c.lines(&new_leader);
    let from = lines.len();
    let o = c.cli(&["log-level", "debug", "--node", &new_leader]);
    assert!(o.status.success(), "{}", stderr(&o));
    c.put(&new_leader, "debug", "on");
    assert!(
        lines.wait_for(from, &["DEBUG"], WAIT).is_some(),
        "no debug line after switching to debug"
    );
    assert_eq!(c.status_now(&new_leader)["log_level"], "debug");
    let from = lines.len();
    let o = c.cli(&["log-level", "trace", "--node", &new_leader]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Trace shows the message flow: heartbeats and their responses between nodes.
    let flow = lines.wait_for(from, &["TRACE", " <- n"], WAIT);
    assert!(flow.is_some(), "no message flow at trace level");
    let o = c.cli(&["log-level", "info", "--node", &new_leader]);
    assert!(o.status.success());
    let o = c.cli(&["log-level", "loud", "--node", &new_leader]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn beta_06_to_14_unencrypted() {
    beta_06_to_14(false);
}

#[test]
fn beta_06_to_14_encrypted() {
    beta_06_to_14(true);
}

/// Beta Test 15: five entries committed, every node stopped, restarted in another order;
/// each node's log comes back from its own storage.
fn beta_15(encrypted: bool, in_place: bool) {
    let mut flags = vec!["--persistent"];
    let envs: Vec<(&str, &str)> = if encrypted {
        flags.extend(encrypted_flags());
        vec![("RAFT_KV_PASSWORD", PASSWORD)]
    } else {
        flags.push("--no-encrypt");
        vec![]
    };
    let (mut c, _) = Cluster::init(3, &flags, &envs);
    c.start_all();
    let leader = c.agreed_leader(&["node1", "node2", "node3"]);
    for i in 1..=5 {
        c.put(&leader, &format!("key{i}"), &format!("value{i}"));
    }
    for n in ["node1", "node2", "node3"] {
        c.wait_value(n, "key5", "value5");
    }
    let before = c.entries("node1").unwrap();
    assert_eq!(before.len(), 5, "{before:?}");

    // Stop every node: in place (the original's Stop button) or by killing the process.
    let order = ["node3", "node1", "node2"];
    if in_place {
        for n in ["node1", "node2", "node3"] {
            assert!(c.cli(&["stop", "--node", n]).status.success());
            assert_eq!(
                c.entries(n).unwrap(),
                Vec::<String>::new(),
                "{n} still shows entries"
            );
        }
        for n in order {
            assert!(c.cli(&["start", "--node", n]).status.success());
        }
    } else {
        for n in ["node1", "node2", "node3"] {
            c.kill(n);
        }
        // The first node back, alone and without a quorum, already shows the entries it
        // had committed, from its own storage.
        c.start(order[0]);
        let alone = wait_until("node3 replays its stored entries", WAIT, || {
            let e = c.entries(order[0])?;
            (!e.is_empty()).then_some(e)
        });
        assert!(before.starts_with(&alone), "{alone:?} vs {before:?}");
        for n in &order[1..] {
            c.start(n);
        }
    }
    c.agreed_leader(&["node1", "node2", "node3"]);
    for n in ["node1", "node2", "node3"] {
        wait_until(&format!("{n} has all 5 entries back"), WAIT, || {
            let e = c.entries(n)?;
            (e == before).then_some(())
        });
        let st = c.status_now(n);
        assert_eq!(st["persistent"], "true");
    }
    // And the cluster goes on from there.
    c.put("node2", "key6", "value6");
    for n in ["node1", "node2", "node3"] {
        c.wait_value(n, "key6", "value6");
    }
}

#[test]
fn beta_15_persistent_restart_in_place() {
    beta_15(false, true);
}

#[test]
fn beta_15_encrypted_persistent_restart_after_kill() {
    beta_15(true, false);
}

#[test]
fn encrypted_cluster_refuses_a_node_with_the_wrong_password() {
    let mut flags = vec!["--ephemeral"];
    flags.extend(encrypted_flags());
    let envs = [("RAFT_KV_PASSWORD", PASSWORD)];
    let (mut c, _) = Cluster::init(3, &flags, &envs);
    c.start("node1");
    c.start("node2");
    let config = c.config.clone();
    c.start_with(
        "node3",
        &config,
        "info",
        &[("RAFT_KV_PASSWORD", "not the password")],
    );
    let leader = c.agreed_leader(&["node1", "node2"]);
    c.put(&leader, "secret", "kept");
    // node3's datagrams fail authentication: it is dropped and counted, never applied.
    let refused =
        c.lines("node3")
            .wait_for(0, &["dropped datagram", "failing authentication"], WAIT);
    assert!(refused.is_some(), "{:?}", c.lines("node3").all());
    // Its own client port answers to its own password only (the cluster's is refused).
    assert!(c.status("node3").is_none());
    let wrong = [("RAFT_KV_PASSWORD", "not the password")];
    let node3 = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", c.config_str(), "--node", "node3"]);
        raft_kv(&all, &wrong)
    };
    let st = stdout(&node3(&["status"]));
    assert!(st.contains("leader: none"), "{st}");
    assert!(st.contains("entries: 0"), "{st}");
    assert_eq!(node3(&["get", "secret", "--stale"]).status.code(), Some(1));
    // The two with the password keep working.
    c.wait_value("node1", "secret", "kept");
    c.wait_value("node2", "secret", "kept");

    // Clients must prove the password too: without it, or with another, they get nothing.
    let get = [
        "get",
        "secret",
        "--config",
        c.config_str(),
        "--node",
        "node1",
    ];
    let o = raft_kv(&get, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("RAFT_KV_PASSWORD is not set"),
        "{}",
        stderr(&o)
    );
    let o = raft_kv(&get, &[("RAFT_KV_PASSWORD", "not the password")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("authentication failed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "");
    let warned = c
        .lines("node1")
        .wait_for(0, &["failed to prove the cluster password"], WAIT);
    assert!(warned.is_some());
    let addr = ClusterConfig::load(&c.config).unwrap().nodes[0]
        .client_addr
        .clone();
    let o = raft_kv(
        &[
            "get",
            "secret",
            "--addr",
            &addr,
            "--config",
            "/nonexistent.toml",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("needs its password"), "{}", stderr(&o));
    // With the password, the same command works.
    let o = raft_kv(&get, &envs);
    assert_eq!(stdout(&o), "kept\n", "{}", stderr(&o));
}

/// The original's note on Beta Tests 6 and 7: a node started alone looks for its cluster
/// for the join retry time, reports it did not find it, and keeps listening: when the
/// others start, it joins.
#[test]
fn a_lonely_node_gives_up_after_the_retry_time_and_joins_later() {
    let flags = [
        "--no-encrypt",
        "--ephemeral",
        "--join-attempts",
        "2",
        "--join-attempt-interval-ms",
        "200",
    ];
    let (mut c, out) = Cluster::init(3, &flags, &[]);
    assert!(stdout(&out).contains("Join retry time: 0.4 s (2 attempts x 0.2 s)"));
    c.start("node1");
    let gave_up =
        c.lines("node1")
            .wait_for(0, &["did not find the cluster after 2 attempts"], WAIT);
    assert!(gave_up.is_some(), "{:?}", c.lines("node1").all());
    // The log line comes just before the state changes: wait for the state.
    wait_until("node1 reports the cluster not found", WAIT, || {
        (c.status("node1")?["cluster_state"] == "not found (still listening)").then_some(())
    });
    c.start("node2");
    c.start("node3");
    c.agreed_leader(&["node1", "node2", "node3"]);
    wait_until("node1 reports the cluster found", WAIT, || {
        (c.status("node1")?["cluster_state"] == "found").then_some(())
    });
}

/// Values larger than a datagram replicate (the transport fragments them); a value over
/// the cluster's `max_entry_bytes` is refused with an error naming the limit, and the node
/// is fine afterwards.
#[test]
fn a_big_value_replicates_and_one_over_the_limit_is_refused_clearly() {
    let (mut c, _) = Cluster::init(3, &["--no-encrypt", "--ephemeral"], &[]);
    // A smaller limit than the default 1 MiB, so the refused value fits one argv string
    // (128 KiB at most).
    let text = std::fs::read_to_string(&c.config).unwrap();
    assert!(text.contains("max_entry_bytes = 1048576"), "{text}");
    std::fs::write(
        &c.config,
        text.replace("max_entry_bytes = 1048576", "max_entry_bytes = 90000"),
    )
    .unwrap();
    c.start_all();
    c.agreed_leader(&["node1", "node2", "node3"]);
    // Over the 60 KiB datagram ceiling: it travels in fragments.
    let big = "x".repeat(80_000);
    c.put("node2", "big", &big);
    for n in ["node1", "node2", "node3"] {
        c.wait_value(n, "big", &big);
    }
    let too_big = "y".repeat(100_000);
    let o = c.cli(&["put", "big", &too_big]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("exceeds the limit"), "{}", stderr(&o));
    assert!(stderr(&o).contains("90000"), "{}", stderr(&o));
    c.put("node1", "small", "ok");
    c.wait_value("node1", "small", "ok");
}

#[test]
fn bench_measures_committed_writes() {
    let (mut c, _) = Cluster::init(3, &["--no-encrypt", "--ephemeral"], &[]);
    c.start_all();
    c.agreed_leader(&["node1", "node2", "node3"]);
    let o = c.cli(&["bench", "--requests", "200", "--clients", "4"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("(leader)"), "{out}");
    assert!(out.contains("(200 ok, 0 failed"), "{out}");
    assert!(out.contains("latency: p50"), "{out}");
    c.wait_value("node3", "bench-3-49", "vvvvvvvvvvvvvvvv");
}

#[test]
fn a_second_process_for_the_same_node_is_refused() {
    let (mut c, _) = Cluster::init(3, &["--no-encrypt", "--ephemeral"], &[]);
    c.start("node1");
    wait_until("node1 answers", WAIT, || c.status("node1"));
    let o = raft_kv(
        &[
            "node",
            "--config",
            c.config_str(),
            "--id",
            "node1",
            "--headless",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    // Both ports are checked before anything else; whichever is reported, it is node1's.
    assert!(
        stderr(&o).contains("cannot use node1's Raft (UDP) port")
            || stderr(&o).contains("cannot bind client port"),
        "{}",
        stderr(&o)
    );
    // Without --id and without a terminal, the node to run is a missing flag.
    let o = raft_kv(&["node", "--config", c.config_str(), "--headless"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing --id"), "{}", stderr(&o));
}

/// A node that was away while the leader compacted its log is brought up to date with a
/// snapshot, over UDP, and then shows the same committed entries as the others.
fn catch_up_by_snapshot(persistent: bool) {
    let mut flags = vec![
        "--no-encrypt",
        "--snapshot-after-entries",
        "20",
        "--snapshot-trailing-entries",
        "5",
    ];
    flags.push(if persistent {
        "--persistent"
    } else {
        "--ephemeral"
    });
    let (mut c, _) = Cluster::init(3, &flags, &[]);
    c.start_all();
    let leader = c.agreed_leader(&["node1", "node2", "node3"]);
    let away = if leader == "node3" { "node2" } else { "node3" };
    c.put(&leader, "before", "away");
    c.wait_value(away, "before", "away");
    c.kill(away);
    for i in 0..60 {
        c.put(&leader, &format!("k{i}"), &format!("v{i}"));
    }
    c.start(away);
    c.wait_value(away, "k59", "v59");
    c.wait_value(away, "before", "away");
    let id = &away[4..];
    let restored = c.lines(away).wait_for(
        0,
        &[&format!("n{id} restored its state from a snapshot")],
        WAIT,
    );
    assert!(restored.is_some(), "{:?}", c.lines(away).all());
    wait_until("the returning node shows the leader's log", WAIT, || {
        let (a, b) = (c.entries(away)?, c.entries(&leader)?);
        (a == b && a.len() == 61).then_some(())
    });
    if persistent {
        // Its snapshot and log are on disk: it restarts alone with everything.
        c.kill(away);
        c.start(away);
        c.wait_value(away, "k59", "v59");
        let stored = c.lines(away).wait_for(
            0,
            &[&format!(
                "n{id} restored its state from the stored snapshot"
            )],
            WAIT,
        );
        assert!(stored.is_some(), "{:?}", c.lines(away).all());
    }
}

#[test]
fn a_node_catches_up_by_snapshot_ephemeral() {
    catch_up_by_snapshot(false);
}

#[test]
fn a_node_catches_up_by_snapshot_persistent() {
    catch_up_by_snapshot(true);
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.toml");
    let mut child = std::process::Command::new(BIN)
        .args(["init", "--cluster-name", "c", "--nodes", "3", "--out"])
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the child writes its summary.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.exists());
}
