//! A fault-injecting UDP proxy for real clusters on loopback.
//!
//! [`UdpProxy`] binds one socket per node on 127.0.0.1. Every datagram meant for node
//! `j` is sent to proxy socket `j` instead (point each node's peer directory at
//! [`ProxyHandle::addr`]), and the proxy forwards it to node `j`'s real address, unless
//! the rules in force say otherwise. The sending node is read from the plaintext
//! raft-net header (bytes 16..24, see `docs/protocol.md`); nothing is decrypted, so the
//! proxy works on encrypted clusters too. A datagram without a valid version-1 header
//! is counted as malformed and dropped.
//!
//! Rules are changed at run time through a cloneable [`ProxyHandle`]: per directed link
//! or per node, a drop probability, a fixed delay plus uniform jitter (delayed
//! datagrams may overtake each other) and a duplicate probability ([`Faults`]); and
//! cuts: [`ProxyHandle::isolate`], [`ProxyHandle::partition`], the one-way
//! [`ProxyHandle::cut`], and [`ProxyHandle::heal`].
//!
//! Random choices come from seeded ChaCha RNGs (one per proxy socket, derived from the
//! seed), so a run's choices repeat for the same seed as far as the order in which
//! datagrams arrive repeats; real threads make that order vary.
//!
//! Threads: one receiver per proxy socket, which forwards undelayed datagrams itself,
//! and one scheduler that sends delayed datagrams when they are due. [`UdpProxy::stop`]
//! (or dropping the proxy) stops and joins them all.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use raft_core::NodeId;
use raft_net::wire;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How often idle threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Faults applied to the datagrams of a link or a node.
///
/// When several rules apply to one datagram (the default, the sender's and the
/// receiver's node rules, the link's rule), they compound: drop and duplicate
/// probabilities combine as independent events, delays and jitters add up.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability (0 to 1) that a datagram is dropped.
    pub drop: f64,
    /// Fixed delay added to every datagram.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram (and per copy), so
    /// datagrams may be reordered.
    pub jitter: Duration,
    /// Probability (0 to 1) that a datagram is sent twice (the copy draws its own delay).
    pub duplicate: f64,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Only drops, with probability `p`.
    pub fn lossy(p: f64) -> Self {
        Self {
            drop: p,
            ..Self::default()
        }
    }

    /// Combines two rules that both apply to a datagram.
    fn and(self, other: Faults) -> Faults {
        let either = |a: f64, b: f64| 1.0 - (1.0 - a.clamp(0.0, 1.0)) * (1.0 - b.clamp(0.0, 1.0));
        Faults {
            drop: either(self.drop, other.drop),
            delay: self.delay.saturating_add(other.delay),
            jitter: self.jitter.saturating_add(other.jitter),
            duplicate: either(self.duplicate, other.duplicate),
        }
    }
}

/// Counters of what the proxy did, as read by [`ProxyHandle::counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    /// Datagrams received on the proxy's sockets, counted once their fate (forward,
    /// delay, drop) is decided under the rules in force, after the other counters.
    pub received: u64,
    /// Datagrams (copies included) sent on to their node.
    pub forwarded: u64,
    /// Datagrams dropped by a drop probability.
    pub dropped: u64,
    /// Datagrams (copies included) held back by a delay.
    pub delayed: u64,
    /// Extra copies made by a duplicate probability.
    pub duplicated: u64,
    /// Datagrams dropped because their link was cut (isolation, partition, one-way cut).
    pub cut: u64,
    /// Datagrams dropped because they do not start with a valid raft-net header.
    pub malformed: u64,
    /// Forwards that failed in the socket (e.g. the node is down and ICMP said so).
    pub send_errors: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    delayed: AtomicU64,
    duplicated: AtomicU64,
    cut: AtomicU64,
    malformed: AtomicU64,
    send_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::SeqCst);
}

#[derive(Default)]
struct Rules {
    default: Faults,
    nodes: HashMap<NodeId, Faults>,
    links: HashMap<(NodeId, NodeId), Faults>,
    cuts: HashSet<(NodeId, NodeId)>,
}

impl Rules {
    fn faults(&self, from: NodeId, to: NodeId) -> Faults {
        let none = Faults::none();
        self.default
            .and(*self.nodes.get(&from).unwrap_or(&none))
            .and(if from == to {
                none
            } else {
                *self.nodes.get(&to).unwrap_or(&none)
            })
            .and(*self.links.get(&(from, to)).unwrap_or(&none))
    }
}

struct Shared {
    seed: u64,
    nodes: Vec<NodeId>,
    proxy_addrs: HashMap<NodeId, SocketAddr>,
    rules: Mutex<Rules>,
    counters: Counters,
    stopping: AtomicBool,
}

impl Shared {
    /// The rules; a panic elsewhere while holding the lock does not make them unusable.
    fn rules(&self) -> MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cloneable handle that changes the proxy's rules and reads its counters while it runs.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("seed", &self.shared.seed)
            .field("proxy_addrs", &self.shared.proxy_addrs)
            .finish_non_exhaustive()
    }
}

impl ProxyHandle {
    /// The seed of the proxy's random choices.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// The proxy socket that stands for `node`: send datagrams meant for `node` here.
    pub fn addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.shared.proxy_addrs.get(&node).copied()
    }

    /// The nodes the proxy stands for.
    pub fn nodes(&self) -> &[NodeId] {
        &self.shared.nodes
    }

    /// Sets the faults of every datagram (compounded with node and link rules).
    pub fn set_default(&self, faults: Faults) {
        self.shared.rules().default = faults;
    }

    /// Sets the faults of every datagram from or to `node`.
    pub fn set_node(&self, node: NodeId, faults: Faults) {
        self.shared.rules().nodes.insert(node, faults);
    }

    /// Sets the faults of datagrams from `from` to `to` (one direction).
    pub fn set_link(&self, from: NodeId, to: NodeId, faults: Faults) {
        self.shared.rules().links.insert((from, to), faults);
    }

    /// Removes every fault rule (default, node, link); cuts stay.
    pub fn clear_faults(&self) {
        let mut rules = self.shared.rules();
        rules.default = Faults::none();
        rules.nodes.clear();
        rules.links.clear();
    }

    /// Cuts the link from `from` to `to` in that direction only.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.shared.rules().cuts.insert((from, to));
    }

    /// Restores the link from `from` to `to` (that direction only).
    pub fn uncut(&self, from: NodeId, to: NodeId) {
        self.shared.rules().cuts.remove(&(from, to));
    }

    /// Cuts every link to and from `node`.
    pub fn isolate(&self, node: NodeId) {
        let mut rules = self.shared.rules();
        for &other in &self.shared.nodes {
            if other != node {
                rules.cuts.insert((node, other));
                rules.cuts.insert((other, node));
            }
        }
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways. Links inside
    /// each side are untouched.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        let mut rules = self.shared.rules();
        for &x in a {
            for &y in b {
                if x != y {
                    rules.cuts.insert((x, y));
                    rules.cuts.insert((y, x));
                }
            }
        }
    }

    /// Whether the link from `from` to `to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.shared.rules().cuts.contains(&(from, to))
    }

    /// Removes every cut (fault rules stay).
    pub fn heal(&self) {
        self.shared.rules().cuts.clear();
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> ProxyCounters {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        ProxyCounters {
            received: get(&c.received),
            forwarded: get(&c.forwarded),
            dropped: get(&c.dropped),
            delayed: get(&c.delayed),
            duplicated: get(&c.duplicated),
            cut: get(&c.cut),
            malformed: get(&c.malformed),
            send_errors: get(&c.send_errors),
        }
    }
}

/// A fault-injecting proxy in front of a set of nodes; see the [module docs](self).
///
/// ```no_run
/// use std::time::Duration;
/// use raft_testkit::proxy::{Faults, UdpProxy};
///
/// // Nodes 1 and 2 listen on these addresses; their peers must be told the proxy's.
/// let real = vec![
///     (1, "127.0.0.1:7001".parse().unwrap()),
///     (2, "127.0.0.1:7002".parse().unwrap()),
/// ];
/// let proxy = UdpProxy::start(&real, 42).unwrap();
/// let handle = proxy.handle();
/// let for_node_2 = handle.addr(2).unwrap(); // node 1's peer directory: n2 at this address
/// handle.set_default(Faults {
///     drop: 0.1,
///     delay: Duration::from_millis(1),
///     jitter: Duration::from_millis(3),
///     duplicate: 0.05,
/// });
/// handle.isolate(1);
/// handle.heal();
/// println!("{for_node_2}: {:?}", handle.counters());
/// drop(proxy); // stops and joins its threads
/// ```
pub struct UdpProxy {
    handle: ProxyHandle,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for UdpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpProxy")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

/// A datagram waiting for its delay to pass.
struct Delayed {
    due: Instant,
    order: u64,
    socket: usize,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    /// Reversed, so the max-heap pops the earliest due first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

impl UdpProxy {
    /// Binds one proxy socket per node of `targets` (node id, the node's real address)
    /// on 127.0.0.1 and starts forwarding, with no faults. `seed` seeds the random
    /// choices; it is logged (and printed to stderr, so a failing test shows it).
    ///
    /// # Errors
    /// A socket cannot be bound or configured, or a thread cannot be spawned.
    pub fn start(targets: &[(NodeId, SocketAddr)], seed: u64) -> io::Result<UdpProxy> {
        eprintln!("udp proxy seed: {seed}");
        log::info!("udp proxy seed: {seed}");
        let mut sockets = Vec::new();
        let mut proxy_addrs = HashMap::new();
        for &(node, _) in targets {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_read_timeout(Some(POLL))?;
            proxy_addrs.insert(node, socket.local_addr()?);
            sockets.push(Arc::new(socket));
        }
        let shared = Arc::new(Shared {
            seed,
            nodes: targets.iter().map(|&(n, _)| n).collect(),
            proxy_addrs,
            rules: Mutex::new(Rules::default()),
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
        });
        let mut proxy = UdpProxy {
            handle: ProxyHandle {
                shared: shared.clone(),
            },
            threads: Vec::new(),
        };
        let (delay_tx, delay_rx) = crossbeam_channel::unbounded();
        {
            let shared = shared.clone();
            let sockets = sockets.clone();
            proxy.threads.push(
                std::thread::Builder::new()
                    .name("proxy-delay".into())
                    .spawn(move || scheduler(shared, sockets, delay_rx))?,
            );
        }
        for (i, &(node, to)) in targets.iter().enumerate() {
            let receiver = Forwarder {
                index: i,
                node,
                to,
                socket: sockets[i].clone(),
                shared: shared.clone(),
                delay: delay_tx.clone(),
                rng: ChaCha8Rng::seed_from_u64(
                    seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                ),
                order: 0,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("proxy-n{node}"))
                .spawn(move || receiver.run());
            match spawned {
                Ok(t) => proxy.threads.push(t),
                Err(e) => return Err(e), // Drop stops the threads started so far.
            }
        }
        Ok(proxy)
    }

    /// A handle to change the rules and read the counters.
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// Stops forwarding and joins the proxy's threads. Delayed datagrams not yet sent
    /// are discarded. Idempotent.
    pub fn stop(&mut self) {
        self.handle.shared.stopping.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("a udp proxy thread panicked");
            }
        }
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Receives on one proxy socket and forwards (or drops, delays, duplicates) to one node.
struct Forwarder {
    index: usize,
    node: NodeId,
    to: SocketAddr,
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    delay: Sender<Delayed>,
    rng: ChaCha8Rng,
    order: u64,
}

impl Forwarder {
    fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        while !self.shared.stopping.load(Ordering::SeqCst) {
            let n = match self.socket.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // ICMP errors from an earlier send surface here on some platforms.
                    log::debug!("proxy for n{}: recv failed: {e}", self.node);
                    continue;
                }
            };
            self.handle(&buf[..n]);
        }
        log::debug!("proxy for n{} exits", self.node);
    }

    fn handle(&mut self, datagram: &[u8]) {
        self.decide(datagram);
        bump(&self.shared.counters.received);
    }

    fn decide(&mut self, datagram: &[u8]) {
        let c = &self.shared.counters;
        let Some(from) = sender(datagram) else {
            bump(&c.malformed);
            return;
        };
        let faults = {
            let rules = self.shared.rules();
            if rules.cuts.contains(&(from, self.node)) {
                drop(rules);
                bump(&c.cut);
                return;
            }
            rules.faults(from, self.node)
        };
        if faults.drop > 0.0 && self.rng.gen_bool(faults.drop.clamp(0.0, 1.0)) {
            bump(&c.dropped);
            return;
        }
        let copies =
            if faults.duplicate > 0.0 && self.rng.gen_bool(faults.duplicate.clamp(0.0, 1.0)) {
                bump(&c.duplicated);
                2
            } else {
                1
            };
        for _ in 0..copies {
            let jitter = faults.jitter.as_nanos().min(u64::MAX as u128) as u64;
            let extra = if jitter > 0 {
                Duration::from_nanos(self.rng.gen_range(0..=jitter))
            } else {
                Duration::ZERO
            };
            let delay = faults.delay.saturating_add(extra);
            if delay.is_zero() {
                forward(&self.socket, datagram, self.to, c);
            } else {
                bump(&c.delayed);
                self.order += 1;
                let delayed = Delayed {
                    due: Instant::now() + delay,
                    order: self.order,
                    socket: self.index,
                    to: self.to,
                    bytes: datagram.to_vec(),
                };
                // The scheduler only goes away when the proxy stops.
                let _ = self.delay.send(delayed);
            }
        }
    }
}

/// The sender id of a datagram with a valid version-1 raft-net header, read from the
/// plaintext header without decrypting anything.
fn sender(datagram: &[u8]) -> Option<NodeId> {
    let header: &[u8; wire::HEADER_BYTES] = datagram.get(..wire::HEADER_BYTES)?.try_into().ok()?;
    if header[..4] != wire::MAGIC || !wire::SUPPORTED_VERSIONS.contains(&header[4]) {
        return None;
    }
    Some(wire::Header::read(header).sender)
}

fn forward(socket: &UdpSocket, datagram: &[u8], to: SocketAddr, c: &Counters) {
    match socket.send_to(datagram, to) {
        Ok(_) => bump(&c.forwarded),
        Err(e) => {
            bump(&c.send_errors);
            log::debug!("proxy: forward to {to} failed: {e}");
        }
    }
}

/// Sends delayed datagrams when due. Ends when the proxy stops.
fn scheduler(shared: Arc<Shared>, sockets: Vec<Arc<UdpSocket>>, queue: Receiver<Delayed>) {
    let mut heap = BinaryHeap::new();
    while !shared.stopping.load(Ordering::SeqCst) {
        let now = Instant::now();
        while heap.peek().is_some_and(|d: &Delayed| d.due <= now) {
            if let Some(d) = heap.pop() {
                if let Some(socket) = sockets.get(d.socket) {
                    forward(socket, &d.bytes, d.to, &shared.counters);
                }
            }
        }
        let wait = heap
            .peek()
            .map_or(POLL, |d| d.due.saturating_duration_since(now).min(POLL));
        match queue.recv_timeout(wait) {
            Ok(d) => heap.push(d),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    log::debug!(
        "proxy scheduler exits, {} delayed datagrams discarded",
        heap.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_reads_the_header_and_rejects_garbage() {
        let mut d = Vec::new();
        wire::Header {
            version: wire::PROTOCOL_VERSION,
            flags: wire::FLAG_ENCRYPTED,
            cluster_id: 7,
            sender: 3,
            epoch: 1,
            seq: 1,
        }
        .write(&mut d);
        assert_eq!(sender(&d), Some(3));
        assert_eq!(sender(&d[..39]), None);
        assert_eq!(sender(b""), None);
        d[4] = 99;
        assert_eq!(sender(&d), None);
        d[4] = wire::PROTOCOL_VERSION;
        d[0] = b'X';
        assert_eq!(sender(&d), None);
    }

    #[test]
    fn rules_compound() {
        let mut r = Rules {
            default: Faults::lossy(0.5),
            ..Rules::default()
        };
        r.nodes.insert(1, Faults::lossy(0.5));
        r.links.insert(
            (1, 2),
            Faults {
                delay: Duration::from_millis(3),
                ..Faults::none()
            },
        );
        let f = r.faults(1, 2);
        assert!((f.drop - 0.75).abs() < 1e-9);
        assert_eq!(f.delay, Duration::from_millis(3));
        assert_eq!(r.faults(2, 1).delay, Duration::ZERO);
        assert!((r.faults(2, 3).drop - 0.5).abs() < 1e-9);
    }
}
