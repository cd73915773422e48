//! Replacing a dead node through the `raft-kv` binary (issue 14): `add-node` writes the
//! new node into cluster.toml, adds it as a learner, waits for it to catch up and
//! promotes it; `remove-node` removes the dead one and marks it removed, after which
//! `raft-kv node` refuses to run it; `status` shows voters, learners and a pending
//! change. The admin commands go through the authenticated client port: a wrong
//! password changes nothing. Every wait is on a condition with a deadline.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// Whether two lists of node names name the same nodes: a node started before node4
/// was written into the config file shows it as `n4`.
fn same(shown: &str, expected: &str) -> bool {
    shown.replace("node", "n") == expected.replace("node", "n")
}

#[test]
fn replace_a_dead_node_with_add_node_and_remove_node() {
    let mut flags = encrypted_flags();
    flags.push("--ephemeral");
    let (mut c, _) = Cluster::init(3, &flags, &PASSWORD_ENV);
    c.start_all();
    let leader = c.agreed_leader(&["node1", "node2", "node3"]);
    c.put(&leader, "before", "1");
    let s = c.status_now(&leader);
    assert_eq!(s["voters"], "node1,node2,node3");
    assert_eq!(s["learners"], "");
    assert_eq!(s["membership_pending"], "false");

    // node2 dies for good (or the leader does, if that is node2).
    c.kill("node2");
    let alive = ["node1", "node3"];
    c.agreed_leader(&alive);
    let cfg = c.config_str().to_string();
    let ports = raft_kv::cluster::free_ports(2).unwrap();
    let (raft_addr, client_addr) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    );

    // Bad input changes nothing and says why: a wrong password, a bad address.
    let wrong = raft_kv(
        &[
            "add-node", "--config", &cfg, "--id", "node4", "--addr", &raft_addr,
        ],
        &[("RAFT_KV_PASSWORD", "not the right password")],
    );
    assert_eq!(wrong.status.code(), Some(2), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains("password differs"),
        "{}",
        stderr(&wrong)
    );
    let bad = raft_kv(
        &[
            "add-node", "--config", &cfg, "--id", "node4", "--addr", "nowhere",
        ],
        &PASSWORD_ENV,
    );
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("--addr \"nowhere\""),
        "{}",
        stderr(&bad)
    );
    let learners = c.status_now("node1")["learners"].clone();
    assert_eq!(learners, "", "a refused add-node changed the configuration");

    // add-node writes node4 into the file, adds it, then waits for it to catch up.
    let mut add = Command::new(BIN)
        .args([
            "add-node",
            "--config",
            &cfg,
            "--id",
            "node4",
            "--addr",
            &raft_addr,
            "--client-addr",
            &client_addr,
            "--catch-up-timeout-ms",
            "60000",
        ])
        .env("RAFT_KV_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("add-node wrote node4 into the config", WAIT, || {
        let text = std::fs::read_to_string(&c.config).ok()?;
        text.contains(&raft_addr).then_some(())
    });
    let deadline = std::time::Instant::now() + WAIT;
    let learner = loop {
        if add.try_wait().unwrap().is_some() {
            break false;
        }
        if alive
            .iter()
            .any(|n| c.status(n).is_some_and(|s| same(&s["learners"], "node4")))
        {
            break true;
        }
        if std::time::Instant::now() > deadline {
            for n in alive {
                eprintln!("--- {n}:\n{}", c.lines(n).all().join("\n"));
            }
            panic!("node4 did not become a learner");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if !learner {
        let out = add.wait_with_output().unwrap();
        panic!("add-node ended early: {}{}", stdout(&out), stderr(&out));
    }
    c.start("node4");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = add.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "add-node did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = add.wait_with_output().unwrap();
    assert!(status.success(), "add-node failed: {}", stderr(&out));
    assert!(
        stdout(&out).contains("node4 (n4) is a voter"),
        "{}",
        stdout(&out)
    );
    let s = c.status_now("node4");
    assert_eq!(s["voters"], "node1,node2,node3,node4");
    c.wait_value("node4", "before", "1");

    // Running add-node again (an operator retrying after a lost answer) is a no-op that
    // succeeds; with another address it is refused.
    let again = c.cli(&[
        "add-node",
        "--id",
        "node4",
        "--addr",
        &raft_addr,
        "--client-addr",
        &client_addr,
    ]);
    assert!(again.status.success(), "add-node again: {}", stderr(&again));
    assert!(
        stdout(&again).contains("node4 (n4) is a voter"),
        "{}",
        stdout(&again)
    );
    assert_eq!(c.status_now("node4")["voters"], "node1,node2,node3,node4");

    // remove-node removes the dead node and marks it in the file.
    let out = c.cli(&["remove-node", "--id", "node2"]);
    assert!(out.status.success(), "remove-node failed: {}", stderr(&out));
    let text = std::fs::read_to_string(&c.config).unwrap();
    assert!(text.contains("removed = true"), "{text}");
    let all = ["node1", "node3", "node4"];
    let leader = c.agreed_leader(&all);
    wait_until("every node has the final configuration", WAIT, || {
        all.iter()
            .all(|n| {
                c.status(n).is_some_and(|s| {
                    same(&s["voters"], "node1,node3,node4") && s["membership_pending"] == "false"
                })
            })
            .then_some(())
    });
    c.put(&leader, "after", "2");
    c.wait_value("node4", "after", "2");

    // The removed node refuses to start, saying why.
    c.start("node2");
    let code = c.proc_mut("node2").wait_exit(WAIT);
    assert_eq!(code, Some(2));
    // The exit can be seen before the output reader has read the last lines: wait for it.
    let said = c
        .lines("node2")
        .wait_for(0, &["was removed from cluster"], WAIT);
    assert!(said.is_some(), "{}", c.lines("node2").all().join("\n"));
    // And cannot be removed twice.
    let again = c.cli(&["remove-node", "--id", "node2"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already removed"),
        "{}",
        stderr(&again)
    );
}
