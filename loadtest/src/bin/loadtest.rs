//! `loadtest`: the Pitboss load generator. Each scenario runs against Pitboss and
//! the two reference servers in turn, under the same load, and writes a JSON
//! result, a human summary and an SVG plot. See loadtest/README.md.

use anyhow::bail;
use clap::{Parser, Subcommand};
use pitboss_loadtest::churn::ChurnConfig;
use pitboss_loadtest::idle::{IdleConfig, WorkerArgs, MAX_PER_WORKER};
use pitboss_loadtest::relay::RelayConfig;
use pitboss_loadtest::report::Report;
use pitboss_loadtest::suite::{self, ClusterConfig, Common};
use pitboss_loadtest::target::{TargetKind, TargetOptions};
use std::io::Write;
use std::path::PathBuf;

/// The Pitboss load generator.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Servers to drive, in order, under the same load.
    #[arg(
        long,
        global = true,
        value_enum,
        value_delimiter = ',',
        default_value = "pitboss,bare,socketio"
    )]
    targets: Vec<TargetKind>,
    /// Directory for result.json, summary.txt and plot.svg.
    /// [default: loadtest/results/<scenario>-<unix time>]
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Generator worker threads (0: one per CPU this process may use; pin the
    /// generator with `taskset -c` to keep it off the server's core).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    /// The last byte of the first loopback source address, 127.0.0.x.
    #[arg(long, global = true, default_value_t = 10)]
    first_source: u8,
    #[command(flatten)]
    servers: TargetOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N live conversations, both sides sending at a fixed rate or a sweep of rates.
    Relay {
        /// Live conversations.
        #[arg(long, default_value_t = 1000)]
        conversations: usize,
        /// Messages per second each side of each conversation sends.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// A sweep instead: offered loads in messages per second over all
        /// conversations (such as 1000,5000,20000); it stops at saturation.
        #[arg(long, value_delimiter = ',')]
        sweep: Vec<f64>,
        /// Seconds of sending per step.
        #[arg(long, default_value_t = 10.0)]
        step_secs: f64,
        /// Seconds at the start of each step not measured for latency.
        #[arg(long, default_value_t = 1.0)]
        warmup_secs: f64,
        /// Seconds to wait for stragglers after each step.
        #[arg(long, default_value_t = 5.0)]
        drain_secs: f64,
        /// Conversations per agent connection (Pitboss, Socket.IO).
        #[arg(long, default_value_t = 50)]
        agent_capacity: usize,
        /// Bytes of text per message.
        #[arg(long, default_value_t = 64)]
        text_bytes: usize,
        /// The p99 objective in milliseconds.
        #[arg(long, default_value_t = 10.0)]
        slo_p99_ms: f64,
        /// A sweep stops after a step with a p99 above this, in milliseconds.
        #[arg(long, default_value_t = 200.0)]
        stop_p99_ms: f64,
    },
    /// Hold C authenticated, waiting connections; report server RSS per connection.
    Idle {
        /// Connections to hold.
        #[arg(long, default_value_t = 15_000)]
        connections: usize,
        /// Connections per worker process (at most 18,000).
        #[arg(long, default_value_t = 7_500)]
        per_worker: usize,
        /// Seconds to let the server settle before reading its RSS.
        #[arg(long, default_value_t = 3.0)]
        settle_secs: f64,
        /// Seconds to hold the connections after the reading.
        #[arg(long, default_value_t = 10.0)]
        hold_secs: f64,
    },
    /// Players arrive at rate λ; agents of capacity k serve them.
    Churn {
        /// Arrival rates λ (players per second), one step each.
        #[arg(long, value_delimiter = ',', default_value = "10")]
        rates: Vec<f64>,
        /// Seconds of arrivals per step.
        #[arg(long, default_value_t = 20.0)]
        step_secs: f64,
        /// Agents online.
        #[arg(long, default_value_t = 20)]
        agents: usize,
        /// Conversations each agent holds at once.
        #[arg(long, default_value_t = 5)]
        capacity: usize,
        /// Seconds an agent keeps a conversation.
        #[arg(long, default_value_t = 0.5)]
        service_secs: f64,
        /// Seconds a player waits for an agent before counting as unassigned.
        #[arg(long, default_value_t = 30.0)]
        patience_secs: f64,
        /// Seed of the arrival process.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Relay and churn across the nodes of a cluster (three by default) sharing a
    /// private Redis (and, for Pitboss, a private PostgreSQL): players on nodes 1
    /// and 3, agents on node 2. Pitboss against Socket.IO with its Redis
    /// adapter; exits non-zero on any loss, duplicate, reordering or error.
    Cluster {
        /// Nodes per cluster.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Which parts to run.
        #[arg(long, value_delimiter = ',', default_value = "relay,churn")]
        parts: Vec<ClusterPart>,
        /// Relay: live conversations.
        #[arg(long, default_value_t = 500)]
        conversations: usize,
        /// Relay: messages per second each side of each conversation sends
        /// (500 conversations × 2 sides × 1/s = 1,000 msg/s).
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Relay: a sweep instead, offered loads in messages per second over all
        /// conversations (such as 1000,2000,5000); it stops at saturation.
        #[arg(long, value_delimiter = ',')]
        sweep: Vec<f64>,
        /// Relay: seconds of sending per step.
        #[arg(long, default_value_t = 30.0)]
        step_secs: f64,
        /// Relay: seconds at the start of each step not measured for latency.
        #[arg(long, default_value_t = 2.0)]
        warmup_secs: f64,
        /// Relay: seconds to wait for stragglers after each step.
        #[arg(long, default_value_t = 5.0)]
        drain_secs: f64,
        /// Relay: conversations per agent connection.
        #[arg(long, default_value_t = 50)]
        agent_capacity: usize,
        /// Relay: bytes of text per message.
        #[arg(long, default_value_t = 64)]
        text_bytes: usize,
        /// Relay: the p99 objective in milliseconds.
        #[arg(long, default_value_t = 10.0)]
        slo_p99_ms: f64,
        /// Relay: a sweep stops after a step with a p99 above this, in ms.
        #[arg(long, default_value_t = 200.0)]
        stop_p99_ms: f64,
        /// Churn: arrival rates λ (players per second), one step each.
        #[arg(long, value_delimiter = ',', default_value = "10")]
        churn_rates: Vec<f64>,
        /// Churn: seconds of arrivals per step.
        #[arg(long, default_value_t = 20.0)]
        churn_step_secs: f64,
        /// Churn: agents online (all on node 2).
        #[arg(long, default_value_t = 20)]
        agents: usize,
        /// Churn: conversations each agent holds at once.
        #[arg(long, default_value_t = 5)]
        capacity: usize,
        /// Churn: seconds an agent keeps a conversation.
        #[arg(long, default_value_t = 0.5)]
        service_secs: f64,
        /// Churn: seconds a player waits for an agent before counting as
        /// unassigned.
        #[arg(long, default_value_t = 30.0)]
        patience_secs: f64,
        /// Churn: seed of the arrival process.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Every scenario against every server for a few seconds with small N
    /// (and relay and churn on three-node clusters); exits non-zero on any
    /// loss, duplicate, error or server that fails to start.
    Smoke,
    /// The scenarios behind the published table; writes table.md beside them.
    Table,
    /// Internal: one idle worker process, started by `idle`.
    #[command(hide = true)]
    IdleWorker(WorkerArgs),
}

/// A part of the cluster scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClusterPart {
    /// Open-loop messaging between players and agents on different nodes.
    Relay,
    /// Players arriving on some nodes, agents on another.
    Churn,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // Thousands of sockets need descriptors: take what the hard limit allows.
    // Child processes (servers, workers) inherit the raised limit.
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%err, "cannot raise the open-file limit");
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cli.threads > 0 {
        rt.worker_threads(cli.threads);
    }
    let rt = rt.enable_all().build()?;
    let code = rt.block_on(run(cli))?;
    // Idle sockets of an ending run need not be closed politely one by one.
    rt.shutdown_background();
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let common = Common {
        targets: cli.targets.clone(),
        opts: cli.servers.clone(),
        first_source: cli.first_source,
    };
    let out = |scenario: &str| {
        cli.out.clone().unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("results")
                .join(format!("{scenario}-{secs}"))
        })
    };
    match cli.command {
        Command::IdleWorker(args) => {
            pitboss_loadtest::idle::worker(args).await?;
            Ok(0)
        }
        Command::Relay {
            conversations,
            rate,
            sweep,
            step_secs,
            warmup_secs,
            drain_secs,
            agent_capacity,
            text_bytes,
            slo_p99_ms,
            stop_p99_ms,
        } => {
            let offered = if sweep.is_empty() {
                vec![rate * 2.0 * conversations as f64]
            } else {
                sweep
            };
            if offered.iter().any(|&o| o.is_nan() || o <= 0.0) {
                bail!("rates must be positive");
            }
            let cfg = RelayConfig {
                conversations,
                agent_capacity,
                offered,
                step_secs,
                warmup_secs,
                drain_secs,
                text_bytes,
                stop_p99_ms,
                slo_p99_ms,
            };
            finish(&suite::relay(&common, &cfg).await, &out("relay"))
        }
        Command::Idle {
            connections,
            per_worker,
            settle_secs,
            hold_secs,
        } => {
            if per_worker > MAX_PER_WORKER {
                bail!("at most {MAX_PER_WORKER} connections per worker");
            }
            let cfg = IdleConfig {
                connections,
                per_worker,
                settle_secs,
                hold_secs,
                first_source: cli.first_source,
            };
            finish(&suite::idle(&common, &cfg).await, &out("idle"))
        }
        Command::Churn {
            rates,
            step_secs,
            agents,
            capacity,
            service_secs,
            patience_secs,
            seed,
        } => {
            if rates.iter().any(|&r| r.is_nan() || r <= 0.0) {
                bail!("rates must be positive");
            }
            let cfg = ChurnConfig {
                arrivals: rates,
                step_secs,
                agents,
                capacity,
                service_secs,
                patience_secs,
                seed,
                fifo_tolerance_ms: 1.0,
            };
            finish(&suite::churn(&common, &cfg).await, &out("churn"))
        }
        Command::Cluster {
            nodes,
            parts,
            conversations,
            rate,
            sweep,
            step_secs,
            warmup_secs,
            drain_secs,
            agent_capacity,
            text_bytes,
            slo_p99_ms,
            stop_p99_ms,
            churn_rates,
            churn_step_secs,
            agents,
            capacity,
            service_secs,
            patience_secs,
            seed,
        } => {
            let offered = if sweep.is_empty() {
                vec![rate * 2.0 * conversations as f64]
            } else {
                sweep
            };
            if offered
                .iter()
                .chain(&churn_rates)
                .any(|&o| o.is_nan() || o <= 0.0)
            {
                bail!("rates must be positive");
            }
            let cfg = ClusterConfig {
                nodes,
                relay: parts.contains(&ClusterPart::Relay).then_some(RelayConfig {
                    conversations,
                    agent_capacity,
                    offered,
                    step_secs,
                    warmup_secs,
                    drain_secs,
                    text_bytes,
                    stop_p99_ms,
                    slo_p99_ms,
                }),
                churn: parts.contains(&ClusterPart::Churn).then_some(ChurnConfig {
                    arrivals: churn_rates,
                    step_secs: churn_step_secs,
                    agents,
                    capacity,
                    service_secs,
                    patience_secs,
                    seed,
                    fifo_tolerance_ms: 1.0,
                }),
            };
            finish(&suite::cluster(&common, &cfg).await, &out("cluster"))
        }
        Command::Smoke => {
            let started = std::time::Instant::now();
            let (report, checks) = suite::smoke(&common).await;
            finish(&report, &out("smoke"))?;
            let mut stdout = std::io::stdout().lock();
            let failed = checks.iter().filter(|c| !c.problems.is_empty()).count();
            for c in &checks {
                if c.problems.is_empty() {
                    writeln!(stdout, "smoke ok: {}", c.name)?;
                }
                for p in &c.problems {
                    writeln!(stdout, "smoke FAILED: {}: {p}", c.name)?;
                }
            }
            writeln!(
                stdout,
                "smoke took {:.1} s",
                started.elapsed().as_secs_f64()
            )?;
            // The plain closing line CI reads.
            writeln!(
                stdout,
                "smoke: {} passed, {failed} failed",
                checks.len() - failed
            )?;
            Ok(if failed == 0 { 0 } else { 1 })
        }
        Command::Table => {
            let (reports, md) = suite::table(&common).await;
            let dir = out("table");
            for (name, r) in &reports {
                finish(r, &dir.join(name))?;
            }
            std::fs::write(dir.join("table.md"), &md)?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "\n{md}\nwritten to {}", dir.display())?;
            Ok(if reports.iter().any(|(_, r)| !r.failures.is_empty()) {
                1
            } else {
                0
            })
        }
    }
}

/// Writes the report's files and prints its summary.
fn finish(report: &Report, dir: &std::path::Path) -> anyhow::Result<i32> {
    report.write(dir)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", report.summary())?;
    writeln!(stdout, "results in {}", dir.display())?;
    Ok(if report.failures.is_empty() { 0 } else { 1 })
}
