//! Configuration: command-line flags, `PITBOSS_*` environment variables, and an
//! optional TOML file, merged in that order of precedence over the defaults (which
//! live here and in the crates' `Default` impls, and nowhere else).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use pitboss_desk::{DeskConfig, PlayerTokenConfig};
use pitboss_gateway::GatewayConfig;
use pitboss_protocol::WireLimits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `pitboss serve` flags. Every one also reads `PITBOSS_<NAME>` and the TOML key
/// of the same name with `_` for `-`.
#[derive(Args, Debug, Default)]
pub(crate) struct ServeArgs {
    /// A TOML file with any of the settings below.
    #[arg(long, env = "PITBOSS_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port. [default: 127.0.0.1:8080]
    #[arg(long, env = "PITBOSS_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory of the embedded database. [default: ./pitboss-data]
    #[arg(long, env = "PITBOSS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// This node's name in logs and in the cluster; unique per node. [default: the
    /// host name ($HOSTNAME, else the kernel's, else "pitboss"); in a cluster,
    /// followed by a random suffix]
    #[arg(long, env = "PITBOSS_NODE")]
    node: Option<String>,
    /// Redis shared by the nodes of a cluster (redis://host:port/db). Give it
    /// together with --database-url, or neither (one node, embedded defaults).
    #[arg(long, env = "PITBOSS_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// PostgreSQL holding the transcripts of a cluster (postgres://...). Give it
    /// together with --redis-url, or neither.
    #[arg(long, env = "PITBOSS_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Key prefix in Redis; clusters sharing one Redis use different ones.
    /// [default: pitboss:]
    #[arg(long, env = "PITBOSS_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// Seconds between presence heartbeats; a node silent for 3 is presumed dead.
    /// [default: 1]
    #[arg(long, env = "PITBOSS_HEARTBEAT_SECS")]
    heartbeat_secs: Option<f64>,
    /// Log format: text or json (anything else is refused). [default: text]
    #[arg(long, env = "PITBOSS_LOG_FORMAT")]
    log_format: Option<String>,
    /// Log filter, such as info or pitboss_desk=debug. [default: RUST_LOG if set,
    /// else info]
    #[arg(long, env = "PITBOSS_LOG")]
    log: Option<String>,
    /// Seconds an offer waits for the agent before moving on. [default: 20]
    #[arg(long, env = "PITBOSS_OFFER_TIMEOUT_SECS")]
    offer_timeout_secs: Option<f64>,
    /// Seconds of waiting one VIP tier is worth. [default: 60]
    #[arg(long, env = "PITBOSS_VIP_AGING_SECS")]
    vip_aging_secs: Option<f64>,
    /// Seconds a disconnected agent keeps their conversations. [default: 60]
    #[arg(long, env = "PITBOSS_AGENT_GRACE_SECS")]
    agent_grace_secs: Option<f64>,
    /// Seconds a disconnected queued player keeps their place. [default: 120]
    #[arg(long, env = "PITBOSS_ABANDON_AFTER_SECS")]
    abandon_after_secs: Option<f64>,
    /// Seconds a department transfer may wait for an agent. [default: 120]
    #[arg(long, env = "PITBOSS_TRANSFER_TIMEOUT_SECS")]
    transfer_timeout_secs: Option<f64>,
    /// WebSocket connections one node holds at most. [default: 50000]
    #[arg(long, env = "PITBOSS_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Proxies whose X-Forwarded-For names the client address, comma-separated
    /// addresses or CIDR networks. [default: none: the TCP peer is the client]
    #[arg(long, env = "PITBOSS_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Option<Vec<String>>,
    /// WebSocket connections one client address may hold open on this node; one
    /// more is closed with 1013. [default: 200]
    #[arg(long, env = "PITBOSS_MAX_CONNECTIONS_PER_ADDRESS")]
    max_connections_per_address: Option<usize>,
    /// New WebSocket connections one client address may open per minute on this
    /// node, in bursts of as many; more are closed with 4029. [default: 120]
    #[arg(long, env = "PITBOSS_CONNECTS_PER_MINUTE_PER_ADDRESS")]
    connects_per_minute_per_address: Option<u32>,
    /// Visitor tokens one client address may be issued per minute on this node,
    /// in bursts of as many; more get rate_limited and 4029. [default: 30]
    #[arg(long, env = "PITBOSS_VISITORS_PER_MINUTE_PER_ADDRESS")]
    visitors_per_minute_per_address: Option<u32>,
    /// Failed logins (`POST /api/login`) one client address may make per minute on
    /// this node, refilling evenly; then 429 until one has refilled. Successful
    /// logins spend nothing. [default: 10]
    #[arg(long, env = "PITBOSS_LOGIN_FAILURES_PER_MINUTE_PER_ADDRESS")]
    login_failures_per_minute_per_address: Option<u32>,
    /// Seconds between the server's WebSocket pings on each connection. [default: 30]
    #[arg(long, env = "PITBOSS_WS_PING_SECS")]
    ws_ping_secs: Option<f64>,
    /// Seconds without anything received (frame or pong) before a connection is
    /// closed; more than --ws-ping-secs. [default: 90]
    #[arg(long, env = "PITBOSS_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<f64>,
    /// Seconds a connection has to send a request's headers (from its start, and
    /// between kept-alive requests), then to send hello. [default: 10]
    #[arg(long, env = "PITBOSS_HELLO_TIMEOUT_SECS")]
    hello_timeout_secs: Option<f64>,
    /// Seconds allowed for a graceful shutdown. [default: 10]
    #[arg(long, env = "PITBOSS_SHUTDOWN_TIMEOUT_SECS")]
    shutdown_timeout_secs: Option<f64>,
    /// Department of a chat that names none. [default: general]
    #[arg(long, env = "PITBOSS_DEFAULT_DEPARTMENT")]
    default_department: Option<String>,
    /// Language of a player who names none. [default: en]
    #[arg(long, env = "PITBOSS_DEFAULT_LANGUAGE")]
    default_language: Option<String>,
    /// Open conversations allowed per player. [default: 3]
    #[arg(long, env = "PITBOSS_MAX_OPEN_PER_PLAYER")]
    max_open_per_player: Option<usize>,
    /// Frames per second one connection may send. [default: 20]
    #[arg(long, env = "PITBOSS_FRAMES_PER_SECOND")]
    frames_per_second: Option<u32>,
    /// Burst of frames above that rate. [default: 40]
    #[arg(long, env = "PITBOSS_BURST_FRAMES")]
    burst_frames: Option<u32>,
    /// Chat messages one player may send per minute over all of their connections
    /// to this node (agents are not limited); more get rate_limited. [default: 30]
    #[arg(long, env = "PITBOSS_PLAYER_MESSAGES_PER_MINUTE")]
    player_messages_per_minute: Option<u32>,
    /// Chat messages one player may send in one burst above that rate. [default: 10]
    #[arg(long, env = "PITBOSS_PLAYER_MESSAGE_BURST")]
    player_message_burst: Option<u32>,
    /// Typing indicators one player may send per minute over all of their
    /// connections to this node; more are dropped. [default: 60]
    #[arg(long, env = "PITBOSS_PLAYER_TYPING_PER_MINUTE")]
    player_typing_per_minute: Option<u32>,
    /// Typing indicators one player may send in one burst above that rate.
    /// [default: 10]
    #[arg(long, env = "PITBOSS_PLAYER_TYPING_BURST")]
    player_typing_burst: Option<u32>,
    /// Items queued to one connection before it is a slow consumer. [default: 512]
    #[arg(long, env = "PITBOSS_OUTBOUND_QUEUE")]
    outbound_queue: Option<usize>,
    /// Web origins allowed to open WebSockets, comma-separated (`*`: any). The
    /// server's own origin is always allowed.
    #[arg(long, env = "PITBOSS_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Option<Vec<String>>,
    /// Serve a demo casino page at `/` and create the demo agents that do not
    /// exist yet (logins are logged). `--demo=false` or PITBOSS_DEMO=false turns
    /// off a `demo = true` of the file (true/false, 1/0, yes/no, on/off).
    #[arg(
        long,
        env = "PITBOSS_DEMO",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    demo: Option<bool>,
    /// With `--demo`: the demo agents' password (at least 8 characters), for
    /// several nodes sharing one store. Unset: a fresh one at every start, logged.
    #[arg(long, env = "PITBOSS_DEMO_PASSWORD", hide_env_values = true)]
    demo_password: Option<String>,
    /// Player-token algorithm: HS256, RS256 or ES256. Unset: visitors only.
    #[arg(long, env = "PITBOSS_PLAYER_TOKEN_ALG")]
    player_token_alg: Option<String>,
    /// HS256 shared secret (at least 32 bytes).
    #[arg(long, env = "PITBOSS_PLAYER_TOKEN_SECRET", hide_env_values = true)]
    player_token_secret: Option<String>,
    /// File with the HS256 secret, or the RS256/ES256 public key in PEM (a
    /// private key is refused).
    #[arg(long, env = "PITBOSS_PLAYER_TOKEN_KEY_FILE")]
    player_token_key_file: Option<PathBuf>,
    /// Required issuer (`iss`) of player tokens.
    #[arg(long, env = "PITBOSS_PLAYER_TOKEN_ISSUER")]
    player_token_issuer: Option<String>,
    /// Required audience (`aud`) of player tokens.
    #[arg(long, env = "PITBOSS_PLAYER_TOKEN_AUDIENCE")]
    player_token_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, at most 60. [default: 30]
    #[arg(long, env = "PITBOSS_PLAYER_TOKEN_LEEWAY_SECS")]
    player_token_leeway_secs: Option<u64>,
    /// A regular expression hidden as `[hidden]` in messages before they are
    /// stored, beside card numbers (always masked). Repeat for several.
    #[arg(
        long = "mask-pattern",
        env = "PITBOSS_MASK_PATTERNS",
        value_delimiter = '\n'
    )]
    mask_patterns: Option<Vec<String>>,
    /// Days a closed conversation is kept; older ones are purged, with every
    /// entry, note, event and hand-off, by the routing node. [default: none: kept
    /// forever]
    #[arg(long, env = "PITBOSS_RETENTION_DAYS")]
    retention_days: Option<u32>,
    /// Days an audit record is kept; older ones are purged by the routing node.
    /// [default: none: kept forever]
    #[arg(long, env = "PITBOSS_AUDIT_RETENTION_DAYS")]
    audit_retention_days: Option<u32>,
    /// Seconds between retention purges (with --retention-days or
    /// --audit-retention-days). [default: 3600]
    #[arg(long, env = "PITBOSS_RETENTION_INTERVAL_SECS")]
    retention_interval_secs: Option<f64>,
}

/// The same settings, from the TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    node: Option<String>,
    redis_url: Option<String>,
    database_url: Option<String>,
    redis_prefix: Option<String>,
    heartbeat_secs: Option<f64>,
    log_format: Option<String>,
    log: Option<String>,
    offer_timeout_secs: Option<f64>,
    vip_aging_secs: Option<f64>,
    agent_grace_secs: Option<f64>,
    abandon_after_secs: Option<f64>,
    transfer_timeout_secs: Option<f64>,
    shutdown_timeout_secs: Option<f64>,
    hello_timeout_secs: Option<f64>,
    max_connections: Option<usize>,
    trusted_proxies: Option<Vec<String>>,
    max_connections_per_address: Option<usize>,
    connects_per_minute_per_address: Option<u32>,
    visitors_per_minute_per_address: Option<u32>,
    login_failures_per_minute_per_address: Option<u32>,
    ws_ping_secs: Option<f64>,
    idle_timeout_secs: Option<f64>,
    default_department: Option<String>,
    default_language: Option<String>,
    max_open_per_player: Option<usize>,
    frames_per_second: Option<u32>,
    burst_frames: Option<u32>,
    player_messages_per_minute: Option<u32>,
    player_message_burst: Option<u32>,
    player_typing_per_minute: Option<u32>,
    player_typing_burst: Option<u32>,
    outbound_queue: Option<usize>,
    allowed_origins: Option<Vec<String>>,
    demo: Option<bool>,
    demo_password: Option<String>,
    player_token_alg: Option<String>,
    player_token_secret: Option<String>,
    player_token_key_file: Option<PathBuf>,
    player_token_issuer: Option<String>,
    player_token_audience: Option<String>,
    player_token_leeway_secs: Option<u64>,
    mask_patterns: Option<Vec<String>>,
    retention_days: Option<u32>,
    audit_retention_days: Option<u32>,
    retention_interval_secs: Option<f64>,
}

/// Where a one-shot command finds the store: the same flags as `serve`'s. The
/// store must exist: only `serve` creates one.
#[derive(Args, Debug)]
pub(crate) struct StoreArgs {
    /// Where the embedded database lives: a node's data directory, whose
    /// `pitboss.db` `pitboss serve` made (without it the command is refused).
    #[arg(
        long,
        env = "PITBOSS_DATA_DIR",
        default_value = "pitboss-data",
        global = true
    )]
    pub(crate) data_dir: PathBuf,
    /// The cluster's PostgreSQL, instead of the embedded database.
    #[arg(
        long,
        env = "PITBOSS_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub(crate) database_url: Option<String>,
}

/// `pitboss player …`: a player's data, for data requests.
#[derive(Subcommand, Debug)]
pub(crate) enum PlayerCommand {
    /// Write everything stored about a player as JSON: conversations, every entry
    /// (private notes marked), lifecycle events, hand-offs, ratings, the card.
    Export {
        /// The player's id, as in the transcripts (`v:…` or `p:…`).
        player: String,
        /// Write to this file (created readable by its owner only) instead of
        /// standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Delete everything stored about a player. Refused while one of their
    /// conversations is open: close it first.
    Erase {
        /// The player's id, as in the transcripts (`v:…` or `p:…`).
        player: String,
        /// Confirm: the data is gone for good.
        #[arg(long)]
        yes: bool,
    },
}

/// `pitboss agent …`.
#[derive(Subcommand, Debug)]
pub(crate) enum AgentCommand {
    /// Add an account, or replace the whole of one with the same login (fields not
    /// given take their defaults; `agent update` changes some fields only).
    Add {
        /// Login name.
        login: String,
        /// Display name shown to players. [default: the login]
        #[arg(long)]
        name: Option<String>,
        /// Password (prefer --password-stdin: arguments show in `ps`).
        #[arg(long, env = "PITBOSS_AGENT_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// The account's role: an agent serves their own conversations, a
        /// supervisor sees and may take over every conversation, an admin also
        /// manages accounts and reads the audit log.
        #[arg(long, value_enum, conflicts_with = "supervisor")]
        role: Option<AccountRole>,
        /// The same as `--role supervisor`.
        #[arg(long)]
        supervisor: bool,
        /// Languages served, comma-separated.
        #[arg(long, default_value = "en")]
        languages: String,
        /// Departments served, comma-separated.
        #[arg(long, default_value = "general")]
        departments: String,
        /// Conversations at once.
        #[arg(long, default_value_t = 3)]
        capacity: u32,
    },
    /// Change the fields given of an existing account; the others stay as they
    /// are. A new password ends the account's sessions; a new role closes its
    /// open consoles (they connect again under it).
    #[command(group(clap::ArgGroup::new("changes").required(true).multiple(true)
        .args(["name", "role", "supervisor", "languages", "departments", "capacity", "password_stdin"])))]
    Update {
        /// Login name of the account.
        login: String,
        /// New display name shown to players.
        #[arg(long)]
        name: Option<String>,
        /// New role (see `agent add --role`).
        #[arg(long, value_enum, conflicts_with = "supervisor")]
        role: Option<AccountRole>,
        /// The same as `--role supervisor`.
        #[arg(long)]
        supervisor: bool,
        /// New languages served, comma-separated (replacing the old ones).
        #[arg(long)]
        languages: Option<String>,
        /// New departments served, comma-separated (replacing the old ones).
        #[arg(long)]
        departments: Option<String>,
        /// New number of conversations at once.
        #[arg(long)]
        capacity: Option<u32>,
        /// Read a new password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
    /// Remove an account.
    Remove {
        /// Login name.
        login: String,
    },
}

/// The role of an account made with `pitboss agent add`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccountRole {
    /// Serves their own conversations.
    Agent,
    /// Sees and may take over every conversation, keeps the catalog.
    Supervisor,
    /// A supervisor who also manages accounts and reads the audit log.
    Admin,
}

impl From<AccountRole> for pitboss_protocol::Role {
    fn from(role: AccountRole) -> Self {
        match role {
            AccountRole::Agent => pitboss_protocol::Role::Agent,
            AccountRole::Supervisor => pitboss_protocol::Role::Supervisor,
            AccountRole::Admin => pitboss_protocol::Role::Admin,
        }
    }
}

/// Where a cluster's shared state lives.
#[derive(Clone)]
pub(crate) struct ClusterSettings {
    pub(crate) redis_url: String,
    pub(crate) database_url: String,
    pub(crate) redis_prefix: String,
}

/// Everything `serve` needs, merged and checked.
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) data_dir: PathBuf,
    /// `None`: one node on the embedded defaults.
    pub(crate) cluster: Option<ClusterSettings>,
    pub(crate) log_format: String,
    /// The log filter given (flag, `PITBOSS_LOG`, file); `None`: `RUST_LOG`, else
    /// `info`.
    pub(crate) log: Option<String>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) desk: DeskConfig,
    pub(crate) gateway: GatewayConfig,
    /// With `--demo`: the demo agents' password; `None`: a fresh one.
    pub(crate) demo_password: Option<String>,
}

/// A retention period of `days` (at least 1) in milliseconds; `flag` and `what`
/// name it in the refusal of 0.
fn days_ms(days: u32, flag: &str, what: &str) -> anyhow::Result<u64> {
    if days == 0 {
        bail!("{flag} must be at least 1 (leave it unset to keep {what} forever)");
    }
    Ok(u64::from(days) * MS_PER_DAY)
}

/// Milliseconds in a day, for retention periods given in days.
pub(crate) const MS_PER_DAY: u64 = 86_400_000;

/// A default department or language, normalised like every tag, or refused at
/// start-up rather than refusing every `start` that relies on it.
fn default_tag(value: &str, flag: &str) -> anyhow::Result<String> {
    match pitboss_desk::accounts::normalise_tag(value) {
        Some(tag) => Ok(tag),
        None => bail!("{flag} must be 1 to 32 letters, digits, '-' or '_' (got {value:?})"),
    }
}

/// The log format, `text` unless given: anything but `text` or `json` is refused
/// rather than falling back to text, where a collector expecting JSON would get
/// lines it cannot read.
fn log_format(given: Option<String>) -> anyhow::Result<String> {
    match given.as_deref() {
        None => Ok("text".into()),
        Some(format @ ("text" | "json")) => Ok(format.to_owned()),
        Some(other) => bail!("log-format must be text or json (got {other:?})"),
    }
}

/// The log filter, if one is given and every directive in it parses: the logging
/// library would otherwise drop a bad directive with a note on standard error and
/// start logging something else than asked.
fn log_filter(given: Option<String>) -> anyhow::Result<Option<String>> {
    if let Some(filter) = &given {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
            bail!(
                "log: {filter:?} is not a filter in RUST_LOG syntax (such as info or \
                 pitboss_desk=debug): {e}"
            );
        }
    }
    Ok(given)
}

/// What to do instead of TLS to Redis or PostgreSQL, which this build cannot speak.
const NO_TLS: &str = "keep the connection on a private network, or run a TLS tunnel \
     (such as stunnel) on the node's host and point the URL at its local end";

/// A Redis URL this build can connect to: `rediss://` needs TLS, which it lacks,
/// and would otherwise fail with the client library's cryptic refusal.
fn plain_redis_url(url: String) -> anyhow::Result<String> {
    let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
    if matches!(scheme.as_str(), "rediss" | "valkeys") {
        bail!(
            "redis-url: TLS connections to Redis ({scheme}://) are not supported by this \
             build: {NO_TLS}"
        );
    }
    Ok(url)
}

/// A PostgreSQL URL this build can connect to: an `sslmode` (in the URL, else in
/// `PGSSLMODE`) that demands TLS is refused here, naming what to do, rather than
/// by the driver when it connects. `prefer` and `allow` fall back to plain TCP.
pub(crate) fn plain_database_url(url: String) -> anyhow::Result<String> {
    let from_url = url
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| matches!(*key, "sslmode" | "ssl-mode"))
        .map(|(_, value)| value.to_owned());
    let mode = from_url.or_else(|| std::env::var("PGSSLMODE").ok());
    if let Some(mode) = mode {
        let mode = mode.to_ascii_lowercase();
        if matches!(mode.as_str(), "require" | "verify-ca" | "verify-full") {
            bail!(
                "database-url: TLS connections to PostgreSQL (sslmode={mode}) are not \
                 supported by this build: {NO_TLS}"
            );
        }
    }
    Ok(url)
}

fn ms(secs: f64, what: &str) -> anyhow::Result<u64> {
    if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
        bail!("{what} must be a positive number of seconds");
    }
    Ok((secs * 1000.0).round() as u64)
}

/// A TOML error on one line, as every start-up error is: where, then what.
fn toml_error(text: &str, err: &toml::de::Error) -> String {
    let what = err
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {what}")
        }
        None => what,
    }
}

impl Settings {
    pub(crate) fn load(args: ServeArgs) -> anyhow::Result<Self> {
        let file: FileSettings = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("parsing {}: {}", path.display(), toml_error(&text, &e))
                })?
            }
            None => FileSettings::default(),
        };
        macro_rules! pick {
            ($name:ident) => {
                args.$name.clone().or(file.$name.clone())
            };
        }
        let mut desk = DeskConfig::default();
        let mut gateway = GatewayConfig::default();
        let cluster = match (pick!(redis_url), pick!(database_url)) {
            (None, None) => None,
            (Some(redis_url), Some(database_url)) => Some(ClusterSettings {
                redis_url: plain_redis_url(redis_url)?,
                database_url: plain_database_url(database_url)?,
                redis_prefix: pick!(redis_prefix)
                    .unwrap_or_else(|| pitboss_cluster::redis::DEFAULT_PREFIX.to_owned()),
            }),
            (Some(_), None) => bail!(
                "--redis-url was given without --database-url: a cluster needs both \
                 (Redis for what nodes share, PostgreSQL for transcripts); give neither \
                 to run one node on the embedded database"
            ),
            (None, Some(_)) => bail!(
                "--database-url was given without --redis-url: a cluster needs both \
                 (Redis for what nodes share, PostgreSQL for transcripts); give neither \
                 to run one node on the embedded database"
            ),
        };
        desk.cluster = cluster.is_some();
        desk.node = match pick!(node) {
            Some(node) => node,
            None => {
                let host = host_name();
                if cluster.is_some() {
                    format!("{host}-{:04x}", rand::random::<u16>())
                } else {
                    host
                }
            }
        };
        if let Some(v) = pick!(heartbeat_secs) {
            desk.heartbeat_ms = ms(v, "heartbeat-secs")?;
        }
        if let Some(v) = pick!(offer_timeout_secs) {
            desk.routing.offer_timeout_ms = ms(v, "offer-timeout-secs")?;
        }
        if let Some(v) = pick!(vip_aging_secs) {
            desk.routing.aging_per_tier_ms = ms(v, "vip-aging-secs")?;
        }
        if let Some(v) = pick!(transfer_timeout_secs) {
            desk.routing.transfer_timeout_ms = ms(v, "transfer-timeout-secs")?;
        }
        if let Some(v) = pick!(agent_grace_secs) {
            desk.agent_grace_ms = ms(v, "agent-grace-secs")?;
        }
        if let Some(v) = pick!(abandon_after_secs) {
            desk.abandon_after_ms = ms(v, "abandon-after-secs")?;
        }
        if let Some(v) = pick!(default_department) {
            desk.default_department = default_tag(&v, "default-department")?;
        }
        if let Some(v) = pick!(default_language) {
            desk.default_language = default_tag(&v, "default-language")?;
        }
        if let Some(v) = pick!(max_open_per_player) {
            desk.max_open_per_player = v.max(1);
        }
        if let Some(v) = pick!(outbound_queue) {
            desk.outbound_queue = v.clamp(16, 1 << 16);
        }
        if let Some(v) = pick!(frames_per_second) {
            gateway.frames_per_second = v.max(1);
        }
        if let Some(v) = pick!(allowed_origins) {
            gateway.allowed_origins = v
                .into_iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect();
            if let Some(bad) = gateway
                .allowed_origins
                .iter()
                .find(|o| !pitboss_gateway::is_origin(o))
            {
                anyhow::bail!(
                    "allowed-origins: {bad:?} is not an origin: give scheme, host and any port, \
                     such as https://casino.example or http://localhost:3000 (or * for any)"
                );
            }
        }
        // Like every setting: the flag, else the environment (clap reads both into
        // `args`), else the file; a `false` from either wins over the file's `true`.
        gateway.demo = pick!(demo).unwrap_or(false);
        if let Some(v) = pick!(max_connections) {
            gateway.max_connections = v.max(1);
        }
        if let Some(v) = pick!(trusted_proxies) {
            gateway.trusted_proxies = pitboss_gateway::TrustedProxies::parse(&v)
                .map_err(|e| anyhow::anyhow!("trusted-proxies: {e}"))?;
        }
        if let Some(v) = pick!(max_connections_per_address) {
            gateway.max_connections_per_address = v.max(1);
        }
        if let Some(v) = pick!(connects_per_minute_per_address) {
            gateway.connects_per_minute_per_address = v.max(1);
        }
        if let Some(v) = pick!(visitors_per_minute_per_address) {
            gateway.visitors_per_minute_per_address = v.max(1);
        }
        if let Some(v) = pick!(login_failures_per_minute_per_address) {
            gateway.login_failures_per_minute_per_address = v.max(1);
        }
        if let Some(v) = pick!(player_messages_per_minute) {
            gateway.player_messages_per_minute = v.max(1);
        }
        if let Some(v) = pick!(player_message_burst) {
            gateway.player_message_burst = v.max(1);
        }
        if let Some(v) = pick!(player_typing_per_minute) {
            gateway.player_typing_per_minute = v.max(1);
        }
        if let Some(v) = pick!(player_typing_burst) {
            gateway.player_typing_burst = v.max(1);
        }
        if let Some(v) = pick!(ws_ping_secs) {
            gateway.ws_ping = Duration::from_millis(ms(v, "ws-ping-secs")?);
        }
        if let Some(v) = pick!(idle_timeout_secs) {
            gateway.idle_timeout = Duration::from_millis(ms(v, "idle-timeout-secs")?);
        }
        if gateway.idle_timeout <= gateway.ws_ping {
            bail!(
                "idle-timeout-secs ({:?}) must be longer than ws-ping-secs ({:?}): a live \
                 client only answers the pings",
                gateway.idle_timeout,
                gateway.ws_ping
            );
        }
        if let Some(v) = pick!(hello_timeout_secs) {
            gateway.hello_timeout = Duration::from_millis(ms(v, "hello-timeout-secs")?);
        }
        if let Some(v) = pick!(burst_frames) {
            gateway.burst_frames = v.max(1);
        }
        if let Some(patterns) = pick!(mask_patterns) {
            desk.masker = pitboss_desk::masking::Masker::new(&patterns)
                .map_err(|e| anyhow::anyhow!("--mask-pattern: {e}"))?;
        }
        if let Some(days) = pick!(retention_days) {
            desk.retention_ms = Some(days_ms(days, "retention-days", "closed conversations")?);
        }
        if let Some(days) = pick!(audit_retention_days) {
            desk.audit_retention_ms = Some(days_ms(days, "audit-retention-days", "audit records")?);
        }
        if let Some(v) = pick!(retention_interval_secs) {
            desk.retention_interval_ms = ms(v, "retention-interval-secs")?;
        }
        desk.limits = WireLimits {
            max_frame_bytes: gateway.max_frame_bytes,
            frames_per_second: gateway.frames_per_second,
            burst_frames: gateway.burst_frames,
            player_messages_per_minute: Some(gateway.player_messages_per_minute),
            player_message_burst: Some(gateway.player_message_burst),
            ..WireLimits::default()
        };
        desk.player_tokens = match pick!(player_token_alg) {
            None => None,
            Some(alg) => {
                let key = match (pick!(player_token_secret), pick!(player_token_key_file)) {
                    (Some(secret), None) => secret.into_bytes(),
                    (None, Some(path)) => {
                        let mut key = std::fs::read(&path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        if alg.to_ascii_uppercase().starts_with("HS") {
                            // A file written by `echo` or an editor ends in a line
                            // break that the casino's signer never used.
                            while matches!(key.last(), Some(b'\n' | b'\r')) {
                                key.pop();
                            }
                        }
                        key
                    }
                    _ => bail!("player tokens need exactly one of player-token-secret or player-token-key-file"),
                };
                let issuer =
                    pick!(player_token_issuer).context("player tokens need player-token-issuer")?;
                let audience = pick!(player_token_audience)
                    .context("player tokens need player-token-audience")?;
                let leeway = pick!(player_token_leeway_secs).unwrap_or(30);
                Some(
                    PlayerTokenConfig::new(&alg, &key, issuer, audience, leeway)
                        .map_err(|e| anyhow::anyhow!(e))?,
                )
            }
        };
        let demo_password = pick!(demo_password);
        if let Some(password) = &demo_password {
            if !gateway.demo {
                bail!("demo-password is for --demo only");
            }
            if password.chars().count() < 8 {
                bail!("demo-password must be at least 8 characters");
            }
        }
        Ok(Settings {
            listen: pick!(listen)
                .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid address")),
            data_dir: pick!(data_dir).unwrap_or_else(|| PathBuf::from("pitboss-data")),
            cluster,
            log_format: log_format(pick!(log_format))?,
            log: log_filter(pick!(log))?,
            shutdown_timeout: Duration::from_millis(ms(
                pick!(shutdown_timeout_secs).unwrap_or(10.0),
                "shutdown-timeout-secs",
            )?),
            demo_password,
            desk,
            gateway,
        })
    }
}

/// `tracing` to standard output, as text or JSON lines.
pub(crate) fn init_logging(settings: &Settings) {
    // A filter given as a setting wins over `RUST_LOG`, as every flag wins over
    // the environment; `RUST_LOG` still serves when none is given.
    let filter = match &settings.log {
        Some(log) => tracing_subscriber::EnvFilter::new(log),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    // Colour only on a terminal: logs piped to files or collectors stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if settings.log_format == "json" {
        // Each line carries its span's fields (`span`: the innermost, with the
        // conversation of a frame) and every enclosing span's (`spans`: the
        // connection's node, player or agent), so lines can be filtered by them.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
}

/// Quiet logging for one-shot commands.
pub(crate) fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The machine's name: `$HOSTNAME` when the shell exported it, else the kernel's
/// (a service manager exports none), else "pitboss".
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pitboss".into())
}
