//! The Prometheus endpoint of `raft-kv node` (issue 16): three real node processes serve
//! their metrics over HTTP (two from `metrics_addr` in the config file, one from
//! `RAFT_KV_METRICS_ADDR`, the environment form of `--metrics-addr`); writes through the
//! client move the applied index, exactly one node reports `raft_is_leader 1`, and the
//! output parses as Prometheus text. Garbage, a wrong method, an oversized request and
//! a silent scraper get an error answer (or a timeout) and the endpoint keeps serving.
//! A bad `--metrics-addr` (not host:port, or a port in use) is one error line, exit 2.
//! Every wait has a deadline.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use common::*;

/// One sample: metric name and its labels.
type Series = (String, BTreeMap<String, String>);

/// The HTTP answer to `request` sent to `addr` (the connection is closed by the server).
fn http(addr: &str, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(request)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Scrapes `addr`'s /metrics; `None` while it does not answer 200.
fn scrape(addr: &str) -> Option<String> {
    let answer = http(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200 OK\r\n") {
        return None;
    }
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "Content-Length");
    Some(body.to_string())
}

/// Parses Prometheus text format: every sample line `name{l="v",...} value`, checked
/// strictly (a line that does not parse fails the test), plus the `# TYPE` of each name.
fn parse(text: &str) -> (BTreeMap<Series, f64>, BTreeMap<String, String>) {
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample: series value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label=\"value\"");
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .expect("a quoted label value");
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        samples.insert((name, labels), value);
    }
    (samples, types)
}

/// The value of `name` with exactly `labels`.
fn value(samples: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_string(), labels)).copied()
}

/// Adds `metrics_addr = "..."` to the `[[nodes]]` entry of `name` in the config text.
fn with_metrics_addr(config: &str, name: &str, addr: &str) -> String {
    let marker = format!("name = \"{name}\"\n");
    let at = config.find(&marker).expect("the node's entry") + marker.len();
    format!(
        "{}metrics_addr = \"{addr}\"\n{}",
        &config[..at],
        &config[at..]
    )
}

#[test]
fn nodes_serve_prometheus_metrics_that_follow_the_cluster() {
    let (mut cluster, _) = Cluster::init(3, &["--no-encrypt"], &[]);
    let ports = raft_kv::cluster::free_ports(3).expect("free ports");
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut text = std::fs::read_to_string(&cluster.config).unwrap();
    text = with_metrics_addr(&text, "node1", &addrs[0]);
    text = with_metrics_addr(&text, "node2", &addrs[1]);
    std::fs::write(&cluster.config, text).unwrap();
    let config = cluster.config.clone();
    cluster.start_with("node1", &config, "info", &[]);
    cluster.start_with("node2", &config, "info", &[]);
    cluster.start_with(
        "node3",
        &config,
        "info",
        &[("RAFT_KV_METRICS_ADDR", &addrs[2])],
    );
    cluster.agreed_leader(&["node1", "node2", "node3"]);

    const WRITES: usize = 20;
    for i in 0..WRITES {
        cluster.put(
            &format!("node{}", i % 3 + 1),
            &format!("k{i}"),
            &format!("v{i}"),
        );
    }

    // Every node applied every write (the no-op of each term adds to the index), and
    // exactly one says it leads.
    let all = wait_until(
        "every node's metrics show the writes and one leader",
        WAIT,
        || {
            let mut all = Vec::new();
            for (i, addr) in addrs.iter().enumerate() {
                let (samples, types) = parse(&scrape(addr)?);
                let node = (i + 1).to_string();
                let applied = value(&samples, "raft_applied_index", &[("node", &node)])?;
                if applied < WRITES as f64 {
                    return None;
                }
                all.push((node, samples, types));
            }
            let leaders = all
                .iter()
                .filter(|(node, s, _)| value(s, "raft_is_leader", &[("node", node)]) == Some(1.0))
                .count();
            // Counters are published at the next tick: wait until every write is counted.
            let proposals: f64 = all
                .iter()
                .map(|(node, s, _)| {
                    value(s, "raft_proposals_total", &[("node", node)]).unwrap_or(0.0)
                })
                .sum();
            (leaders == 1 && proposals >= WRITES as f64).then_some(all)
        },
    );

    for (node, samples, types) in &all {
        let n = [("node", node.as_str())];
        // One node per process: every series carries this node's label and no other.
        for (name, labels) in samples.keys() {
            assert_eq!(
                labels.get("node").map(String::as_str),
                Some(node.as_str()),
                "{name}{labels:?} on node {node}"
            );
        }
        assert!(value(samples, "raft_term", &n).unwrap() >= 1.0);
        assert!(value(samples, "raft_commit_index", &n).unwrap() >= WRITES as f64);
        assert!(value(samples, "raft_last_index", &n).unwrap() >= WRITES as f64);
        assert!(value(samples, "raft_leader_changes_total", &n).unwrap() >= 1.0);
        assert_eq!(value(samples, "raft_cluster_found", &n), Some(1.0));
        // The transport's bytes in and out, and a drop counter per reason.
        assert!(value(samples, "raft_net_sent_bytes_total", &n).unwrap() > 0.0);
        assert!(value(samples, "raft_net_received_bytes_total", &n).unwrap() > 0.0);
        assert_eq!(
            value(
                samples,
                "raft_net_dropped_total",
                &[("node", node.as_str()), ("reason", "bad_mac")]
            ),
            Some(0.0)
        );
        // Histograms with buckets: the syncs and appends of the writes.
        assert_eq!(
            types.get("raft_log_sync_seconds").map(String::as_str),
            Some("histogram")
        );
        let syncs = value(
            samples,
            "raft_log_sync_seconds_count",
            &[("node", node.as_str()), ("cause", "ready")],
        )
        .expect("a sync histogram");
        assert!(syncs >= 1.0, "node {node}: {syncs} syncs");
        let inf = value(
            samples,
            "raft_log_sync_seconds_bucket",
            &[("node", node.as_str()), ("cause", "ready"), ("le", "+Inf")],
        );
        assert_eq!(inf, Some(syncs), "the +Inf bucket holds every sync");
        assert!(value(samples, "raft_log_append_seconds_count", &n).unwrap() >= 1.0);
        assert!(value(samples, "raft_apply_batch_entries_sum", &n).unwrap() >= 1.0);
        assert_eq!(
            types.get("raft_proposals_total").map(String::as_str),
            Some("counter")
        );
        assert_eq!(types.get("raft_term").map(String::as_str), Some("gauge"));
    }
    // The writes were proposed through the three nodes (their sum is waited for above).
    for (node, s, _) in &all {
        let p = value(s, "raft_proposals_total", &[("node", node)]).unwrap();
        assert!(p >= 1.0, "node {node}: {p} proposals");
    }

    // Bad requests get an error answer; the endpoint goes on serving.
    let addr = &addrs[0];
    let garbage = http(addr, b"\x00\x01\x02 garbage\r\n\r\n").unwrap();
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    let post = http(addr, b"POST /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let elsewhere = http(addr, b"GET /admin HTTP/1.1\r\n\r\n").unwrap();
    assert!(elsewhere.starts_with("HTTP/1.1 404 "), "{elsewhere}");
    let huge = vec![b'a'; 64 * 1024];
    let mut request = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    request.extend_from_slice(&huge);
    // The server may close before reading it all: a refused write is fine too.
    if let Ok(answer) = http(addr, &request) {
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
            "{answer}"
        );
    }
    // A scraper that connects and says nothing is answered 408 after the request
    // timeout; meanwhile the next scrape waits its turn and is served.
    let mut silent = TcpStream::connect(addr.as_str()).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    assert!(scrape(addr).is_some(), "served after the silent scraper");
    let mut answer = String::new();
    silent.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(started.elapsed() < WAIT);
    let head = http(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    // The node itself never noticed: it still serves writes.
    cluster.put("node1", "after", "garbage");
    cluster.wait_value("node1", "after", "garbage");
}

/// Runs `raft-kv ARGS` with no stdin and waits at most [`WAIT`] for it to exit;
/// returns the exit code and stderr.
fn run_bounded(args: &[&str]) -> (Option<i32>, String) {
    let run = common::run_bounded(args, &[]);
    (run.code, run.stderr)
}

#[test]
fn a_bad_metrics_addr_is_one_error_line_and_exit_2() {
    let (cluster, _) = Cluster::init(1, &["--no-encrypt"], &[]);
    let config = cluster.config_str();
    let node = ["node", "--config", config, "--id", "node1", "--headless"];
    let data_dir = cluster.dir.path().join("data");
    let before = std::fs::read_dir(cluster.dir.path()).unwrap().count();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for (addr, says) in [
        ("not-an-address", "is not a usable host:port"),
        ("127.0.0.1:99999", "is not a usable host:port"),
        (
            taken_addr.as_str(),
            "cannot use node1's metrics (HTTP) port",
        ),
    ] {
        let mut args = node.to_vec();
        args.extend_from_slice(&["--metrics-addr", addr]);
        let (code, stderr) = run_bounded(&args);
        assert_eq!(code, Some(2), "--metrics-addr {addr}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "not one line on stderr:\n{stderr}");
        assert!(lines[0].starts_with("raft-kv: error: "), "{}", lines[0]);
        assert!(
            lines[0].contains(says),
            "{:?} does not say {says:?}",
            lines[0]
        );
        assert!(
            lines[0].contains(addr),
            "{:?} does not name {addr}",
            lines[0]
        );
    }
    // Nothing was started: no data directory, no new file.
    assert!(!data_dir.exists() || std::fs::read_dir(&data_dir).unwrap().count() == 0);
    assert_eq!(
        std::fs::read_dir(cluster.dir.path()).unwrap().count(),
        before
    );

    // A bad metrics_addr in the config file is a config error naming the field.
    let text = std::fs::read_to_string(&cluster.config).unwrap();
    std::fs::write(
        &cluster.config,
        with_metrics_addr(&text, "node1", "no port here"),
    )
    .unwrap();
    let (code, stderr) = run_bounded(&node);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nodes[0].metrics_addr"), "{stderr}");
}
