//! # raft-kv
//!
//! A replicated key/value store on raft-core, raft-net (UDP) and raft-store (sled): the
//! demo program of this workspace, and the replacement of the original's desktop
//! prototype. The binary has these commands:
//!
//! - `raft-kv init`: write a cluster config file (asks on a terminal for what is missing);
//! - `raft-kv node --config FILE --id NAME`: run one node, with a terminal UI or headless;
//! - `raft-kv demo`: a local 3-node cluster in one terminal, or a scripted tour;
//! - `raft-kv put/get/del/status [--json]`: clients over the client protocol ([`client`]);
//! - `raft-kv stop/start/log-level`: control a running node through its client port;
//! - `raft-kv bench`: committed writes per second and their latency ([`mod@bench`]).
//!
//! Architecture invariants:
//! - the transport (raft-net's `UdpTransport`) and the storage (`MemLog` or raft-store's
//!   `SledLog`) are built in one place, [`cluster::NodeHost`]; nothing else names them;
//! - every way of driving a node (client port, terminal UI, demo) goes through
//!   [`server::handle`] or [`cluster::NodeHost`], so they behave alike;
//! - drawing is a pure function of a [`cluster::HostView`] and log lines (tested on
//!   ratatui's `TestBackend`); only `ui::run_*` touch the terminal;
//! - every wait has a deadline and every queue, list and frame a bound
//!   ([`store::ENTRIES_KEPT_MAX`], [`logger::LINES_KEPT_DEFAULT`],
//!   [`client::FRAME_BYTES_MAX`], and the client port's `[client_port]` limits in
//!   [`config::ClientPort`], enforced by [`server::Slots`]).
//!
//! The library holds the pieces, so tests and other programs can use them:
//! [`config`] (the TOML file), [`cluster`] (building and restarting a node),
//! [`store`] (the state machine), [`client`] and [`server`] (the client protocol),
//! [`logger`] (the developer log), [`ui`] (the terminal screens), [`demo`] and
//! [`metrics`] (the Prometheus endpoint of `raft-kv node --metrics-addr`).
//!
//! ```
//! use raft_kv::config::{ClusterConfig, NodeEntry};
//! use raft_kv::cluster::{free_ports, NodeHost};
//!
//! // A one-node cluster on a free loopback port elects itself and takes a write.
//! let ports = free_ports(2).unwrap();
//! let mut config = ClusterConfig::new("doc cluster");
//! config.nodes.push(NodeEntry::local(1, ports[0], ports[1]));
//! let host = NodeHost::new(&config, "node1").unwrap();
//! host.start().unwrap();
//! host.wait_for_leader(std::time::Duration::from_secs(10)).unwrap();
//! let put = raft_kv::server::handle(&host, raft_kv::client::Request::Put {
//!     key: "Hello".into(),
//!     value: "World".into(),
//! });
//! assert_eq!(put, raft_kv::client::Response::Written { previous: None });
//! assert_eq!(host.view(10).entries[0].op.to_string(), "Hello = World");
//! host.stop();
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod init;
pub mod logger;
pub mod metrics;
pub mod server;
pub mod store;
pub mod ui;
