//! The client port's limits against a real node process (issue 20): idle or slow sockets
//! cannot lock clients out, every timeout and limit closes what it should and is
//! counted in `raft-kv status`, and one node serves 1,000 authenticated clients.
//! Timeouts are short (set with `raft-kv init` flags); every wait is on a condition with
//! a deadline.

mod common;

use std::io::{ErrorKind as IoKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use raft_kv::client::{read_frame, write_frame, Client, ErrorKind, Greeting, Request, Response};
use raft_kv::config::ClusterConfig;

/// The tests that open a thousand sockets run one at a time (file descriptors, CPU).
static HEAVY: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

fn encrypted(extra: &[&'static str]) -> Vec<&'static str> {
    let mut flags = encrypted_flags();
    flags.push("--ephemeral");
    flags.extend_from_slice(extra);
    flags
}

/// A one-node cluster from `flags`, started, with its leader elected.
fn one_node(flags: &[&str]) -> Cluster {
    let envs: &[(&str, &str)] = if flags.contains(&"--encrypt") {
        &PASSWORD_ENV
    } else {
        &[]
    };
    let (mut cluster, _) = Cluster::init(1, flags, envs);
    cluster.start_all();
    cluster.agreed_leader(&["node1"]);
    cluster
}

fn config(cluster: &Cluster) -> ClusterConfig {
    ClusterConfig::load(&cluster.config).unwrap()
}

fn client_addr(cluster: &Cluster) -> String {
    config(cluster).nodes[0].client_addr.clone()
}

/// A status counter of node1.
fn counter(cluster: &Cluster, name: &str) -> u64 {
    let status = cluster.status_now("node1");
    status
        .get(name)
        .unwrap_or_else(|| panic!("status has no {name}: {status:?}"))
        .parse()
        .unwrap()
}

/// Fails clearly if this process may not open `needed` files.
fn assert_open_files(needed: u64) {
    let soft = raft_kv::server::open_files_soft_limit().unwrap_or(u64::MAX);
    assert!(
        soft >= needed,
        "this test needs {needed} open files but ulimit -n is {soft}: raise it (ulimit -n {needed})"
    );
}

/// Reads from `s` until the node closes it (end of stream or reset) or `deadline`
/// passes; returns when it closed and what it sent before.
fn wait_closed(s: &mut TcpStream, deadline: Instant) -> Result<(Instant, Vec<u8>), String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "still open at the deadline, after {} bytes",
                got.len()
            ));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Ok((Instant::now(), got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) => {}
            Err(_) => return Ok((Instant::now(), got)),
        }
    }
}

/// The node's last words: the answer framed in `bytes` (read after the greeting).
fn last_words(bytes: &[u8]) -> Option<Response> {
    read_frame(&mut &bytes[..]).ok()?
}

/// A socket that connected and got its greeting: it holds an unauthenticated slot.
fn greeted_socket(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let greeting: Greeting = read_frame(&mut s).unwrap().unwrap();
    assert!(matches!(greeting, Greeting::Welcome { .. }), "{greeting:?}");
    s
}

#[test]
fn a_thousand_idle_sockets_do_not_lock_clients_out() {
    let _heavy = HEAVY.lock();
    assert_open_files(2_300);
    // The scenario: an encrypted cluster, the default limits (2 s handshake).
    let cluster = one_node(&encrypted(&[]));
    let addr = client_addr(&cluster);
    let handshake = Duration::from_millis(2_000);
    let mut idle: Vec<TcpStream> = (0..1_000)
        .map(|i| TcpStream::connect(&addr).unwrap_or_else(|e| panic!("idle socket {i}: {e}")))
        .collect();
    let opened = Instant::now();
    // A legitimate client gets in at once: it evicts the oldest idle socket.
    let started = Instant::now();
    cluster.put("node1", "Hello", "World");
    let took = started.elapsed();
    assert!(
        took < handshake + Duration::from_secs(1),
        "the put took {took:?} with 1,000 idle sockets open"
    );
    // Every idle socket is closed: evicted, or at the handshake deadline.
    let deadline = opened + handshake + WAIT;
    let mut last_closed = opened;
    for (i, s) in idle.iter_mut().enumerate() {
        let (at, _) = wait_closed(s, deadline).unwrap_or_else(|e| panic!("idle socket {i}: {e}"));
        last_closed = last_closed.max(at);
    }
    assert!(
        last_closed >= opened + handshake - Duration::from_millis(100),
        "the last idle socket closed after {:?}, before the handshake deadline",
        last_closed - opened
    );
    let evicted = counter(&cluster, "client_evicted");
    let timeouts = counter(&cluster, "client_handshake_timeouts");
    assert_eq!(
        evicted + timeouts,
        1_000,
        "evicted {evicted}, timed out {timeouts}"
    );
    assert!(
        timeouts >= 1 && evicted >= 1,
        "evicted {evicted}, timed out {timeouts}"
    );
    let status = cluster.status_now("node1");
    assert_eq!(status["client_unauthenticated"], "0", "{status:?}");
    // A thousand closures are a few throttled log lines, not a thousand.
    let lines = cluster.lines("node1").all();
    let warned = lines
        .iter()
        .filter(|l| l.contains("no handshake within 2000 ms"))
        .count();
    assert!((1..=3).contains(&warned), "{warned} lines: {lines:#?}");
    assert_eq!(
        cluster.stale_get("node1", "Hello").as_deref(),
        Some("World")
    );
}

#[test]
fn a_flood_that_reconnects_at_once_does_not_lock_clients_out() {
    let _heavy = HEAVY.lock();
    assert_open_files(1_500);
    let cluster = one_node(&encrypted(&[]));
    let addr = client_addr(&cluster);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The attacker keeps 600 sockets open, reopening each one the node closes.
    let flood = {
        let (addr, stop) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let open = |addr: &str| {
                let s = TcpStream::connect(addr).ok()?;
                s.set_nonblocking(true).ok()?;
                Some(s)
            };
            let mut sockets: Vec<Option<TcpStream>> = (0..600).map(|_| open(&addr)).collect();
            let (mut reopened, started) = (0u64, Instant::now());
            let mut buf = [0u8; 1024];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && started.elapsed() < WAIT {
                for slot in &mut sockets {
                    let closed = match slot {
                        Some(s) => match s.read(&mut buf) {
                            Ok(0) => true,
                            Ok(_) => false,
                            Err(e) => e.kind() != IoKind::WouldBlock,
                        },
                        None => true,
                    };
                    if closed {
                        *slot = open(&addr);
                        reopened += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(5)); // the attacker's pace
            }
            reopened
        })
    };
    wait_until("the flood evicts", WAIT, || {
        (counter(&cluster, "client_evicted") > 0).then_some(())
    });
    for i in 0..5 {
        let started = Instant::now();
        cluster.put("node1", "k", &i.to_string());
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(2_000 + 1_000),
            "put {i} took {took:?} during the flood"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reopened = flood.join().unwrap();
    assert!(reopened > 0, "the node never closed a flood socket");
    assert_eq!(cluster.stale_get("node1", "k").as_deref(), Some("4"));
}

#[test]
fn a_slow_client_never_holds_a_slot_past_the_handshake_deadline() {
    // Unencrypted: the first request must have arrived within the deadline.
    let cluster = one_node(&[
        "--no-encrypt",
        "--ephemeral",
        "--client-handshake-timeout-ms",
        "1500",
    ]);
    let handshake = Duration::from_millis(1_500);
    let started = Instant::now();
    let mut s = greeted_socket(&client_addr(&cluster));
    // A request frame of 100 bytes, sent one byte a second.
    let mut frame = vec![0, 0, 0, 100];
    frame.extend_from_slice(&[0u8; 100]);
    let mut got = Vec::new();
    let mut closed_at = None;
    for byte in frame {
        use std::io::Write;
        if s.write_all(&[byte]).is_err() {
            closed_at = Some(Instant::now());
            break;
        }
        // Waits up to a second for the node to close the connection: the pace.
        match wait_closed(&mut s, Instant::now() + Duration::from_secs(1)) {
            Ok((at, bytes)) => {
                got = bytes;
                closed_at = Some(at);
                break;
            }
            Err(_) => assert!(
                started.elapsed() < handshake + WAIT,
                "the slow client still holds its slot after {:?}",
                started.elapsed()
            ),
        }
    }
    let took = closed_at.expect("closed before the frame was complete") - started;
    assert!(
        took >= handshake && took < handshake + Duration::from_secs(2),
        "closed after {took:?}, the deadline being {handshake:?}"
    );
    if let Some(Response::Error { kind, message }) = last_words(&got) {
        assert_eq!(kind, ErrorKind::Timeout);
        assert!(message.contains("client_handshake_timeout_ms"), "{message}");
    }
    assert_eq!(counter(&cluster, "client_handshake_timeouts"), 1);
    let warned =
        cluster
            .lines("node1")
            .wait_for(0, &["n1 client", "no handshake within 1500 ms"], WAIT);
    assert!(warned.is_some(), "{:#?}", cluster.lines("node1").all());
}

#[test]
fn an_idle_client_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let cluster = one_node(&[
        "--no-encrypt",
        "--ephemeral",
        "--client-idle-timeout-ms",
        "1000",
    ]);
    let idle = Duration::from_millis(1_000);
    let mut s = greeted_socket(&client_addr(&cluster));
    let get = Request::Get {
        key: "k".into(),
        stale: true,
    };
    // Requests 300 ms apart keep it open for longer than the idle timeout.
    let first = Instant::now();
    let mut answered = first;
    while answered - first < idle + Duration::from_millis(500) {
        write_frame(&mut s, &get).unwrap();
        let r: Response = read_frame(&mut s).unwrap().expect("an answer");
        assert_eq!(r, Response::Value(None));
        answered = Instant::now();
        std::thread::sleep(Duration::from_millis(300)); // the client's own pace
    }
    // Then silence: closed one idle timeout after the last answer.
    let (closed_at, _) = wait_closed(&mut s, answered + idle + WAIT).unwrap();
    let silent = closed_at - answered;
    // (Not much sooner: the node's deadline starts when it has written the answer,
    // which the client may read a scheduling delay later.)
    assert!(
        silent >= idle / 2 && silent < idle + Duration::from_secs(3),
        "closed {silent:?} after the last answer, the idle timeout being {idle:?}"
    );
    assert_eq!(counter(&cluster, "client_idle_timeouts"), 1);
}

#[test]
fn connections_are_refused_only_when_every_slot_is_authenticated() {
    let cluster = one_node(&[
        "--no-encrypt",
        "--ephemeral",
        "--max-client-connections",
        "4",
        "--max-unauthenticated-connections",
        "2",
    ]);
    let addr = client_addr(&cluster);
    let timeout = Duration::from_secs(10);
    let mut raw: Vec<TcpStream> = (0..3).map(|_| greeted_socket(&addr)).collect();
    // The third unauthenticated socket took the first one's slot; it was told why.
    let (_, words) = wait_closed(&mut raw[0], Instant::now() + WAIT).unwrap();
    match last_words(&words) {
        Some(Response::Error {
            kind: ErrorKind::Busy,
            message,
        }) => assert!(message.contains("evicted"), "{message}"),
        other => panic!("the evicted socket was told {other:?}"),
    }
    // Four clients authenticate (on this unencrypted cluster: their first request),
    // evicting the idle sockets as they need their slots.
    let mut clients: Vec<Client> = (0..4)
        .map(|i| {
            let mut c =
                Client::connect(&addr, timeout, None).unwrap_or_else(|e| panic!("client {i}: {e}"));
            let r = c.call(&Request::Status { entries_max: 0 }).unwrap();
            assert!(matches!(r, Response::Status(_)), "{r:?}");
            c
        })
        .collect();
    for s in &mut raw[1..] {
        wait_closed(s, Instant::now() + WAIT).expect("evicted for an authenticating client");
    }
    // Now every slot is an authenticated client's: a fifth connection is refused.
    let err = Client::connect(&addr, timeout, None).unwrap_err();
    assert_eq!(err.kind(), IoKind::ConnectionRefused, "{err}");
    assert!(err.to_string().contains("max_client_connections"), "{err}");
    // The others are still served.
    for c in &mut clients {
        assert!(matches!(
            c.call(&Request::Status { entries_max: 0 }).unwrap(),
            Response::Status(_)
        ));
    }
    // One leaves: its slot is free again.
    clients.pop();
    let status = wait_until("a slot is free for raft-kv status", WAIT, || {
        cluster.status("node1")
    });
    // The fifth connection was refused; a status request that raced the departing
    // client's close (the node had not seen it yet) is refused too and retried, so
    // the count is at least one, not exactly one.
    let refused: u64 = status["client_refused"].parse().unwrap();
    assert!(refused >= 1, "{status:?}");
    assert_eq!(status["client_evicted"], "3", "{status:?}");
    assert_eq!(status["client_max_connections"], "4", "{status:?}");
    assert_eq!(status["client_connections"], "4", "{status:?}");
}

#[test]
fn one_address_holds_at_most_its_share_of_handshakes() {
    let cluster = one_node(&[
        "--no-encrypt",
        "--ephemeral",
        "--max-unauthenticated-connections",
        "8",
        "--max-unauthenticated-per-ip",
        "2",
        // Long enough that only the per-address bound can close a socket here.
        "--client-handshake-timeout-ms",
        "60000",
    ]);
    let addr = client_addr(&cluster);
    let mut raw: Vec<TcpStream> = (0..3).map(|_| greeted_socket(&addr)).collect();
    // Room for 8 in the handshake, but 2 per address: the third took the first's slot.
    let (_, words) = wait_closed(&mut raw[0], Instant::now() + WAIT).unwrap();
    assert!(
        matches!(
            last_words(&words),
            Some(Response::Error {
                kind: ErrorKind::Busy,
                ..
            })
        ),
        "{words:?}"
    );
    // The other two are still open (a read waits, no end of stream).
    for s in &mut raw[1..] {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let e = s.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), IoKind::WouldBlock, "{e}");
    }
    assert!(counter(&cluster, "client_evicted") >= 1);
}

#[test]
fn bench_runs_200_clients_against_one_node_and_no_more_than_its_limit() {
    let _heavy = HEAVY.lock();
    let cluster = one_node(&encrypted(&[]));
    let out = cluster.cli(&[
        "bench",
        "--clients",
        "200",
        "--requests",
        "1000",
        "--node",
        "node1",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("(1000 ok, 0 failed"), "{text}");
    // More clients than the node's max_client_connections (1,024) are refused upfront.
    let out = cluster.cli(&["bench", "--clients", "1025", "--node", "node1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("at most 1024") && err.contains("max_client_connections"),
        "{err}"
    );
}

/// VmRSS of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn one_node_serves_a_thousand_authenticated_clients() {
    let _heavy = HEAVY.lock();
    assert_open_files(2_300);
    let mut cluster = one_node(&encrypted(&[]));
    let config = config(&cluster);
    let key = config.client_key(PASSWORD);
    let addr = client_addr(&cluster);
    let pid = cluster.proc_mut("node1").pid();
    let before = rss_kib(pid);
    let mut clients: Vec<Client> = (0..1_000)
        .map(|i| {
            let mut c = Client::connect(&addr, WAIT, Some(&key))
                .unwrap_or_else(|e| panic!("client {i}: {e}"));
            assert!(c.is_encrypted());
            let r = c.call(&Request::Get {
                key: "k".into(),
                stale: true,
            });
            assert_eq!(r.unwrap(), Response::Value(None), "client {i}");
            c
        })
        .collect();
    let after = rss_kib(pid);
    let status = cluster.status_now("node1");
    assert_eq!(status["client_connections"], "1001", "{status:?}");
    assert_eq!(status["client_unauthenticated"], "0", "{status:?}");
    // Every one of them is still served, linearizably.
    cluster.put("node1", "k", "v");
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.call(&Request::Get {
            key: "k".into(),
            stale: false,
        });
        assert_eq!(r.unwrap(), Response::Value(Some("v".into())), "client {i}");
    }
    eprintln!(
        "1,000 idle authenticated connections: node RSS {before} KiB -> {after} KiB, \
         {:.1} KiB per connection",
        (after.saturating_sub(before)) as f64 / 1000.0
    );
}

#[test]
fn running_out_of_file_descriptors_is_logged_and_survived() {
    let _heavy = HEAVY.lock();
    let (mut cluster, _) = Cluster::init(1, &["--no-encrypt", "--ephemeral"], &[]);
    // Far fewer files than the default 1,024 connections need: the node says so.
    cluster.start_with_open_files("node1", 128);
    let lines = cluster.lines("node1");
    let warned = lines.wait_for(
        0,
        &["n1 client port: this process may open only 128 files"],
        WAIT,
    );
    assert!(warned.is_some(), "{:#?}", lines.all());
    cluster.agreed_leader(&["node1"]);
    // More sockets than it has descriptors: accepting fails, is logged, and is survived.
    let addr = client_addr(&cluster);
    let sockets: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let failed = lines.wait_for(0, &["n1 client port: accept failed"], WAIT);
    assert!(failed.is_some(), "{:#?}", lines.all());
    drop(sockets);
    wait_until("node1 takes a put again", WAIT, || {
        cluster
            .cli(&["put", "k", "v", "--node", "node1", "--timeout-ms", "2000"])
            .status
            .success()
            .then_some(())
    });
    assert!(!cluster.proc_mut("node1").exited());
    assert!(!lines.all().iter().any(|l| l.contains("panicked")));
}

/// Regression (session 4): before proving the password, a client's first frame may be at
/// most AUTH_FRAME_BYTES_MAX; a longer one is refused by its length header, at once,
/// instead of the node waiting for (and buffering) a megabyte from an unknown client.
#[test]
fn an_unauthenticated_client_cannot_send_a_large_frame() {
    use std::io::Write;
    let cluster = one_node(&encrypted(&[]));
    let mut s = greeted_socket(&client_addr(&cluster));
    let announced = raft_kv::client::FRAME_BYTES_MAX as u32;
    s.write_all(&announced.to_be_bytes()).unwrap();
    s.write_all(&[0u8; 100]).unwrap();
    let (_, got) = wait_closed(&mut s, Instant::now() + WAIT).expect("the node closes it");
    match last_words(&got) {
        Some(Response::Error { kind, message }) => {
            assert_eq!(kind, ErrorKind::Unauthorized, "{message}");
            assert!(message.contains("exceeds 1024"), "{message}");
        }
        other => panic!("expected an explanation, got {other:?}"),
    }
    assert_eq!(counter(&cluster, "client_handshake_failures"), 1);
    // A client with the password is served as before, with a large value.
    let config = config(&cluster);
    let key = config.client_key(PASSWORD);
    let mut c = Client::connect(&client_addr(&cluster), WAIT, Some(&key)).unwrap();
    let value = "v".repeat(200_000);
    let put = c.call(&Request::Put {
        key: "big".into(),
        value: value.clone(),
    });
    assert!(
        matches!(put.unwrap(), Response::Written { previous: None }),
        "the write is served"
    );
    let got = c.call(&Request::Get {
        key: "big".into(),
        stale: false,
    });
    assert_eq!(got.unwrap(), Response::Value(Some(value)));
}
