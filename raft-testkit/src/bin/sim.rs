//! `sim`: run many simulator seeds and summarize, or replay one seed with its trace.
//!
//! ```text
//! cargo run --release -p raft-testkit --bin sim -- --seeds 10000 --nodes 5
//! cargo run --release -p raft-testkit --bin sim -- --seed 1234 --nodes 5 --trace
//! cargo run --release -p raft-testkit --bin sim -- --seeds 10000 --nodes 5 --lease
//! cargo run --release -p raft-testkit --bin sim -- --seeds 10000 --nodes 5 --membership
//! ```
//!
//! It is a [`Simulation`] of the built-in key/value store (`Simulation::kv()`); a failing
//! seed is shrunk and reported with the environment that replays its smallest failing
//! run (`RAFT_SIM_SEED=... cargo run ... --bin sim -- <the same flags>`).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Parser;
use raft_testkit::sim::{Broken, RunReport};
use raft_testkit::Simulation;

/// Run the deterministic Raft simulator over many seeds.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// How many seeds to run (from --start).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run only this seed (overrides --seeds and --start).
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster size; random 3 to 7 per seed if absent.
    #[arg(long)]
    nodes: Option<usize>,
    /// Lease reads on every seed (with pauses and stalled syncs): the lease-safety
    /// campaign. Without it, about a third of the seeds draw lease reads.
    #[arg(long)]
    lease: bool,
    /// Membership changes on every seed (with one or two spare nodes): the membership
    /// campaign. Without it, about 40% of the seeds draw membership changes.
    #[arg(long)]
    membership: bool,
    /// Worker threads (each seed runs on one thread; results do not depend on this).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Print every event of the run (use with --seed).
    #[arg(long)]
    trace: bool,
    /// Run a deliberately broken variant: vote-without-log-check, commit-older-terms,
    /// ticks-after-queue, install-partial-snapshot, two-changes-in-flight,
    /// snapshot-without-config, ignore-stale-votes or disruptive-outsiders (needs the
    /// broken-variants feature).
    #[arg(long)]
    broken: Option<String>,
    /// Stop after this many failures.
    #[arg(long, default_value_t = 10)]
    max_failures: usize,
    /// Print every seed's trace hash (to show that a refactor left every run unchanged).
    #[arg(long)]
    hashes: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let broken = match args.broken.as_deref() {
        None => None,
        Some("vote-without-log-check") => Some(Broken::VoteWithoutLogCheck),
        Some("commit-older-terms") => Some(Broken::CommitOlderTerms),
        Some("ticks-after-queue") => Some(Broken::TicksAfterQueue),
        Some("two-changes-in-flight") => Some(Broken::TwoChangesInFlight),
        Some("install-partial-snapshot") => Some(Broken::InstallPartialSnapshot),
        Some("snapshot-without-config") => Some(Broken::SnapshotWithoutConfig),
        Some("ignore-stale-votes") => Some(Broken::IgnoreStaleVotes),
        Some("disruptive-outsiders") => Some(Broken::DisruptiveOutsiders),
        Some(other) => bail!("unknown broken variant {other:?}"),
    };
    if broken.is_some() && !cfg!(feature = "broken-variants") {
        bail!("--broken needs: cargo run --release -p raft-testkit --features broken-variants --bin sim");
    }
    let (start, count) = match args.seed {
        Some(s) => (s, 1),
        None => (args.start, args.seeds),
    };
    // The campaign is a Simulation of the built-in key/value store, like a user's.
    let mut sim = Simulation::kv()
        .seeds(start..start.saturating_add(count))
        .jobs(args.jobs)
        .max_failures(args.max_failures)
        .trace(args.trace)
        .progress(count > 1);
    sim = match args.nodes {
        Some(n) => sim.nodes(n),
        None => sim.random_nodes(),
    };
    if args.lease {
        sim = sim.lease_reads();
    }
    if args.membership {
        sim = sim.membership();
    }
    if let Some(b) = broken {
        sim = sim.broken(b);
    }
    let mut command = String::from("cargo run --release -p raft-testkit");
    if broken.is_some() {
        command.push_str(" --features broken-variants");
    }
    command.push_str(" --bin sim --");
    if let Some(n) = args.nodes {
        command.push_str(&format!(" --nodes {n}"));
    }
    for (on, flag) in [(args.lease, " --lease"), (args.membership, " --membership")] {
        if on {
            command.push_str(flag);
        }
    }
    if let Some(b) = &args.broken {
        command.push_str(&format!(" --broken {b}"));
    }
    sim = sim.replay_command(command);

    // Quiet panics: a protocol panic is reported as a failure with its message.
    if count > 1 {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let began = Instant::now();
    let report = sim.run();
    let secs = began.elapsed().as_secs_f64();
    for f in &report.failures {
        println!("{f}\n");
    }
    print_summary(&report.reports, if count > 1 { secs } else { 0.0 });
    if args.hashes {
        for r in &report.reports {
            println!(
                "seed {} trace hash {:016x} events {}",
                r.seed, r.trace_hash, r.events
            );
        }
    }
    if !report.failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn print_summary(reports: &[RunReport], secs: f64) {
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut writes, mut reads, mut ok, mut never, mut checked, mut events, mut ticks) =
        (0, 0, 0, 0, 0, 0, 0);
    let mut liveness_max = 0;
    let mut unknown = 0;
    for r in reports {
        for (k, v) in &r.faults {
            *faults.entry(k).or_insert(0) += v;
        }
        writes += r.ops.writes;
        reads += r.ops.reads;
        ok += r.ops.ok;
        never += r.ops.never_returned;
        checked += r.ops.checked;
        events += r.events;
        ticks += r.ticks;
        liveness_max = liveness_max.max(r.liveness_ticks.unwrap_or(0));
        unknown += u64::from(r.lin_unknown);
    }
    let failed: Vec<u64> = reports
        .iter()
        .filter(|r| r.failure.is_some())
        .map(|r| r.seed)
        .collect();
    println!("seeds run:        {}", reports.len());
    println!("failures:         {} {:?}", failed.len(), failed);
    println!("simulated:        {ticks} ticks, {events} events");
    println!("operations:       {writes} writes + {reads} reads invoked; {ok} returned, {never} never returned");
    println!("ops checked:      {checked} by the linearizability checker ({unknown} seeds with a key over budget)");
    println!(
        "liveness:         slowest recovery {liveness_max} ticks to a new commit after healing"
    );
    println!("faults injected:");
    for (k, v) in &faults {
        println!("  {k:<28} {v}");
    }
    if secs > 0.0 {
        println!("time:             {secs:.1} s");
    }
    if let Some(r) = reports.first().filter(|_| reports.len() == 1) {
        println!("trace hash:       {:016x}", r.trace_hash);
    }
}
