//! Helpers for the end-to-end tests: run the real `raft-kv` binary, start nodes as child
//! processes (killed on drop), and wait on conditions with deadlines, never fixed sleeps.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_raft-kv");

/// The longest any single condition may take on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// Runs `raft-kv ARGS` to completion with no stdin.
pub fn raft_kv(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    cmd.env_remove("RAFT_KV_CONFIG")
        .env_remove("RAFT_KV_PASSWORD");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("cannot run the raft-kv binary")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The password of the encrypted test clusters; nodes and clients read it from
/// `RAFT_KV_PASSWORD` ([`PASSWORD_ENV`]).
pub const PASSWORD: &str = "correct horse battery staple";
/// `RAFT_KV_PASSWORD` set to [`PASSWORD`], for [`Cluster::init`] and [`raft_kv`].
pub const PASSWORD_ENV: [(&str, &str); 1] = [("RAFT_KV_PASSWORD", PASSWORD)];
/// Fewer PBKDF2 iterations than the default keep node starts quick; still above the
/// transport's warning threshold.
pub const KDF_ITERATIONS: &str = "100000";

/// `init` flags for an encrypted cluster whose password is in `RAFT_KV_PASSWORD`.
pub fn encrypted_flags() -> Vec<&'static str> {
    vec![
        "--encrypt",
        "--password-env",
        "RAFT_KV_PASSWORD",
        "--kdf-iterations",
        KDF_ITERATIONS,
    ]
}

/// Waits until `f` returns `Some`, for at most `timeout`; panics naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines a child printed on stderr, with a condition variable to wait on.
#[derive(Default)]
pub struct Lines {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Lines {
    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.lines.lock().clone()
    }

    /// How many lines so far.
    pub fn len(&self) -> usize {
        self.lines.lock().len()
    }

    /// Waits for a line at or after position `from` that contains every one of `parts`;
    /// returns it.
    pub fn wait_for(&self, from: usize, parts: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock();
        loop {
            if let Some(l) = lines
                .iter()
                .skip(from)
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return Some(l.clone());
            }
            if self.grew.wait_until(&mut lines, deadline).timed_out() {
                return None;
            }
        }
    }
}

/// A node process, killed (and reaped) on drop.
pub struct NodeProc {
    pub name: String,
    child: Child,
    pub lines: Arc<Lines>,
}

impl NodeProc {
    /// Kills the process at once (SIGKILL): a crash, as far as the cluster can tell.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (at most `timeout`); its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster's config in a temporary directory, and the nodes started from it.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub names: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub procs: BTreeMap<String, NodeProc>,
}

/// The arguments of `raft-kv node` for node `name`.
fn node_args(name: &str, config: &Path, level: &str) -> Vec<String> {
    [
        "node",
        "--config",
        config.to_str().unwrap(),
        "--id",
        name,
        "--headless",
        "--log-level",
        level,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Free ports for `n` nodes: `--addresses` and `--client-addresses` values.
pub fn address_flags(n: usize) -> (String, String) {
    let ports = raft_kv::cluster::free_ports(2 * n).expect("free ports");
    let raft: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", ports[i])).collect();
    let client: Vec<String> = (0..n)
        .map(|i| format!("127.0.0.1:{}", ports[n + i]))
        .collect();
    (raft.join(","), client.join(","))
}

impl Cluster {
    /// Runs `raft-kv init` for `nodes` nodes on free loopback ports, with `extra` flags
    /// and `envs` (given to every later command too); asserts it succeeded.
    pub fn init(nodes: usize, extra: &[&str], envs: &[(&str, &str)]) -> (Cluster, Output) {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("cluster.toml");
        let (raft, client) = address_flags(nodes);
        let mut args = vec![
            "init",
            "--out",
            config.to_str().unwrap(),
            "--cluster-name",
            "My first cluster",
            "--addresses",
            &raft,
            "--client-addresses",
            &client,
        ];
        if !extra.contains(&"--join-attempts") {
            args.extend_from_slice(&["--join-attempts", "5"]);
        }
        args.extend_from_slice(extra);
        let out = raft_kv(&args, envs);
        assert!(
            out.status.success(),
            "init failed: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        let names = (1..=nodes).map(|i| format!("node{i}")).collect();
        let cluster = Cluster {
            dir,
            config,
            names,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            procs: BTreeMap::new(),
        };
        (cluster, out)
    }

    /// The config path as text.
    pub fn config_str(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// Starts node `name` headless from `config` (default: the cluster's) at `level`,
    /// with extra environment `envs` overriding the cluster's.
    pub fn start_with(&mut self, name: &str, config: &Path, level: &str, envs: &[(&str, &str)]) {
        let mut cmd = Command::new(BIN);
        cmd.args(node_args(name, config, level));
        self.spawn_node(name, cmd, envs);
    }

    /// Starts node `name` headless from the cluster's config at info level, in a shell
    /// that first lowers the process's open files limit to `open_files_max`
    /// (`ulimit -n`).
    pub fn start_with_open_files(&mut self, name: &str, open_files_max: u64) {
        let config = self.config.clone();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -n \"$0\" && exec \"$@\""])
            .arg(open_files_max.to_string())
            .arg(BIN)
            .args(node_args(name, &config, "info"));
        self.spawn_node(name, cmd, &[]);
    }

    fn spawn_node(&mut self, name: &str, mut cmd: Command, envs: &[(&str, &str)]) {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("RAFT_KV_CONFIG")
            .env_remove("RAFT_KV_PASSWORD");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("cannot start a node");
        let lines = Arc::new(Lines::default());
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().push(line);
                sink.grew.notify_all();
            }
        });
        let old = self.procs.insert(
            name.to_string(),
            NodeProc {
                name: name.to_string(),
                child,
                lines,
            },
        );
        assert!(old.is_none(), "{name} was already running");
    }

    /// Starts node `name` headless from the cluster's config at info level.
    pub fn start(&mut self, name: &str) {
        let config = self.config.clone();
        self.start_with(name, &config, "info", &[]);
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for name in self.names.clone() {
            self.start(&name);
        }
    }

    /// Kills node `name`'s process (SIGKILL).
    pub fn kill(&mut self, name: &str) {
        self.procs
            .remove(name)
            .unwrap_or_else(|| panic!("{name} is not running"))
            .kill();
    }

    /// Node `name`'s process.
    pub fn proc_mut(&mut self, name: &str) -> &mut NodeProc {
        self.procs
            .get_mut(name)
            .unwrap_or_else(|| panic!("{name} is not running"))
    }

    /// The stderr lines of node `name`'s process.
    pub fn lines(&self, name: &str) -> Arc<Lines> {
        self.procs[name].lines.clone()
    }

    /// Runs a client command against the cluster (`--config` added).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--config", self.config_str()]);
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        raft_kv(&all, &envs)
    }

    /// `raft-kv status` of node `name` as key/value pairs; `None` if it does not answer.
    pub fn status(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let out = self.cli(&["status", "--node", name, "--timeout-ms", "5000"]);
        if !out.status.success() {
            return None;
        }
        Some(
            stdout(&out)
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// `raft-kv status` of node `name`, waiting until it answers.
    pub fn status_now(&self, name: &str) -> BTreeMap<String, String> {
        wait_until(&format!("{name} answers a status request"), WAIT, || {
            self.status(name)
        })
    }

    /// Waits until every node in `names` runs and they agree on one leader; returns it.
    pub fn agreed_leader(&self, names: &[&str]) -> String {
        wait_until(&format!("{names:?} agree on a leader"), WAIT, || {
            let statuses: Vec<_> = names
                .iter()
                .map(|n| self.status(n))
                .collect::<Option<_>>()?;
            let leader = statuses[0].get("leader")?.clone();
            let agree = statuses.iter().all(|s| {
                s.get("leader") == Some(&leader)
                    && s.get("running").map(String::as_str) == Some("true")
            });
            let uas = statuses
                .iter()
                .filter(|s| s.get("uas_running").map(String::as_str) == Some("true"))
                .count();
            (agree && leader != "none" && uas == 1).then_some(leader)
        })
    }

    /// `raft-kv get KEY --stale --node NAME`: the value in that node's copy.
    pub fn stale_get(&self, name: &str, key: &str) -> Option<String> {
        let out = self.cli(&[
            "get",
            key,
            "--stale",
            "--node",
            name,
            "--timeout-ms",
            "2000",
        ]);
        out.status
            .success()
            .then(|| stdout(&out).trim_end().to_string())
    }

    /// Waits until node `name`'s own copy has `key = value`.
    pub fn wait_value(&self, name: &str, key: &str, value: &str) {
        wait_until(&format!("{name} holds {key} = {value}"), WAIT, || {
            (self.stale_get(name, key).as_deref() == Some(value)).then_some(())
        });
    }

    /// The committed entries node `name` shows (`index<TAB>op` lines).
    pub fn entries(&self, name: &str) -> Option<Vec<String>> {
        let out = self.cli(&[
            "status",
            "--node",
            name,
            "--entries",
            "1000",
            "--timeout-ms",
            "2000",
        ]);
        out.status.success().then(|| {
            stdout(&out)
                .lines()
                .filter(|l| l.contains('\t'))
                .map(str::to_string)
                .collect()
        })
    }

    /// `raft-kv put` through node `name`; asserts success.
    pub fn put(&self, name: &str, key: &str, value: &str) {
        let out = self.cli(&["put", key, value, "--node", name]);
        assert!(
            out.status.success(),
            "put {key} {value} via {name} failed: {}",
            stderr(&out)
        );
    }
}

/// What a bounded run of `raft-kv` left: exit code, stdout, stderr.
pub struct Run {
    /// The exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

/// Runs `raft-kv ARGS` (no stdin, no terminal) and waits for it to exit, at most
/// [`WAIT`]; a run that outlives it is killed and fails the test.
pub fn run_bounded(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RAFT_KV_CONFIG")
        .env_remove("RAFT_KV_PASSWORD")
        .env_remove("RAFT_KV_METRICS_ADDR");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("cannot run the raft-kv binary");
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("raft-kv {args:?} still runs after {WAIT:?}: bad input must end it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code,
        stdout,
        stderr,
    }
}
