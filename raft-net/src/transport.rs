//! [`UdpTransport`]: raft-core's [`Transport`] over one UDP socket and three named
//! threads per node.
//!
//! ```text
//! socket ──► raft-listener-nX ──(bounded queue of datagrams)──► raft-processor-nX ──► node inbox
//! node ──send()──(bounded queue of messages)──► raft-sender-nX ──► socket
//! ```
//!
//! Every queue is bounded; a full queue drops and counts (Raft re-sends what matters).
//! Architecture invariant: no thread ever blocks on another node; the only blocking
//! calls are the socket's and the queues'.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use raft_core::{Message, NodeId, Transport, TransportCounters, TransportError};
use socket2::{Domain, Protocol, Socket, Type};

use crate::codec::{Codec, Sealer};
use crate::config::NetConfig;
use crate::fragment::{ReassemblyLimits, ResendCache};
use crate::metrics::NetMetrics;
use crate::peers::{self, PeerDirectory, PeerUpdater};
use crate::processor::{Control, Processor, LOG_INTERVAL};
use crate::stats::{DropKind, NetStats, NetStatsSnapshot};
use crate::wire;

/// How long the listener waits in `recv_from` before re-checking the stop flag, should
/// the wake-up datagram `stop` sends be lost.
const LISTENER_POLL: Duration = Duration::from_millis(200);
/// Receive buffers kept for reuse. Each may hold up to a maximum-size datagram, so
/// this bounds the memory a burst of large datagrams leaves behind.
const RECEIVE_POOL_LEN_MAX: usize = 64;
/// A fragmented append is not sent again to a peer while that peer has been working
/// on the same entries (it got the first copy's fragments, or asked for missing ones)
/// within this long: Raft re-sends an unanswered append every heartbeat, sooner than a
/// large one may take to arrive, and each copy would start over and compete for the
/// receiver's socket buffer and reassembly memory. After this much silence the copy
/// goes out (the first may have been lost whole).
pub const REPEAT_SUPPRESSION_WINDOW: Duration = Duration::from_millis(50);
/// The most bytes of pieces sent again for one fragment request: a burst larger than
/// the receiver's socket buffer would mostly be lost again. The receiver asks for the
/// rest when the burst has arrived.
pub const RESEND_BYTES_PER_REQUEST_MAX: usize = 128 * 1024;
/// The shortest time between two scans of the incomplete fragmented messages.
const POLL_GAP: Duration = Duration::from_millis(2);
/// Below this many iterations the KDF is weak; logged as a warning (tests use fewer).
const KDF_ITERATIONS_WARN_BELOW: u32 = 100_000;

type Datagram = (Vec<u8>, SocketAddr);

/// What the sender thread sends: messages from the node, fragment requests and resends
/// from the processor.
#[derive(Debug)]
enum Outgoing {
    Message(Message),
    Control(Control),
}

/// The UDP transport. Bind it, hand it to the node runtime (which calls
/// [`Transport::start`]), and keep [`UdpTransport::directory`] and
/// [`UdpTransport::stats_handle`] if you want to update peers or show counters later.
///
/// Dropping it stops it.
#[derive(Debug)]
pub struct UdpTransport {
    node_id: NodeId,
    config: NetConfig,
    socket: UdpSocket,
    local_addr: SocketAddr,
    codec: Codec,
    directory: PeerDirectory,
    /// Applies new configurations' addresses to `directory` (host names off the caller).
    updater: PeerUpdater,
    stats: Arc<NetStats>,
    /// `stats`, published through the `metrics` facade at each status publication.
    metrics: NetMetrics,
    state: State,
}

#[derive(Debug)]
enum State {
    Bound,
    Running {
        send_queue: Sender<Outgoing>,
        stopping: Arc<AtomicBool>,
        threads: Vec<JoinHandle<()>>,
    },
    Stopped,
}

impl UdpTransport {
    /// Validates `config`, resolves every address (host names too), opens and binds the
    /// socket with large buffers (logging what the kernel granted), and derives the
    /// keys if a password is set. No thread runs until [`Transport::start`].
    ///
    /// # Errors
    /// [`TransportError::Config`] for a bad config or an unresolvable peer,
    /// [`TransportError::Io`] if the socket cannot be opened or bound.
    pub fn bind(config: NetConfig) -> Result<UdpTransport, TransportError> {
        config.validate()?;
        let me = config.node_id;
        let bind_addr = peers::resolve(&config.bind_addr).map_err(|e| {
            TransportError::Config(format!("bind_addr {:?}: {e}", config.bind_addr))
        })?;
        let directory = PeerDirectory::new();
        for peer in &config.peers {
            directory
                .resolve_and_insert(peer.id, peer.name.clone(), &peer.addr)
                .map_err(|e| {
                    TransportError::Config(format!(
                        "peer n{} ({:?}) at {:?}: {e}",
                        peer.id, peer.name, peer.addr
                    ))
                })?;
        }
        let socket = open_socket(me, bind_addr, config.socket_buffer_bytes)?;
        let local_addr = socket.local_addr()?;
        if config.password.is_some() && config.kdf_iterations < KDF_ITERATIONS_WARN_BELOW {
            log::warn!(
                "n{me}: kdf_iterations {} is below {KDF_ITERATIONS_WARN_BELOW}: the cluster password is easy to brute-force",
                config.kdf_iterations
            );
        }
        let started = Instant::now();
        let codec = Codec::new(&config);
        log::info!(
            "n{me}: raft-net protocol v{} on {local_addr}, cluster {:?} (id {:016x}), {}, datagrams up to {} B, appends up to {} B, messages up to {} B in fragments{}",
            wire::PROTOCOL_VERSION,
            config.cluster_name,
            codec.cluster_id(),
            if codec.is_encrypted() {
                format!("encrypted (keys derived in {} ms)", started.elapsed().as_millis())
            } else {
                "NOT encrypted (no password)".to_string()
            },
            codec.datagram_bytes_max(),
            codec.max_append_bytes(),
            codec.message_bytes_max(),
            match config.compress_bytes_min {
                Some(n) => format!(", lz4 from {n} B"),
                None => String::new(),
            },
        );
        Ok(UdpTransport {
            node_id: me,
            config,
            socket,
            local_addr,
            codec,
            updater: PeerUpdater::new(me, directory.clone(), Arc::new(peers::resolve)),
            directory,
            stats: NetStats::new_shared(),
            metrics: NetMetrics::new(me),
            state: State::Bound,
        })
    }

    /// The address the socket is bound to (with the real port if the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The peer directory; updates through any clone take effect at once.
    pub fn directory(&self) -> PeerDirectory {
        self.directory.clone()
    }

    /// Counters so far, by kind.
    pub fn stats(&self) -> NetStatsSnapshot {
        self.stats.snapshot()
    }

    /// A handle on the live counters, to keep after the transport moves into the node.
    pub fn stats_handle(&self) -> Arc<NetStats> {
        Arc::clone(&self.stats)
    }

    /// The codec this transport seals and opens with.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The config it was bound with.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    fn spawn(
        &self,
        role: &str,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name(format!("raft-{role}-n{}", self.node_id))
            .spawn(body)
    }
}

impl Transport for UdpTransport {
    fn start(&mut self, inbox: Sender<Message>) -> Result<(), TransportError> {
        if !matches!(self.state, State::Bound) {
            return Err(TransportError::Config(
                "transport already started (start is called once)".into(),
            ));
        }
        let me = self.node_id;
        let (datagram_tx, datagram_rx) = bounded::<Datagram>(self.config.receive_queue_len_max);
        // Buffers go back to the listener so steady-state receiving does not allocate.
        let (pool_tx, pool_rx) =
            bounded::<Vec<u8>>(RECEIVE_POOL_LEN_MAX.min(self.config.receive_queue_len_max));
        let (send_tx, send_rx) = bounded::<Outgoing>(self.config.send_queue_len_max);
        let stopping = Arc::new(AtomicBool::new(false));
        self.socket.set_read_timeout(Some(LISTENER_POLL))?;

        let mut threads = Vec::with_capacity(3);
        let listener = Listener {
            me,
            socket: self.socket.try_clone()?,
            queue: datagram_tx,
            pool: pool_rx,
            stopping: Arc::clone(&stopping),
            stats: Arc::clone(&self.stats),
        };
        let processor = Processor::new(
            me,
            &self.codec,
            self.directory.clone(),
            Arc::clone(&self.stats),
        )
        .with_limits(ReassemblyLimits::of(&self.config));
        let control = send_tx.clone();
        let stats = Arc::clone(&self.stats);
        let sender = SenderLoop {
            me,
            socket: self.socket.try_clone()?,
            queue: send_rx,
            sealer: self.codec.sealer(me),
            directory: self.directory.clone(),
            stats: Arc::clone(&self.stats),
            resend: ResendCache::new(
                self.config.resend_cache_bytes_max,
                Duration::from_millis(self.config.reassembly_timeout_ms),
            ),
            recent: std::collections::HashMap::new(),
        };
        let spawned = (|| -> io::Result<()> {
            threads.push(self.spawn("listener", move || listener.run())?);
            threads.push(self.spawn("processor", move || {
                process_loop(processor, datagram_rx, pool_tx, inbox, control, stats)
            })?);
            threads.push(self.spawn("sender", move || sender.run())?);
            Ok(())
        })();
        self.state = State::Running {
            send_queue: send_tx,
            stopping,
            threads,
        };
        if let Err(e) = spawned {
            self.stop();
            return Err(e.into());
        }
        log::debug!("n{me}: transport threads started");
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) {
        let State::Running { send_queue, .. } = &self.state else {
            for _ in &messages {
                self.stats.record_drop(DropKind::NotRunning);
            }
            return;
        };
        for msg in messages {
            match send_queue.try_send(Outgoing::Message(msg)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.stats.record_drop(DropKind::SendQueueFull),
                Err(TrySendError::Disconnected(_)) => self.stats.record_drop(DropKind::NotRunning),
            }
        }
    }

    fn max_append_bytes(&self) -> u64 {
        self.codec.max_append_bytes()
    }

    /// What one message of `message_bytes_max` carries, in fragments.
    fn max_entry_bytes(&self) -> u64 {
        self.codec.max_entry_bytes()
    }

    fn counters(&self) -> TransportCounters {
        self.stats.snapshot().counters()
    }

    fn publish_metrics(&self) {
        self.metrics.publish(&self.stats.snapshot());
    }

    /// Adds or updates the members of the configuration in force in the peer
    /// directory, so a node added after this one started can be reached (and its
    /// datagrams are accepted). A peer whose address is unchanged is left alone; a new
    /// one keeps the name it had, or gets `n{id}`. Never waits for DNS (the WaitLoop
    /// calls this): an IP address applies at once, a host name is resolved on a thread
    /// of its own and applied when it resolves, unless a later configuration gave that
    /// peer another address meanwhile. An address that does not resolve is logged and
    /// skipped: the peer stays unreachable (or at its old address) until a
    /// configuration gives a good one.
    fn update_peers(&mut self, peers: &[(NodeId, String)]) {
        self.updater.update(peers);
    }

    fn stop(&mut self) {
        let State::Running {
            send_queue,
            stopping,
            threads,
        } = std::mem::replace(&mut self.state, State::Stopped)
        else {
            self.state = State::Stopped;
            return;
        };
        let me = self.node_id;
        stopping.store(true, Ordering::SeqCst);
        // The sender drains what is queued and exits when the queue disconnects: once
        // this handle is dropped and the processor (which holds a clone for fragment
        // requests) has exited after the listener.
        drop(send_queue);
        // Wake the listener out of recv_from; the poll timeout covers a lost wake-up.
        let _ = self.socket.send_to(&[], wake_addr(self.local_addr));
        for handle in threads {
            let name = handle.thread().name().unwrap_or("?").to_string();
            if let Err(panic) = handle.join() {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                log::error!("n{me}: thread {name} panicked: {what}");
            }
        }
        log::info!("n{me}: transport stopped: {}", self.stats.snapshot());
    }
}

impl Drop for UdpTransport {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens a UDP socket with large buffers, binds it, and logs what the kernel granted.
fn open_socket(me: NodeId, addr: SocketAddr, buffer_bytes: usize) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(buffer_bytes) {
        log::warn!("n{me}: cannot set the socket receive buffer to {buffer_bytes} B: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer_bytes) {
        log::warn!("n{me}: cannot set the socket send buffer to {buffer_bytes} B: {e}");
    }
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    let granted_recv = socket.recv_buffer_size()?;
    let granted_send = socket.send_buffer_size()?;
    // Linux doubles the requested size for its bookkeeping and reports that, capped at
    // twice net.core.rmem_max / wmem_max; half the reported value is the usable part.
    log::info!(
        "n{me}: socket buffers: asked {buffer_bytes} B, kernel granted receive {granted_recv} B, send {granted_send} B"
    );
    if granted_recv < buffer_bytes {
        log::warn!(
            "n{me}: receive buffer {granted_recv} B < {buffer_bytes} B asked: bursts will be lost; \
             raise net.core.rmem_max (sysctl) to at least {buffer_bytes}"
        );
    }
    Ok(socket.into())
}

/// Where to send the listener its wake-up datagram: our own port, via loopback if we
/// are bound to a wildcard address.
fn wake_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// Logs a warning of one kind at most every [`LOG_INTERVAL`].
#[derive(Debug, Default)]
struct Every {
    last: Option<Instant>,
    suppressed: u64,
}

impl Every {
    /// `Some(suppressed since the last line)` if a line may be logged now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < LOG_INTERVAL)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Socket -> bounded queue, as fast as possible: no parsing here.
struct Listener {
    me: NodeId,
    socket: UdpSocket,
    queue: Sender<Datagram>,
    pool: Receiver<Vec<u8>>,
    stopping: Arc<AtomicBool>,
    stats: Arc<NetStats>,
}

impl Listener {
    fn run(self) {
        // One byte more than UDP's limit, so a longer (IPv6) datagram shows as oversized
        // instead of silently truncated.
        let mut buf = vec![0u8; wire::MAX_UDP_PAYLOAD_BYTES + 1];
        let mut errors = Every::default();
        loop {
            let received = self.socket.recv_from(&mut buf);
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            match received {
                Ok((n, from)) => {
                    self.stats.record_received(n);
                    let mut datagram = self.pool.try_recv().unwrap_or_default();
                    datagram.clear();
                    datagram.extend_from_slice(&buf[..n]);
                    match self.queue.try_send((datagram, from)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            self.stats.record_drop(DropKind::ReceiveQueueFull)
                        }
                        Err(TrySendError::Disconnected(_)) => break,
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    // E.g. an ICMP error surfacing on some platforms; keep listening.
                    if let Some(more) = errors.ready() {
                        log::warn!(
                            "n{}: recv_from failed: {e} ({more} more since the last such line)",
                            self.me
                        );
                    }
                }
            }
        }
        log::debug!("n{}: listener exits", self.me);
    }
}

/// Queue -> processor -> node inbox. Ends when the listener drops the queue. Wakes up
/// without a datagram only when an incomplete fragmented message needs a request for
/// its missing fragments or has timed out; requests and resends go to the sender
/// thread's queue (dropped and counted if it is full).
fn process_loop(
    mut processor: Processor,
    queue: Receiver<Datagram>,
    pool: Sender<Vec<u8>>,
    inbox: Sender<Message>,
    control: Sender<Outgoing>,
    stats: Arc<NetStats>,
) {
    // When to poll the reassembler next; None while no message is incomplete. Polls are
    // at least POLL_GAP apart, so a flood of small incomplete messages cannot make every
    // datagram pay for a scan of all of them.
    let mut next_poll: Option<Instant> = None;
    loop {
        let received = match next_poll {
            None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => queue.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok((datagram, from)) => {
                if let Some(msg) = processor.process(&datagram, from, Instant::now()) {
                    match inbox.try_send(msg) {
                        Ok(()) => stats.record_delivered(),
                        Err(_) => stats.record_drop(DropKind::InboxFull),
                    }
                }
                let _ = pool.try_send(datagram);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        match next_poll {
            Some(at) if now >= at => {
                processor.poll(now);
                next_poll = processor.next_deadline().map(|d| d.max(now + POLL_GAP));
            }
            None if processor.incomplete_messages() > 0 => {
                next_poll = processor.next_deadline().map(|d| d.max(now + POLL_GAP));
            }
            _ => {}
        }
        for c in processor.take_control() {
            if control.try_send(Outgoing::Control(c)).is_err() {
                stats.record_drop(DropKind::SendQueueFull);
            }
        }
    }
}

/// Queue of messages -> seal -> socket. Ends when `stop` drops the queue's sender.
struct SenderLoop {
    me: NodeId,
    socket: UdpSocket,
    queue: Receiver<Outgoing>,
    sealer: Sealer,
    directory: PeerDirectory,
    stats: Arc<NetStats>,
    resend: ResendCache,
    /// Per peer: the last fragmented append sent, for [`REPEAT_SUPPRESSION_WINDOW`].
    recent: std::collections::HashMap<NodeId, RecentAppend>,
}

/// Which entries an append carries: equal keys mean equal entries (two entries with
/// the same index and term are the same entry, and so are all before them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AppendKey {
    prev_index: u64,
    prev_term: u64,
    count: usize,
    last_index: u64,
    last_term: u64,
}

impl AppendKey {
    fn of(msg: &Message) -> Option<AppendKey> {
        match &msg.body {
            raft_core::MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                ..
            } => entries.last().map(|last| AppendKey {
                prev_index: *prev_index,
                prev_term: *prev_term,
                count: entries.len(),
                last_index: last.index,
                last_term: last.term,
            }),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct RecentAppend {
    key: AppendKey,
    term: u64,
    message_id: u64,
    active_at: Instant,
}

/// Sends one datagram, counting it (or the failure).
fn send_datagram(
    me: NodeId,
    socket: &UdpSocket,
    stats: &NetStats,
    failed: &mut Every,
    datagram: &[u8],
    to: NodeId,
    addr: SocketAddr,
) {
    match socket.send_to(datagram, addr) {
        Ok(n) => stats.record_sent(n),
        Err(e) => {
            stats.record_drop(DropKind::SendFailed);
            if let Some(more) = failed.ready() {
                log::warn!("n{me}: send to n{to} at {addr} failed: {e} ({more} more since the last such line)");
            }
        }
    }
}

impl SenderLoop {
    fn run(mut self) {
        let mut no_address = Every::default();
        let mut too_large = Every::default();
        let mut failed = Every::default();
        let queue = self.queue.clone();
        for outgoing in queue.iter() {
            let msg = match outgoing {
                Outgoing::Message(msg) => msg,
                Outgoing::Control(control) => {
                    self.control(control, &mut failed);
                    continue;
                }
            };
            let Some(addr) = self.directory.addr(msg.to) else {
                self.stats.record_drop(DropKind::NoAddress);
                if let Some(more) = no_address.ready() {
                    log::warn!("n{}: no address for n{}: dropped {} ({more} more since the last such line)", self.me, msg.to, msg.body.kind());
                }
                continue;
            };
            let key = AppendKey::of(&msg);
            if let (Some(key), Some(recent)) = (key, self.recent.get(&msg.to)) {
                if recent.key == key
                    && recent.term == msg.term
                    && recent.active_at.elapsed() < REPEAT_SUPPRESSION_WINDOW
                {
                    self.stats.record_repeat_suppressed();
                    log::trace!(
                        "n{}: not sending message {}'s entries to n{} again: it is still assembling them",
                        self.me,
                        recent.message_id,
                        msg.to
                    );
                    continue;
                }
            }
            let (me, socket, stats) = (self.me, &self.socket, &*self.stats);
            let sealed = self.sealer.seal_into(&msg, &mut |datagram| {
                send_datagram(me, socket, stats, &mut failed, datagram, msg.to, addr)
            });
            match sealed {
                Ok(None) => {}
                Ok(Some(fragmented)) => {
                    self.stats.record_fragmented(fragmented.count as usize);
                    log::trace!(
                        "n{}: sent {} to n{} as message {} in {} fragments ({} B)",
                        self.me,
                        msg.body.kind(),
                        msg.to,
                        fragmented.message_id,
                        fragmented.count,
                        fragmented.body.len()
                    );
                    if let Some(key) = key {
                        self.recent.insert(
                            msg.to,
                            RecentAppend {
                                key,
                                term: msg.term,
                                message_id: fragmented.message_id,
                                active_at: Instant::now(),
                            },
                        );
                    }
                    self.resend.insert(fragmented, Instant::now());
                }
                Err(e) => {
                    self.stats.record_drop(DropKind::TooLarge);
                    if let Some(more) = too_large.ready() {
                        log::error!(
                            "n{}: dropped {} to n{}: {e}; messages must stay within message_bytes_max ({more} more since the last such line)",
                            self.me,
                            msg.body.kind(),
                            msg.to
                        );
                    }
                }
            }
        }
        log::debug!("n{}: sender exits", self.me);
    }

    /// Sends a fragment request, or fragments a peer asked for again.
    fn control(&mut self, control: Control, failed: &mut Every) {
        let me = self.me;
        let (to, request) = match &control {
            Control::Request(request) => (request.to, request),
            Control::Resend { from, request } => (*from, request),
        };
        let Some(addr) = self.directory.addr(to) else {
            self.stats.record_drop(DropKind::NoAddress);
            return;
        };
        let (socket, stats) = (&self.socket, &*self.stats);
        match control {
            Control::Request(request) => {
                let datagram = self.sealer.seal_request(&request);
                send_datagram(me, socket, stats, failed, datagram, to, addr);
                stats.record_fragment_request_sent();
            }
            Control::Resend { .. } => {
                if request.epoch != self.sealer.epoch() {
                    log::debug!(
                        "n{me}: n{to} asked for fragments of message {} of an earlier run; ignored",
                        request.message_id
                    );
                    return;
                }
                let Some(fragmented) = self.resend.get(to, request.message_id, Instant::now())
                else {
                    log::debug!(
                        "n{me}: n{to} asked for fragments of message {}, no longer kept",
                        request.message_id
                    );
                    return;
                };
                if let Some(recent) = self.recent.get_mut(&to) {
                    if recent.message_id == request.message_id {
                        recent.active_at = Instant::now();
                    }
                }
                let mut resent = 0;
                let mut resent_bytes = 0;
                'ranges: for &(first, n) in &request.ranges {
                    let end = first.saturating_add(n).min(fragmented.count);
                    for index in first..end {
                        if resent_bytes >= RESEND_BYTES_PER_REQUEST_MAX {
                            break 'ranges;
                        }
                        let datagram = self.sealer.seal_fragment(&fragmented, index);
                        resent_bytes += datagram.len();
                        send_datagram(me, socket, stats, failed, datagram, to, addr);
                        resent += 1;
                    }
                }
                stats.record_resent(resent);
                log::trace!(
                    "n{me}: resent {resent} fragments of message {} to n{to}",
                    request.message_id
                );
            }
        }
    }
}
