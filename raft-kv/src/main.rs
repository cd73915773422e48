//! The `raft-kv` binary: see the crate docs (`raft_kv`) and `raft-kv --help`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use log::LevelFilter;

use raft_kv::auth::ClientKey;
use raft_kv::client::{entries_text, Client, ErrorKind, Request, Response};
use raft_kv::cluster::{HostView, NodeHost};
use raft_kv::config::ClusterConfig;
use raft_kv::init::InitArgs;
use raft_kv::logger::{self, Sinks};
use raft_kv::server::ClientServer;

/// Exit code: success.
const EXIT_OK: u8 = 0;
/// Exit code: `get` found no such key.
const EXIT_NOT_FOUND: u8 = 1;
/// Exit code: any error.
const EXIT_ERROR: u8 = 2;

/// A replicated key/value store on Raft: run a cluster, watch it elect, replicate,
/// fail over and recover.
#[derive(Parser, Debug)]
#[command(
    name = "raft-kv",
    version,
    after_help = "Exit codes: 0 success, 1 key not found (get), 2 any error.\n\
                  First look: raft-kv demo. Your own cluster: raft-kv init, then raft-kv node."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a cluster config file (asks on a terminal for what flags leave out).
    Init(Box<InitArgs>),
    /// Run one node of a configured cluster.
    Node(NodeArgs),
    /// Run a local 3-node cluster in one terminal (or a scripted tour without one).
    Demo(DemoArgs),
    /// Set KEY to VALUE.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        target: Target,
    },
    /// Print KEY's value (exit code 1 if there is none).
    Get {
        /// The key.
        key: String,
        /// Read the node's own copy without asking the leader (may be stale).
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove KEY.
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Print a node's role, term, leader and indexes (and with --entries its log).
    Status {
        /// Also print the last N committed entries.
        #[arg(long, value_name = "N")]
        entries: Option<u32>,
        /// Print one JSON object instead of `key: value` lines (field names in
        /// docs/operations.md, "raft-kv status --json").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop a node in place (its process keeps running; `raft-kv start` resumes it).
    Stop {
        #[command(flatten)]
        target: Target,
    },
    /// Start a node stopped with `raft-kv stop`.
    Start {
        #[command(flatten)]
        target: Target,
    },
    /// Measure committed writes per second and their latency through the client port.
    Bench {
        /// Writes in total.
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        /// Concurrent clients, each with its own connection (at most the node's
        /// max_client_connections).
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Bytes per value.
        #[arg(long, default_value_t = 16)]
        value_bytes: usize,
        /// Keys are PREFIX-<client>-<n>: a new prefix per run grows the state, the same
        /// one overwrites the previous run's keys.
        #[arg(long, default_value = "bench", value_name = "PREFIX")]
        key_prefix: String,
        #[command(flatten)]
        target: Target,
    },
    /// Change a node's log level live (error, warn, info, debug, trace).
    LogLevel {
        /// The level.
        level: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// The cluster config file.
    #[arg(long, short, env = "RAFT_KV_CONFIG", default_value = "raft-kv.toml")]
    config: PathBuf,
    /// Which node to run: its name (node1) or id (1). Asked for on a terminal if left out.
    #[arg(long)]
    id: Option<String>,
    /// No terminal UI: plain logs on stderr (also the default without a terminal).
    #[arg(long)]
    headless: bool,
    /// Log level to start with: error, warn, info, debug, trace.
    #[arg(long, default_value = "info", value_parser = logger::parse_level)]
    log_level: LevelFilter,
    /// Also append the log to this file.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (default: the node's
    /// `metrics_addr` in the config, else off).
    #[arg(long, env = "RAFT_KV_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Run the scripted tour and exit (the default without a terminal).
    #[arg(long)]
    script: bool,
    /// Encrypt the demo cluster's traffic with this password.
    #[arg(long)]
    password: Option<String>,
    /// Keep the demo's logs on disk in this directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Raft port of node1 (node N gets base + N - 1); default: free ports at random.
    #[arg(long)]
    base_port: Option<u16>,
    /// Log level: error, warn, info, debug, trace (shown in the UI; on stderr with
    /// --script when --verbose).
    #[arg(long, default_value = "info", value_parser = logger::parse_level)]
    log_level: LevelFilter,
    /// With --script, also print the cluster's log on stderr.
    #[arg(long)]
    verbose: bool,
}

/// Which node a client command talks to.
#[derive(Args, Debug)]
struct Target {
    /// The cluster config file (to find the nodes' client addresses).
    #[arg(long, short, env = "RAFT_KV_CONFIG", default_value = "raft-kv.toml")]
    config: PathBuf,
    /// Talk to this node (name or id); default: the first that answers.
    #[arg(long)]
    node: Option<String>,
    /// Talk to this client address (host:port) instead of the config's nodes (the config,
    /// if it exists, still gives the cluster password).
    #[arg(long, conflicts_with_all = ["node"])]
    addr: Option<String>,
    /// How long to wait for an answer, in ms.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        // The reader went away (`raft-kv status | head -1`): nothing left to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("raft-kv: error: {}", one_line(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// An error and its causes as ONE line (docs/operations.md, "raft-kv: bad input"):
/// causes joined by `: `, a cause whose text the previous message already contains
/// left out (an io error quoted by its context), line breaks inside a message turned
/// into `; `.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if text.is_empty() || parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes to stdout, returning errors (a closed pipe) instead of panicking as `print!`
/// does.
fn out(text: impl std::fmt::Display) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Init(args) => {
            raft_kv::init::run(&args, &mut std::io::stdout())?;
            Ok(EXIT_OK)
        }
        Command::Node(args) => run_node(&args).map(|()| EXIT_OK),
        Command::Demo(args) => run_demo(&args).map(|()| EXIT_OK),
        Command::Put { key, value, target } => match call(&target, &Request::Put { key, value })? {
            Response::Written { .. } => Ok(EXIT_OK),
            other => unexpected(other),
        },
        Command::Del { key, target } => match call(&target, &Request::Delete { key })? {
            Response::Written { .. } => Ok(EXIT_OK),
            other => unexpected(other),
        },
        Command::Get { key, stale, target } => match call(&target, &Request::Get { key, stale })? {
            Response::Value(Some(v)) => {
                out(format_args!("{v}\n"))?;
                Ok(EXIT_OK)
            }
            Response::Value(None) => Ok(EXIT_NOT_FOUND),
            other => unexpected(other),
        },
        Command::Status {
            entries,
            json,
            target,
        } => {
            let entries_max = entries.unwrap_or(0);
            match call(&target, &Request::Status { entries_max })? {
                Response::Status(view) if json => {
                    out(status_json(&view, entries.is_some())?)?;
                    Ok(EXIT_OK)
                }
                Response::Status(view) => {
                    out(status_text(&view))?;
                    if entries.is_some() {
                        out(entries_text(&view.entries))?;
                    }
                    Ok(EXIT_OK)
                }
                other => unexpected(other),
            }
        }
        Command::Stop { target } => done(call(&target, &Request::Stop)?),
        Command::Start { target } => done(call(&target, &Request::Start)?),
        Command::Bench {
            requests,
            clients,
            value_bytes,
            key_prefix,
            target,
        } => {
            let (name, addr, key) = bench_target(&target)?;
            out(format_args!(
                "bench: {requests} puts of {value_bytes}-byte values from {clients} clients via {name} ({addr})\n"
            ))?;
            let options = raft_kv::bench::BenchOptions {
                requests,
                clients,
                value_bytes,
                key_prefix,
                timeout: Duration::from_millis(target.timeout_ms),
                key,
            };
            let report = raft_kv::bench::run(&addr, &options)?;
            out(&report)?;
            Ok(if report.failed == 0 {
                EXIT_OK
            } else {
                EXIT_ERROR
            })
        }
        Command::LogLevel { level, target } => {
            logger::parse_level(&level).map_err(anyhow::Error::msg)?;
            done(call(&target, &Request::SetLogLevel { level })?)
        }
    }
}

fn done(r: Response) -> Result<u8> {
    match r {
        Response::Done => Ok(EXIT_OK),
        other => unexpected(other),
    }
}

fn unexpected(r: Response) -> Result<u8> {
    match r {
        Response::Error { kind, message } => bail!("{message} ({kind:?})"),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// `key: value` lines a script can grep.
fn status_text(v: &HostView) -> String {
    let mut s = format!(
        "node: {}\nid: {}\ncluster: {}\nrunning: {}\nrole: {}\nterm: {}\nleader: {}\nuas_running: {}\ncommit: {}\napplied: {}\nlast_index: {}\nsnapshot_index: {}\ncluster_state: {}\nentries: {}\nencrypted: {}\npersistent: {}\nlog_level: {}\n",
        v.name,
        v.id,
        v.cluster_name,
        v.running,
        v.role,
        v.term,
        v.leader_text(),
        v.is_leader,
        v.commit_index,
        v.applied_index,
        v.last_index,
        v.snapshot_index,
        v.cluster,
        v.entries_total,
        v.encrypted,
        v.persistent,
        v.log_level,
    );
    if let Some(c) = &v.client_port {
        s += &format!(
            "client_connections: {}\nclient_unauthenticated: {}\nclient_max_connections: {}\nclient_accepted: {}\nclient_refused: {}\nclient_evicted: {}\nclient_handshake_timeouts: {}\nclient_idle_timeouts: {}\nclient_handshake_failures: {}\n",
            c.open,
            c.unauthenticated,
            c.max_client_connections,
            c.accepted,
            c.refused,
            c.evicted,
            c.handshake_timeouts,
            c.idle_timeouts,
            c.handshake_failures,
        );
    }
    if let Some(t) = &v.transport {
        s += &format!(
            "net_sent_datagrams: {}\nnet_sent_bytes: {}\nnet_received_datagrams: {}\nnet_received_bytes: {}\nnet_delivered_messages: {}\nnet_dropped: {}\n",
            t.sent_datagrams,
            t.sent_bytes,
            t.received_datagrams,
            t.received_bytes,
            t.delivered_messages,
            t.dropped_total,
        );
        for (reason, n) in &t.dropped {
            s += &format!("net_dropped_{reason}: {n}\n");
        }
    }
    for p in &v.peers {
        s += &format!("peer: {} match {} lag {}\n", p.name, p.match_index, p.lag);
    }
    if let Some(e) = &v.last_error {
        s += &format!("last_error: {e}\n");
    }
    s
}

/// `raft-kv status --json`: one JSON object on one line. The field names are a stable
/// interface (docs/operations.md lists them): add fields, never rename or remove one.
fn status_json(v: &HostView, with_entries: bool) -> Result<String> {
    use serde_json::json;
    let transport = v.transport.as_ref().map(|t| {
        json!({
            "sent_datagrams": t.sent_datagrams,
            "sent_bytes": t.sent_bytes,
            "received_datagrams": t.received_datagrams,
            "received_bytes": t.received_bytes,
            "delivered_messages": t.delivered_messages,
            "dropped_total": t.dropped_total,
            "dropped": t
                .dropped
                .iter()
                .map(|(reason, n)| (reason.clone(), json!(n)))
                .collect::<serde_json::Map<_, _>>(),
        })
    });
    let client_port = v.client_port.as_ref().map(|c| {
        json!({
            "open": c.open,
            "unauthenticated": c.unauthenticated,
            "max_connections": c.max_client_connections,
            "max_unauthenticated": c.max_unauthenticated_connections,
            "accepted": c.accepted,
            "refused": c.refused,
            "evicted": c.evicted,
            "handshake_timeouts": c.handshake_timeouts,
            "idle_timeouts": c.idle_timeouts,
            "handshake_failures": c.handshake_failures,
        })
    });
    let peers: Vec<_> = v
        .peers
        .iter()
        .map(|p| json!({ "name": p.name, "match_index": p.match_index, "lag": p.lag }))
        .collect();
    let mut status = json!({
        "node": v.name,
        "id": v.id,
        "cluster": v.cluster_name,
        "raft_addr": v.raft_addr,
        "client_addr": v.client_addr,
        "running": v.running,
        "role": v.role,
        "term": v.term,
        "leader_id": v.leader,
        "leader": v.leader_name,
        "is_leader": v.is_leader,
        "commit_index": v.commit_index,
        "applied_index": v.applied_index,
        "last_index": v.last_index,
        "snapshot_index": v.snapshot_index,
        "cluster_state": v.cluster,
        "entries_total": v.entries_total,
        "uptime_ms": v.uptime_ms,
        "starts": v.starts,
        "encrypted": v.encrypted,
        "persistent": v.persistent,
        "log_level": v.log_level,
        "last_error": v.last_error,
        "peers": peers,
        "client_port": client_port,
        "transport": transport,
    });
    if with_entries {
        status["entries"] = v.entries.iter().map(entry_json).collect();
    }
    Ok(format!("{}\n", serde_json::to_string(&status)?))
}

/// One committed entry in `status --json --entries N`: `op` is `put`, `delete`,
/// `compare_and_set` or `invalid`; `key` and `value` are present where the op has them
/// (`value` null: a compare-and-set that removed the key).
fn entry_json(e: &raft_kv::store::CommittedEntry) -> serde_json::Value {
    use raft_kv::store::Op;
    use serde_json::json;
    let mut j = json!({ "index": e.index, "replayed": e.replayed });
    match &e.op {
        Op::Put { key, value } => {
            j["op"] = json!("put");
            j["key"] = json!(key);
            j["value"] = json!(value);
        }
        Op::Delete { key } => {
            j["op"] = json!("delete");
            j["key"] = json!(key);
        }
        Op::CompareAndSet { key, new } => {
            j["op"] = json!("compare_and_set");
            j["key"] = json!(key);
            j["value"] = json!(new);
        }
        Op::Invalid => j["op"] = json!("invalid"),
    }
    j
}

/// A node's name and client address.
type NamedAddr = (String, String);

/// The nodes a client command may talk to, and the key to prove the cluster password
/// with if the cluster is encrypted.
fn targets(target: &Target) -> Result<(Vec<NamedAddr>, Option<ClientKey>)> {
    // With --addr the config is optional: it is read only for the password, if present.
    let config = match (&target.addr, target.config.exists()) {
        (Some(_), false) => None,
        _ => Some(load_config(&target.config)?),
    };
    let key = match &config {
        Some(c) => c
            .client_key_from_source()
            .context("the cluster is encrypted; the client needs its password")?,
        None => None,
    };
    let addrs = match (&target.addr, &config) {
        (Some(addr), _) => vec![(addr.clone(), addr.clone())],
        (None, None) => bail!("no --addr and no config"),
        (None, Some(config)) => match &target.node {
            Some(n) => {
                let node = config.node(n)?;
                vec![(node.name.clone(), node.client_addr.clone())]
            }
            None => config
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.client_addr.clone()))
                .collect(),
        },
    };
    Ok((addrs, key))
}

/// Sends `request` to the target node, or to each configured node in turn until one
/// answers (followers forward writes; a stopped node's answer is skipped). A node that
/// refuses or evicts the connection during its handshake (its client port is full, or
/// flooded) never saw the request: those are tried again, with backoff, until the
/// timeout.
fn call(target: &Target, request: &Request) -> Result<Response> {
    let timeout = Duration::from_millis(target.timeout_ms);
    let deadline = std::time::Instant::now() + timeout;
    let (addrs, key) = targets(target)?;
    let single = addrs.len() == 1;
    let mut backoff = Duration::from_millis(20);
    loop {
        let mut failures = Vec::new();
        let mut only_busy = true;
        for (name, addr) in &addrs {
            let mut client = match Client::connect(addr, timeout, key.as_ref()) {
                Ok(c) => c,
                // A wrong password is the same on every node: say so at once.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    bail!("{name} at {addr}: {e}")
                }
                Err(e) => {
                    only_busy &= raft_kv::client::NodeBusy::is(&e);
                    failures.push(format!("{name} at {addr}: {e}"));
                    continue;
                }
            };
            match client.call(request) {
                Ok(Response::Error {
                    kind: ErrorKind::Stopped | ErrorKind::Busy,
                    message,
                }) if !single => {
                    only_busy = false;
                    failures.push(format!("{name}: {message}"));
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    only_busy = false;
                    failures.push(format!("{name} at {addr}: {e}"));
                }
            }
        }
        let now = std::time::Instant::now();
        if !only_busy || now + backoff >= deadline {
            bail!("no node answered: {}", failures.join("; "))
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// The node a bench talks to: the one asked for, or the leader (writes to a follower
/// pay one more hop).
fn bench_target(target: &Target) -> Result<(String, String, Option<ClientKey>)> {
    let (addrs, key) = targets(target)?;
    if addrs.len() == 1 {
        let (name, addr) = addrs.into_iter().next().expect("one address");
        return Ok((name, addr, key));
    }
    let timeout = Duration::from_millis(target.timeout_ms);
    let mut answering = None;
    for (name, addr) in addrs {
        let status = Client::connect(&addr, timeout, key.as_ref())
            .and_then(|mut c| c.call(&Request::Status { entries_max: 0 }));
        if let Ok(Response::Status(view)) = status {
            if view.is_leader {
                return Ok((format!("{name} (leader)"), addr, key));
            }
            if view.running && answering.is_none() {
                answering = Some((name, addr));
            }
        }
    }
    let (name, addr) = answering.context("no node answered")?;
    Ok((name, addr, key))
}

fn load_config(path: &Path) -> Result<ClusterConfig> {
    match ClusterConfig::load(path) {
        Ok(config) => Ok(config),
        Err(e) if e.is_not_found() => bail!(
            "no cluster config at {} (create one with `raft-kv init`, or name it with --config)",
            path.display()
        ),
        Err(e) => Err(anyhow::Error::new(e))
            .with_context(|| format!("cannot load the cluster config {}", path.display())),
    }
}

fn run_node(args: &NodeArgs) -> Result<()> {
    let config = load_config(&args.config)?;
    let ui = !args.headless && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let id = match &args.id {
        Some(id) => id.clone(),
        None => choose_node(&config, ui)?,
    };
    let host = Arc::new(NodeHost::new(&config, &id)?);
    let file = match &args.log_file {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open the log file {}", p.display()))?,
        ),
        None => None,
    };
    logger::install(args.log_level, Sinks { stderr: !ui, file });
    // The metrics port is bound before anything starts, so a bad address changes nothing.
    let metrics_addr = args
        .metrics_addr
        .clone()
        .or_else(|| host.entry().metrics_addr.clone());
    let metrics_listener = match &metrics_addr {
        Some(addr) => Some(raft_kv::metrics::bind(&host.entry().name, addr)?),
        None => None,
    };
    // Installed before the node starts, so the node registers its metrics with it.
    let serve_metrics = |listener| -> Result<_> {
        raft_kv::metrics::MetricsServer::serve(listener, raft_kv::metrics::install_recorder()?)
    };
    if ui {
        let _metrics = metrics_listener.map(serve_metrics).transpose()?;
        let _server = ClientServer::start(&host.entry().client_addr, host.clone())?;
        return raft_kv::ui::run_node_ui(host);
    }
    // Headless, bad input fails with one line before anything is logged or written:
    // both ports are checked before the node opens its log (and raft-net logs its
    // socket), and only a running node opens the client port. (The real binds still
    // report a port taken in between.)
    let (name, raft_addr) = (&host.entry().name, &host.entry().raft_addr);
    drop(
        std::net::UdpSocket::bind(raft_addr)
            .with_context(|| format!("cannot use {name}'s Raft (UDP) port {raft_addr}"))?,
    );
    let client_addr = host.entry().client_addr.clone();
    drop(
        std::net::TcpListener::bind(&client_addr)
            .with_context(|| format!("cannot use {name}'s client (TCP) port {client_addr}"))?,
    );
    let _metrics = metrics_listener.map(serve_metrics).transpose()?;
    host.start()?;
    let _server = match ClientServer::start(&client_addr, host.clone()) {
        Ok(server) => server,
        Err(e) => {
            host.stop();
            return Err(e);
        }
    };
    log::info!(
        "{} running headless; raft-kv status --config {} --node {} shows its state",
        host.entry().name,
        args.config.display(),
        host.entry().name
    );
    // Headless: run until killed. The client port can stop and start the node.
    loop {
        std::thread::park();
    }
}

/// Asks which node to run (the original's node drop-down), or says `--id` is missing.
fn choose_node(config: &ClusterConfig, can_ask: bool) -> Result<String> {
    use raft_kv::init::Ask;
    let names: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
    if !can_ask {
        bail!("missing --id: which node to run ({})", names.join(", "));
    }
    for n in &config.nodes {
        eprintln!(
            "  {:<8} raft {:<21} client {}",
            n.name, n.raft_addr, n.client_addr
        );
    }
    raft_kv::init::Terminal.ask("--id", "Which node?", names.first().copied())
}

fn run_demo(args: &DemoArgs) -> Result<()> {
    let options = raft_kv::demo::DemoOptions {
        password: args.password.clone(),
        data_dir: args.data_dir.clone(),
        base_port: args.base_port,
        ..Default::default()
    };
    let ui = !args.script && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    logger::install(
        args.log_level,
        Sinks {
            stderr: !ui && args.verbose,
            file: None,
        },
    );
    if !ui {
        return raft_kv::demo::run_script(&options, &mut std::io::stdout());
    }
    let config = raft_kv::demo::demo_config(&options)?;
    let hosts = raft_kv::demo::start_all(&config)?;
    raft_kv::ui::run_demo_ui(&hosts)?;
    for h in &hosts {
        h.stop();
    }
    Ok(())
}
