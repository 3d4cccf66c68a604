//! The servers under test: starting one (Pitboss, the bare relay or the Socket.IO
//! relay) as a child process on a free loopback port, alone or as one node of a
//! cluster ([`Membership`]), creating Pitboss agents through its CLI, and
//! stopping it again by its process id. It does not talk WebSocket; `wire` does.

use crate::procstat::ProcStats;
use anyhow::{bail, Context};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which server a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// The `pitboss` binary, on a fresh data directory.
    Pitboss,
    /// `bare-relay`: tokio-tungstenite pairing two sockets, the stack's limit.
    Bare,
    /// `node socketio/server.js`: Socket.IO 4 with rooms.
    Socketio,
}

impl TargetKind {
    /// Every target, in the order a run drives them.
    pub const ALL: [TargetKind; 3] = [TargetKind::Pitboss, TargetKind::Bare, TargetKind::Socketio];

    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Pitboss => "pitboss",
            TargetKind::Bare => "bare",
            TargetKind::Socketio => "socketio",
        }
    }
}

/// Where the servers' programs are and how to run them.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetOptions {
    /// The pitboss binary. [default: `pitboss` beside this program, as cargo builds it]
    #[arg(long, global = true)]
    pub pitboss_bin: Option<PathBuf>,
    /// The bare-relay binary. [default: `bare-relay` beside this program]
    #[arg(long, global = true)]
    pub bare_bin: Option<PathBuf>,
    /// The Node.js program.
    #[arg(long, global = true, default_value = "node")]
    pub node: String,
    /// The directory of the Socket.IO relay (with `npm ci` done in it).
    /// [default: loadtest/socketio of this workspace]
    #[arg(long, global = true)]
    pub socketio_dir: Option<PathBuf>,
    /// Pin the server under test to these CPUs (a `taskset -c` list, such as `1`),
    /// so that it and the generator do not compete for a core.
    #[arg(long, global = true)]
    pub server_cpus: Option<String>,
    /// Extra arguments for `pitboss serve`.
    #[arg(long, global = true, allow_hyphen_values = true)]
    pub pitboss_arg: Vec<String>,
}

/// How a server joins a cluster: its name and what the nodes share.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The node's name (`node-1`, …).
    pub node: String,
    /// The Redis the nodes share.
    pub redis_url: String,
    /// Pitboss: the PostgreSQL database the nodes share (accounts live there).
    pub database_url: Option<String>,
    /// Socket.IO: this node runs the churn dispatcher the others forward to.
    pub dispatcher: bool,
}

/// Where a Pitboss server keeps its accounts, for `pitboss agent add`.
#[derive(Debug, Clone)]
enum Accounts {
    /// Alone: its data directory.
    DataDir(PathBuf),
    /// In a cluster: the shared database.
    Database(String),
}

/// The password of every agent the generator creates; the server is throwaway.
const AGENT_PASSWORD: &str = "loadtest-password";

/// Log lines kept from a server, to show when it fails. Bounded: a busy server
/// could log without end.
const LOG_LINES: usize = 200;

/// Warning, error and routing lines kept from a server, apart from the last
/// lines: a server that warns early and then logs on would push them out.
const WARNING_LINES: usize = 500;

/// How long a server may take to print `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server under test. Dropping it stops the process.
pub struct Target {
    /// Which server.
    pub kind: TargetKind,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name in logs: the kind alone, the node's name in a cluster.
    pub label: String,
    child: Child,
    /// Pitboss's data directory, removed when the target is dropped.
    _data_dir: Option<tempfile::TempDir>,
    accounts: Option<Accounts>,
    pitboss_bin: PathBuf,
    log: Arc<Mutex<VecDeque<String>>>,
    warnings: Arc<Mutex<VecDeque<String>>>,
}

impl Target {
    /// Starts the server alone and waits until it listens.
    pub fn start(kind: TargetKind, opts: &TargetOptions) -> anyhow::Result<Target> {
        Target::start_node(kind, opts, None)
    }

    /// Starts the server, alone or as a node of a cluster, and waits until it
    /// listens.
    pub fn start_node(
        kind: TargetKind,
        opts: &TargetOptions,
        member: Option<&Membership>,
    ) -> anyhow::Result<Target> {
        let pitboss_bin = opts
            .pitboss_bin
            .clone()
            .unwrap_or_else(|| sibling("pitboss"));
        let label = member.map_or_else(
            || kind.name().to_string(),
            |m| format!("{} {}", kind.name(), m.node),
        );
        let (mut cmd, data_dir, accounts) = match kind {
            TargetKind::Pitboss => {
                if !pitboss_bin.exists() {
                    bail!(
                        "{} not found: build it (cargo build -p pitboss-server) or pass --pitboss-bin",
                        pitboss_bin.display()
                    );
                }
                let dir = tempfile::Builder::new()
                    .prefix("pitboss-loadtest")
                    .tempdir()?;
                let mut cmd = pinned(opts, &pitboss_bin);
                cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
                    .arg(dir.path())
                    // The generator sends faster than a person types; the default
                    // per-connection rate limit would throttle it, not the server.
                    .args(["--frames-per-second", "100000", "--burst-frames", "100000"])
                    // Every simulated client comes from 127.0.0.1: the per-address
                    // abuse limits would refuse them, not measure the server.
                    .args([
                        "--max-connections-per-address",
                        "1000000",
                        "--connects-per-minute-per-address",
                        "1000000",
                        "--visitors-per-minute-per-address",
                        "1000000",
                    ])
                    // Simulated players write faster than people: the per-player
                    // limits would throttle the generator, not measure the server.
                    .args([
                        "--player-messages-per-minute",
                        "1000000",
                        "--player-message-burst",
                        "1000000",
                        "--player-typing-per-minute",
                        "1000000",
                        "--player-typing-burst",
                        "1000000",
                    ])
                    .args(["--log", "warn,pitboss=info"])
                    // A RUST_LOG meant for the generator must not hide the
                    // `listening on` line.
                    .env_remove("RUST_LOG")
                    .env_remove("PITBOSS_LOG")
                    // Nor may the generator's environment make a node of a
                    // cluster it was not asked to join.
                    .env_remove("PITBOSS_REDIS_URL")
                    .env_remove("PITBOSS_DATABASE_URL")
                    .env_remove("PITBOSS_NODE");
                let accounts = match member {
                    Some(m) => {
                        let database_url = m
                            .database_url
                            .clone()
                            .context("a Pitboss node of a cluster needs a database")?;
                        cmd.args(["--node", &m.node, "--redis-url", &m.redis_url])
                            .args(["--database-url", &database_url]);
                        Accounts::Database(database_url)
                    }
                    None => Accounts::DataDir(dir.path().to_path_buf()),
                };
                cmd.args(&opts.pitboss_arg);
                (cmd, Some(dir), Some(accounts))
            }
            TargetKind::Bare => {
                if member.is_some() {
                    bail!("the bare relay has no cluster mode");
                }
                let bin = opts
                    .bare_bin
                    .clone()
                    .unwrap_or_else(|| sibling("bare-relay"));
                if !bin.exists() {
                    bail!(
                        "{} not found: build it (cargo build -p pitboss-loadtest) or pass --bare-bin",
                        bin.display()
                    );
                }
                let mut cmd = pinned(opts, &bin);
                cmd.args(["--listen", "127.0.0.1:0"])
                    .env("RUST_LOG", "warn,bare_relay=info");
                (cmd, None, None)
            }
            TargetKind::Socketio => {
                let dir = opts.socketio_dir.clone().unwrap_or_else(socketio_dir);
                if !dir.join("node_modules/socket.io").exists() {
                    bail!(
                        "{}/node_modules/socket.io is missing: run `npm ci` in {}",
                        dir.display(),
                        dir.display()
                    );
                }
                let mut cmd = pinned(opts, Path::new(&opts.node));
                cmd.arg(dir.join("server.js"))
                    .env("HOST", "127.0.0.1")
                    .env("PORT", "0")
                    .env_remove("REDIS_URL")
                    .env_remove("DISPATCHER");
                if let Some(m) = member {
                    cmd.env("REDIS_URL", &m.redis_url);
                    if m.dispatcher {
                        cmd.env("DISPATCHER", "1");
                    }
                }
                (cmd, None, None)
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {label}"))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let warnings = Arc::new(Mutex::new(VecDeque::new()));
        // A bounded channel of one: only the first `listening on` line matters.
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(1);
        // Both pipes are read to the end, or a chatty server would block on a
        // full pipe and look slow.
        for (pipe, is_stdout) in [
            (
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                true,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                false,
            ),
        ] {
            let Some(pipe) = pipe else { continue };
            let log = log.clone();
            let warnings = warnings.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(i) = line.find("listening on ") {
                        let addr = line[i + "listening on ".len()..]
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_string();
                        // Full or closed: the address was already taken.
                        let _ignored = tx.try_send(addr);
                    }
                    let line = if is_stdout {
                        line
                    } else {
                        format!("stderr: {line}")
                    };
                    if is_warning(&line) {
                        let mut w = warnings.lock().expect("log poisoned");
                        if w.len() == WARNING_LINES {
                            w.pop_front();
                        }
                        w.push_back(line.clone());
                    }
                    let mut log = log.lock().expect("log poisoned");
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        drop(tx);
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ignored = child.kill();
                let _ignored = child.wait();
                let log = log
                    .lock()
                    .expect("log poisoned")
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!(
                    "no `listening on` line within {} s; its output:\n{}",
                    START_TIMEOUT.as_secs(),
                    if log.is_empty() { "(none)" } else { &log }
                );
            }
        };
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("{label} printed an odd address: {addr}"))?;
        tracing::info!(server = %label, %addr, pid = child.id(), "server started");
        Ok(Target {
            kind,
            addr,
            label,
            child,
            _data_dir: data_dir,
            accounts,
            pitboss_bin,
            log,
            warnings,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's memory and CPU counters.
    pub fn stats(&self) -> ProcStats {
        ProcStats::of(self.pid())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines the server logged.
    pub fn logs(&self) -> String {
        let log = self.log.lock().expect("log poisoned");
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// The warnings and errors the server logged, and routing changes (the
    /// last few hundred).
    pub fn warnings(&self) -> Vec<String> {
        let w = self.warnings.lock().expect("log poisoned");
        w.iter().cloned().collect()
    }

    /// Whether the server has logged a line containing `needle` (among its last
    /// lines).
    pub fn logged(&self, needle: &str) -> bool {
        let log = self.log.lock().expect("log poisoned");
        log.iter().any(|l| l.contains(needle))
    }

    /// Creates Pitboss agents `{prefix}{i}` for `i` in `0..count`, serving `en` in
    /// `general`, through the CLI as an operator would. Several at once: each
    /// hashes a password, which is slow in a debug build.
    pub fn add_agents(
        &self,
        prefix: &str,
        count: usize,
        capacity: usize,
    ) -> anyhow::Result<Vec<String>> {
        let accounts = self
            .accounts
            .clone()
            .context("agents exist only on pitboss")?;
        let logins: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
        // Two at a time per core is enough to hide process start-up.
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
        for chunk in logins.chunks(parallel) {
            let handles: Vec<_> = chunk
                .iter()
                .map(|login| {
                    let bin = self.pitboss_bin.clone();
                    let accounts = accounts.clone();
                    let login = login.clone();
                    std::thread::spawn(move || add_agent(&bin, &accounts, &login, capacity))
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("agent add thread panicked"))??;
            }
        }
        Ok(logins)
    }

    /// Logs an agent in through `POST /api/login` and returns the session token.
    pub async fn login(&self, login: &str) -> anyhow::Result<String> {
        let res = reqwest::Client::new()
            .post(format!("http://{}/api/login", self.addr))
            .json(&serde_json::json!({ "login": login, "password": AGENT_PASSWORD }))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("login {login}: HTTP {}", res.status());
        }
        let body: serde_json::Value = res.json().await?;
        Ok(body["token"]
            .as_str()
            .context("login answer has no token")?
            .to_string())
    }

    /// Stops the server: SIGKILL by its pid (the run is over, nothing of it is
    /// kept), then reaps it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Err(err) = self.child.kill() {
                tracing::warn!(%err, pid = self.child.id(), "cannot stop the server");
            }
        }
        if let Err(err) = self.child.wait() {
            tracing::warn!(%err, "cannot reap the server");
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.kill();
    }
}

fn add_agent(bin: &Path, accounts: &Accounts, login: &str, capacity: usize) -> anyhow::Result<()> {
    let mut cmd = Command::new(bin);
    cmd.args(["agent", "add", login, "--password-stdin"])
        .args([
            "--languages",
            "en",
            "--departments",
            "general",
            "--capacity",
        ])
        .arg(capacity.to_string())
        .env_remove("PITBOSS_DATABASE_URL")
        .env_remove("PITBOSS_DATA_DIR");
    match accounts {
        Accounts::DataDir(dir) => cmd.arg("--data-dir").arg(dir),
        Accounts::Database(url) => cmd.args(["--database-url", url]),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running pitboss agent add")?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(format!("{AGENT_PASSWORD}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "pitboss agent add {login} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Whether a server's log line is worth keeping apart: a warning or an error
/// (tracing's text format, or anything on stderr, where Node writes errors), or
/// a Pitboss node taking over routing.
fn is_warning(line: &str) -> bool {
    line.contains(" WARN ")
        || line.contains(" ERROR ")
        || line.starts_with("stderr: ")
        || line.contains("routing here now")
}

/// A command that runs `program`, under `taskset` when CPUs are given. `taskset`
/// execs the program, so the child's pid is the server's own.
pub fn pinned(opts: &TargetOptions, program: &Path) -> Command {
    match &opts.server_cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpus).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A program cargo built beside this one (`target/<profile>/<name>`).
pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// `loadtest/socketio` of the workspace this program was built in.
fn socketio_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("socketio")
}
