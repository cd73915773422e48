//! The cluster benchmark. See `docs/performance.md`.
//!
//! ```text
//! cargo run --release -p raft-testkit --bin bench -- --nodes 3 --log mem --clients 64 --seconds 10
//! cargo run --release -p raft-testkit --bin bench -- --log sled --clients 1 --json
//! cargo run --release -p raft-testkit --bin bench -- --failover --trials 20
//! ```

use anyhow::Context;
use clap::Parser;
use raft_core::node::NodeConfig;
use raft_testkit::bench::{self, BenchConfig, LogKind};

/// Throughput, commit latency, CPU and memory of a local cluster of real nodes over
/// loopback UDP, with the machine's floor measured in the same run; or failover time.
#[derive(Parser, Debug)]
#[command(name = "bench", version)]
struct Args {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Log storage: mem (MemLog) or sled (SledLog with fdatasync).
    #[arg(long, default_value = "mem")]
    log: LogKind,
    /// Encrypt and authenticate the traffic (cluster password).
    #[arg(long)]
    encrypt: bool,
    /// PBKDF2 iterations for the password (start-up cost only).
    #[arg(long, default_value_t = 1_000)]
    kdf_iterations: u32,
    /// Concurrent closed-loop clients (each writes one entry and waits for it).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Bytes per command.
    #[arg(long, default_value_t = 100)]
    entry_bytes: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measure failover instead: stop the leader while clients write.
    #[arg(long)]
    failover: bool,
    /// Failover trials.
    #[arg(long, default_value_t = 20)]
    trials: u32,
    /// Node runtime settings as TOML, over the library's defaults, e.g.
    /// "tick_interval_ms = 5" or "protocol.inflight_messages_max = 4".
    #[arg(long, value_name = "TOML")]
    node_config: Option<String>,
    /// Skip measuring the floor (for profiling the cluster alone).
    #[arg(long)]
    skip_floor: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let config = BenchConfig {
        nodes: args.nodes,
        log: args.log,
        encrypt: args.encrypt,
        kdf_iterations: args.kdf_iterations,
        clients: args.clients,
        entry_bytes: args.entry_bytes,
        seconds: args.seconds,
        warmup_seconds: args.warmup,
        trials: args.trials,
        skip_floor: args.skip_floor,
        node_config: match &args.node_config {
            Some(t) => toml::from_str(t).context("--node-config")?,
            None => NodeConfig::default(),
        },
    };
    if args.failover {
        let report = bench::run_failover(&config)?;
        if args.json {
            println!("{}", report.json());
        } else {
            print!("{}", report.text());
        }
        return Ok(());
    }
    let report = bench::run_throughput(&config)?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}
