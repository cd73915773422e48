//! What the operator sees: a version mismatch is logged once per address naming both
//! versions; authentication failures are rate-limited. Its own test binary, because it
//! installs a global logger.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use raft_core::{Message, MessageBody};
use raft_net::{ClusterKeys, Codec, DropKind, NetConfig, NetStats, PeerDirectory, Processor};

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LINES.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

#[test]
fn version_mismatch_once_per_address_and_auth_failures_rate_limited() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Warn);

    let codec = |pw: &str| {
        Codec::with_keys(
            "logs",
            Some(ClusterKeys::derive(pw, "logs", 10)),
            NetConfig::LAN_DATAGRAM_BYTES,
            None,
        )
    };
    let ours = codec("right");
    let dir = PeerDirectory::new();
    dir.insert(1, "one", "127.0.0.1:1".parse().unwrap());
    let stats = NetStats::new_shared();
    let mut p = Processor::new(2, &ours, dir, Arc::clone(&stats));
    let hb = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    };

    let a: SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:7000".parse().unwrap();
    // A node of the version before this one (membership changes bumped it to 2).
    let mut v1 = ours.sealer(1).seal(&hb).unwrap().to_vec();
    v1[4] = 1;
    for _ in 0..5 {
        assert!(p.process(&v1, a, Instant::now()).is_none());
        assert!(p.process(&v1, b, Instant::now()).is_none());
    }
    let wrong = codec("wrong");
    let mut sealer = wrong.sealer(1);
    for _ in 0..100 {
        let d = sealer.seal(&hb).unwrap().to_vec();
        assert!(p.process(&d, a, Instant::now()).is_none());
    }

    let s = stats.snapshot();
    assert_eq!(s.dropped(DropKind::WrongVersion), 10);
    assert_eq!(s.dropped(DropKind::BadMac), 100);
    let lines = LINES.lock().unwrap().clone();
    let version: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("protocol version"))
        .collect();
    assert_eq!(version.len(), 2, "once per address: {lines:#?}");
    assert!(
        version[0].contains("10.0.0.1:7000")
            && version[0].contains("version 2")
            && version[0].contains("version 1"),
        "{}",
        version[0]
    );
    let auth: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("failing authentication"))
        .collect();
    assert_eq!(auth.len(), 1, "rate-limited: {lines:#?}");
    assert!(
        auth[0].contains("claiming n1") && auth[0].contains("password"),
        "{}",
        auth[0]
    );
}
