//! `raft-kv init`: builds a cluster config from flags, asking on a terminal for whatever
//! is missing (the original's "Create cluster config" page). Without a terminal it never
//! asks: a missing required flag is an error that names it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::config::{
    check_password, ClusterConfig, NodeEntry, ReadModeName, Timing, DEFAULT_PASSWORD_ENV, NODES_MAX,
};

/// Flags of `raft-kv init`.
#[derive(Args, Clone, Debug, Default)]
pub struct InitArgs {
    /// Where to write the config.
    #[arg(long, short, default_value = "raft-kv.toml")]
    pub out: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Never ask: use defaults for everything optional, fail on anything required.
    #[arg(long)]
    pub non_interactive: bool,
    /// The cluster's name (required).
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// How many nodes (required unless --addresses is given).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// The host every node runs on, when ports come from --base-port.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Raft (UDP) port of node1; node N gets base + N - 1. Default 7001.
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Client (TCP) port of node1; node N gets base + N - 1. Default: --base-port + 100.
    #[arg(long)]
    pub client_base_port: Option<u16>,
    /// Raft addresses (host:port, comma-separated), one per node, instead of --base-port.
    #[arg(long, value_delimiter = ',')]
    pub addresses: Vec<String>,
    /// Client addresses (host:port, comma-separated), one per node. Default: the Raft
    /// address with its port + 100.
    #[arg(long, value_delimiter = ',')]
    pub client_addresses: Vec<String>,
    /// Encrypt and authenticate traffic between nodes with a cluster password.
    #[arg(long, conflicts_with = "no_encrypt")]
    pub encrypt: bool,
    /// Do not encrypt.
    #[arg(long)]
    pub no_encrypt: bool,
    /// Nodes read the password from this environment variable (the default source,
    /// RAFT_KV_PASSWORD).
    #[arg(long, conflicts_with = "password_file")]
    pub password_env: Option<String>,
    /// Nodes read the password from this file's first line (a relative path is relative
    /// to the config file's directory).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Store the password itself in the config (taken from the password environment
    /// variable, or asked for). Anyone who can read the file can then join the cluster.
    #[arg(long, conflicts_with = "password_file")]
    pub store_password: bool,
    /// PBKDF2 iterations for the password's key derivation (default 600000).
    #[arg(long)]
    pub kdf_iterations: Option<u32>,
    /// Keep each node's log on disk, so restarted nodes keep their entries.
    #[arg(long, conflicts_with = "ephemeral")]
    pub persistent: bool,
    /// Keep logs in memory only.
    #[arg(long)]
    pub ephemeral: bool,
    /// Directory of the persistent logs, one sub-directory per node (a relative path is
    /// relative to the config file's directory). Default raft-kv-data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Snapshot and compact the log every this many entries (0: never; default 10000).
    #[arg(long)]
    pub snapshot_after_entries: Option<u64>,
    /// Entries kept behind a snapshot for slightly slow followers (default 1000).
    #[arg(long)]
    pub snapshot_trailing_entries: Option<u64>,
    /// How many times a starting node looks for its cluster (default 5).
    #[arg(long)]
    pub join_attempts: Option<u32>,
    /// How long one join attempt lasts, in ms (default 5000).
    #[arg(long)]
    pub join_attempt_interval_ms: Option<u64>,
    /// Election timeout in ms (default 300).
    #[arg(long)]
    pub election_timeout_ms: Option<u64>,
    /// Heartbeat interval in ms (default 50).
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Protocol tick in ms (default 10).
    #[arg(long)]
    pub tick_interval_ms: Option<u64>,
    /// Client request timeout in ms (default 5000).
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// How linearizable reads are confirmed: read_index (default; a heartbeat round per
    /// read batch) or lease (the leader answers at once while its lease lasts; assumes
    /// clocks that run at nearly the same rate).
    #[arg(long, value_name = "MODE")]
    pub read_mode: Option<ReadModeName>,
    /// Client connections each node serves at once (default 1024). Unless given too,
    /// --max-unauthenticated-connections becomes half of it.
    #[arg(long)]
    pub max_client_connections: Option<usize>,
    /// Client connections still in the handshake held at once (default 512); more evict
    /// the oldest.
    #[arg(long)]
    pub max_unauthenticated_connections: Option<usize>,
    /// Client connections still in the handshake held at once from one IP address
    /// (default 256, or --max-unauthenticated-connections if lower).
    #[arg(long)]
    pub max_unauthenticated_per_ip: Option<usize>,
    /// A client must complete its handshake within this many ms (default 2000).
    #[arg(long)]
    pub client_handshake_timeout_ms: Option<u64>,
    /// An authenticated client that sends no request for this many ms is disconnected
    /// (default 300000).
    #[arg(long)]
    pub client_idle_timeout_ms: Option<u64>,
}

/// Asks the user for missing values.
pub trait Ask {
    /// Asks `question` for the value of `flag`; an empty answer takes `default`.
    ///
    /// # Errors
    /// Nobody can be asked (no terminal): the error names `flag`.
    fn ask(&mut self, flag: &str, question: &str, default: Option<&str>) -> Result<String>;
    /// Asks for a secret without echo.
    ///
    /// # Errors
    /// Nobody can be asked.
    fn ask_secret(&mut self, flag: &str, question: &str) -> Result<String>;

    /// Whether an invalid answer is asked again (a person at a terminal) rather than
    /// final (flags).
    fn retries(&self) -> bool {
        false
    }
}

/// Asks until `check` accepts the answer: at a terminal a wrong answer is explained and
/// asked again; otherwise the first error is final.
fn ask_until<T>(
    ask: &mut dyn Ask,
    flag: &str,
    question: &str,
    default: Option<&str>,
    check: impl Fn(&str) -> Result<T>,
) -> Result<T> {
    loop {
        let answer = ask.ask(flag, question, default)?;
        match check(&answer) {
            Ok(v) => return Ok(v),
            Err(e) if ask.retries() => eprintln!("{e:#}; try again"),
            Err(e) => return Err(e),
        }
    }
}

/// Never asks: every missing value is an error naming its flag.
#[derive(Debug, Default)]
pub struct NoTerminal;

impl Ask for NoTerminal {
    fn ask(&mut self, flag: &str, question: &str, default: Option<&str>) -> Result<String> {
        match default {
            Some(d) => Ok(d.to_string()),
            None => bail!(
                "missing {flag} ({}); not asking because this is not a terminal (or --non-interactive)",
                question.trim_end_matches(['?', ':', ' '])
            ),
        }
    }

    fn ask_secret(&mut self, flag: &str, question: &str) -> Result<String> {
        self.ask(flag, question, None)
    }
}

/// Asks on the terminal (stdin/stderr).
#[derive(Debug, Default)]
pub struct Terminal;

impl Ask for Terminal {
    fn retries(&self) -> bool {
        true
    }

    fn ask(&mut self, _flag: &str, question: &str, default: Option<&str>) -> Result<String> {
        let mut err = std::io::stderr();
        match default {
            Some(d) => write!(err, "{question} [{d}]: ")?,
            None => write!(err, "{question}: ")?,
        }
        err.flush()?;
        let mut line = String::new();
        let n = std::io::stdin().lock().read_line(&mut line)?;
        if n == 0 {
            bail!("input ended while asking: {question}");
        }
        let answer = line.trim().to_string();
        Ok(match (answer.is_empty(), default) {
            (true, Some(d)) => d.to_string(),
            _ => answer,
        })
    }

    fn ask_secret(&mut self, _flag: &str, question: &str) -> Result<String> {
        use crossterm::event::{read, Event, KeyCode, KeyEventKind, KeyModifiers};
        let mut err = std::io::stderr();
        write!(err, "{question}: ")?;
        err.flush()?;
        crossterm::terminal::enable_raw_mode()?;
        let mut secret = String::new();
        let result = loop {
            match read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => match k.code {
                    KeyCode::Enter => break Ok(()),
                    KeyCode::Backspace => {
                        secret.pop();
                    }
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        break Err(anyhow::anyhow!("cancelled"))
                    }
                    KeyCode::Char(c) => secret.push(c),
                    _ => {}
                },
                Ok(_) => {}
                Err(e) => break Err(e.into()),
            }
        };
        crossterm::terminal::disable_raw_mode()?;
        writeln!(err)?;
        result.map(|()| secret)
    }
}

/// Whether `init` may ask: stdin and stderr are terminals and `--non-interactive` is off.
pub fn can_ask(args: &InitArgs) -> bool {
    !args.non_interactive && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn parse<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{flag}: {text:?} is not valid: {e}"))
}

fn yes_no(flag: &str, text: &str) -> Result<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "on" => Ok(true),
        "n" | "no" | "false" | "off" => Ok(false),
        other => bail!("{flag}: answer yes or no, not {other:?}"),
    }
}

/// What `init` decided, besides the config: a password file to write, if the user typed
/// a password for one.
#[derive(Debug)]
pub struct Plan {
    /// The config to write.
    pub config: ClusterConfig,
    /// A password file to create (path, password).
    pub password_file: Option<(PathBuf, String)>,
}

/// Builds the config from `args`, asking `ask` for what is missing.
///
/// # Errors
/// A missing required value (without a terminal), or an invalid one, naming its flag.
pub fn plan(args: &InitArgs, ask: &mut dyn Ask) -> Result<Plan> {
    let defaults = Timing::default();
    let name_ok = |n: &str| -> Result<String> {
        let n = n.trim();
        if n.is_empty() || n.len() > 64 {
            bail!("--cluster-name: must be 1 to 64 characters");
        }
        Ok(n.to_string())
    };
    let cluster_name = match &args.cluster_name {
        Some(n) => name_ok(n)?,
        None => ask_until(ask, "--cluster-name", "Cluster name", None, name_ok)?,
    };
    let mut config = ClusterConfig::new(cluster_name.trim());
    // Relative paths (password file, data directory) are relative to the config file.
    config.base_dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);

    // Nodes and their addresses.
    let count = match (args.nodes, args.addresses.len()) {
        (Some(n), a) if a > 0 && a != n => {
            bail!("--nodes: {n} nodes but --addresses lists {a}")
        }
        (Some(n), _) => n,
        (None, a) if a > 0 => a,
        (None, _) => ask_until(ask, "--nodes", "Number of nodes", None, |a| {
            nodes_ok(parse("--nodes", a)?)
        })?,
    };
    let count = nodes_ok(count)?;
    if !args.client_addresses.is_empty() && args.client_addresses.len() != count {
        bail!(
            "--client-addresses: {} addresses for {count} nodes",
            args.client_addresses.len()
        );
    }
    let raft_addrs: Vec<String> = if args.addresses.is_empty() {
        let base = match args.base_port {
            Some(p) => p,
            None => ask_until(
                ask,
                "--base-port",
                "Raft port of node1",
                Some("7001"),
                |a| {
                    let base: u16 = parse("--base-port", a)?;
                    port_plus(base, count - 1, "--base-port")?;
                    Ok(base)
                },
            )?,
        };
        (0..count)
            .map(|i| port_plus(base, i, "--base-port").map(|p| format!("{}:{p}", args.host)))
            .collect::<Result<_>>()?
    } else {
        args.addresses.clone()
    };
    let client_addrs: Vec<String> = if !args.client_addresses.is_empty() {
        args.client_addresses.clone()
    } else if let (Some(base), true) = (args.client_base_port, args.addresses.is_empty()) {
        (0..count)
            .map(|i| port_plus(base, i, "--client-base-port").map(|p| format!("{}:{p}", args.host)))
            .collect::<Result<_>>()?
    } else {
        raft_addrs
            .iter()
            .map(|a| {
                let (host, port) = a
                    .rsplit_once(':')
                    .with_context(|| format!("--addresses: {a:?} is not host:port"))?;
                let port: u16 = parse("--addresses", port)?;
                let client = port.checked_add(100).with_context(|| {
                    format!("--addresses: port {port} + 100 is past 65535; give --client-addresses")
                })?;
                Ok(format!("{host}:{client}"))
            })
            .collect::<Result<_>>()?
    };
    config.nodes = (0..count)
        .map(|i| NodeEntry {
            name: format!("node{}", i + 1),
            id: i as u64 + 1,
            raft_addr: raft_addrs[i].clone(),
            client_addr: client_addrs[i].clone(),
            metrics_addr: None,
            added: false,
            removed: false,
        })
        .collect();

    // Encryption and the password's source.
    let encrypt = if args.encrypt
        || args.password_env.is_some()
        || args.password_file.is_some()
        || args.store_password
    {
        true
    } else if args.no_encrypt {
        false
    } else {
        ask_until(
            ask,
            "--encrypt",
            "Encrypt traffic between nodes with a password? (yes/no)",
            Some("no"),
            |a| yes_no("--encrypt", a),
        )?
    };
    let mut password_file = None;
    if encrypt {
        config.encryption.enabled = true;
        config.encryption.kdf_iterations = args.kdf_iterations;
        password_file = choose_password_source(args, &mut config, ask)?;
    }

    // Storage.
    let persistent = if args.persistent || args.data_dir.is_some() {
        true
    } else if args.ephemeral {
        false
    } else {
        ask_until(
            ask,
            "--persistent",
            "Keep each node's log on disk (persistent storage)? (yes/no)",
            Some("no"),
            |a| yes_no("--persistent", a),
        )?
    };
    config.storage.persistent = persistent;
    if let Some(dir) = &args.data_dir {
        config.storage.dir = dir.clone();
    } else if persistent {
        let default = config.storage.dir.display().to_string();
        let dir = ask.ask(
            "--data-dir",
            "Directory for the logs (one sub-directory per node)",
            Some(&default),
        )?;
        config.storage.dir = PathBuf::from(dir);
    }
    if let Some(n) = args.snapshot_after_entries {
        config.storage.snapshot_after_entries = n;
    }
    if let Some(n) = args.snapshot_trailing_entries {
        config.storage.snapshot_trailing_entries = n;
    }

    // Join retries and timeouts.
    let t = &mut config.timing;
    t.join_attempts = match args.join_attempts {
        Some(n) => n,
        None => ask_until(
            ask,
            "--join-attempts",
            "Join retry attempts (each lasts 5 s)",
            Some(&defaults.join_attempts.to_string()),
            |a| {
                let n: u32 = parse("--join-attempts", a)?;
                if !(1..=100).contains(&n) {
                    bail!("--join-attempts: {n} is outside 1..=100");
                }
                Ok(n)
            },
        )?,
    };
    t.join_attempt_interval_ms = args
        .join_attempt_interval_ms
        .unwrap_or(defaults.join_attempt_interval_ms);
    t.election_timeout_ms = args
        .election_timeout_ms
        .unwrap_or(defaults.election_timeout_ms);
    t.heartbeat_interval_ms = args
        .heartbeat_interval_ms
        .unwrap_or(defaults.heartbeat_interval_ms);
    t.tick_interval_ms = args.tick_interval_ms.unwrap_or(defaults.tick_interval_ms);
    t.request_timeout_ms = args
        .request_timeout_ms
        .unwrap_or(defaults.request_timeout_ms);

    // Reads and the client port.
    if let Some(mode) = args.read_mode {
        config.protocol.read_mode = mode;
    }
    let cp = &mut config.client_port;
    if let Some(n) = args.max_client_connections {
        cp.max_client_connections = n;
        cp.max_unauthenticated_connections = (n / 2).max(1);
    }
    if let Some(n) = args.max_unauthenticated_connections {
        cp.max_unauthenticated_connections = n;
    }
    cp.max_unauthenticated_per_ip = args.max_unauthenticated_per_ip.unwrap_or(
        cp.max_unauthenticated_per_ip
            .min(cp.max_unauthenticated_connections),
    );
    if let Some(ms) = args.client_handshake_timeout_ms {
        cp.client_handshake_timeout_ms = ms;
    }
    if let Some(ms) = args.client_idle_timeout_ms {
        cp.client_idle_timeout_ms = ms;
    }

    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {}", flag_of(&e.field), e.reason))?;
    Ok(Plan {
        config,
        password_file,
    })
}

/// The flag that sets a config field, for error messages.
fn flag_of(field: &str) -> String {
    let last = field.rsplit('.').next().unwrap_or(field);
    match last {
        f if f.starts_with("nodes") => "--nodes/--addresses".to_string(),
        "raft_addr" => "--addresses/--base-port".to_string(),
        "client_addr" => "--client-addresses/--client-base-port".to_string(),
        "dir" => "--data-dir".to_string(),
        "timing" => "--election-timeout-ms/--heartbeat-interval-ms/--tick-interval-ms".to_string(),
        "encryption" | "password" => "--password-env/--password-file".to_string(),
        f => format!("--{}", f.replace('_', "-")),
    }
}

fn nodes_ok(n: usize) -> Result<usize> {
    if !(1..=NODES_MAX).contains(&n) {
        bail!("--nodes: {n} is outside 1..={NODES_MAX}");
    }
    Ok(n)
}

fn port_plus(base: u16, i: usize, flag: &str) -> Result<u16> {
    u16::try_from(i)
        .ok()
        .and_then(|i| base.checked_add(i))
        .with_context(|| format!("{flag}: {base} + {i} is past port 65535"))
}

fn choose_password_source(
    args: &InitArgs,
    config: &mut ClusterConfig,
    ask: &mut dyn Ask,
) -> Result<Option<(PathBuf, String)>> {
    let env_var = args
        .password_env
        .clone()
        .unwrap_or_else(|| DEFAULT_PASSWORD_ENV.to_string());
    if args.store_password {
        let password = match std::env::var(&env_var) {
            Ok(p) => p,
            Err(_) => ask.ask_secret(
                "--store-password (with the password in $RAFT_KV_PASSWORD)",
                "Cluster password",
            )?,
        };
        check_password(&password).map_err(|r| anyhow::anyhow!("--store-password: {r}"))?;
        config.encryption.password = Some(password);
        return Ok(None);
    }
    if let Some(file) = &args.password_file {
        let path = config.resolve(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("--password-file: cannot read {}", path.display()))?;
        check_password(text.lines().next().unwrap_or(""))
            .map_err(|r| anyhow::anyhow!("--password-file: {}: {r}", path.display()))?;
        config.encryption.password_file = Some(file.clone());
        return Ok(None);
    }
    if args.password_env.is_some() {
        config.encryption.password_env = Some(env_var);
        return Ok(None);
    }
    let source = ask_until(
        ask,
        "--password-env",
        "Where do nodes read the password from? env (a variable), file, or config (stored in the file)",
        Some("env"),
        |a| {
            let a = a.trim().to_ascii_lowercase();
            match a.as_str() {
                "env" | "file" | "config" => Ok(a),
                other => bail!("--password-env/--password-file: answer env, file or config, not {other:?}"),
            }
        },
    )?;
    match source.as_str() {
        "env" => {
            let var = ask.ask("--password-env", "Environment variable", Some(&env_var))?;
            if std::env::var(&var).is_err() {
                eprintln!("note: set {var} to the cluster password before starting each node");
            }
            config.encryption.password_env = Some(var);
            Ok(None)
        }
        "file" => {
            let file = PathBuf::from(ask.ask(
                "--password-file",
                "Password file",
                Some("raft-kv.password"),
            )?);
            if config.resolve(&file).exists() {
                config.encryption.password_file = Some(file);
                return Ok(None);
            }
            let password = new_password(ask)?;
            config.encryption.password_file = Some(file.clone());
            Ok(Some((file, password)))
        }
        "config" => {
            config.encryption.password = Some(new_password(ask)?);
            Ok(None)
        }
        other => bail!("--password-env/--password-file: unknown source {other:?}"),
    }
}

fn new_password(ask: &mut dyn Ask) -> Result<String> {
    loop {
        let attempt = (|| {
            let password = ask.ask_secret("--password-file", "New cluster password")?;
            check_password(&password).map_err(|r| anyhow::anyhow!("password: {r}"))?;
            let again = ask.ask_secret("--password-file", "Repeat the password")?;
            if again != password {
                bail!("password: the two passwords differ");
            }
            Ok(password)
        })();
        match attempt {
            Err(e) if ask.retries() && e.to_string().starts_with("password:") => {
                eprintln!("{e:#}; try again");
            }
            other => return other,
        }
    }
}

/// A summary of the config for humans: nodes, security, storage, the join retry time.
pub fn describe(config: &ClusterConfig, path: &Path) -> String {
    let mut s = format!(
        "Cluster {:?}: {} node(s)\n",
        config.cluster_name,
        config.nodes.len()
    );
    for n in &config.nodes {
        s += &format!(
            "  {:<8} raft {:<21} client {}\n",
            n.name, n.raft_addr, n.client_addr
        );
    }
    let e = &config.encryption;
    s += &match (e.enabled, &e.password_env, &e.password_file) {
        (false, ..) => "Encryption: off\n".to_string(),
        (true, Some(var), _) => {
            format!("Encryption: on (password from environment variable {var})\n")
        }
        (true, _, Some(f)) => format!("Encryption: on (password from file {})\n", f.display()),
        (true, ..) => "Encryption: on (password stored in the config: keep it private)\n".into(),
    };
    s += &if config.storage.persistent {
        format!(
            "Storage: persistent, in {}/<node name>\n",
            config.storage.dir.display()
        )
    } else {
        "Storage: ephemeral (in memory)\n".to_string()
    };
    s += &format!(
        "Join retry time: {} s ({} attempts x {} s)\n",
        fmt_secs(config.join_retry_time().as_secs_f64()),
        config.timing.join_attempts,
        fmt_secs(config.timing.join_attempt_interval_ms as f64 / 1000.0),
    );
    s += &format!("Reads: {}\n", config.protocol.read_mode);
    let cp = &config.client_port;
    s += &format!(
        "Client port: at most {} connections, {} in the handshake ({} per address); handshake timeout {} s, idle timeout {} s\n",
        cp.max_client_connections,
        cp.max_unauthenticated_connections,
        cp.max_unauthenticated_per_ip,
        fmt_secs(cp.client_handshake_timeout_ms as f64 / 1000.0),
        fmt_secs(cp.client_idle_timeout_ms as f64 / 1000.0),
    );
    s += &format!("Config: {}\nStart each node with:\n", path.display());
    for n in &config.nodes {
        s += &format!(
            "  raft-kv node --config {} --id {}\n",
            path.display(),
            n.name
        );
    }
    s
}

fn fmt_secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

/// Runs `raft-kv init`: plans, writes the config (and a password file if one was
/// typed), prints the summary.
///
/// # Errors
/// As [`plan`], or the file exists (without `--force`) or cannot be written.
pub fn run(args: &InitArgs, out: &mut impl Write) -> Result<()> {
    if args.out.exists() && !args.force {
        bail!(
            "--out: {} already exists (use --force to overwrite)",
            args.out.display()
        );
    }
    let plan = if can_ask(args) {
        plan(args, &mut Terminal)?
    } else {
        plan(args, &mut NoTerminal)?
    };
    if let Some((file, password)) = &plan.password_file {
        let path = plan.config.resolve(file);
        write_private(&path, &format!("{password}\n"))
            .with_context(|| format!("cannot write the password file {}", path.display()))?;
        writeln!(out, "Wrote password file {}", path.display())?;
    }
    let text = plan.config.to_toml();
    if plan.config.encryption.password.is_some() {
        write_private(&args.out, &text)
    } else {
        std::fs::write(&args.out, &text).map_err(Into::into)
    }
    .with_context(|| format!("cannot write {}", args.out.display()))?;
    write!(out, "{}", describe(&plan.config, &args.out))?;
    Ok(())
}

/// Writes a file only its owner can read (on Unix).
fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers from a script, in order; records the flags asked about.
    struct Scripted(Vec<&'static str>, Vec<String>);

    /// Like `Scripted`, but a person: wrong answers are asked again.
    struct Person(Scripted);

    impl Ask for Person {
        fn ask(&mut self, flag: &str, q: &str, default: Option<&str>) -> Result<String> {
            self.0.ask(flag, q, default)
        }
        fn ask_secret(&mut self, flag: &str, q: &str) -> Result<String> {
            self.0.ask_secret(flag, q)
        }
        fn retries(&self) -> bool {
            true
        }
    }

    #[test]
    fn a_person_is_asked_again_after_a_wrong_answer() {
        let script = vec![
            "",
            "My first cluster",
            "zero",
            "0",
            "3",
            "",
            "maybe",
            "yes",
            "vault",
            "config",
            "short",
            "long enough",
            "long enough!",
            "long enough",
            "long enough",
            "no",
            "500",
            "5",
        ];
        let mut person = Person(Scripted(script, Vec::new()));
        let args = InitArgs {
            host: "127.0.0.1".into(),
            ..InitArgs::default()
        };
        let p = plan(&args, &mut person).unwrap();
        assert_eq!(p.config.cluster_name, "My first cluster");
        assert_eq!(p.config.nodes.len(), 3);
        assert_eq!(p.config.encryption.password.as_deref(), Some("long enough"));
        assert_eq!(p.config.timing.join_attempts, 5);
        assert!(person.0 .0.is_empty(), "unused answers: {:?}", person.0 .0);
    }

    impl Ask for Scripted {
        fn ask(&mut self, flag: &str, _q: &str, default: Option<&str>) -> Result<String> {
            self.1.push(flag.to_string());
            let a = self.0.remove(0);
            Ok(if a.is_empty() {
                default.unwrap_or("").to_string()
            } else {
                a.to_string()
            })
        }
        fn ask_secret(&mut self, flag: &str, q: &str) -> Result<String> {
            self.ask(flag, q, None)
        }
    }

    #[test]
    fn without_a_terminal_a_missing_flag_is_named() {
        let err = plan(&InitArgs::default(), &mut NoTerminal).unwrap_err();
        assert!(err.to_string().contains("--cluster-name"), "{err}");
        let args = InitArgs {
            cluster_name: Some("c".into()),
            ..InitArgs::default()
        };
        let err = plan(&args, &mut NoTerminal).unwrap_err();
        assert!(err.to_string().contains("--nodes"), "{err}");
    }

    #[test]
    fn flags_alone_make_the_original_example() {
        let args = InitArgs {
            cluster_name: Some("My first cluster".into()),
            nodes: Some(3),
            host: "127.0.0.1".into(),
            join_attempts: Some(5),
            ..InitArgs::default()
        };
        let p = plan(&args, &mut NoTerminal).unwrap();
        let c = &p.config;
        assert_eq!(c.nodes.len(), 3);
        assert_eq!(c.nodes[2].raft_addr, "127.0.0.1:7003");
        assert_eq!(c.nodes[2].client_addr, "127.0.0.1:7103");
        assert!(!c.encryption.enabled && !c.storage.persistent);
        let text = describe(c, Path::new("b2.toml"));
        assert!(
            text.contains("Join retry time: 25 s (5 attempts x 5 s)"),
            "{text}"
        );
    }

    #[test]
    fn a_terminal_is_asked_for_what_is_missing() {
        let mut ask = Scripted(
            vec![
                "My first cluster",
                "3",
                "",
                "yes",
                "env",
                "",
                "yes",
                "",
                "5",
            ],
            Vec::new(),
        );
        let args = InitArgs {
            host: "127.0.0.1".into(),
            ..InitArgs::default()
        };
        let p = plan(&args, &mut ask).unwrap();
        assert_eq!(
            ask.1,
            [
                "--cluster-name",
                "--nodes",
                "--base-port",
                "--encrypt",
                "--password-env",
                "--password-env",
                "--persistent",
                "--data-dir",
                "--join-attempts"
            ]
        );
        assert_eq!(
            p.config.encryption.password_env.as_deref(),
            Some(DEFAULT_PASSWORD_ENV)
        );
        assert!(p.config.storage.persistent);
    }

    #[test]
    fn invalid_values_name_their_flag() {
        let base = InitArgs {
            cluster_name: Some("c".into()),
            nodes: Some(3),
            host: "127.0.0.1".into(),
            ..InitArgs::default()
        };
        let cases: Vec<(InitArgs, &str)> = vec![
            (
                InitArgs {
                    nodes: Some(0),
                    ..base.clone()
                },
                "--nodes",
            ),
            (
                InitArgs {
                    join_attempts: Some(0),
                    ..base.clone()
                },
                "--join-attempts",
            ),
            (
                InitArgs {
                    base_port: Some(65535),
                    ..base.clone()
                },
                "--base-port",
            ),
            (
                InitArgs {
                    addresses: vec!["a:1".into()],
                    ..base.clone()
                },
                "--nodes",
            ),
            (
                InitArgs {
                    password_file: Some("/surely/missing".into()),
                    ..base.clone()
                },
                "--password-file",
            ),
            (
                InitArgs {
                    election_timeout_ms: Some(10),
                    ..base.clone()
                },
                "--election-timeout-ms",
            ),
        ];
        for (args, flag) in cases {
            let err = plan(&args, &mut NoTerminal).unwrap_err().to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
    }
}
