//! `raft-kv bench`: committed writes per second and their latency, measured from clients
//! over the client protocol (so it includes TCP, forwarding, replication and the sync).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::auth::ClientKey;
use crate::client::{Client, Request, Response};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Writes in total.
    pub requests: usize,
    /// Concurrent clients, each with its own connection.
    pub clients: usize,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Keys are `{key_prefix}-{client}-{n}`.
    pub key_prefix: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The key to prove the cluster password with, on an encrypted cluster.
    pub key: Option<ClientKey>,
}

/// What it measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Writes that succeeded.
    pub ok: usize,
    /// Writes that failed.
    pub failed: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies of the successful writes, sorted.
    pub latencies: Vec<Duration>,
    /// The first failure's message, if any.
    pub first_error: Option<String>,
}

impl BenchReport {
    /// Successful writes per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        self.latencies[i]
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(
            f,
            "throughput: {:.0} writes/s ({} ok, {} failed in {:.2} s)",
            self.throughput(),
            self.ok,
            self.failed,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "latency: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(self.quantile(0.5)),
            ms(self.quantile(0.9)),
            ms(self.quantile(0.99)),
            ms(self.quantile(1.0))
        )?;
        if let Some(e) = &self.first_error {
            writeln!(f, "first error: {e}")?;
        }
        Ok(())
    }
}

/// What one client saw.
struct ClientRun {
    latencies: Vec<Duration>,
    failed: usize,
    first_error: Option<String>,
}

/// How many connections the node at `addr` serves at once, from its status.
fn node_connection_limit(addr: &str, options: &BenchOptions) -> Result<usize> {
    let mut client = Client::connect(addr, options.timeout, options.key.as_ref())
        .with_context(|| format!("cannot connect to {addr}"))?;
    match client.call(&Request::Status { entries_max: 0 })? {
        // This connection closes before the clients connect (they retry while its slot
        // is being freed).
        Response::Status(view) => Ok(view
            .client_port
            .map_or(usize::MAX, |p| p.max_client_connections)),
        other => bail!("unexpected answer to a status request: {other:?}"),
    }
}

/// Connects, retrying while the node sheds the connection (every slot taken, or
/// evicted from the handshake by a burst of newer connections) until `options.timeout`.
/// A wrong password or another protocol version fails at once.
fn connect_with_retry(addr: &str, options: &BenchOptions) -> std::io::Result<Client> {
    let deadline = Instant::now() + options.timeout;
    let mut backoff = Duration::from_millis(5);
    loop {
        match Client::connect(addr, options.timeout, options.key.as_ref()) {
            Ok(c) => return Ok(c),
            Err(e)
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::Unsupported
                ) && Instant::now() + backoff < deadline =>
            {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `options.requests` puts against the node at `addr`.
///
/// # Errors
/// Invalid options, or no client could connect.
pub fn run(addr: &str, options: &BenchOptions) -> Result<BenchReport> {
    if options.clients == 0 || options.requests == 0 {
        bail!("--clients and --requests must be positive");
    }
    let limit = node_connection_limit(addr, options)?;
    if options.clients > limit {
        bail!("--clients: at most {limit} (the node's max_client_connections)");
    }
    let value = "v".repeat(options.value_bytes);
    let started = Instant::now();
    let per_client = options.requests.div_ceil(options.clients);
    let results: Vec<Result<ClientRun>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..options.clients)
            .map(|c| {
                let value = value.clone();
                let prefix = options.key_prefix.as_str();
                let n = per_client.min(options.requests.saturating_sub(c * per_client));
                s.spawn(move || -> Result<_> {
                    let mut client = connect_with_retry(addr, options)
                        .with_context(|| format!("client {c} cannot connect to {addr}"))?;
                    let mut lat = Vec::with_capacity(n);
                    let (mut failed, mut first_error) = (0, None);
                    for i in 0..n {
                        let t = Instant::now();
                        let r = client.call(&Request::Put {
                            key: format!("{prefix}-{c}-{i}"),
                            value: value.clone(),
                        });
                        match r {
                            Ok(Response::Written { .. }) => lat.push(t.elapsed()),
                            Ok(other) => {
                                failed += 1;
                                first_error.get_or_insert(format!("{other:?}"));
                            }
                            Err(e) => {
                                failed += 1;
                                first_error.get_or_insert(e.to_string());
                                client = connect_with_retry(addr, options).with_context(|| {
                                    format!("client {c} cannot reconnect to {addr}")
                                })?;
                            }
                        }
                    }
                    Ok(ClientRun {
                        latencies: lat,
                        failed,
                        first_error,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a bench client panicked"))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut report = BenchReport {
        ok: 0,
        failed: 0,
        elapsed,
        latencies: Vec::new(),
        first_error: None,
    };
    for r in results {
        let run = r?;
        report.ok += run.latencies.len();
        report.failed += run.failed;
        report.latencies.extend(run.latencies);
        if report.first_error.is_none() {
            report.first_error = run.first_error;
        }
    }
    report.latencies.sort_unstable();
    Ok(report)
}
