//! The cluster benchmark. See `docs/performance.md`.
//!
//! ```text
//! cargo run --release -p raft-testkit --bin bench -- --nodes 3 --log mem --clients 64 --seconds 10
//! cargo run --release -p raft-testkit --bin bench -- --log sled --clients 1 --json
//! cargo run --release -p raft-testkit --bin bench -- --clients 2 --pipeline 128 --transport channel
//! cargo run --release -p raft-testkit --bin bench -- --failover --trials 20
//! cargo run --release -p raft-testkit --bin bench -- --soak --soak-scale 0.1
//! ```

use anyhow::Context;
use clap::Parser;
use raft_core::node::NodeConfig;
use raft_testkit::bench::{self, BenchConfig, LogKind, PipelineApi, TransportKind};

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
    /// Writes each client thread keeps in flight (0: one blocking write at a time).
    #[arg(long, default_value_t = 0)]
    pipeline: usize,
    /// How a pipelined client keeps its writes in flight: submitter (Node::submitter)
    /// or propose (Node::propose, then wait on the oldest).
    #[arg(long, default_value = "submitter")]
    pipeline_api: PipelineApi,
    /// How the nodes talk: udp (raft-net) or channel (in-process ChannelNetwork).
    #[arg(long, default_value = "udp")]
    transport: TransportKind,
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
    /// Soak instead: a SledLog cluster writes 1,000,000 commands of 100 B, then
    /// 200,000 of 1 KB (each on a fresh cluster), snapshots every 10,000, printing
    /// every node's disk against its budget every few seconds.
    #[arg(long)]
    soak: bool,
    /// Multiplies the soak's command counts (0.1: a tenth of the run).
    #[arg(long, default_value_t = 1.0)]
    soak_scale: f64,
    /// The soak state machine's size cap, MiB.
    #[arg(long, default_value_t = 16)]
    soak_state_mib: usize,
    /// Run only this phase of the soak (0: the 100 B commands, 1: the 1 KB ones).
    #[arg(long)]
    soak_phase: Option<usize>,
    /// Seconds between two disk samples of the soak.
    #[arg(long, default_value_t = 5.0)]
    soak_sample_seconds: f64,
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
        pipeline: args.pipeline,
        pipeline_api: args.pipeline_api,
        transport: args.transport,
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
    if args.soak {
        let mut soak = bench::SoakConfig::standard(args.soak_scale);
        soak.state_max_bytes = args.soak_state_mib << 20;
        soak.sample_seconds = args.soak_sample_seconds;
        if let Some(phase) = args.soak_phase {
            anyhow::ensure!(phase < soak.phases.len(), "--soak-phase 0 or 1");
            soak.phases = vec![soak.phases[phase]];
        }
        let reports = bench::run_soak(&config, &soak)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        } else {
            for r in &reports {
                print!("{}", r.text());
            }
        }
        return Ok(());
    }
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
