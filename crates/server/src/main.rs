//! The `pitboss` binary: parses configuration, sets up logging, opens the
//! backends, runs the node until SIGINT or SIGTERM, manages agent accounts, and
//! answers retention and data requests (purge, a player's export and erasure).

mod config;
mod demo;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use config::{AccountRole, AgentCommand, PlayerCommand, ServeArgs, Settings, StoreArgs};
use pitboss_cluster::memory::Hub;
use pitboss_cluster::redis::{RedisBus, RedisLease, RedisOptions, RedisPresence};
use pitboss_desk::accounts::{self, AccountChanges, AccountError, NewAccount};
use pitboss_desk::audit::{self, AuditAction, CLI_ACTOR};
use pitboss_desk::{Desk, Shared};
use pitboss_gateway::AppState;
use pitboss_protocol::{AgentId, PlayerId, Role};
use pitboss_transcripts::postgres::{PostgresOptions, PostgresStore};
use pitboss_transcripts::sqlite::{SqliteOptions, SqliteStore};
use pitboss_transcripts::{now_ms, SharedStore, StoreError, PURGE_CHUNK};
use serde_json::json;
use std::io::Read;
use std::time::Duration;

/// Pitboss: real-time live chat for casino customer support.
#[derive(Parser)]
#[command(name = "pitboss", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Manage agent and supervisor accounts.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete closed conversations older than a number of days, with everything
    /// stored under them (open conversations are never deleted), and/or audit
    /// records older than a number of days.
    #[command(group(clap::ArgGroup::new("what").required(true).multiple(true)
        .args(["older_than_days", "audit_older_than_days"])))]
    Purge {
        /// Delete conversations closed more than this many days ago (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        older_than_days: Option<u32>,
        /// Delete audit records older than this many days (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        audit_older_than_days: Option<u32>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Export or erase what is stored about one player (data requests).
    Player {
        #[command(subcommand)]
        command: PlayerCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The causes on one line, never a backtrace: what went wrong is the
            // operator's to read, whatever RUST_BACKTRACE says.
            eprintln!("Error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve(args) => {
            let settings = Settings::load(*args)?;
            config::init_logging(&settings);
            runtime.block_on(serve(settings))
        }
        Command::Agent { command, store } => {
            config::init_cli_logging();
            runtime.block_on(with_store(store, |s| run_agent(command, s)))
        }
        Command::Purge {
            older_than_days,
            audit_older_than_days,
            store,
        } => {
            config::init_cli_logging();
            runtime.block_on(with_store(store, |s| {
                purge(older_than_days, audit_older_than_days, s)
            }))
        }
        Command::Player { command, store } => {
            config::init_cli_logging();
            runtime.block_on(with_store(store, |s| run_player(command, s)))
        }
    }
}

/// The embedded database in `data_dir`, or the cluster's PostgreSQL.
async fn open_store(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) -> anyhow::Result<SharedStore> {
    if let Some(url) = database_url {
        let store = PostgresStore::connect(url, PostgresOptions::default())
            .await
            .context("connecting to PostgreSQL (--database-url)")?;
        return Ok(store);
    }
    let path = data_dir.join("pitboss.db");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .with_context(|| format!("opening the store at {}", path.display()))?;
    Ok(store)
}

/// Refuses to join a cluster in which a live node already goes by this node's
/// name: the two would share one presence record and one hold on the routing
/// lease. A name still listed may be this node's own before a crash: its heartbeat
/// runs out within three heartbeats, so the check waits that long before refusing.
async fn unique_node_name(parts: &Shared, settings: &Settings) -> anyhow::Result<()> {
    let node = &settings.desk.node;
    let listed = || async {
        let alive = parts
            .presence
            .alive()
            .await
            .context("reading the cluster's presence from Redis")?;
        anyhow::Ok(alive.iter().any(|n| n.node == *node))
    };
    if !listed().await? {
        return Ok(());
    }
    let ttl = Duration::from_millis(3 * settings.desk.heartbeat_ms.max(10));
    tracing::info!(node = %node, "a node of this name was alive lately: waiting {ttl:?} to see whether it still is");
    tokio::time::sleep(ttl + Duration::from_millis(settings.desk.heartbeat_ms.max(10))).await;
    if listed().await? {
        bail!(
            "a live node of this cluster is already named {node:?}: give each node its own --node"
        );
    }
    Ok(())
}

/// Descriptors kept for all but client sockets (the store's files, Redis,
/// PostgreSQL, the listener; about 25 on an idle node): a quarter of the limit,
/// at least 64 and at most 256.
fn descriptor_reserve(limit: u64) -> u64 {
    (limit / 4).clamp(64, 256)
}

/// Raises this process's file-descriptor limit as far as `--max-connections`
/// needs and the hard limit allows. Below that, the cap is lowered to what fits,
/// with a warning: a client over it is then refused with 1013 `overloaded`,
/// where running out of descriptors would leave it hanging before `welcome`.
fn fit_connections_to_descriptors(gateway: &mut pitboss_gateway::GatewayConfig) {
    let sockets = pitboss_gateway::socket_cap(gateway.max_connections) as u64;
    let wanted = sockets + 256;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => {
            let room = limit.saturating_sub(descriptor_reserve(limit)).max(1);
            let fit =
                pitboss_gateway::connections_within(usize::try_from(room).unwrap_or(usize::MAX));
            if fit < gateway.max_connections {
                tracing::warn!(
                    nofile = limit,
                    max_connections = gateway.max_connections,
                    "the file-descriptor limit (nofile) leaves room for {fit} connections: \
                     those over it are refused with 1013; raise nofile to {wanted} for \
                     --max-connections"
                );
                gateway.max_connections = fit;
            }
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "cannot read the file-descriptor limit"),
    }
}

/// Takes the data directory for this process alone: two nodes on one SQLite file
/// would each route the same queue, and their agents and players would never meet.
/// Other commands (`agent`, `purge`, `player`) share the directory with a running
/// node and take no lock.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let path = dir.join("serve.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another `pitboss serve` is running on {}: one node per data directory \
             (several nodes share PostgreSQL and Redis instead)",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// What this node shares with the others: Redis in a cluster, else an in-process hub.
async fn open_shared(settings: &Settings) -> anyhow::Result<Shared> {
    let node = settings.desk.node.clone();
    let Some(cluster) = &settings.cluster else {
        let hub = Hub::new();
        let (bus, lease) = hub.attach(node.clone());
        let presence = hub.presence(node);
        return Ok(Shared {
            bus,
            lease,
            presence,
        });
    };
    let options = RedisOptions {
        prefix: cluster.redis_prefix.clone(),
        ..RedisOptions::default()
    };
    let url = cluster.redis_url.as_str();
    let redis = |e: pitboss_cluster::ClusterError| {
        anyhow::anyhow!("connecting to Redis (--redis-url): {e}")
    };
    Ok(Shared {
        bus: RedisBus::connect(url, node.clone(), options.clone())
            .await
            .map_err(redis)?,
        lease: RedisLease::connect(url, node.clone(), options.clone())
            .await
            .map_err(redis)?,
        presence: RedisPresence::connect(url, node, options)
            .await
            .map_err(redis)?,
    })
}

/// The Prometheus recorder every metric of this process goes to.
fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(pitboss_desk::telemetry::BUCKETS)
        .context("histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    // Histograms keep samples until upkeep folds them into their buckets.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

async fn serve(mut settings: Settings) -> anyhow::Result<()> {
    fit_connections_to_descriptors(&mut settings.gateway);
    let metrics = install_metrics()?;
    let database_url = settings.cluster.as_ref().map(|c| c.database_url.as_str());
    // Held until the process ends (the system releases it even on a crash).
    let _data_dir_lock = match database_url {
        None => Some(lock_data_dir(&settings.data_dir)?),
        Some(_) => None,
    };
    let shared = open_store(&settings.data_dir, database_url).await?;
    if settings.gateway.demo {
        demo::prepare(&*shared, settings.demo_password.as_deref())
            .await
            .context("preparing the demo")?;
    }
    let parts = open_shared(&settings).await?;
    if settings.cluster.is_some() {
        unique_node_name(&parts, &settings).await?;
    }
    let desk = Desk::start(settings.desk.clone(), shared.clone(), parts)
        .await
        .context("starting the desk")?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let local = listener.local_addr()?;
    match &settings.cluster {
        Some(_) => tracing::info!(node = %settings.desk.node, "cluster node listening on {local}"),
        None => {
            tracing::info!(node = %settings.desk.node, data_dir = %settings.data_dir.display(), "listening on {local}")
        }
    }
    if settings.gateway.demo {
        tracing::info!("demo casino page: http://{local}/  agent console: http://{local}/console");
    }

    let state = AppState::new(desk.clone(), settings.gateway.clone()).with_metrics(metrics);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pitboss_gateway::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));

    shutdown_signal().await;
    tracing::info!("shutting down: telling clients to reconnect");
    desk.leave().await;
    let _ = stop_tx.send(());
    let deadline = settings.shutdown_timeout;
    match tokio::time::timeout(deadline, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(%e, "server error during shutdown"),
        Ok(Err(e)) => tracing::warn!(%e, "server task failed"),
        Err(_) => tracing::warn!(?deadline, "connections still open at the shutdown deadline"),
    }
    // Everything acknowledged is already durable; this finishes queued writes.
    shared.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Opens the store a one-shot command names, runs the command, and shuts the store
/// down (its queued writes finished) whatever the command's outcome.
async fn with_store<F, Fut>(args: StoreArgs, command: F) -> anyhow::Result<()>
where
    F: FnOnce(SharedStore) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let database_url = match args.database_url {
        Some(url) => Some(config::plain_database_url(url)?),
        None => {
            existing_database(&args.data_dir)?;
            None
        }
    };
    let store = open_store(&args.data_dir, database_url.as_deref()).await?;
    let result = command(store.clone()).await;
    store.shutdown().await;
    result
}

/// Refuses a data directory without a node's database: opening it would create an
/// empty one, and a command given a mistyped `--data-dir` (or run from another
/// directory than the node's) would then report success on data no node reads.
/// Only `serve` creates the database.
fn existing_database(data_dir: &std::path::Path) -> anyhow::Result<()> {
    if data_dir.join("pitboss.db").is_file() {
        return Ok(());
    }
    bail!(
        "no Pitboss database in {} (pitboss.db): give the data directory of a node \
         (--data-dir), or start `pitboss serve` there once first",
        data_dir.display()
    )
}

/// `pitboss purge [--older-than-days N] [--audit-older-than-days M]` (at least one;
/// each at least 1, as clap checks).
async fn purge(
    older_than_days: Option<u32>,
    audit_older_than_days: Option<u32>,
    store: SharedStore,
) -> anyhow::Result<()> {
    let before = |days: u32| now_ms().saturating_sub(u64::from(days) * config::MS_PER_DAY);
    if let Some(days) = older_than_days {
        let purged = store.purge_closed(before(days), PURGE_CHUNK).await?;
        let d = purged.deleted;
        println!(
            "purged {} conversations closed more than {days} days ago: {} entries, \
             {} lifecycle events, {} hand-offs ({} chunks)",
            d.conversations, d.entries, d.events, d.handoffs, purged.chunks
        );
    }
    if let Some(days) = audit_older_than_days {
        let records = store.purge_audit(before(days), PURGE_CHUNK).await?;
        println!("purged {records} audit records older than {days} days");
    }
    Ok(())
}

/// `pitboss player export|erase`.
async fn run_player(command: PlayerCommand, store: SharedStore) -> anyhow::Result<()> {
    match command {
        PlayerCommand::Export { player, out } => {
            let id = player_id(&player)?;
            audit::append(
                &*store,
                CLI_ACTOR,
                AuditAction::PlayerExport,
                &player,
                json!({}),
            )
            .await
            .context("writing the audit record (nothing was exported)")?;
            let export = store.export_player(&id).await?;
            let mut json =
                serde_json::to_string_pretty(&export).context("serialising the export")?;
            json.push('\n');
            match out {
                Some(path) => {
                    write_private(&path, json.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "exported {} conversations of {player} to {}",
                        export.conversations.len(),
                        path.display()
                    );
                }
                None => {
                    use std::io::Write;
                    std::io::stdout()
                        .write_all(json.as_bytes())
                        .context("writing the export")?;
                }
            }
        }
        PlayerCommand::Erase { player, yes } => {
            let id = player_id(&player)?;
            if !yes {
                bail!(
                    "erasing deletes every conversation of {player} for good; \
                     add --yes to confirm (export it first with `pitboss player export`)"
                );
            }
            audit::append(
                &*store,
                CLI_ACTOR,
                AuditAction::PlayerErase,
                &player,
                json!({}),
            )
            .await
            .context("writing the audit record (nothing was erased)")?;
            match store.erase_player(&id).await {
                Ok(d) => println!(
                    "erased {player}: {} conversations, {} entries, {} lifecycle events, \
                     {} hand-offs",
                    d.conversations, d.entries, d.events, d.handoffs
                ),
                Err(StoreError::Precondition) => bail!(
                    "{player} has an open conversation (queued, active or offline): nothing \
                     was erased; close it first, then erase again"
                ),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// A player id from the command line: as stored, never empty.
fn player_id(player: &str) -> anyhow::Result<PlayerId> {
    if player.trim().is_empty() {
        bail!("a player id is not empty (`v:…` for visitors, `p:…` for verified players)");
    }
    Ok(PlayerId(player.to_owned()))
}

/// Writes a file only its owner may read: an export is personal data.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a file it creates: an existing one is made private
    // before anything is written to it.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

async fn run_agent(command: AgentCommand, store: SharedStore) -> anyhow::Result<()> {
    match command {
        AgentCommand::Add {
            login,
            name,
            password,
            password_stdin,
            role,
            supervisor,
            languages,
            departments,
            capacity,
        } => {
            // Checked before reading a password, so a typo fails at once.
            accounts::check_login(&login)?;
            let password = match (password, password_stdin) {
                (_, true) => read_password()?,
                (Some(p), false) => p,
                (None, false) => bail!("give --password-stdin (or PITBOSS_AGENT_PASSWORD)"),
            };
            let role = chosen_role(role, supervisor).unwrap_or(Role::Agent);
            let new = NewAccount {
                login: login.clone(),
                name,
                role,
                languages: split_list(&languages),
                departments: split_list(&departments),
                capacity,
                password,
            };
            let (_, existed) = accounts::create_or_replace(&*store, CLI_ACTOR, new)
                .await
                .map_err(cli_error)?;
            if existed {
                println!(
                    "replaced {login} (fields not given were reset to their defaults; \
                     `pitboss agent update` changes only the fields given)"
                );
            } else {
                println!("added {login}");
            }
        }
        AgentCommand::Update {
            login,
            name,
            role,
            supervisor,
            languages,
            departments,
            capacity,
            password_stdin,
        } => {
            let changes = AccountChanges {
                name,
                role: chosen_role(role, supervisor),
                languages: languages.as_deref().map(split_list),
                departments: departments.as_deref().map(split_list),
                capacity,
                password: if password_stdin {
                    Some(read_password()?)
                } else {
                    None
                },
            };
            match accounts::update(&*store, CLI_ACTOR, &AgentId(login.clone()), changes).await {
                Ok(_) => println!("updated {login}"),
                Err(AccountError::NotFound) => bail!(
                    "no account {login}: nothing changed (`pitboss agent list` shows the \
                     logins, `pitboss agent add` creates one)"
                ),
                Err(e) => return Err(cli_error(e)),
            }
        }
        AgentCommand::List => {
            for a in store.agents().await? {
                println!(
                    "{}\t{}\t{}\tlanguages={}\tdepartments={}\tcapacity={}",
                    a.id,
                    a.name,
                    role_name(a.role),
                    a.languages.join(","),
                    a.departments.join(","),
                    a.capacity
                );
            }
        }
        AgentCommand::Remove { login } => {
            match accounts::remove(&*store, CLI_ACTOR, &AgentId(login.clone())).await {
                Ok(()) => println!("removed {login}"),
                Err(AccountError::NotFound) => bail!("no agent {login}"),
                Err(e) => return Err(cli_error(e)),
            }
        }
    }
    Ok(())
}

/// The role `--role` or `--supervisor` names, if either is given.
fn chosen_role(role: Option<AccountRole>, supervisor: bool) -> Option<Role> {
    match (role, supervisor) {
        (Some(role), _) => Some(Role::from(role)),
        (None, true) => Some(Role::Supervisor),
        (None, false) => None,
    }
}

/// A password from standard input, without the line break `echo` adds.
fn read_password() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    Ok(s.trim_end_matches(['\n', '\r']).to_owned())
}

/// A role as `pitboss agent list` prints it.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::Agent => "agent",
        Role::Supervisor => "supervisor",
        Role::Admin => "admin",
        Role::Player => "player",
        Role::System => "system",
    }
}

/// An account error as the operator reads it.
fn cli_error(e: AccountError) -> anyhow::Error {
    anyhow::anyhow!(e)
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect()
}
