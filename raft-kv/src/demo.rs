//! `raft-kv demo`: a local three-node cluster in one process, on real loopback UDP.
//!
//! On a terminal it shows the nodes side by side ([`crate::ui::run_demo_ui`]); without
//! one (or with `--script`) it runs [`run_script`]: start, elect, write, kill the leader,
//! re-elect, write, restart, catch up, and check every node holds the same entries,
//! printing each step with its timing and failing if any step does not happen in time.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::client::{Request, Response};
use crate::cluster::{free_ports, HostView, NodeHost};
use crate::config::{ClusterConfig, NodeEntry};

/// How the demo cluster runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Number of nodes (3 by default).
    pub nodes: usize,
    /// Encrypt traffic with this password.
    pub password: Option<String>,
    /// Keep logs on disk in this directory (ephemeral when `None`).
    pub data_dir: Option<std::path::PathBuf>,
    /// The longest any step may take.
    pub step_timeout: Duration,
    /// Raft port of node1 (node N gets base + N - 1; client ports are 100 higher).
    /// `None`: free ports picked at random.
    pub base_port: Option<u16>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            password: None,
            data_dir: None,
            step_timeout: Duration::from_secs(20),
            base_port: None,
        }
    }
}

/// The demo cluster's config: `nodes` nodes on free loopback ports.
///
/// # Errors
/// No free ports.
pub fn demo_config(options: &DemoOptions) -> Result<ClusterConfig> {
    let n = options.nodes;
    let ports: Vec<u16> = match options.base_port {
        Some(base) => (0..n)
            .map(|i| u16::try_from(i).ok().and_then(|i| base.checked_add(i)))
            .chain((0..n).map(|i| {
                u16::try_from(i + 100)
                    .ok()
                    .and_then(|i| base.checked_add(i))
            }))
            .collect::<Option<_>>()
            .context("--base-port: the demo's ports would pass 65535")?,
        None => free_ports(n * 2).context("cannot find free loopback ports")?,
    };
    let mut config = ClusterConfig::new("raft-kv demo");
    config.nodes = (0..n)
        .map(|i| NodeEntry::local(i as u64 + 1, ports[i], ports[n + i]))
        .collect();
    config.timing.join_attempt_interval_ms = 1_000;
    if let Some(p) = &options.password {
        config.encryption.enabled = true;
        config.encryption.password = Some(p.clone());
    }
    if let Some(dir) = &options.data_dir {
        config.storage.persistent = true;
        config.storage.dir = dir.clone();
    }
    config.validate()?;
    Ok(config)
}

/// Builds and starts every node of `config`.
///
/// # Errors
/// A node cannot start.
pub fn start_all(config: &ClusterConfig) -> Result<Vec<Arc<NodeHost>>> {
    let hosts: Vec<Arc<NodeHost>> = config
        .nodes
        .iter()
        .map(|n| NodeHost::new(config, &n.name).map(Arc::new))
        .collect::<Result<_>>()?;
    for h in &hosts {
        h.start()?;
    }
    Ok(hosts)
}

/// Prints steps with their timing.
struct Tour<'a, W: Write> {
    out: &'a mut W,
    started: Instant,
    step: usize,
    steps: usize,
    timeout: Duration,
}

impl<W: Write> Tour<'_, W> {
    fn run<T>(&mut self, what: &str, f: impl FnOnce(Duration) -> Result<(T, String)>) -> Result<T> {
        self.step += 1;
        let at = self.started.elapsed().as_secs_f64();
        write!(
            self.out,
            "[{at:7.3}s] step {}/{}: {what} ... ",
            self.step, self.steps
        )?;
        self.out.flush()?;
        let t = Instant::now();
        match f(self.timeout) {
            Ok((value, detail)) => {
                writeln!(
                    self.out,
                    "ok in {:.3}s: {detail}",
                    t.elapsed().as_secs_f64()
                )?;
                Ok(value)
            }
            Err(e) => {
                writeln!(
                    self.out,
                    "FAILED after {:.3}s: {e:#}",
                    t.elapsed().as_secs_f64()
                )?;
                Err(e.context(format!("step {} ({what}) failed", self.step)))
            }
        }
    }
}

/// Waits until `f` returns `Some`, polling, for at most `timeout`.
///
/// # Errors
/// `what` did not happen in time.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The leader every running host agrees on, with its term.
fn agreed_leader(hosts: &[Arc<NodeHost>]) -> Option<(usize, u64)> {
    let views: Vec<HostView> = hosts
        .iter()
        .filter(|h| h.is_running())
        .map(|h| h.view(0))
        .collect();
    let first = views.first()?;
    let leader = first.leader?;
    let agree = views
        .iter()
        .all(|v| v.leader == Some(leader) && v.term == first.term);
    let leaders = views.iter().filter(|v| v.is_leader).count();
    (agree && leaders == 1).then(|| {
        let i = hosts.iter().position(|h| h.id() == leader)?;
        Some((i, first.term))
    })?
}

/// What node `i` has committed, as (index, text) pairs.
fn committed(host: &NodeHost) -> Vec<(u64, String)> {
    host.view(usize::MAX)
        .entries
        .iter()
        .map(|e| (e.index, e.op.to_string()))
        .collect()
}

fn put(host: &NodeHost, key: &str, value: &str) -> Result<()> {
    match crate::server::handle(
        host,
        Request::Put {
            key: key.into(),
            value: value.into(),
        },
    ) {
        Response::Written { .. } => Ok(()),
        Response::Error { message, .. } => bail!("{message}"),
        other => bail!("unexpected answer {other:?}"),
    }
}

fn wait_everywhere(hosts: &[Arc<NodeHost>], text: &str, timeout: Duration) -> Result<()> {
    wait_for(
        &format!("every running node has committed {text:?}"),
        timeout,
        || {
            hosts
                .iter()
                .filter(|h| h.is_running())
                .all(|h| committed(h).iter().any(|(_, t)| t == text))
                .then_some(())
        },
    )
}

/// Runs the scripted tour on a fresh cluster, printing to `out`.
///
/// # Errors
/// The first step that fails (each says what it waited for).
pub fn run_script(options: &DemoOptions, out: &mut impl Write) -> Result<()> {
    let config = demo_config(options)?;
    writeln!(
        out,
        "raft-kv demo: {} nodes on loopback UDP ({}), {} storage, {}",
        config.nodes.len(),
        config
            .nodes
            .iter()
            .map(|n| format!("{} {}", n.name, n.raft_addr))
            .collect::<Vec<_>>()
            .join(", "),
        if config.storage.persistent {
            "persistent"
        } else {
            "ephemeral"
        },
        if config.encryption.enabled {
            "encrypted"
        } else {
            "unencrypted"
        }
    )?;
    let mut tour = Tour {
        out,
        started: Instant::now(),
        step: 0,
        steps: 9,
        timeout: options.step_timeout,
    };
    let hosts = tour.run("start the nodes", |_| {
        let hosts = start_all(&config)?;
        Ok((hosts, format!("{} nodes running", config.nodes.len())))
    })?;
    let name = |i: usize| hosts[i].entry().name.clone();
    let (leader, term) = tour.run("elect a leader", |t| {
        let (l, term) = wait_for("the nodes agree on one leader", t, || agreed_leader(&hosts))?;
        Ok(((l, term), format!("{} leads at term {term}", name(l))))
    })?;
    let follower = (leader + 1) % hosts.len();
    tour.run("write Hello = World through a follower", |_| {
        put(&hosts[follower], "Hello", "World")?;
        Ok((
            (),
            format!("{} forwarded it to {}", name(follower), name(leader)),
        ))
    })?;
    tour.run("see it committed on every node", |t| {
        wait_everywhere(&hosts, "Hello = World", t)?;
        Ok(((), "all nodes hold Hello = World".into()))
    })?;
    tour.run("kill the leader", |_| {
        hosts[leader].stop();
        Ok(((), format!("{} stopped", name(leader))))
    })?;
    let new_leader = tour.run("re-elect among the survivors", |t| {
        let (l, new_term) = wait_for("the survivors agree on a new leader", t, || {
            agreed_leader(&hosts).filter(|(l, _)| *l != leader)
        })?;
        Ok((
            l,
            format!("{} leads at term {new_term} (was {term})", name(l)),
        ))
    })?;
    tour.run("write after = failover", |t| {
        put(&hosts[new_leader], "after", "failover")?;
        wait_everywhere(&hosts, "after = failover", t)?;
        Ok(((), "committed by the two survivors".into()))
    })?;
    tour.run("restart the old leader and let it catch up", |t| {
        hosts[leader].start()?;
        wait_for(
            &format!("{} holds the leader's entries", name(leader)),
            t,
            || {
                let want = committed(&hosts[new_leader]);
                (committed(&hosts[leader]) == want).then_some(())
            },
        )?;
        Ok((
            (),
            format!("{} rebuilt its log from the leader", name(leader)),
        ))
    })?;
    tour.run("check every node holds the same entries", |t| {
        let all = wait_for("all logs are equal", t, || {
            let logs: Vec<_> = hosts.iter().map(|h| committed(h)).collect();
            logs.windows(2).all(|w| w[0] == w[1]).then_some(logs)
        })?;
        let texts: Vec<&str> = all[0].iter().map(|(_, t)| t.as_str()).collect();
        Ok((
            (),
            format!("{} entries each: {}", texts.len(), texts.join(", ")),
        ))
    })?;
    let elapsed = tour.started.elapsed().as_secs_f64();
    writeln!(tour.out, "demo passed in {elapsed:.3}s")?;
    for h in &hosts {
        h.stop();
    }
    Ok(())
}
