//! Runs a scenario against each chosen server in turn (start, measure, stop) and
//! gathers one report; the cluster scenario likewise against each server's
//! cluster; also the two fixed suites: `smoke` (seconds, small N, what CI runs)
//! and `table` (the published numbers).

use crate::churn::{self, ChurnConfig};
use crate::cluster;
use crate::idle::{self, IdleConfig};
use crate::progress::Progress;
use crate::relay::{self, RelayConfig};
use crate::report::{ClusterRun, Machine, Report};
use crate::site::Site;
use crate::stats::ms;
use crate::target::{Target, TargetKind, TargetOptions};
use crate::wire::{self, Dialer};
use serde::Serialize;
use std::fmt::Write as _;

/// What every scenario run shares.
#[derive(Debug, Clone)]
pub struct Common {
    /// The servers to drive, in order.
    pub targets: Vec<TargetKind>,
    /// How to start them.
    pub opts: TargetOptions,
    /// The last byte of the first loopback source address.
    pub first_source: u8,
}

impl Common {
    fn report(&self, scenario: &str, config: &impl serde::Serialize) -> Report {
        Report::new(
            scenario,
            Machine::detect(self.opts.server_cpus.clone()),
            serde_json::to_value(config).unwrap_or_default(),
        )
    }

    fn start(&self, kind: TargetKind, report: &mut Report) -> Option<Target> {
        match tokio::task::block_in_place(|| Target::start(kind, &self.opts)) {
            Ok(t) => Some(t),
            Err(err) => {
                tracing::error!(target_kind = kind.name(), "{err:#}");
                report
                    .failures
                    .push(format!("{} did not start: {err:#}", kind.name()));
                None
            }
        }
    }

    fn dialer(&self, target: &Target) -> Dialer {
        // Relay and churn stay far below one address's ports; two spread them.
        Dialer::new(target.addr, wire::loopback_sources(self.first_source, 2))
    }
}

/// Records a scenario's failure against a server, with the server's last words.
fn failed(report: &mut Report, target: &mut Target, scenario: &str, err: anyhow::Error) {
    let alive = target.alive();
    tracing::error!(target_kind = target.kind.name(), "{scenario}: {err:#}");
    if !alive {
        tracing::error!("the server exited; its last log lines:\n{}", target.logs());
    }
    report.failures.push(format!(
        "{scenario} on {}: {err:#}{}",
        target.kind.name(),
        if alive { "" } else { " (the server exited)" }
    ));
}

/// The relay scenario on every chosen server.
pub async fn relay(common: &Common, cfg: &RelayConfig) -> Report {
    let mut report = common.report("relay", cfg);
    relay_into(common, cfg, &mut report).await;
    report
}

async fn relay_into(common: &Common, cfg: &RelayConfig, report: &mut Report) {
    let mut progress = Progress::new();
    for &kind in &common.targets {
        let Some(mut target) = common.start(kind, report) else {
            continue;
        };
        let site = Site::single(&target, common.dialer(&target));
        match relay::run(&site, cfg, &mut progress).await {
            Ok(r) => report.relay.push(r),
            Err(err) => failed(report, &mut target, "relay", err),
        }
        progress.done();
        target.stop();
    }
}

/// The idle scenario on every chosen server.
pub async fn idle(common: &Common, cfg: &IdleConfig) -> Report {
    let mut report = common.report("idle", cfg);
    idle_into(common, cfg, &mut report).await;
    report
}

async fn idle_into(common: &Common, cfg: &IdleConfig, report: &mut Report) {
    let mut progress = Progress::new();
    for &kind in &common.targets {
        let Some(mut target) = common.start(kind, report) else {
            continue;
        };
        match idle::run(&target, cfg, &mut progress).await {
            Ok(r) => report.idle.push(r),
            Err(err) => failed(report, &mut target, "idle", err),
        }
        progress.done();
        target.stop();
    }
}

/// The churn scenario on every chosen server.
pub async fn churn(common: &Common, cfg: &ChurnConfig) -> Report {
    let mut report = common.report("churn", cfg);
    churn_into(common, cfg, &mut report).await;
    report
}

async fn churn_into(common: &Common, cfg: &ChurnConfig, report: &mut Report) {
    let mut progress = Progress::new();
    for &kind in &common.targets {
        let Some(mut target) = common.start(kind, report) else {
            continue;
        };
        let site = Site::single(&target, common.dialer(&target));
        match churn::run(&site, cfg, &mut progress).await {
            Ok(r) => report.churn.push(r),
            Err(err) => failed(report, &mut target, "churn", err),
        }
        progress.done();
        target.stop();
    }
}

/// How the cluster scenario runs: relay, churn, or both, on clusters of `nodes`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterConfig {
    /// Nodes per cluster (agents on node 2, players on the others).
    pub nodes: usize,
    /// The relay part, if run.
    pub relay: Option<RelayConfig>,
    /// The churn part, if run.
    pub churn: Option<ChurnConfig>,
}

/// The cluster scenario on every chosen server that has a cluster mode (Pitboss,
/// Socket.IO with its Redis adapter); a fresh cluster for each part.
pub async fn cluster(common: &Common, cfg: &ClusterConfig) -> Report {
    let mut report = common.report("cluster", cfg);
    cluster_into(common, cfg, &mut report).await;
    report
}

/// The servers of `common` that run as a cluster.
fn clustered(common: &Common) -> Vec<TargetKind> {
    common
        .targets
        .iter()
        .copied()
        .filter(|&k| k != TargetKind::Bare)
        .collect()
}

async fn cluster_into(common: &Common, cfg: &ClusterConfig, report: &mut Report) {
    let mut progress = Progress::new();
    for kind in clustered(common) {
        if let Some(relay_cfg) = &cfg.relay {
            let Some(mut c) = start_cluster(common, kind, cfg.nodes, "relay", report) else {
                continue;
            };
            let outcome = relay::run(&c.site(common.first_source), relay_cfg, &mut progress).await;
            progress.done();
            match outcome {
                Ok(r) => {
                    for st in r.steps.iter().filter(|st| st.faulty()) {
                        report.failures.push(format!(
                            "cluster relay on {} at {:.0} msg/s: sent {} delivered {} lost {} duplicated {} out of order {} seq regressions {} seq gaps {} errors {:?}",
                            kind.name(), st.offered_per_sec, st.sent, st.delivered, st.lost,
                            st.duplicated, st.out_of_order, st.seq_regressions, st.seq_gaps, st.errors
                        ));
                    }
                    report.cluster_relay.push(r);
                }
                Err(err) => cluster_failed(report, &mut c, "cluster relay", &err),
            }
            finish_cluster(report, c, "relay");
        }
        if let Some(churn_cfg) = &cfg.churn {
            let Some(mut c) = start_cluster(common, kind, cfg.nodes, "churn", report) else {
                continue;
            };
            let outcome = churn::run(&c.site(common.first_source), churn_cfg, &mut progress).await;
            progress.done();
            match outcome {
                Ok(r) => {
                    for st in r.steps.iter().filter(|st| st.faulty()) {
                        report.failures.push(format!(
                            "cluster churn on {} at λ={}: {} arrived, {} assigned, {} unassigned, {} not closed, {} FIFO breaches, errors {:?}",
                            kind.name(), st.arrival_rate, st.arrivals, st.assigned, st.unassigned,
                            st.not_closed, st.fifo_violations, st.errors
                        ));
                    }
                    report.cluster_churn.push(r);
                }
                Err(err) => cluster_failed(report, &mut c, "cluster churn", &err),
            }
            finish_cluster(report, c, "churn");
        }
    }
}

/// Starts a cluster, or records why it did not start.
fn start_cluster(
    common: &Common,
    kind: TargetKind,
    nodes: usize,
    scenario: &str,
    report: &mut Report,
) -> Option<cluster::Cluster> {
    let mut progress = Progress::new();
    progress.show(&format!(
        "[cluster {scenario}] starting {nodes} {} nodes",
        kind.name()
    ));
    let started = tokio::task::block_in_place(|| cluster::start(kind, &common.opts, nodes));
    progress.done();
    match started {
        Ok(c) => Some(c),
        Err(err) => {
            tracing::error!(target_kind = kind.name(), "{err:#}");
            report.failures.push(format!(
                "cluster {scenario} on {}: the cluster did not start: {err:#}",
                kind.name()
            ));
            None
        }
    }
}

/// Records a cluster scenario's failure, naming any node that exited.
fn cluster_failed(
    report: &mut Report,
    c: &mut cluster::Cluster,
    scenario: &str,
    err: &anyhow::Error,
) {
    let mut exited = Vec::new();
    for node in &mut c.nodes {
        if !node.alive() {
            tracing::error!(
                "{} exited; its last log lines:
{}",
                node.label,
                node.logs()
            );
            exited.push(node.label.clone());
        }
    }
    tracing::error!(target_kind = c.kind.name(), "{scenario}: {err:#}");
    report.failures.push(format!(
        "{scenario} on {}: {err:#}{}",
        c.kind.name(),
        if exited.is_empty() {
            String::new()
        } else {
            format!(" ({} exited)", exited.join(", "))
        }
    ));
}

/// Keeps what the cluster's servers logged, then stops it.
fn finish_cluster(report: &mut Report, c: cluster::Cluster, scenario: &str) {
    report.clusters.push(ClusterRun {
        target: c.kind,
        scenario: scenario.to_string(),
        nodes: c.nodes.len(),
        startup_secs: c.startup_secs,
        postgres: c.postgres_settings(),
        node_warnings: c.warnings(),
    });
    for (name, text) in c.log_excerpts() {
        report
            .logs
            .push((format!("cluster-{scenario}-{name}"), text));
    }
    tokio::task::block_in_place(|| c.stop());
}

/// The smoke run's settings for the cluster: a few seconds, a few conversations.
pub fn smoke_cluster_config() -> ClusterConfig {
    ClusterConfig {
        nodes: 3,
        relay: Some(RelayConfig {
            conversations: 12,
            agent_capacity: 6,
            // 2.5 messages per second per side.
            offered: vec![60.0],
            step_secs: 2.0,
            warmup_secs: 0.5,
            drain_secs: 3.0,
            text_bytes: 64,
            stop_p99_ms: 10_000.0,
            slo_p99_ms: 10.0,
        }),
        churn: Some(ChurnConfig {
            arrivals: vec![5.0],
            step_secs: 3.0,
            // One agent, on node 2: offers from players on nodes 1 and 3 arrive
            // on one socket, so the FIFO judgement stays exact.
            agents: 1,
            capacity: 4,
            service_secs: 0.5,
            patience_secs: 15.0,
            seed: 1,
            fifo_tolerance_ms: 1.0,
        }),
    }
}

/// The smoke run's settings: every scenario, seconds each, small N.
pub fn smoke_configs() -> (RelayConfig, IdleConfig, ChurnConfig) {
    (
        RelayConfig {
            conversations: 20,
            agent_capacity: 10,
            // 2.5 then 5 messages per second per side: a two-step sweep, so the
            // sweep path runs too.
            offered: vec![100.0, 200.0],
            step_secs: 2.0,
            warmup_secs: 0.5,
            drain_secs: 3.0,
            text_bytes: 64,
            stop_p99_ms: 10_000.0,
            slo_p99_ms: 10.0,
        },
        IdleConfig {
            connections: 200,
            // Two workers, so the multi-process path runs too.
            per_worker: 100,
            settle_secs: 0.3,
            hold_secs: 1.0,
            first_source: 10,
        },
        ChurnConfig {
            arrivals: vec![5.0],
            step_secs: 3.0,
            // One agent: every offer arrives on one socket, in the server's order,
            // so the FIFO judgement is exact (across sockets it has a tolerance).
            agents: 1,
            capacity: 4,
            service_secs: 0.5,
            patience_secs: 15.0,
            seed: 1,
            fifo_tolerance_ms: 1.0,
        },
    )
}

/// One check of the smoke run: a scenario on a server, and what went wrong.
#[derive(Debug, Clone)]
pub struct Check {
    /// `relay on pitboss` and the like.
    pub name: String,
    /// Empty when the check passed.
    pub problems: Vec<String>,
}

/// Every scenario against every chosen server, small and short. Returns the
/// report and one check per scenario and server.
pub async fn smoke(common: &Common) -> (Report, Vec<Check>) {
    let (relay_cfg, idle_cfg, churn_cfg) = smoke_configs();
    let cluster_cfg = smoke_cluster_config();
    let mut report = common.report(
        "smoke",
        &serde_json::json!({
            "relay": relay_cfg, "idle": idle_cfg, "churn": churn_cfg, "cluster": cluster_cfg
        }),
    );
    relay_into(common, &relay_cfg, &mut report).await;
    idle_into(common, &idle_cfg, &mut report).await;
    churn_into(common, &churn_cfg, &mut report).await;
    cluster_into(common, &cluster_cfg, &mut report).await;
    let mut checks = Vec::new();
    for &kind in &common.targets {
        let name = kind.name();
        let failures = |scenario: &str| -> Vec<String> {
            let prefix = format!("{scenario} on {name}");
            let start = format!("{name} did not start");
            report
                .failures
                .iter()
                .filter(|f| f.starts_with(&prefix) || f.starts_with(&start))
                .cloned()
                .collect()
        };

        let mut problems = failures("relay");
        match report.relay.iter().find(|r| r.target == kind) {
            Some(r) => {
                for st in &r.steps {
                    if st.faulty() || st.delivered == 0 {
                        problems.push(format!(
                            "at {} msg/s: sent {} delivered {} lost {} dup {} ooo {} seq regressions {} seq gaps {} errors {:?} {:?}",
                            st.offered_per_sec,
                            st.sent,
                            st.delivered,
                            st.lost,
                            st.duplicated,
                            st.out_of_order,
                            st.seq_regressions,
                            st.seq_gaps,
                            st.errors,
                            st.anomalies.first()
                        ));
                    }
                }
                if r.steps.len() != relay_cfg.offered.len() {
                    problems.push("the sweep stopped early".into());
                }
            }
            None if problems.is_empty() => problems.push("no result".into()),
            None => {}
        }
        checks.push(Check {
            name: format!("relay on {name}"),
            problems,
        });

        let mut problems = failures("idle");
        match report.idle.iter().find(|r| r.target == kind) {
            Some(r) if r.faulty() => problems.push(format!(
                "{} of {} connected, {} failed, {} alive at the end ({:?})",
                r.connected, r.connections, r.failed, r.alive_at_end, r.first_error
            )),
            Some(_) => {}
            None if problems.is_empty() => problems.push("no result".into()),
            None => {}
        }
        checks.push(Check {
            name: format!("idle on {name}"),
            problems,
        });

        let mut problems = failures("churn");
        match report.churn.iter().find(|r| r.target == kind) {
            Some(r) => {
                for st in &r.steps {
                    if st.faulty() || st.assigned == 0 {
                        problems.push(format!(
                            "at λ={}: {} arrived, {} assigned, {} unassigned, {} not closed, {} FIFO violations, errors {:?}",
                            st.arrival_rate, st.arrivals, st.assigned, st.unassigned, st.not_closed, st.fifo_violations, st.errors
                        ));
                    }
                }
            }
            None if problems.is_empty() => problems.push("no result".into()),
            None => {}
        }
        checks.push(Check {
            name: format!("churn on {name}"),
            problems,
        });
    }
    for kind in clustered(common) {
        let name = kind.name();
        for scenario in ["relay", "churn"] {
            let prefix = format!("cluster {scenario} on {name}");
            let mut problems: Vec<String> = report
                .failures
                .iter()
                .filter(|f| f.starts_with(&prefix))
                .cloned()
                .collect();
            let steps_delivered: Option<Vec<bool>> = match scenario {
                "relay" => report
                    .cluster_relay
                    .iter()
                    .find(|r| r.target == kind)
                    .map(|r| r.steps.iter().map(|s| s.delivered > 0).collect()),
                _ => report
                    .cluster_churn
                    .iter()
                    .find(|r| r.target == kind)
                    .map(|r| r.steps.iter().map(|s| s.assigned > 0).collect()),
            };
            match steps_delivered {
                Some(steps) if steps.is_empty() || steps.contains(&false) => {
                    problems.push("a step delivered or assigned nothing".into())
                }
                Some(_) => {}
                None if problems.is_empty() => problems.push("no result".into()),
                None => {}
            }
            checks.push(Check {
                name: prefix,
                problems,
            });
        }
    }
    (report, checks)
}

/// The settings behind the published table.
pub fn table_configs() -> (IdleConfig, RelayConfig, RelayConfig, ChurnConfig) {
    (
        IdleConfig {
            connections: 15_000,
            per_worker: 7_500,
            settle_secs: 3.0,
            hold_secs: 10.0,
            first_source: 10,
        },
        // The objective: 1,000 conversations at 1 message per second per side.
        RelayConfig {
            conversations: 1_000,
            agent_capacity: 50,
            offered: vec![2_000.0],
            step_secs: 30.0,
            warmup_secs: 2.0,
            drain_secs: 5.0,
            text_bytes: 64,
            stop_p99_ms: 1_000.0,
            slo_p99_ms: 5.0,
        },
        // The sweep to saturation, with 20,000 msg/s (the CPU comparison point)
        // among its steps; 2,000 apart up to 10,000 and 5,000 apart to 30,000, so
        // that each server's highest load within the objective is read closely.
        RelayConfig {
            conversations: 500,
            agent_capacity: 50,
            offered: vec![
                1_000.0, 2_000.0, 4_000.0, 6_000.0, 8_000.0, 10_000.0, 15_000.0, 20_000.0,
                25_000.0, 30_000.0, 40_000.0, 60_000.0, 80_000.0,
            ],
            step_secs: 10.0,
            warmup_secs: 1.0,
            drain_secs: 5.0,
            text_bytes: 64,
            stop_p99_ms: 200.0,
            slo_p99_ms: 10.0,
        },
        ChurnConfig {
            arrivals: vec![10.0, 50.0, 100.0],
            step_secs: 20.0,
            agents: 20,
            capacity: 5,
            service_secs: 0.5,
            patience_secs: 30.0,
            seed: 1,
            fifo_tolerance_ms: 1.0,
        },
    )
}

/// Runs the published table's scenarios and renders it as Markdown.
pub async fn table(common: &Common) -> (Vec<(String, Report)>, String) {
    let (idle_cfg, relay_cfg, sweep_cfg, churn_cfg) = table_configs();
    let idle_r = idle(common, &idle_cfg).await;
    let relay_r = relay(common, &relay_cfg).await;
    let sweep_r = relay(common, &sweep_cfg).await;
    let churn_r = churn(common, &churn_cfg).await;
    let md = table_markdown(common, &idle_r, &relay_r, &sweep_r, &churn_r);
    (
        vec![
            ("idle".into(), idle_r),
            ("relay".into(), relay_r),
            ("sweep".into(), sweep_r),
            ("churn".into(), churn_r),
        ],
        md,
    )
}

fn table_markdown(
    common: &Common,
    idle: &Report,
    relay: &Report,
    sweep: &Report,
    churn: &Report,
) -> String {
    let kinds = &common.targets;
    let mut s = String::new();
    let m = &idle.machine;
    let _ = writeln!(
        s,
        "Measured on {} cores (kernel {}), generator on CPUs {}, servers on CPUs {}.\n",
        m.cores,
        m.kernel,
        m.generator_cpus,
        m.server_cpus.as_deref().unwrap_or("any")
    );
    let _ = write!(s, "| measure |");
    for k in kinds {
        let _ = write!(s, " {} |", k.name());
    }
    let _ = write!(s, "\n|---|");
    for _ in kinds {
        let _ = write!(s, "---|");
    }
    s.push('\n');
    let mut row = |label: &str, cell: &dyn Fn(TargetKind) -> Option<String>| {
        let _ = write!(s, "| {label} |");
        for &k in kinds {
            let _ = write!(s, " {} |", cell(k).unwrap_or_else(|| "—".into()));
        }
        s.push('\n');
    };
    row("idle: RSS per connection (15,000 held)", &|k| {
        idle.idle.iter().find(|r| r.target == k).map(|r| {
            format!(
                "{:.1} KiB ({} held)",
                r.rss_per_connection_bytes / 1024.0,
                r.alive_at_end
            )
        })
    });
    row(
        "relay 1,000 conversations at 1 msg/s per side: p50 / p99 / p99.9 ms",
        &|k| {
            relay
                .relay
                .iter()
                .find(|r| r.target == k)
                .and_then(|r| r.steps.first())
                .map(|st| {
                    format!(
                        "{} / {} / {}",
                        ms(st.latency.p50_us),
                        ms(st.latency.p99_us),
                        ms(st.latency.p999_us)
                    )
                })
        },
    );
    row(
        "relay: lost / duplicated / out of order (all steps)",
        &|k| {
            let steps: Vec<_> = relay
                .relay
                .iter()
                .chain(&sweep.relay)
                .filter(|r| r.target == k)
                .flat_map(|r| r.steps.iter())
                .collect();
            (!steps.is_empty()).then(|| {
                format!(
                    "{} / {} / {}",
                    steps.iter().map(|s| s.lost).sum::<u64>(),
                    steps.iter().map(|s| s.duplicated).sum::<u64>(),
                    steps
                        .iter()
                        .map(|s| s.out_of_order + s.seq_regressions + s.seq_gaps)
                        .sum::<u64>()
                )
            })
        },
    );
    row("sweep: highest offered load with p99 ≤ 10 ms", &|k| {
        sweep.relay.iter().find(|r| r.target == k).map(|r| {
            r.max_offered_within_slo
                .map_or("none".into(), |v| format!("{v:.0} msg/s"))
        })
    });
    row(
        "sweep: server CPU per delivered message at 20,000 msg/s",
        &|k| {
            sweep
                .relay
                .iter()
                .find(|r| r.target == k)
                .and_then(|r| r.steps.iter().find(|s| s.offered_per_sec == 20_000.0))
                .map(|st| {
                    format!(
                        "{:.1} µs (p99 {} ms)",
                        st.server_cpu_us_per_msg,
                        ms(st.latency.p99_us)
                    )
                })
        },
    );
    for &rate in &[10.0, 50.0, 100.0] {
        row(
            &format!("churn λ={rate}/s: start → assigned p50 / p99 ms"),
            &|k| {
                churn
                    .churn
                    .iter()
                    .find(|r| r.target == k)
                    .and_then(|r| r.steps.iter().find(|s| s.arrival_rate == rate))
                    .map(|st| {
                        format!(
                            "{} / {} (to a free agent: p99 {}; FIFO breaches {})",
                            ms(st.assign_latency.p50_us),
                            ms(st.assign_latency.p99_us),
                            ms(st.free_agent_assign_latency.p99_us),
                            st.fifo_violations
                        )
                    })
            },
        );
    }
    for r in [idle, relay, sweep, churn] {
        for f in &r.failures {
            let _ = writeln!(s, "\nFailed: {f}");
        }
    }
    s
}
