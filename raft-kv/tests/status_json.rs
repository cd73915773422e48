//! `raft-kv status --json` against a running 3-node cluster (issue 16): one JSON object
//! per call, with the fields docs/operations.md promises, and values that agree with the
//! cluster's real state (the leader, the indexes, a snapshot, transport and client-port
//! counters, a stopped node). Every wait is on a condition with a deadline.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

/// Every top-level field `status --json` prints (without `--entries`), as
/// docs/operations.md lists them. Renaming or removing one breaks scripts: this list
/// only grows.
const TOP_FIELDS: &[&str] = &[
    "node",
    "id",
    "cluster",
    "raft_addr",
    "client_addr",
    "running",
    "role",
    "term",
    "leader_id",
    "leader",
    "is_leader",
    "commit_index",
    "applied_index",
    "last_index",
    "snapshot_index",
    "cluster_state",
    "entries_total",
    "uptime_ms",
    "starts",
    "encrypted",
    "persistent",
    "log_level",
    "last_error",
    "peers",
    "voters",
    "learners",
    "outgoing_voters",
    "membership_index",
    "membership_pending",
    "client_port",
    "transport",
];

/// The fields of `client_port`.
const CLIENT_PORT_FIELDS: &[&str] = &[
    "open",
    "unauthenticated",
    "max_connections",
    "max_unauthenticated",
    "accepted",
    "refused",
    "evicted",
    "handshake_timeouts",
    "idle_timeouts",
    "handshake_failures",
];

/// The fields of `transport`.
const TRANSPORT_FIELDS: &[&str] = &[
    "sent_datagrams",
    "sent_bytes",
    "received_datagrams",
    "received_bytes",
    "delivered_messages",
    "dropped_total",
    "dropped",
];

/// `raft-kv status --json` of node `name` (with `extra` flags), parsed; `None` if the
/// node does not answer. Asserts the output is exactly one line of JSON.
fn status_json(c: &Cluster, name: &str, extra: &[&str]) -> Option<Value> {
    let mut args = vec!["status", "--json", "--node", name, "--timeout-ms", "5000"];
    args.extend_from_slice(extra);
    let out = c.cli(&args);
    if !out.status.success() {
        return None;
    }
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "not one line: {text}");
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number: {v}"))
}

#[test]
fn status_json_reports_a_running_cluster() {
    let (mut c, _) = Cluster::init(
        3,
        &[
            "--no-encrypt",
            "--ephemeral",
            "--snapshot-after-entries",
            "10",
            "--snapshot-trailing-entries",
            "2",
        ],
        &[],
    );
    c.start_all();
    let leader = c.agreed_leader(&["node1", "node2", "node3"]);
    let follower = if leader == "node1" { "node2" } else { "node1" };
    for i in 0..15 {
        c.put(&leader, &format!("k{i}"), &format!("v{i}"));
    }
    c.wait_value(follower, "k14", "v14");

    // The leader: field names exactly as documented, values matching the cluster.
    let s = wait_until("the leader reports a snapshot", WAIT, || {
        let s = status_json(&c, &leader, &[])?;
        // Protocol fields are published at each tick: wait until they show the 15 puts.
        (u(&s, "snapshot_index") > 0 && u(&s, "commit_index") >= 15).then_some(s)
    });
    assert_eq!(keys(&s), set(TOP_FIELDS), "{s}");
    assert_eq!(s["node"], leader.as_str());
    assert_eq!(s["cluster"], "My first cluster");
    assert_eq!(s["running"], true);
    assert_eq!(s["role"], "leader");
    assert_eq!(s["is_leader"], true);
    assert_eq!(s["leader"], leader.as_str());
    assert_eq!(s["leader_id"], s["id"]);
    assert!(u(&s, "term") >= 1, "{s}");
    // The 15 puts are committed and applied.
    assert!(u(&s, "commit_index") >= 15, "{s}");
    assert!(u(&s, "applied_index") >= 15, "{s}");
    assert!(u(&s, "last_index") >= u(&s, "commit_index"), "{s}");
    assert!(u(&s, "snapshot_index") <= u(&s, "applied_index"), "{s}");
    assert_eq!(s["encrypted"], false);
    assert_eq!(s["persistent"], false);
    assert_eq!(s["log_level"], "info");
    assert!(s["last_error"].is_null(), "{s}");
    assert_eq!(u(&s, "starts"), 1);
    let peers = s["peers"].as_array().expect("peers is an array");
    assert_eq!(peers.len(), 2, "{s}");
    for p in peers {
        assert_eq!(keys(p), set(&["name", "match_index", "lag"]), "{p}");
    }
    let port = &s["client_port"];
    assert_eq!(keys(port), set(CLIENT_PORT_FIELDS), "{s}");
    // This status request's own connection is open and was accepted.
    assert!(u(port, "open") >= 1, "{s}");
    assert!(u(port, "accepted") >= 16, "{s}");
    assert_eq!(u(port, "max_connections"), 1024);
    let net = &s["transport"];
    assert_eq!(keys(net), set(TRANSPORT_FIELDS), "{s}");
    assert!(u(net, "sent_datagrams") > 0, "{s}");
    assert!(u(net, "sent_bytes") >= u(net, "sent_datagrams"), "{s}");
    assert!(u(net, "received_datagrams") > 0, "{s}");
    assert!(u(net, "delivered_messages") > 0, "{s}");
    let dropped = net["dropped"].as_object().expect("dropped is an object");
    let by_reason: u64 = dropped.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(by_reason, u(net, "dropped_total"), "{s}");

    // A follower names the same leader and term.
    let f = status_json(&c, follower, &[]).expect("the follower answers");
    assert_eq!(keys(&f), set(TOP_FIELDS), "{f}");
    assert_eq!(f["role"], "follower");
    assert_eq!(f["is_leader"], false);
    assert_eq!(f["leader"], leader.as_str());
    assert_eq!(f["leader_id"], s["id"]);
    assert_eq!(f["peers"].as_array().map(Vec::len), Some(0), "{f}");

    // --entries adds the newest committed entries, oldest first.
    let e = status_json(&c, &leader, &["--entries", "3"]).expect("the leader answers");
    let mut with_entries = set(TOP_FIELDS);
    with_entries.insert("entries".into());
    assert_eq!(keys(&e), with_entries);
    let entries = e["entries"].as_array().expect("entries is an array");
    assert_eq!(entries.len(), 3, "{e}");
    let last = &entries[2];
    assert_eq!(last["op"], "put", "{e}");
    assert_eq!(last["key"], "k14", "{e}");
    assert_eq!(last["value"], "v14", "{e}");
    assert_eq!(last["replayed"], false, "{e}");
    assert!(u(&entries[1], "index") < u(last, "index"), "{e}");

    // The text form shows the new fields too.
    let text = c.status_now(&leader);
    assert!(
        text["snapshot_index"].parse::<u64>().unwrap() > 0,
        "{text:?}"
    );
    assert!(
        text["net_sent_datagrams"].parse::<u64>().unwrap() > 0,
        "{text:?}"
    );

    // A node stopped in place: not running, no transport.
    let o = c.cli(&["stop", "--node", follower]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stopped = wait_until("the stopped node reports it", WAIT, || {
        let s = status_json(&c, follower, &[])?;
        (s["running"] == false).then_some(s)
    });
    assert_eq!(keys(&stopped), set(TOP_FIELDS), "{stopped}");
    assert_eq!(stopped["role"], "stopped");
    assert!(stopped["transport"].is_null(), "{stopped}");
    assert!(stopped["client_port"].is_object(), "{stopped}");

    // A node that is not running at all: exit code 2 and one line on stderr, nothing on
    // stdout (a script gets no half-written JSON).
    c.kill(follower);
    let o = c.cli(&[
        "status",
        "--json",
        "--node",
        follower,
        "--timeout-ms",
        "1000",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

/// Every field name the test checks is listed in docs/operations.md, in its
/// `status --json` section, so the documentation cannot fall behind the output.
#[test]
fn every_status_json_field_is_documented() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .expect("docs/operations.md");
    let section = doc
        .split("## raft-kv status --json")
        .nth(1)
        .expect("docs/operations.md has a `## raft-kv status --json` section");
    let section = section.split("\n## ").next().unwrap();
    for field in TOP_FIELDS
        .iter()
        .chain(CLIENT_PORT_FIELDS)
        .chain(TRANSPORT_FIELDS)
        .chain(&["entries", "match_index", "lag", "replayed", "op"])
    {
        assert!(
            section.contains(&format!("`{field}`")),
            "docs/operations.md's status --json section does not list `{field}`"
        );
    }
}
