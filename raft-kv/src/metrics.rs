//! The metrics endpoint: `raft-kv node --metrics-addr 127.0.0.1:9100` (or `metrics_addr`
//! in the node's `[[nodes]]` entry of the config file) serves every metric of raft-core
//! (`raft_core::node::metrics`) and raft-net (`raft_net::metrics`) in Prometheus text
//! format at `GET /metrics`. Off by default: with no address no recorder is installed,
//! and recording costs the node a branch per metric.
//!
//! [`install_recorder`] installs `metrics-exporter-prometheus`'s recorder (its rendering
//! only: built without its HTTP listener, so no async runtime enters the program);
//! [`MetricsServer`] answers scrapes on one synchronous thread, one connection at a time,
//! each bounded: a request must arrive whole within [`REQUEST_TIMEOUT_MS`] and
//! [`REQUEST_BYTES_MAX`] bytes, and the answer is written within [`WRITE_TIMEOUT_MS`].
//! A slow or hostile scraper therefore holds the endpoint for at most those times, never
//! the node, and costs no extra thread or unbounded memory. A malformed request gets a
//! `400`, another method `405`, another path `404`, and the endpoint goes on serving.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! let server = raft_kv::metrics::MetricsServer::start(
//!     "127.0.0.1:0",
//!     raft_kv::metrics::build_recorder().handle(),
//! )
//! .unwrap();
//! let mut scrape = std::net::TcpStream::connect(server.local_addr()).unwrap();
//! scrape.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
//! let mut answer = String::new();
//! scrape.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"));
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{RecvTimeoutError, Sender};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// The longest a scraper may take to send its whole request, in milliseconds.
pub const REQUEST_TIMEOUT_MS: u64 = 2_000;
/// The longest writing one answer may block, in milliseconds.
pub const WRITE_TIMEOUT_MS: u64 = 5_000;
/// The largest request accepted (request line and headers), in bytes.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How often histograms are folded into their buckets when nobody scrapes, in
/// milliseconds (bounds the memory of samples waiting to be rendered).
pub const UPKEEP_INTERVAL_MS: u64 = 5_000;

/// Bucket bounds of the `_seconds` histograms (log write, sync, apply): 50 µs to 10 s.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
/// Bucket bounds of `raft_apply_batch_entries`: 1 to 4096 entries.
pub const ENTRIES_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// The Prometheus recorder with raft-kv's histogram buckets, not installed.
pub fn build_recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Suffix("_entries".into()), &ENTRIES_BUCKETS)
        })
        .expect("the bucket lists are constant and non-empty")
        .build_recorder()
}

/// Installs [`build_recorder`] as the process's metrics recorder (before any node starts,
/// so the nodes register with it) and returns the handle that renders it.
///
/// # Errors
/// Another recorder is already installed in this process.
pub fn install_recorder() -> Result<PrometheusHandle> {
    let recorder = build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed in this process"))?;
    Ok(handle)
}

/// Binds `addr` (`host:port`) for the metrics endpoint of node `name`.
///
/// # Errors
/// One line naming the address: not `host:port`, unresolvable, or the port is taken.
pub fn bind(name: &str, addr: &str) -> Result<TcpListener> {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| {
            format!("the metrics address {addr:?} of {name} is not a usable host:port")
        })?
        .collect();
    TcpListener::bind(&resolved[..])
        .with_context(|| format!("cannot use {name}'s metrics (HTTP) port {addr}"))
}

/// The endpoint's threads: one serving scrapes, one doing upkeep. Dropping it stops both.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    stop_upkeep: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `handle` there.
    ///
    /// # Errors
    /// As [`bind`], or the threads could not start.
    pub fn start(addr: &str, handle: PrometheusHandle) -> Result<Self> {
        Self::serve(bind("this node", addr)?, handle)
    }

    /// Serves `handle` on an already bound `listener`.
    ///
    /// # Errors
    /// The threads could not start.
    pub fn serve(listener: TcpListener, handle: PrometheusHandle) -> Result<Self> {
        let local_addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let (stop_upkeep, upkeep_stop) = crossbeam_channel::bounded::<()>(1);
        let upkeep_handle = handle.clone();
        let upkeep = std::thread::Builder::new()
            .name("raft-kv-metrics-upkeep".into())
            .spawn(move || {
                let every = Duration::from_millis(UPKEEP_INTERVAL_MS);
                // Until the server is dropped (the sender goes away).
                while let Err(RecvTimeoutError::Timeout) = upkeep_stop.recv_timeout(every) {
                    upkeep_handle.run_upkeep();
                }
            })
            .context("cannot start the metrics upkeep thread")?;
        let flag = stopping.clone();
        let server = std::thread::Builder::new()
            .name("raft-kv-metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    match stream {
                        Ok(stream) => serve_one(stream, &handle),
                        Err(e) => log::warn!("metrics endpoint: accept failed: {e}"),
                    }
                }
            });
        let server = match server {
            Ok(t) => t,
            Err(e) => {
                drop(stop_upkeep);
                let _ = upkeep.join();
                return Err(e).context("cannot start the metrics thread");
            }
        };
        log::info!("metrics endpoint: Prometheus text at http://{local_addr}/metrics");
        Ok(Self {
            local_addr,
            stopping,
            stop_upkeep: Some(stop_upkeep),
            threads: vec![upkeep, server],
        })
    }

    /// The address it listens on (with the real port if it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        self.stop_upkeep = None;
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Why a request was not served, as an HTTP status.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    BadRequest(&'static str),
    TooLarge,
    Timeout,
    MethodNotAllowed,
    NotFound,
}

impl Refusal {
    fn status(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "400 Bad Request",
            Refusal::TooLarge => "431 Request Header Fields Too Large",
            Refusal::Timeout => "408 Request Timeout",
            Refusal::MethodNotAllowed => "405 Method Not Allowed",
            Refusal::NotFound => "404 Not Found",
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Refusal::BadRequest(why) => why,
            Refusal::TooLarge => "request larger than 8 KiB",
            Refusal::Timeout => "request not complete within 2 s",
            Refusal::MethodNotAllowed => "only GET and HEAD",
            Refusal::NotFound => "the metrics are at /metrics",
        }
    }
}

/// What a request asked for: whether the body is wanted (GET) or only the head (HEAD).
#[derive(Debug, PartialEq, Eq)]
struct Scrape {
    head_only: bool,
}

/// Serves one connection: reads one request (bounded), answers, closes.
fn serve_one(mut stream: TcpStream, handle: &PrometheusHandle) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let _ = stream.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)));
    let answer = match read_request(&mut stream).and_then(|head| parse_request(&head)) {
        Ok(scrape) => {
            handle.run_upkeep();
            let body = handle.render();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let mut answer = head.into_bytes();
            if !scrape.head_only {
                answer.extend_from_slice(body.as_bytes());
            }
            answer
        }
        Err(refusal) => {
            log::warn!(
                "metrics endpoint: refused a request from {peer}: {} ({})",
                refusal.status(),
                refusal.reason()
            );
            let body = format!("{}\n", refusal.reason());
            let allow = if refusal == Refusal::MethodNotAllowed {
                "Allow: GET, HEAD\r\n"
            } else {
                ""
            };
            format!(
                "HTTP/1.1 {}\r\n{allow}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                refusal.status(),
                body.len()
            )
            .into_bytes()
        }
    };
    if let Err(e) = stream.write_all(&answer).and_then(|()| stream.flush()) {
        log::debug!("metrics endpoint: could not answer {peer}: {e}");
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Reads up to the end of the request's headers, within [`REQUEST_TIMEOUT_MS`] and
/// [`REQUEST_BYTES_MAX`].
fn read_request(stream: &mut TcpStream) -> Result<Vec<u8>, Refusal> {
    let deadline = Instant::now() + Duration::from_millis(REQUEST_TIMEOUT_MS);
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = header_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > REQUEST_BYTES_MAX {
            return Err(Refusal::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refusal::Timeout);
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(Refusal::BadRequest(
                    "connection closed before the request ended",
                ))
            }
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Refusal::Timeout)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Refusal::BadRequest("read failed")),
        }
    }
}

/// Where the headers end (the blank line), if they did.
fn header_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses the request line: `GET /metrics HTTP/1.x` (a query string is ignored).
fn parse_request(head: &[u8]) -> Result<Scrape, Refusal> {
    let text = std::str::from_utf8(head).map_err(|_| Refusal::BadRequest("not UTF-8 text"))?;
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest(
            "the request line is not METHOD PATH HTTP/1.x",
        ));
    };
    if !matches!(version.trim_end(), "HTTP/1.0" | "HTTP/1.1") {
        return Err(Refusal::BadRequest("not HTTP/1.0 or HTTP/1.1"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => {
            return Err(Refusal::MethodNotAllowed)
        }
        _ => return Err(Refusal::BadRequest("the method is not a token")),
    };
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return Err(Refusal::NotFound);
    }
    Ok(Scrape { head_only })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scrapes_and_refuses_the_rest() {
        let ok = |s: &str| parse_request(s.as_bytes());
        assert_eq!(
            ok("GET /metrics HTTP/1.1\r\nHost: a"),
            Ok(Scrape { head_only: false })
        );
        assert_eq!(
            ok("HEAD /metrics?x=1 HTTP/1.0"),
            Ok(Scrape { head_only: true })
        );
        assert_eq!(ok("POST /metrics HTTP/1.1"), Err(Refusal::MethodNotAllowed));
        assert_eq!(ok("GET / HTTP/1.1"), Err(Refusal::NotFound));
        assert!(matches!(ok("GET /metrics"), Err(Refusal::BadRequest(_))));
        assert!(matches!(
            ok("GET /metrics SPDY/3"),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            ok("\u{1}\u{2} / HTTP/1.1"),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            parse_request(&[0xff, 0xfe]),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(ok(""), Err(Refusal::BadRequest(_))));
    }

    #[test]
    fn finds_the_end_of_the_headers() {
        assert_eq!(header_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(20));
        assert_eq!(header_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(header_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn bind_refuses_garbage_and_taken_ports() {
        let e = bind("node1", "not an address").unwrap_err();
        assert!(format!("{e:#}").contains("not a usable host:port"), "{e:#}");
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = bind("node1", &addr).unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot use node1's metrics (HTTP) port"),
            "{e:#}"
        );
    }
}
