//! Cluster harness: a private `redis-server`, a PostgreSQL database (on the process's
//! shared private server, or on a server of the test's own that it can stop, start,
//! hang and resume), and N real `pitboss` nodes on them (`--node node-1..N`), which
//! the test can SIGKILL, SIGSTOP/SIGCONT, SIGTERM and restart. Everything it starts
//! is killed by PID when the [`Cluster`] is dropped; when a test fails, every node's
//! log is printed (and the Redis log's tail).
//!
//! Clients are [`Peer`]s: a WebSocket whose frames a reader task hands over as they
//! come, so a test can drive dozens of them at once. A peer records every frame and
//! checks, on every connection, that `message` and `ack` frames of a conversation
//! form a gap-free `seq`/`prev` chain, and across its connections that no entry
//! arrives twice. [`check_exactly_once`] then compares what both sides of a
//! conversation saw with the stored transcript.
//!
//! Waits poll (with a short sleep) until a condition holds or a deadline passes;
//! deadlines are at least five times the timeout that governs what is awaited.

use super::Server;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[path = "../../../cluster/tests/support/redis_server.rs"]
mod redis_server;

#[allow(dead_code)]
#[path = "../../../transcripts/tests/support/private_postgres.rs"]
mod private_postgres;

use private_postgres::PrivatePostgres;
pub use redis_server::{signal, signal_quietly, RedisServer};

/// `--heartbeat-secs` of every node: presence and the routing lease last three.
pub const HEARTBEAT_SECS: &str = "0.5";
/// The routing lease's ttl: three heartbeats.
pub const LEASE_TTL: Duration = Duration::from_millis(1500);
/// How long the cluster may take to settle after a failure: a new leader, presence
/// rebuilt, a node resubscribed and resynchronised. Ten times the lease ttl, and
/// over five times the desk's route timeout (2 s) and Redis reconnect backoff (2 s).
pub const SETTLE: Duration = Duration::from_secs(15);
/// `--agent-grace-secs` of every node: long enough for any reconnect in a test.
pub const AGENT_GRACE_SECS: &str = "30";
/// The Redis key of the routing lease (default prefix).
pub const LEASE_KEY: &str = "pitboss:router-lease";
/// Every account's password (as in `Server::add_agent`).
pub const PASSWORD: &str = "secret-password";

/// What a test's cluster looks like.
#[derive(Clone, Default)]
pub struct Setup {
    /// Number of nodes (node-1 ..= node-N).
    pub nodes: usize,
    /// Extra `redis-server` settings, e.g. `["--client-output-buffer-limit",
    /// "pubsub", "32kb", "16kb", "1"]`.
    pub redis_args: Vec<String>,
    /// A PostgreSQL server of the test's own (to stop or hang it) instead of a
    /// database on the process's shared one.
    pub own_postgres: bool,
    /// Extra `pitboss serve` flags for every node.
    pub node_args: Vec<String>,
}

impl Setup {
    pub fn nodes(n: usize) -> Setup {
        Setup {
            nodes: n,
            ..Setup::default()
        }
    }
}

/// A running cluster. Fields drop in order: nodes first, then Redis, then the
/// PostgreSQL control (which resumes a hung server) and the server itself.
pub struct Cluster {
    /// `nodes[i]` is `node-{i+1}`.
    pub nodes: Vec<Server>,
    pub redis: RedisServer,
    pub database_url: String,
    /// Control of the test's own PostgreSQL server, with `Setup::own_postgres`.
    pub postgres: Option<Postgres>,
    own_server: Option<PrivatePostgres>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts Redis, the database and the nodes (one after the other, node-1
    /// first), then waits until one of them routes.
    pub async fn start(setup: Setup) -> Cluster {
        let redis_args: Vec<&str> = setup.redis_args.iter().map(String::as_str).collect();
        let redis = RedisServer::start(&redis_args);
        let (own_server, database_url) = if setup.own_postgres {
            let server = PrivatePostgres::start()
                .unwrap_or_else(|why| panic!("cannot start a private PostgreSQL: {why}"));
            let url = server.create_database();
            (Some(server), url)
        } else {
            (None, PrivatePostgres::shared().create_database())
        };
        let postgres = own_server
            .as_ref()
            .map(|_| Postgres::new(port_of(&database_url)));
        let dir = super::tempdir();
        let mut nodes = Vec::new();
        for i in 1..=setup.nodes {
            let name = format!("node-{i}");
            let node_dir = dir.path().join(&name);
            std::fs::create_dir_all(&node_dir).unwrap();
            let redis_url = redis.url();
            let mut args: Vec<&str> = vec![
                "--node",
                &name,
                "--redis-url",
                &redis_url,
                "--database-url",
                &database_url,
                "--heartbeat-secs",
                HEARTBEAT_SECS,
                "--shutdown-timeout-secs",
                "5",
            ];
            if !setup.node_args.iter().any(|a| a == "--agent-grace-secs") {
                args.extend(["--agent-grace-secs", AGENT_GRACE_SECS]);
            }
            args.extend(setup.node_args.iter().map(String::as_str));
            let mut server = Server::start(&node_dir, &args);
            server.label = name.clone();
            server.agent_args = vec!["--database-url".into(), database_url.clone()];
            nodes.push(server);
        }
        let cluster = Cluster {
            nodes,
            redis,
            database_url,
            postgres,
            own_server,
            _dir: dir,
        };
        cluster.wait_leader(None).await;
        cluster
    }

    /// `node-{i+1}`.
    pub fn name(i: usize) -> String {
        format!("node-{}", i + 1)
    }

    pub fn addr(&self, i: usize) -> String {
        self.nodes[i].addr.clone()
    }

    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// A running node, for REST calls.
    pub fn any_running(&self) -> usize {
        (0..self.nodes.len())
            .find(|&i| self.running(i))
            .expect("a running node")
    }

    /// Adds an account in PostgreSQL through the CLI (`--database-url`).
    pub fn add_agent(&self, login: &str, capacity: u32, supervisor: bool) {
        self.nodes[0].add_agent(login, "en", "general", capacity, supervisor);
    }

    /// Adds an agent serving one department (English).
    pub fn add_agent_in(&self, login: &str, department: &str, capacity: u32) {
        self.nodes[0].add_agent(login, "en", department, capacity, false);
    }

    /// Logs in over REST on a running node; returns the session token.
    pub async fn login(&self, login: &str) -> String {
        self.nodes[self.any_running()].login(login).await
    }

    /// SIGKILL.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn stop(&self, i: usize) {
        signal(self.nodes[i].pid(), "STOP");
    }

    /// SIGCONT.
    pub fn resume(&self, i: usize) {
        signal(self.nodes[i].pid(), "CONT");
    }

    /// SIGTERM, then waits for the exit (collecting the process).
    pub async fn terminate(&mut self, i: usize) -> (std::process::ExitStatus, Duration) {
        let since = self.nodes[i].signal_term();
        let status = self.nodes[i].wait_exit().await;
        (status, since.elapsed())
    }

    /// Starts a stopped node again with the same arguments.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].spawn();
    }

    /// The routing lease in Redis: holder's node id and epoch.
    pub async fn lease(&self) -> Option<(String, u64)> {
        let client = redis::Client::open(self.redis.url()).ok()?;
        let mut conn = tokio::time::timeout(
            Duration::from_secs(1),
            client.get_multiplexed_async_connection(),
        )
        .await
        .ok()?
        .ok()?;
        let (node, epoch): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(LEASE_KEY)
            .arg("node")
            .arg("epoch")
            .query_async(&mut conn)
            .await
            .ok()?;
        Some((node?, epoch?))
    }

    /// Node `i`'s last presence heartbeat: the entries it announced (raw JSON), and
    /// how long it stays alive from now (negative: expired), by Redis's clock.
    pub async fn presence(&self, i: usize) -> Option<(String, i64)> {
        let client = redis::Client::open(self.redis.url()).ok()?;
        let mut conn = tokio::time::timeout(
            Duration::from_secs(1),
            client.get_multiplexed_async_connection(),
        )
        .await
        .ok()?
        .ok()?;
        let name = Cluster::name(i);
        let entries: Option<String> = redis::cmd("HGET")
            .arg("pitboss:presence:agents")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .ok()?;
        let expiry: Option<f64> = redis::cmd("ZSCORE")
            .arg("pitboss:presence:expiry")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .ok()?;
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.ok()?;
        let now = secs * 1000 + micros / 1000;
        Some((entries?, expiry? as i64 - now))
    }

    /// Whether node `i` logged that it routes under `epoch`.
    pub fn routes_under(&self, i: usize, epoch: u64) -> bool {
        let field = format!("epoch={epoch}");
        self.nodes[i]
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("routing here now") && l.split_whitespace().any(|w| w == field))
    }

    /// Waits until a running node (other than `not`) holds the routing lease and
    /// has rebuilt its router under it; returns its index.
    pub async fn wait_leader(&self, not: Option<usize>) -> usize {
        let start = Instant::now();
        loop {
            if let Some((node, epoch)) = self.lease().await {
                if let Some(i) = (0..self.nodes.len()).find(|&i| Cluster::name(i) == node) {
                    if Some(i) != not && self.running(i) && self.routes_under(i, epoch) {
                        return i;
                    }
                }
            }
            assert!(
                start.elapsed() < SETTLE,
                "no node took over routing within {SETTLE:?} (lease: {:?}, excluded: {not:?})",
                self.lease().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Log lines of node `i` containing `needle`.
    pub fn log_lines(&self, i: usize, needle: &str) -> Vec<String> {
        self.nodes[i]
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// How many log lines node `i` has now (to look only at what follows).
    pub fn log_len(&self, i: usize) -> usize {
        self.nodes[i].log.lock().unwrap().len()
    }

    /// Log lines of node `i` from line `from` on, containing `needle`.
    pub fn log_since(&self, i: usize, from: usize, needle: &str) -> Vec<String> {
        self.nodes[i].log.lock().unwrap()[from..]
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// The stored transcript (agent view, every entry), read over REST.
    pub async fn transcript(&self, conversation: &str, token: &str) -> Vec<Value> {
        let node = &self.nodes[self.any_running()];
        let body = node
            .get_json(
                &format!("/api/conversations/{conversation}/transcript?limit=1000"),
                token,
            )
            .await;
        body["messages"].as_array().expect("messages").clone()
    }

    /// The stored summary of a conversation, read over REST.
    pub async fn summary(&self, conversation: &str, token: &str) -> Value {
        let node = &self.nodes[self.any_running()];
        node.get_json(&format!("/api/conversations/{conversation}"), token)
            .await["conversation"]
            .clone()
    }

    /// A new visitor on node `i`.
    pub async fn visitor(&self, name: &str, i: usize) -> Peer {
        self.visitor_with(name, None, i).await
    }

    /// A visitor on node `i`, the same one again if `token` is an earlier
    /// `visitor_token` (another device of the same player).
    pub async fn visitor_with(&self, name: &str, token: Option<&str>, i: usize) -> Peer {
        let auth = json!({"kind":"visitor","token":token,"name":name,"language":"en"});
        Peer::connect(name, false, auth, i, &self.addr(i)).await
    }

    /// An agent (already logged in: `token`) on node `i`.
    pub async fn agent(&self, login: &str, token: &str, i: usize) -> Peer {
        let auth = json!({"kind":"agent","token":token});
        Peer::connect(login, true, auth, i, &self.addr(i)).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.redis.log();
            let start = log
                .char_indices()
                .rev()
                .nth(3000)
                .map(|(i, _)| i)
                .unwrap_or(0);
            eprintln!("---- redis log (tail) ----\n{}", &log[start..]);
        }
    }
}

/// The port of a `postgres://user@host:port/db` URL.
fn port_of(url: &str) -> u16 {
    let rest = url.rsplit('@').next().expect("host");
    let hostport = rest.split('/').next().expect("host:port");
    hostport
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the database URL")
}

// ------------------------------------------------------------------ PostgreSQL

/// Stops, starts, hangs and resumes the test's own PostgreSQL server, found by its
/// port among the processes (the postmaster is the `postgres` process started with
/// `-p PORT`; its children are the processes whose parent it is).
pub struct Postgres {
    port: u16,
    /// The postmaster's command line while the server is stopped.
    stopped: Option<Vec<String>>,
    /// Processes stopped with SIGSTOP, to resume.
    frozen: Vec<u32>,
}

impl Postgres {
    fn new(port: u16) -> Postgres {
        Postgres {
            port,
            stopped: None,
            frozen: Vec::new(),
        }
    }

    /// The postmaster: its PID and command line.
    pub fn postmaster(&self) -> Option<(u32, Vec<String>)> {
        let port = self.port.to_string();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_postgres = args
                .first()
                .is_some_and(|a| Path::new(a).file_name().is_some_and(|f| f == "postgres"));
            if is_postgres && args.windows(2).any(|w| w[0] == "-p" && w[1] == port) {
                return Some((pid, args));
            }
        }
        None
    }

    /// Processes whose parent is `parent`.
    fn children(parent: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces, so after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) {
                out.push(pid);
            }
        }
        out
    }

    /// `pg_ctl` beside the server binary, as the owner of the data directory.
    fn pg_ctl(program: &str, data: &str) -> Command {
        let pg_ctl = Path::new(program).with_file_name("pg_ctl");
        let owner = std::fs::metadata(data).map(|m| m.uid()).unwrap_or(0);
        let me = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(0);
        let mut cmd = if owner != me {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(pg_ctl);
            cmd
        } else {
            Command::new(pg_ctl)
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    fn data_dir(args: &[String]) -> String {
        args.windows(2)
            .find(|w| w[0] == "-D")
            .map(|w| w[1].clone())
            .expect("the postmaster's -D")
    }

    fn run(cmd: &mut Command) {
        let out = cmd.output().expect("run pg_ctl");
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// `pg_ctl stop -m immediate`: every connection is cut at once.
    pub fn stop(&mut self) {
        let (_, args) = self.postmaster().expect("PostgreSQL is running");
        let data = Postgres::data_dir(&args);
        Postgres::run(
            Postgres::pg_ctl(&args[0], &data)
                .args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(&data),
        );
        self.stopped = Some(args);
    }

    /// Starts the stopped server again with the same options, and waits until it
    /// accepts connections.
    pub fn start(&mut self) {
        let args = self.stopped.take().expect("stopped before");
        let data = Postgres::data_dir(&args);
        let mut options = Vec::new();
        let mut rest = args[1..].iter();
        while let Some(a) = rest.next() {
            if a == "-D" {
                rest.next();
                continue;
            }
            options.push(format!("'{}'", a.replace('\'', r"'\''")));
        }
        let log = PathBuf::from(&data).with_file_name("restarted.log");
        Postgres::run(
            Postgres::pg_ctl(&args[0], &data)
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(log)
                .arg("-o")
                .arg(options.join(" ")),
        );
    }

    /// SIGSTOP to the postmaster, then to each of its children: the server hangs
    /// with every connection open.
    pub fn hang(&mut self) {
        let (pid, _) = self.postmaster().expect("PostgreSQL is running");
        signal(pid, "STOP");
        self.frozen.push(pid);
        for child in Postgres::children(pid) {
            signal(child, "STOP");
            self.frozen.push(child);
        }
    }

    /// SIGCONT to every process `hang` stopped.
    pub fn unhang(&mut self) {
        for pid in self.frozen.drain(..).rev() {
            signal_quietly(pid, "CONT");
        }
    }

    /// The processes `hang` stopped.
    pub fn hung(&self) -> &[u32] {
        &self.frozen
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.unhang();
    }
}

// ----------------------------------------------------------------------- peers

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

enum Incoming {
    Frame(Value),
    /// The connection ended: its close code, `None` without a close frame.
    Closed(Option<u16>),
}

/// A client: one connection at a time, reconnectable, with everything it received.
pub struct Peer {
    pub name: String,
    pub is_agent: bool,
    /// The `auth` of `hello` (a visitor's token is filled in from `welcome`).
    auth: Value,
    /// The node it is connected to now.
    pub node: usize,
    sink: Option<Sink>,
    rx: Option<mpsc::UnboundedReceiver<Incoming>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    /// How the current connection ended, once it has.
    pub closed: Option<Option<u16>>,
    pub welcome: Value,
    /// When the current connection was opened.
    pub connected_at: Instant,
    /// When `resumed` arrived on the current connection, per conversation.
    pub resumed_at: HashMap<String, Instant>,
    /// The chain on the current connection: last `seq` seen per attached conversation.
    conn_last: HashMap<String, u64>,
    /// The frame that last moved the chain, per conversation (for failure messages).
    conn_last_frame: HashMap<String, String>,
    /// Every `seq` this user saw (messages and own acks), in order, all connections.
    pub seen: HashMap<String, Vec<u64>>,
    /// Every `message` frame, per conversation, all connections.
    pub messages: HashMap<String, Vec<Value>>,
    /// Every `ack`, per client id.
    pub acks: HashMap<String, Vec<Value>>,
    /// Every message sent: conversation, client id, text (each client id once).
    pub sent: Vec<(String, String, String)>,
    /// Every frame received, all connections, in order.
    pub frames: Vec<Value>,
    /// Broken promises: gaps, duplicates, reordering.
    pub violations: Vec<String>,
}

impl Peer {
    async fn connect(name: &str, is_agent: bool, auth: Value, node: usize, addr: &str) -> Peer {
        let mut peer = Peer {
            name: name.to_owned(),
            is_agent,
            auth,
            node,
            sink: None,
            rx: None,
            reader: None,
            closed: None,
            welcome: Value::Null,
            connected_at: Instant::now(),
            resumed_at: HashMap::new(),
            conn_last: HashMap::new(),
            conn_last_frame: HashMap::new(),
            seen: HashMap::new(),
            messages: HashMap::new(),
            acks: HashMap::new(),
            sent: Vec::new(),
            frames: Vec::new(),
            violations: Vec::new(),
        };
        peer.open(node, addr).await;
        peer
    }

    /// (Re)connects to node `node` at `addr`: `hello`, then waits for `welcome`.
    /// Nothing is attached yet.
    pub async fn open(&mut self, node: usize, addr: &str) {
        self.drop_connection();
        self.node = node;
        self.connected_at = Instant::now();
        let (ws, _) = tokio::time::timeout(
            SETTLE,
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: connecting to {addr} timed out", self.name))
        .unwrap_or_else(|e| panic!("{}: connecting to {addr}: {e}", self.name));
        let (sink, mut stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        self.reader = Some(tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Text(t)) => {
                        let v = serde_json::from_str(&t)
                            .unwrap_or_else(|_| json!({"type":"<not json>","raw":t.to_string()}));
                        if tx.send(Incoming::Frame(v)).is_err() {
                            return;
                        }
                    }
                    Ok(Message::Close(f)) => {
                        let _ = tx.send(Incoming::Closed(f.map(|f| u16::from(f.code))));
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(Incoming::Closed(None));
        }));
        self.sink = Some(sink);
        self.rx = Some(rx);
        self.closed = None;
        let hello = json!({"type":"hello","protocol":1,"auth":self.auth});
        assert!(self.send(hello).await, "{}: hello not sent", self.name);
        let start = self.frames.len();
        let welcome = self
            .wait_frame(start, "welcome", SETTLE, |f| f["type"] == "welcome")
            .await;
        if let Some(token) = welcome["visitor_token"].as_str() {
            self.auth["token"] = json!(token);
        }
        self.welcome = welcome;
    }

    /// A visitor's token (from the first `welcome`).
    pub fn visitor_token(&self) -> Option<String> {
        self.auth["token"].as_str().map(str::to_owned)
    }

    fn drop_connection(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        self.sink = None;
        self.rx = None;
        self.conn_last.clear();
        self.conn_last_frame.clear();
        self.resumed_at.clear();
    }

    /// Closes the connection from this side (a close frame, then gone).
    pub async fn hang_up(&mut self) {
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.close().await;
        }
        self.drop_connection();
        self.closed = Some(Some(1000));
    }

    /// Whether the current connection is open (as far as this side knows).
    pub fn is_open(&self) -> bool {
        self.sink.is_some() && self.closed.is_none()
    }

    /// Sends a frame; `false` if the connection is gone.
    pub async fn send(&mut self, v: Value) -> bool {
        if self.closed.is_some() {
            return false;
        }
        let Some(sink) = self.sink.as_mut() else {
            return false;
        };
        sink.send(Message::Text(v.to_string().into())).await.is_ok()
    }

    /// Sends a message (remembered as sent, to be acked).
    pub async fn say(&mut self, conversation: &str, client_id: &str, text: &str) -> bool {
        if !self
            .sent
            .iter()
            .any(|(c, id, _)| c == conversation && id == client_id)
        {
            self.sent
                .push((conversation.into(), client_id.into(), text.into()));
        }
        self.send(
            json!({"type":"send","conversation":conversation,"client_id":client_id,"text":text}),
        )
        .await
    }

    /// Sends `resume` from `after`; the connection's chain starts there.
    pub async fn resume(&mut self, conversation: &str, after: u64) -> bool {
        self.conn_last.insert(conversation.to_owned(), after);
        self.resumed_at.remove(conversation);
        self.send(json!({"type":"resume","conversation":conversation,"after":after}))
            .await
    }

    /// The highest `seq` this user saw of a conversation (0: none).
    pub fn last_seen(&self, conversation: &str) -> u64 {
        self.seen
            .get(conversation)
            .and_then(|s| s.iter().max().copied())
            .unwrap_or(0)
    }

    /// The `seq` an ack gave this client id, if any ack came.
    pub fn acked(&self, client_id: &str) -> Option<u64> {
        self.acks
            .get(client_id)
            .and_then(|a| a.first())
            .and_then(|a| a["seq"].as_u64())
    }

    /// Messages sent and not acked yet.
    pub fn unacked(&self) -> Vec<(String, String, String)> {
        self.sent
            .iter()
            .filter(|(_, id, _)| self.acked(id).is_none())
            .cloned()
            .collect()
    }

    /// Sends every unacked message again (same client id, same text).
    pub async fn resend_unacked(&mut self) {
        for (c, id, text) in self.unacked() {
            self.send(json!({"type":"send","conversation":c,"client_id":id,"text":text}))
                .await;
        }
    }

    /// Reconnects to node `node` and does what a client does after a reconnect:
    /// resumes each conversation from the last `seq` it saw, resends what was not
    /// acked.
    pub async fn rejoin(&mut self, node: usize, addr: &str, conversations: &[String]) {
        self.open(node, addr).await;
        for c in conversations {
            let after = self.last_seen(c);
            self.resume(c, after).await;
        }
        self.resend_unacked().await;
    }

    /// Takes every frame that has arrived.
    pub fn pump(&mut self) {
        let mut items = Vec::new();
        if let Some(rx) = self.rx.as_mut() {
            while let Ok(item) = rx.try_recv() {
                items.push(item);
            }
        }
        for item in items {
            match item {
                Incoming::Frame(v) => self.process(v),
                Incoming::Closed(code) => {
                    if self.closed.is_none() {
                        self.closed = Some(code);
                    }
                    self.sink = None;
                }
            }
        }
    }

    fn violation(&mut self, what: String) {
        self.violations.push(format!("{}: {what}", self.name));
    }

    /// Checks one entry against the connection's chain and the user's history.
    fn chain(&mut self, conversation: &str, frame: &Value, what: &str) {
        let seq = frame["seq"].as_u64().unwrap_or(0);
        let prev = frame["prev"].as_u64().unwrap_or(0);
        match self.conn_last.get(conversation).copied() {
            None => self.violation(format!(
                "{what} seq {seq} of {conversation} on a connection not attached to it"
            )),
            Some(last) if prev != last || seq <= last => {
                let before = self
                    .conn_last_frame
                    .get(conversation)
                    .cloned()
                    .unwrap_or_default();
                self.violation(format!(
                    "{what} seq {seq} prev {prev} of {conversation} after {last} on this \
                     connection: {frame} after {before}"
                ))
            }
            Some(_) => {}
        }
        self.conn_last.insert(conversation.to_owned(), seq);
        let mut shown = frame.clone();
        if let Some(text) = shown["text"].as_str() {
            shown["text"] = json!(text.chars().take(20).collect::<String>());
        }
        self.conn_last_frame
            .insert(conversation.to_owned(), shown.to_string());
        let seen = self.seen.entry(conversation.to_owned()).or_default();
        let twice = seen.contains(&seq);
        seen.push(seq);
        if twice {
            self.violation(format!("{what} seq {seq} of {conversation} received twice"));
        }
    }

    fn process(&mut self, v: Value) {
        let conversation = v["conversation"].as_str().unwrap_or("").to_owned();
        let seq = v["seq"].as_u64().unwrap_or(0);
        match v["type"].as_str().unwrap_or("") {
            "message" => {
                self.chain(&conversation, &v, "message");
                self.messages
                    .entry(conversation)
                    .or_default()
                    .push(v.clone());
            }
            "ack" => {
                let id = v["client_id"].as_str().unwrap_or("").to_owned();
                if let Some(first) = self.acked(&id) {
                    if first != seq {
                        self.violation(format!("{id} acked as {first}, then as {seq}"));
                    }
                }
                if v["duplicate"] == false {
                    if self
                        .acks
                        .get(&id)
                        .is_some_and(|a| a.iter().any(|a| a["duplicate"] == false))
                    {
                        self.violation(format!("{id} acked as new twice"));
                    }
                    self.chain(&conversation, &v, "ack");
                }
                self.acks.entry(id).or_default().push(v.clone());
            }
            "resumed" => {
                let last = v["last_seq"].as_u64().unwrap_or(0);
                match self.conn_last.get(&conversation).copied() {
                    None => {
                        self.conn_last.insert(conversation.clone(), last);
                    }
                    Some(had) if had != last => self.violation(format!(
                        "resumed {conversation} at {last} after replaying up to {had}"
                    )),
                    Some(_) => {}
                }
                self.resumed_at.insert(conversation, Instant::now());
            }
            "assigned" if self.is_agent => {
                // Attached from 0: the replay follows.
                self.conn_last.insert(conversation.clone(), 0);
                self.resumed_at.remove(&conversation);
            }
            "released" if self.is_agent => {
                self.conn_last.remove(&conversation);
            }
            _ => {}
        }
        self.frames.push(v);
    }

    /// Where the next frame will be recorded (for `wait_frame`/`find`).
    pub fn mark(&self) -> usize {
        self.frames.len()
    }

    /// The first frame from `since` on that matches.
    pub fn find(&self, since: usize, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.frames[since.min(self.frames.len())..]
            .iter()
            .find(|f| pred(f))
            .cloned()
    }

    /// Waits for a frame from `since` on that matches.
    pub async fn wait_frame(
        &mut self,
        since: usize,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            self.pump();
            if let Some(f) = self.find(since, &pred) {
                return f;
            }
            assert!(
                start.elapsed() < limit,
                "{}: no {what} within {limit:?} (connection {:?}); frames since: {}",
                self.name,
                self.closed,
                tail(&self.frames[since.min(self.frames.len())..], 20)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the peer's state satisfies `done`.
    pub async fn wait(&mut self, what: &str, limit: Duration, done: impl Fn(&Peer) -> bool) {
        until(what, limit, &mut [self], |p| done(p[0])).await;
    }

    /// What went by lately, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} on {} (closed: {:?}); violations: {:?}; last frames: {}",
            self.name,
            Cluster::name(self.node),
            self.closed,
            self.violations,
            tail(&self.frames, 8)
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

/// The last `n` frames, one per line, typing and queue snapshots left out.
pub fn tail(frames: &[Value], n: usize) -> String {
    let shown: Vec<String> = frames
        .iter()
        .filter(|f| f["type"] != "queue_snapshot" && f["type"] != "typing")
        .map(|f| f.to_string())
        .collect();
    let from = shown.len().saturating_sub(n);
    format!("\n  {}", shown[from..].join("\n  "))
}

/// Pumps every peer until `done` holds; panics after `limit`. Returns how long it took.
pub async fn until(
    what: &str,
    limit: Duration,
    peers: &mut [&mut Peer],
    mut done: impl FnMut(&[&mut Peer]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        for p in peers.iter_mut() {
            p.pump();
        }
        if done(peers) {
            return start.elapsed();
        }
        if start.elapsed() >= limit {
            let states: Vec<String> = peers.iter().map(|p| p.describe()).collect();
            panic!("{what}: not within {limit:?}\n{}", states.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every peer's broken promises, all together.
pub fn violations(peers: &[&Peer]) -> Vec<String> {
    peers.iter().flat_map(|p| p.violations.clone()).collect()
}

/// A conversation's stored transcript against what its player and agent saw:
/// `seq` 1..=N without gaps; every message either side sent stored exactly once,
/// with the text sent, under the `seq` its ack named, acked (at most one ack that
/// is not a duplicate); each side saw every entry exactly once (its own as acks or
/// replayed messages), and every entry's text as stored.
pub fn check_exactly_once(conversation: &str, stored: &[Value], sides: &[&Peer]) {
    let seqs: Vec<u64> = stored.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=stored.len() as u64).collect();
    assert_eq!(seqs, expected, "{conversation}: stored seqs have gaps");
    for side in sides {
        let role_is_agent = side.is_agent;
        for (c, id, text) in side.sent.iter().filter(|(c, _, _)| c == conversation) {
            let matching: Vec<&Value> = stored
                .iter()
                .filter(|e| {
                    e["client_id"] == id.as_str()
                        && (e["sender"]["role"] == "player") != role_is_agent
                })
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "{}: {c} {id} stored {} times",
                side.name,
                matching.len()
            );
            assert_eq!(
                matching[0]["text"],
                text.as_str(),
                "{}: {id} text",
                side.name
            );
            let acks = side.acks.get(id).cloned().unwrap_or_default();
            assert!(!acks.is_empty(), "{}: {id} never acked", side.name);
            for a in &acks {
                assert_eq!(
                    a["seq"], matching[0]["seq"],
                    "{}: {id} acked with another seq than stored",
                    side.name
                );
            }
            assert!(
                acks.iter().filter(|a| a["duplicate"] == false).count() <= 1,
                "{}: {id} acked as new more than once: {acks:?}",
                side.name
            );
        }
        let seen = side.seen.get(conversation).cloned().unwrap_or_default();
        assert_eq!(
            seen, expected,
            "{}: did not see {conversation} exactly once in order",
            side.name
        );
        for m in side.messages.get(conversation).into_iter().flatten() {
            let seq = m["seq"].as_u64().unwrap() as usize;
            let e = &stored[seq - 1];
            assert_eq!(
                (&m["text"], &m["client_id"], &m["sender"]["id"]),
                (&e["text"], &e["client_id"], &e["sender"]["id"]),
                "{}: entry {seq} of {conversation} differs from the store",
                side.name
            );
        }
    }
}
