//! A cluster under test: three (or more) nodes of one server on one private Redis
//! and, for Pitboss, one private PostgreSQL database. Pitboss nodes run
//! `pitboss serve --node node-N --redis-url … --database-url …`; Socket.IO nodes
//! run the reference relay with `REDIS_URL` (`@socket.io/redis-adapter`), node 1
//! also running its churn dispatcher. Node 1 starts first (a Pitboss node 1 takes
//! the routing lease before the others start), so that the leader, or the
//! dispatcher, is always node 1.
//!
//! Where clients go ([`Cluster::site`]): agents on node 2, players on every other
//! node in turn, so that every message of the relay and every offer of churn
//! crosses between nodes. What counts as the server's CPU: the nodes, Redis and
//! PostgreSQL (every process it forks), each reported apart and summed.

use crate::backing::{Postgres, Redis};
use crate::site::Site;
use crate::target::{Membership, Target, TargetKind, TargetOptions};
use crate::wire::{self, Dialer};
use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How long node 1 may take to start routing, and every node to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The node agents connect to (node 2).
const AGENT_NODE: usize = 1;

/// A running cluster. [`Cluster::stop`] (or dropping it) stops the nodes, then
/// Redis, then PostgreSQL.
pub struct Cluster {
    /// Which server.
    pub kind: TargetKind,
    /// `nodes[i]` is `node-{i+1}`.
    pub nodes: Vec<Target>,
    redis: Option<Redis>,
    postgres: Option<Postgres>,
    /// Seconds from nothing to every node ready.
    pub startup_secs: f64,
}

impl Cluster {
    /// Starts Redis, PostgreSQL (Pitboss only), then node 1, waits until it
    /// routes (Pitboss), then the other nodes, and waits until all are ready.
    pub fn start(kind: TargetKind, opts: &TargetOptions, nodes: usize) -> anyhow::Result<Cluster> {
        if kind == TargetKind::Bare {
            bail!("the bare relay has no cluster mode");
        }
        if nodes < 2 {
            bail!("a cluster needs at least two nodes (players and agents on different ones)");
        }
        let started = Instant::now();
        let redis = Redis::start(opts)?;
        let postgres = match kind {
            TargetKind::Pitboss => Some(Postgres::start(opts)?),
            _ => None,
        };
        let mut cluster = Cluster {
            kind,
            nodes: Vec::new(),
            redis: Some(redis),
            postgres,
            startup_secs: 0.0,
        };
        let member = |i: usize, c: &Cluster| Membership {
            node: format!("node-{}", i + 1),
            redis_url: c.redis.as_ref().map(Redis::url).unwrap_or_default(),
            database_url: c.postgres.as_ref().map(|p| p.url().to_string()),
            dispatcher: i == 0,
        };
        for i in 0..nodes {
            let node = Target::start_node(kind, opts, Some(&member(i, &cluster)))?;
            cluster.nodes.push(node);
            if i == 0 && kind == TargetKind::Pitboss {
                // Node 1 leads: it takes the lease before anyone else exists.
                let deadline = Instant::now() + READY_TIMEOUT;
                while !cluster.nodes[0].logged("routing here now") {
                    if Instant::now() > deadline || !cluster.nodes[0].alive() {
                        bail!(
                            "node-1 did not start routing within {} s; its log:\n{}",
                            READY_TIMEOUT.as_secs(),
                            cluster.nodes[0].logs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        if kind == TargetKind::Pitboss {
            let deadline = Instant::now() + READY_TIMEOUT;
            for node in &mut cluster.nodes {
                while !ready(node) {
                    if Instant::now() > deadline || !node.alive() {
                        bail!(
                            "{} was not ready within {} s; its log:\n{}",
                            node.label,
                            READY_TIMEOUT.as_secs(),
                            node.logs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        cluster.startup_secs = started.elapsed().as_secs_f64();
        tracing::info!(
            kind = kind.name(),
            nodes,
            secs = cluster.startup_secs,
            "cluster started"
        );
        Ok(cluster)
    }

    /// Where a scenario's clients go: agents on node 2, players on the other
    /// nodes in turn (node 1, node 3, node 1, …). Every node's dialer binds the
    /// same loopback sources: the server ports tell the sockets apart.
    pub fn site(&self, first_source: u8) -> Site<'_> {
        let dialers = self
            .nodes
            .iter()
            .map(|n| Dialer::new(n.addr, wire::loopback_sources(first_source, 2)))
            .collect();
        let players = (0..self.nodes.len()).filter(|&i| i != AGENT_NODE).collect();
        let mut shared = Vec::new();
        if let Some(r) = &self.redis {
            shared.push(("redis", r.stats()));
        }
        if let Some(p) = &self.postgres {
            shared.push(("postgres", p.stats()));
        }
        Site::cluster(
            self.nodes.iter().collect(),
            dialers,
            players,
            vec![AGENT_NODE],
            shared,
        )
    }

    /// Whether every node still runs.
    pub fn all_alive(&mut self) -> bool {
        self.nodes.iter_mut().all(Target::alive)
    }

    /// What the nodes, Redis and PostgreSQL logged that is worth a look:
    /// warnings, errors, routing changes; `(name, text)`.
    pub fn log_excerpts(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .nodes
            .iter()
            .map(|n| {
                let mut text = n.warnings().join("\n");
                text.push_str("\n… last lines:\n");
                text.push_str(&n.logs());
                (n.label.replace(' ', "-"), text)
            })
            .collect();
        if let Some(r) = &self.redis {
            out.push((format!("{}-redis", self.kind.name()), r.log_excerpt()));
        }
        if let Some(p) = &self.postgres {
            out.push((format!("{}-postgres", self.kind.name()), p.log_excerpt()));
        }
        out
    }

    /// PostgreSQL's durability settings as a session sees them, if it runs.
    pub fn postgres_settings(&self) -> Option<String> {
        self.postgres.as_ref().map(|p| p.settings().to_string())
    }

    /// Warning and error lines the nodes logged (routing changes too), each
    /// prefixed with its node.
    pub fn warnings(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.warnings()
                    .into_iter()
                    .map(move |l| format!("{}: {l}", n.label))
            })
            .collect()
    }

    /// Stops the nodes (by pid), then Redis, then PostgreSQL.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        for node in self.nodes.drain(..) {
            node.stop();
        }
        if let Some(r) = self.redis.take() {
            r.stop();
        }
        if let Some(p) = self.postgres.take() {
            p.stop();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Whether a Pitboss node answers `GET /readyz` with 200.
fn ready(node: &Target) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&node.addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ignored = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "GET /readyz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        node.addr
    );
    let mut head = [0u8; 12];
    s.write_all(request.as_bytes()).is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.1 200")
}

/// The start-up of a cluster as a `Result` with context, for the suite.
pub fn start(kind: TargetKind, opts: &TargetOptions, nodes: usize) -> anyhow::Result<Cluster> {
    Cluster::start(kind, opts, nodes)
        .with_context(|| format!("starting a {}-node {} cluster", nodes, kind.name()))
}
