//! What a scenario runs against: one server, or the nodes of a cluster with the
//! Redis (and PostgreSQL) they share. A [`Site`] says which node each player and
//! each agent connects to, and whose CPU time counts as the server's, part by
//! part. The scenarios take a site and nothing else about the servers; it owns no
//! process (the suite starts and stops them).

use crate::procstat::ProcStats;
use crate::target::{Target, TargetKind};
use crate::wire::Dialer;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The servers a scenario drives and where its clients go.
pub struct Site<'a> {
    /// Which server.
    pub kind: TargetKind,
    nodes: Vec<&'a Target>,
    dialers: Vec<Arc<Dialer>>,
    /// The nodes players connect to, in turn (indices into `nodes`).
    player_nodes: Vec<usize>,
    /// The nodes agents connect to, in turn.
    agent_nodes: Vec<usize>,
    /// What counts as the server's CPU time, part by part.
    parts: Vec<Part>,
}

/// One part of a site's CPU accounting: a node, Redis, PostgreSQL.
struct Part {
    name: String,
    stats: ProcStats,
}

/// One part's CPU use over a step.
#[derive(Debug, Clone, Serialize)]
pub struct CpuPart {
    /// `node-1`, `node-2`, …, `redis` or `postgres`.
    pub part: String,
    /// CPU time per delivered message, in microseconds (relay; 0 for churn).
    pub cpu_us_per_msg: f64,
    /// CPU use, in cores.
    pub cores: f64,
}

/// CPU time of every part at one moment.
#[derive(Debug, Clone)]
pub struct SiteMark {
    at: Instant,
    cpu: Vec<Duration>,
}

/// CPU use between two marks: in all, and part by part.
#[derive(Debug, Clone)]
pub struct SiteCpu {
    /// All parts together.
    pub total: Duration,
    /// All parts together, in cores.
    pub cores: f64,
    /// `(part, cpu time, cores)`.
    pub parts: Vec<(String, Duration, f64)>,
}

impl SiteCpu {
    /// The parts' shares, per delivered message when `delivered` is not zero.
    /// Empty for a single server: its total says it all.
    pub fn breakdown(&self, delivered: u64) -> Vec<CpuPart> {
        if self.parts.len() < 2 {
            return Vec::new();
        }
        self.parts
            .iter()
            .map(|(part, cpu, cores)| CpuPart {
                part: part.clone(),
                cpu_us_per_msg: per_message(*cpu, delivered),
                cores: *cores,
            })
            .collect()
    }
}

impl SiteCpu {
    /// The parts' shares in cores over `secs` (churn: no messages to divide
    /// by). Empty for a single server.
    pub fn breakdown_over(&self, secs: f64) -> Vec<CpuPart> {
        if self.parts.len() < 2 || secs <= 0.0 {
            return Vec::new();
        }
        self.parts
            .iter()
            .map(|(part, cpu, _)| CpuPart {
                part: part.clone(),
                cpu_us_per_msg: 0.0,
                cores: cpu.as_secs_f64() / secs,
            })
            .collect()
    }
}

/// CPU time per message in microseconds; 0 when nothing was delivered.
pub fn per_message(cpu: Duration, delivered: u64) -> f64 {
    if delivered > 0 {
        cpu.as_secs_f64() * 1e6 / delivered as f64
    } else {
        0.0
    }
}

impl<'a> Site<'a> {
    /// One server: every client connects to it, its process is the server.
    pub fn single(target: &'a Target, dialer: Dialer) -> Site<'a> {
        Site {
            kind: target.kind,
            nodes: vec![target],
            dialers: vec![Arc::new(dialer)],
            player_nodes: vec![0],
            agent_nodes: vec![0],
            parts: vec![Part {
                name: "server".into(),
                stats: target.stats(),
            }],
        }
    }

    /// The nodes of a cluster, a dialer for each: players go to `player_nodes`
    /// in turn, agents to `agent_nodes`. `shared` are the other processes whose
    /// CPU counts as the server's (Redis, PostgreSQL's process tree).
    pub fn cluster(
        nodes: Vec<&'a Target>,
        dialers: Vec<Dialer>,
        player_nodes: Vec<usize>,
        agent_nodes: Vec<usize>,
        shared: Vec<(&'static str, ProcStats)>,
    ) -> Site<'a> {
        assert!(!nodes.is_empty() && nodes.len() == dialers.len());
        assert!(!player_nodes.is_empty() && !agent_nodes.is_empty());
        assert!(player_nodes
            .iter()
            .chain(&agent_nodes)
            .all(|&i| i < nodes.len()));
        let mut parts: Vec<Part> = (0..nodes.len())
            .map(|i| Part {
                name: format!("node-{}", i + 1),
                stats: nodes[i].stats(),
            })
            .collect();
        parts.extend(shared.into_iter().map(|(name, stats)| Part {
            name: name.to_string(),
            stats,
        }));
        Site {
            kind: nodes[0].kind,
            nodes,
            dialers: dialers.into_iter().map(Arc::new).collect(),
            player_nodes,
            agent_nodes,
            parts,
        }
    }

    /// How many server processes serve clients.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node the `i`-th player connects to.
    pub fn player_node(&self, i: usize) -> &'a Target {
        self.nodes[self.player_nodes[i % self.player_nodes.len()]]
    }

    /// The dialer of the `i`-th player.
    pub fn player_dialer(&self, i: usize) -> &Arc<Dialer> {
        &self.dialers[self.player_nodes[i % self.player_nodes.len()]]
    }

    /// The node the `i`-th agent connects to (and logs in on).
    pub fn agent_node(&self, i: usize) -> &'a Target {
        self.nodes[self.agent_nodes[i % self.agent_nodes.len()]]
    }

    /// The dialer of the `i`-th agent.
    pub fn agent_dialer(&self, i: usize) -> &Arc<Dialer> {
        &self.dialers[self.agent_nodes[i % self.agent_nodes.len()]]
    }

    /// Creates Pitboss agents (on the first node: a cluster's accounts are
    /// shared). See [`Target::add_agents`].
    pub fn add_agents(
        &self,
        prefix: &str,
        count: usize,
        capacity: usize,
    ) -> anyhow::Result<Vec<String>> {
        self.nodes[0].add_agents(prefix, count, capacity)
    }

    /// The CPU time of every part now.
    pub fn mark(&self) -> SiteMark {
        SiteMark {
            at: Instant::now(),
            cpu: self
                .parts
                .iter()
                .map(|p| p.stats.cpu_time().unwrap_or_default())
                .collect(),
        }
    }

    /// CPU use since `earlier`.
    pub fn cpu_since(&self, earlier: &SiteMark) -> SiteCpu {
        let now = self.mark();
        let wall = now.at.duration_since(earlier.at).as_secs_f64();
        let cores = |d: Duration| {
            if wall > 0.0 {
                d.as_secs_f64() / wall
            } else {
                0.0
            }
        };
        let parts: Vec<_> = self
            .parts
            .iter()
            .zip(now.cpu.iter().zip(&earlier.cpu))
            .map(|(p, (&n, &e))| {
                let d = n.saturating_sub(e);
                (p.name.clone(), d, cores(d))
            })
            .collect();
        let total = parts.iter().map(|p| p.1).sum();
        SiteCpu {
            total,
            cores: cores(total),
            parts,
        }
    }

    /// The resident memory of the serving processes together, in bytes (not
    /// Redis's or PostgreSQL's: PostgreSQL's shared buffers show in every
    /// backend's RSS).
    pub fn rss_bytes(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.stats().rss_bytes().unwrap_or(0))
            .sum()
    }
}
