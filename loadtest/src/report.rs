//! What a run leaves behind: a JSON result, a human summary with ratios between
//! the servers, and an SVG plot (latency against offered load, one line per
//! server). Pure formatting: the scenarios measure, this writes.

use crate::churn::ChurnResult;
use crate::idle::IdleResult;
use crate::relay::RelayResult;
use crate::stats::ms;
use crate::target::TargetKind;
use anyhow::Context;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `relay`, `idle`, `churn`, `cluster`, `smoke` or `table`.
    pub scenario: String,
    /// When the run started, Unix milliseconds.
    pub started_unix_ms: u64,
    /// Where it ran.
    pub machine: Machine,
    /// The scenario's settings.
    pub config: serde_json::Value,
    /// Relay results, one per server.
    pub relay: Vec<RelayResult>,
    /// Idle results, one per server.
    pub idle: Vec<IdleResult>,
    /// Churn results, one per server.
    pub churn: Vec<ChurnResult>,
    /// Relay across the nodes of a cluster, one per server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster_relay: Vec<RelayResult>,
    /// Churn across the nodes of a cluster, one per server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster_churn: Vec<ChurnResult>,
    /// The clusters started: how long each took and what its nodes warned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterRun>,
    /// Servers that failed to start or a scenario that failed, with why.
    pub failures: Vec<String>,
    /// Server logs worth keeping (`name`, text), written beside the result as
    /// `logs/<name>.log`.
    #[serde(skip)]
    pub logs: Vec<(String, String)>,
}

/// One cluster a run started, for one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRun {
    /// Which server.
    pub target: TargetKind,
    /// `relay` or `churn`.
    pub scenario: String,
    /// Nodes.
    pub nodes: usize,
    /// Seconds from nothing (Redis, PostgreSQL, nodes) to every node ready.
    pub startup_secs: f64,
    /// PostgreSQL's `fsync` and `synchronous_commit`, read back (Pitboss).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// Warning and error lines the nodes logged, and routing changes (`node:
    /// line`), the last few hundred per node.
    pub node_warnings: Vec<String>,
}

/// The machine a run measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores the machine has.
    pub cores: usize,
    /// The CPUs the generator may run on (`Cpus_allowed_list`).
    pub generator_cpus: String,
    /// The CPUs the servers were pinned to, if pinned.
    pub server_cpus: Option<String>,
    /// `uname -r`-like kernel release, when readable.
    pub kernel: String,
}

impl Machine {
    /// Reads the machine's description.
    pub fn detect(server_cpus: Option<String>) -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let generator_cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("")
            .trim()
            .to_string();
        Self {
            cores: std::fs::read_to_string("/proc/cpuinfo")
                .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
                .unwrap_or(0),
            generator_cpus,
            server_cpus,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }
}

impl Report {
    /// An empty report for a scenario with these settings.
    pub fn new(scenario: &str, machine: Machine, config: serde_json::Value) -> Self {
        Self {
            scenario: scenario.to_string(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            machine,
            config,
            relay: Vec::new(),
            idle: Vec::new(),
            churn: Vec::new(),
            cluster_relay: Vec::new(),
            cluster_churn: Vec::new(),
            clusters: Vec::new(),
            failures: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// Writes `result.json`, `summary.txt` and `plot.svg` (or `plot-<kind>.svg`
    /// when the report holds several scenarios; the cluster scenario's relay
    /// plot is `plot.svg`, its churn plot `plot-churn.svg`) into `dir`, and the
    /// logs kept into `dir/logs`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("result.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("summary.txt"), self.summary())?;
        if !self.logs.is_empty() {
            let logs = dir.join("logs");
            std::fs::create_dir_all(&logs)?;
            for (name, text) in &self.logs {
                std::fs::write(logs.join(format!("{name}.log")), text)?;
            }
        }
        let kinds = [
            !self.relay.is_empty(),
            !self.idle.is_empty(),
            !self.churn.is_empty(),
            !self.cluster_relay.is_empty(),
            !self.cluster_churn.is_empty(),
        ]
        .iter()
        .filter(|&&b| b)
        .count();
        let cluster_only = self.relay.is_empty() && self.idle.is_empty() && self.churn.is_empty();
        let name = |kind: &str| {
            if kinds == 1 || (cluster_only && kind == "cluster-relay") {
                dir.join("plot.svg")
            } else if cluster_only {
                dir.join(format!("plot-{}.svg", kind.trim_start_matches("cluster-")))
            } else {
                dir.join(format!("plot-{kind}.svg"))
            }
        };
        if !self.relay.is_empty() {
            plot_relay(&self.relay, &name("relay"))?;
        }
        if !self.idle.is_empty() {
            plot_idle(&self.idle, &name("idle"))?;
        }
        if !self.churn.is_empty() {
            plot_churn(&self.churn, &name("churn"))?;
        }
        if !self.cluster_relay.is_empty() {
            plot_relay(&self.cluster_relay, &name("cluster-relay"))?;
        }
        if !self.cluster_churn.is_empty() {
            plot_churn(&self.cluster_churn, &name("cluster-churn"))?;
        }
        Ok(())
    }

    /// The human summary: one table per scenario, then the ratios.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "{} run: {} cores, generator on CPUs {}, servers on {}",
            self.scenario,
            m.cores,
            m.generator_cpus,
            m.server_cpus.as_deref().unwrap_or("any CPU")
        );
        if !self.relay.is_empty() {
            s.push_str(&relay_summary(&self.relay));
        }
        if !self.idle.is_empty() {
            s.push_str(&idle_summary(&self.idle));
        }
        if !self.churn.is_empty() {
            s.push_str(&churn_summary(&self.churn));
        }
        if !self.cluster_relay.is_empty() {
            s.push_str(&cluster_relay_summary(&self.cluster_relay));
        }
        if !self.cluster_churn.is_empty() {
            s.push_str(&churn_summary(&self.cluster_churn));
            s.push_str(&cluster_churn_cpu(&self.cluster_churn));
        }
        if !self.clusters.is_empty() {
            s.push_str(&clusters_summary(&self.clusters));
        }
        for f in &self.failures {
            let _ = writeln!(s, "FAILED: {f}");
        }
        s
    }
}

// `write!` to a String cannot fail; the results are ignored throughout.

fn relay_summary(results: &[RelayResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nrelay (latency from scheduled send time to receipt, ms)"
    );
    let _ = writeln!(
        s,
        "{:<9} {:>6} {:>9} {:>10} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>6} {:>4} {:>4} {:>4}",
        "target", "convs", "offered/s", "delivered/s", "p50", "p99", "p99.9", "max", "cpu µs/m", "srv cpu", "gen cpu", "lost", "dup", "ooo", "err"
    );
    for r in results {
        for st in &r.steps {
            let _ = writeln!(
                s,
                "{:<9} {:>6} {:>9.0} {:>11.0} {:>7} {:>7} {:>7} {:>8} {:>8.1} {:>7.2} {:>7.2} {:>6} {:>4} {:>4} {:>4}",
                r.target.name(),
                r.conversations,
                st.offered_per_sec,
                st.delivered_per_sec,
                ms(st.latency.p50_us),
                ms(st.latency.p99_us),
                ms(st.latency.p999_us),
                ms(st.latency.max_us),
                st.server_cpu_us_per_msg,
                st.server_cpu_cores,
                st.generator_cpu_cores,
                st.lost,
                st.duplicated,
                st.out_of_order + st.seq_regressions + st.seq_gaps,
                st.errors.values().sum::<u64>(),
            );
            if !st.errors.is_empty() {
                let _ = writeln!(s, "          errors: {:?}", st.errors);
            }
            anomalies(&mut s, st);
        }
    }
    for r in results {
        let _ = writeln!(
            s,
            "{}: highest offered load within the p99 objective: {}; server RSS with all conversations {:.1} MiB over {} sockets",
            r.target.name(),
            r.max_offered_within_slo.map_or("none".to_string(), |v| format!("{v:.0} msg/s")),
            r.server_rss_bytes as f64 / 1048576.0,
            r.sockets
        );
    }
    if let Some(p) = results.iter().find(|r| r.target == TargetKind::Pitboss) {
        for other in results.iter().filter(|r| r.target != TargetKind::Pitboss) {
            for st in &p.steps {
                if let Some(o) = other
                    .steps
                    .iter()
                    .find(|o| o.offered_per_sec == st.offered_per_sec)
                {
                    let _ = writeln!(
                        s,
                        "pitboss / {} at {:.0} msg/s: p99 {} , CPU per message {}",
                        other.target.name(),
                        st.offered_per_sec,
                        ratio(st.latency.p99_us as f64, o.latency.p99_us as f64),
                        ratio(st.server_cpu_us_per_msg, o.server_cpu_us_per_msg),
                    );
                }
            }
        }
    }
    s
}

fn idle_summary(results: &[IdleResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nidle (server RSS per connection = (RSS with C − RSS with none) / C)"
    );
    let _ = writeln!(
        s,
        "{:<9} {:>8} {:>8} {:>6} {:>8} {:>11} {:>13} {:>9} {:>8} {:>8}",
        "target",
        "asked",
        "held",
        "failed",
        "workers",
        "base MiB",
        "loaded MiB",
        "KiB/conn",
        "connect s",
        "idle cpu"
    );
    for r in results {
        let _ = writeln!(
            s,
            "{:<9} {:>8} {:>8} {:>6} {:>8} {:>11.1} {:>13.1} {:>9.2} {:>8.1} {:>8.3}",
            r.target.name(),
            r.connections,
            r.alive_at_end,
            r.failed,
            r.workers,
            r.server_rss_base_bytes as f64 / 1048576.0,
            r.server_rss_loaded_bytes as f64 / 1048576.0,
            r.rss_per_connection_bytes / 1024.0,
            r.connect_secs,
            r.server_cpu_cores_idle
        );
        if let Some(e) = &r.first_error {
            let _ = writeln!(s, "          first error: {e}");
        }
    }
    if let Some(p) = results.iter().find(|r| r.target == TargetKind::Pitboss) {
        for o in results.iter().filter(|r| r.target != TargetKind::Pitboss) {
            let _ = writeln!(
                s,
                "pitboss / {}: memory per connection {}",
                o.target.name(),
                ratio(p.rss_per_connection_bytes, o.rss_per_connection_bytes)
            );
        }
    }
    s
}

fn churn_summary(results: &[ChurnResult]) -> String {
    let mut s = String::new();
    let nodes = results.iter().map(|r| r.nodes).max().unwrap_or(1);
    let _ = writeln!(
        s,
        "\n{}churn (from the player's start to assigned, ms; `free`: players who found a free agent and nobody waiting)",
        if nodes > 1 {
            format!("cluster ({nodes} nodes; players on nodes 1 and 3, agents on node 2) ")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "{:<9} {:>6} {:>8} {:>8} {:>6} {:>7} {:>7} {:>8} {:>13} {:>10} {:>6} {:>5} {:>7} {:>4}",
        "target",
        "λ/s",
        "arrived",
        "assigned",
        "unasg",
        "p50",
        "p99",
        "max",
        "free p50/p99",
        "decide p99",
        "queue",
        "fifo",
        "srv cpu",
        "err"
    );
    for r in results {
        for st in &r.steps {
            let _ = writeln!(
                s,
                "{:<9} {:>6} {:>8} {:>8} {:>6} {:>7} {:>7} {:>8} {:>13} {:>10} {:>6} {:>5} {:>7.3} {:>4}",
                r.target.name(),
                st.arrival_rate,
                st.arrivals,
                st.assigned,
                st.unassigned,
                ms(st.assign_latency.p50_us),
                ms(st.assign_latency.p99_us),
                ms(st.assign_latency.max_us),
                format!(
                    "{}/{}",
                    ms(st.free_agent_assign_latency.p50_us),
                    ms(st.free_agent_assign_latency.p99_us)
                ),
                ms(st.decide_latency.p99_us),
                st.max_queue_position,
                st.fifo_violations,
                st.server_cpu_cores,
                st.errors.values().sum::<u64>()
            );
            if !st.errors.is_empty() {
                let _ = writeln!(s, "          errors: {:?}", st.errors);
            }
        }
    }
    if let Some(p) = results.iter().find(|r| r.target == TargetKind::Pitboss) {
        for o in results.iter().filter(|r| r.target != TargetKind::Pitboss) {
            for st in &p.steps {
                if let Some(os) = o.steps.iter().find(|x| x.arrival_rate == st.arrival_rate) {
                    let _ = writeln!(
                        s,
                        "pitboss / {} at λ={}: assignment p99 {}, to a free agent p99 {}",
                        o.target.name(),
                        st.arrival_rate,
                        ratio(
                            st.assign_latency.p99_us as f64,
                            os.assign_latency.p99_us as f64
                        ),
                        ratio(
                            st.free_agent_assign_latency.p99_us as f64,
                            os.free_agent_assign_latency.p99_us as f64
                        )
                    );
                }
            }
        }
    }
    s
}

fn cluster_relay_summary(results: &[RelayResult]) -> String {
    let mut s = String::new();
    let nodes = results.iter().map(|r| r.nodes).max().unwrap_or(0);
    let _ = writeln!(
        s,
        "\ncluster relay ({nodes} nodes; players on nodes 1 and 3, agents on node 2: every message crosses nodes;\n\
         latency from scheduled send time to receipt, ms; CPU µs per delivered message: nodes summed, Redis, PostgreSQL, all)"
    );
    let _ = writeln!(
        s,
        "{:<9} {:>6} {:>9} {:>11} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>4} {:>4} {:>4}",
        "target", "convs", "offered/s", "delivered/s", "p50", "p99", "p99.9", "max", "nodes", "redis", "pg", "all", "srv cpu", "gen cpu", "lost", "dup", "ooo", "err"
    );
    let part = |st: &crate::relay::RelayStep, name: &str| {
        let found: Vec<_> = st
            .server_cpu_parts
            .iter()
            .filter(|p| p.part == name || (name == "nodes" && p.part.starts_with("node-")))
            .collect();
        if found.is_empty() {
            "—".to_string()
        } else {
            format!("{:.1}", found.iter().map(|p| p.cpu_us_per_msg).sum::<f64>())
        }
    };
    for r in results {
        for st in &r.steps {
            let _ = writeln!(
                s,
                "{:<9} {:>6} {:>9.0} {:>11.0} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>7} {:>7.1} {:>7.2} {:>7.2} {:>6} {:>4} {:>4} {:>4}",
                r.target.name(),
                r.conversations,
                st.offered_per_sec,
                st.delivered_per_sec,
                ms(st.latency.p50_us),
                ms(st.latency.p99_us),
                ms(st.latency.p999_us),
                ms(st.latency.max_us),
                part(st, "nodes"),
                part(st, "redis"),
                part(st, "postgres"),
                st.server_cpu_us_per_msg,
                st.server_cpu_cores,
                st.generator_cpu_cores,
                st.lost,
                st.duplicated,
                st.out_of_order + st.seq_regressions + st.seq_gaps,
                st.errors.values().sum::<u64>(),
            );
            if !st.errors.is_empty() {
                let _ = writeln!(s, "          errors: {:?}", st.errors);
            }
            anomalies(&mut s, st);
        }
    }
    for r in results {
        for st in &r.steps {
            if st.ack_latency.count > 0 {
                let _ = writeln!(
                    s,
                    "{} at {:.0} msg/s: write → ack (stored) p50 {} p99 {} p99.9 {} ms; write → receipt p50 {} p99 {} ms",
                    r.target.name(),
                    st.offered_per_sec,
                    ms(st.ack_latency.p50_us),
                    ms(st.ack_latency.p99_us),
                    ms(st.ack_latency.p999_us),
                    ms(st.latency_from_write.p50_us),
                    ms(st.latency_from_write.p99_us),
                );
            }
        }
    }
    for r in results {
        for st in &r.steps {
            let per_node: Vec<String> = st
                .server_cpu_parts
                .iter()
                .filter(|p| p.part.starts_with("node-"))
                .map(|p| format!("{} {:.1}", p.part, p.cpu_us_per_msg))
                .collect();
            let _ = writeln!(
                s,
                "{} at {:.0} msg/s: CPU µs per message by node: {}",
                r.target.name(),
                st.offered_per_sec,
                per_node.join(", ")
            );
        }
    }
    for r in results {
        let _ = writeln!(
            s,
            "{}: highest offered load within the p99 objective: {}; nodes' RSS with all conversations {:.1} MiB over {} sockets",
            r.target.name(),
            r.max_offered_within_slo.map_or("none".to_string(), |v| format!("{v:.0} msg/s")),
            r.server_rss_bytes as f64 / 1048576.0,
            r.sockets
        );
    }
    let nodes_cpu = |st: &crate::relay::RelayStep| {
        st.server_cpu_parts
            .iter()
            .filter(|p| p.part.starts_with("node-"))
            .map(|p| p.cpu_us_per_msg)
            .sum::<f64>()
    };
    if let Some(p) = results.iter().find(|r| r.target == TargetKind::Pitboss) {
        for other in results.iter().filter(|r| r.target != TargetKind::Pitboss) {
            for st in &p.steps {
                if let Some(o) = other
                    .steps
                    .iter()
                    .find(|o| o.offered_per_sec == st.offered_per_sec)
                {
                    let _ = writeln!(
                        s,
                        "pitboss / {} at {:.0} msg/s: p99 {}, CPU per message {} (all processes), {} (nodes only)",
                        other.target.name(),
                        st.offered_per_sec,
                        ratio(st.latency.p99_us as f64, o.latency.p99_us as f64),
                        ratio(st.server_cpu_us_per_msg, o.server_cpu_us_per_msg),
                        ratio(nodes_cpu(st), nodes_cpu(o)),
                    );
                }
            }
        }
    }
    s
}

/// The first few anomalies of a relay step, one per line.
fn anomalies(s: &mut String, st: &crate::relay::RelayStep) {
    for a in st.anomalies.iter().take(5) {
        let _ = writeln!(s, "          {a}");
    }
    if st.anomalies.len() > 5 {
        let _ = writeln!(
            s,
            "          … ({} described in result.json)",
            st.anomalies.len()
        );
    }
}

/// The cluster churn's CPU use, part by part.
fn cluster_churn_cpu(results: &[ChurnResult]) -> String {
    let mut s = String::new();
    for r in results {
        for st in &r.steps {
            let parts: Vec<String> = st
                .server_cpu_parts
                .iter()
                .map(|p| format!("{} {:.3}", p.part, p.cores))
                .collect();
            let _ = writeln!(
                s,
                "{} at λ={}: server CPU in cores: {} (all {:.3})",
                r.target.name(),
                st.arrival_rate,
                parts.join(", "),
                st.server_cpu_cores
            );
        }
    }
    s
}

fn clusters_summary(runs: &[ClusterRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    for c in runs {
        let _ = writeln!(
            s,
            "{} cluster for {}: {} nodes ready in {:.1} s{}; {} warning/error/routing lines from the nodes{}",
            c.target.name(),
            c.scenario,
            c.nodes,
            c.startup_secs,
            c.postgres
                .as_ref()
                .map_or(String::new(), |p| format!(" (PostgreSQL {p})")),
            c.node_warnings.len(),
            if c.node_warnings.is_empty() { "" } else { ":" }
        );
        for w in c.node_warnings.iter().take(12) {
            let _ = writeln!(s, "    {w}");
        }
        if c.node_warnings.len() > 12 {
            let _ = writeln!(s, "    … (all in result.json and logs/)");
        }
    }
    s
}

/// `a / b` as `1.23×`, or `n/a` when `b` is zero.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "n/a".into()
    }
}

/// The colour of a server's line, the same in every plot.
fn colour(kind: TargetKind) -> plotters::style::RGBColor {
    use plotters::style::RGBColor;
    match kind {
        TargetKind::Pitboss => RGBColor(0xc0, 0x39, 0x2b),
        TargetKind::Bare => RGBColor(0x27, 0x6f, 0xbf),
        TargetKind::Socketio => RGBColor(0x2e, 0x8b, 0x57),
    }
}

/// ` ×3` after a server's name in a plot of a cluster, nothing for one node.
fn nodes_suffix(nodes: usize) -> String {
    if nodes > 1 {
        format!(" ×{nodes}")
    } else {
        String::new()
    }
}

/// One line of a plot: its label, colour, dashed or not, and its points.
struct Line {
    label: String,
    kind: TargetKind,
    thin: bool,
    points: Vec<(f64, f64)>,
}

/// One run's p99 (bold) and p50 (thin) lines, in ms; `point` gives each step's x
/// and its p50 and p99 in µs.
fn latency_lines<S>(
    kind: TargetKind,
    nodes: usize,
    steps: &[S],
    point: impl Fn(&S) -> (f64, u64, u64),
) -> [Line; 2] {
    let name = format!("{}{}", kind.name(), nodes_suffix(nodes));
    let line = |label: &str, thin: bool, pick: fn((f64, u64, u64)) -> (f64, u64)| Line {
        label: format!("{name} {label}"),
        kind,
        thin,
        points: steps
            .iter()
            .map(|s| {
                let (x, us) = pick(point(s));
                (x, us as f64 / 1000.0)
            })
            .collect(),
    };
    [
        line("p99", false, |(x, _, p99)| (x, p99)),
        line("p50", true, |(x, p50, _)| (x, p50)),
    ]
}

fn plot_relay(results: &[RelayResult], path: &Path) -> anyhow::Result<()> {
    let lines: Vec<Line> = results
        .iter()
        .flat_map(|r| {
            latency_lines(r.target, r.nodes, &r.steps, |s| {
                (s.offered_per_sec, s.latency.p50_us, s.latency.p99_us)
            })
        })
        .collect();
    let clustered = results.iter().any(|r| r.nodes > 1);
    plot(
        path,
        if clustered {
            "Cluster relay: cross-node delivery latency against offered load"
        } else {
            "Relay: delivery latency against offered load"
        },
        "offered load (messages/s)",
        "latency (ms, log)",
        &lines,
        true,
    )
}

fn plot_churn(results: &[ChurnResult], path: &Path) -> anyhow::Result<()> {
    let lines: Vec<Line> = results
        .iter()
        .flat_map(|r| {
            latency_lines(r.target, r.nodes, &r.steps, |s| {
                (
                    s.arrival_rate,
                    s.assign_latency.p50_us,
                    s.assign_latency.p99_us,
                )
            })
        })
        .collect();
    let clustered = results.iter().any(|r| r.nodes > 1);
    plot(
        path,
        if clustered {
            "Cluster churn: arrival-to-assignment latency against arrival rate"
        } else {
            "Queue churn: arrival-to-assignment latency against arrival rate"
        },
        "arrival rate λ (players/s)",
        "latency (ms, log)",
        &lines,
        true,
    )
}

fn plot_idle(results: &[IdleResult], path: &Path) -> anyhow::Result<()> {
    let lines: Vec<Line> = results
        .iter()
        .map(|r| Line {
            label: format!(
                "{} ({:.1} KiB/conn)",
                r.target.name(),
                r.rss_per_connection_bytes / 1024.0
            ),
            kind: r.target,
            thin: false,
            points: vec![
                (0.0, r.server_rss_base_bytes as f64 / 1048576.0),
                (
                    r.connected as f64,
                    r.server_rss_loaded_bytes as f64 / 1048576.0,
                ),
            ],
        })
        .collect();
    plot(
        path,
        "Idle: server RSS against connections held",
        "connections",
        "server RSS (MiB)",
        &lines,
        false,
    )
}

/// Draws lines with markers. With `log_y` the y axis is logarithmic (latencies
/// span orders of magnitude between an idle relay and a saturated one).
fn plot(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[Line],
    log_y: bool,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let pts = || lines.iter().flat_map(|l| l.points.iter().copied());
    let x_max = pts().map(|p| p.0).fold(0.0, f64::max).max(1.0) * 1.05;
    let x_min = 0.0;
    let floor = 0.01; // 10 µs: below any loopback round trip.
    let y_max = pts().map(|p| p.1).fold(0.0, f64::max).max(floor) * 1.5;
    let y_min = if log_y {
        pts()
            .map(|p| p.1.max(floor))
            .fold(f64::INFINITY, f64::min)
            .min(y_max / 10.0)
            / 1.5
    } else {
        0.0
    };
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let draw = |err: &dyn std::fmt::Debug| anyhow::anyhow!("drawing {}: {err:?}", path.display());
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .draw()
                .map_err(|e| draw(&e))?;
            for l in lines {
                let c = colour(l.kind);
                let style = if l.thin {
                    c.mix(0.6).stroke_width(1)
                } else {
                    c.stroke_width(2)
                };
                let pts: Vec<(f64, f64)> = l
                    .points
                    .iter()
                    .map(|&(x, y)| (x, if log_y { y.max(floor) } else { y }))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), style))
                    .map_err(|e| draw(&e))?
                    .label(l.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(|e| draw(&e))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| draw(&e))?;
        }};
    }
    if log_y {
        finish!(builder
            .build_cartesian_2d(x_min..x_max, (y_min..y_max).log_scale())
            .map_err(|e| draw(&e))?);
    } else {
        finish!(builder
            .build_cartesian_2d(x_min..x_max, y_min..y_max)
            .map_err(|e| draw(&e))?);
    }
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}
