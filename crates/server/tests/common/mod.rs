//! Test harness: runs the real `pitboss` binary on an ephemeral loopback port with
//! its own data directory, and talks to it with real WebSocket and HTTP clients.
#![allow(dead_code, unreachable_pub, missing_docs)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod cluster;

pub const BIN: &str = env!("CARGO_BIN_EXE_pitboss");

/// How long any single expectation may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Server {
    pub child: Option<Child>,
    pub addr: String,
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Shown with the log when a test fails (a cluster's node name).
    pub label: String,
    /// Extra arguments of `pitboss agent add` (a cluster's `--database-url`).
    pub agent_args: Vec<String>,
    /// The file-descriptor limit (`ulimit -n`) the process starts under, if not
    /// the test's own.
    pub fd_limit: Option<u32>,
}

impl Server {
    /// Starts a node on a fresh data directory with test-friendly limits.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut s = Server::start_stopped(dir, extra);
        s.spawn();
        s
    }

    /// The server [`Server::start`] starts, not started yet.
    fn start_stopped(dir: &Path, extra: &[&str]) -> Server {
        // Tests send faster than a person types; the flood test sets its own limits.
        let mut args: Vec<String> = Vec::new();
        if !extra.contains(&"--frames-per-second") {
            args.extend(
                ["--frames-per-second", "100000", "--burst-frames", "100000"].map(String::from),
            );
        }
        // Every test client comes from 127.0.0.1, and test players write faster
        // than people: the per-address and per-player abuse limits would refuse
        // a busy test; the tests of those limits set their own (a test with a
        // config file sets them there, or gets the real defaults).
        for (flag, value) in [
            ("--max-connections-per-address", "100000"),
            ("--connects-per-minute-per-address", "100000"),
            ("--visitors-per-minute-per-address", "100000"),
            ("--player-messages-per-minute", "1000000"),
            ("--player-message-burst", "1000000"),
            ("--player-typing-per-minute", "1000000"),
            ("--player-typing-burst", "1000000"),
        ] {
            if !extra.contains(&flag) && !extra.contains(&"--config") {
                args.extend([flag, value].map(String::from));
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Server {
            child: None,
            addr: String::new(),
            dir: dir.to_path_buf(),
            args,
            log: Arc::new(Mutex::new(Vec::new())),
            label: "pitboss".into(),
            agent_args: Vec::new(),
            fd_limit: None,
        }
    }

    /// [`Server::start`] under a file-descriptor limit of `fd_limit`.
    pub fn start_with_fd_limit(dir: &Path, extra: &[&str], fd_limit: u32) -> Server {
        let mut s = Server::start_stopped(dir, extra);
        s.fd_limit = Some(fd_limit);
        s.spawn();
        s
    }

    /// (Re)starts the process with the same directory and arguments.
    pub fn spawn(&mut self) {
        let mut command = match self.fd_limit {
            None => Command::new(BIN),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                sh
            }
        };
        let mut child = command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pitboss");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on ") {
                    // Text or JSON lines: the address ends at a space or a quote.
                    let addr = line[i + "listening on ".len()..]
                        .split(|c: char| c.is_whitespace() || c == '"')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send(addr);
                }
                log.lock().unwrap().push(line);
            }
        });
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        self.addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => panic!("pitboss did not start:\n{}", self.logs()),
        };
        self.child = Some(child);
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM; `wait_exit` then collects the process.
    pub fn signal_term(&self) -> std::time::Instant {
        let pid = self.child.as_ref().expect("running").id();
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        std::time::Instant::now()
    }

    /// Waits for the process to exit (without blocking the async runtime).
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        tokio::task::spawn_blocking(move || c.wait().unwrap())
            .await
            .unwrap()
    }

    /// Adds an account through the CLI, as an operator would.
    pub fn add_agent(
        &self,
        login: &str,
        languages: &str,
        departments: &str,
        capacity: u32,
        supervisor: bool,
    ) {
        let mut cmd = Command::new(BIN);
        cmd.args(["agent", "add", login, "--password-stdin", "--name"])
            .arg(format!("Agent {login}"))
            .args([
                "--languages",
                languages,
                "--departments",
                departments,
                "--capacity",
            ])
            .arg(capacity.to_string())
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.agent_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if supervisor {
            cmd.arg("--supervisor");
        }
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"secret-password\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "agent add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds an account with this role (`agent`, `supervisor`, `admin`) through the
    /// CLI's `--role`, serving English in `general`.
    pub fn add_with_role(&self, login: &str, role: &str) {
        let mut child = Command::new(BIN)
            .args(["agent", "add", login, "--password-stdin", "--role", role])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.agent_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"secret-password\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "agent add --role {role} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `pitboss agent ARGS…` on this node's data; returns (success, stdout,
    /// stderr).
    pub fn agent_command(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(BIN)
            .arg("agent")
            .args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.agent_args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub async fn login(&self, login: &str) -> String {
        let res = reqwest::Client::new()
            .post(self.url("/api/login"))
            .json(&json!({ "login": login, "password": "secret-password" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "login {login}");
        let body: Value = res.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, String) {
        let res = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.text().await.unwrap())
    }

    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.get(path, token).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn healthy(&self) -> bool {
        matches!(reqwest::get(self.url("/healthz")).await, Ok(r) if r.status() == 200)
    }

    /// An agent: logs in, connects, says hello, reads welcome.
    pub async fn agent(&self, login: &str) -> Client {
        let token = self.login(login).await;
        let mut c = Client::connect(&self.addr).await;
        c.send(json!({"type":"hello","protocol":1,"auth":{"kind":"agent","token":token}}))
            .await;
        let w = c.expect("welcome").await;
        c.welcome = w;
        c
    }

    /// A new anonymous visitor.
    pub async fn visitor(&self, language: &str) -> Client {
        self.visitor_with(None, language).await
    }

    pub async fn visitor_with(&self, token: Option<&str>, language: &str) -> Client {
        let mut c = Client::connect(&self.addr).await;
        c.send(json!({"type":"hello","protocol":1,"auth":{"kind":"visitor","token":token,"name":"Player","language":language}})).await;
        let w = c.expect("welcome").await;
        c.welcome = w;
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.label, self.logs());
        }
        self.kill();
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
    /// Frames read while waiting for another one, in arrival order.
    pub backlog: Vec<Value>,
}

impl Client {
    pub async fn connect(addr: &str) -> Client {
        Client::try_connect(addr).await.expect("connect")
    }

    /// Connects, or says why not: a node over its socket cap closes the socket
    /// before the upgrade.
    pub async fn try_connect(addr: &str) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
        Ok(Client {
            ws,
            welcome: Value::Null,
            backlog: Vec::new(),
        })
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send");
    }

    /// The next frame (from the backlog first). Panics on close or timeout.
    pub async fn next(&mut self) -> Value {
        if !self.backlog.is_empty() {
            return self.backlog.remove(0);
        }
        self.read()
            .await
            .unwrap_or_else(|c| panic!("connection closed: {c:?}"))
    }

    /// Reads one frame from the socket; Err(close code) when closed.
    pub async fn read(&mut self) -> Result<Value, Option<u16>> {
        loop {
            let Ok(msg) = tokio::time::timeout(WAIT, self.ws.next()).await else {
                panic!(
                    "timed out waiting for a frame; received meanwhile: {:?}",
                    self.backlog
                );
            };
            match msg {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(f))) => return Err(f.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// Waits for a frame of this type; others are kept in the backlog.
    pub async fn expect(&mut self, ty: &str) -> Value {
        self.expect_where(|v| v["type"] == ty).await
    }

    pub async fn expect_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        loop {
            let v = self.read().await.unwrap_or_else(|c| {
                panic!("closed ({c:?}) while waiting; backlog: {:?}", self.backlog)
            });
            if pred(&v) {
                return v;
            }
            self.backlog.push(v);
        }
    }

    /// Waits for the server to close the connection; returns the close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.read().await {
                Ok(v) => self.backlog.push(v),
                Err(code) => return code,
            }
        }
    }

    /// Sends a message and waits for its ack; returns the seq.
    pub async fn say(&mut self, conversation: &str, client_id: &str, text: &str) -> u64 {
        self.send(
            json!({"type":"send","conversation":conversation,"client_id":client_id,"text":text}),
        )
        .await;
        let ack = self
            .expect_where(|v| v["type"] == "ack" && v["client_id"] == client_id)
            .await;
        ack["seq"].as_u64().unwrap()
    }

    /// Collects `message` frames of a conversation until `resumed` arrives.
    pub async fn replay(&mut self, conversation: &str) -> (Vec<Value>, u64) {
        let mut out = Vec::new();
        loop {
            let v = self
                .expect_where(|v| {
                    v["conversation"] == conversation
                        && (v["type"] == "message" || v["type"] == "resumed")
                })
                .await;
            if v["type"] == "resumed" {
                return (out, v["last_seq"].as_u64().unwrap());
            }
            out.push(v);
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    pub fn close_code(code: u16) -> WsCloseCode {
        WsCloseCode::from(code)
    }
}

/// A player starts a chat; returns the conversation id.
pub async fn start_chat(player: &mut Client, department: Option<&str>) -> String {
    player
        .send(json!({"type":"start","department":department}))
        .await;
    let v = player
        .expect_where(|v| {
            matches!(
                v["type"].as_str(),
                Some("queued") | Some("no_agents") | Some("assigned")
            )
        })
        .await;
    v["conversation"].as_str().unwrap().to_string()
}

/// An agent waits for an offer of this conversation and accepts it; the agent is
/// then attached and receives the transcript so far, then `resumed`.
pub async fn accept(agent: &mut Client, conversation: &str) -> Vec<Value> {
    agent
        .expect_where(|v| v["type"] == "offer" && v["conversation"] == conversation)
        .await;
    agent
        .send(json!({"type":"accept","conversation":conversation}))
        .await;
    agent
        .expect_where(|v| v["type"] == "assigned" && v["conversation"] == conversation)
        .await;
    agent.replay(conversation).await.0
}

/// A conversation as a `welcome` lists it; panics if it is not listed.
pub fn listed(welcome: &Value, conversation: &str) -> Value {
    welcome["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .find(|c| c["id"] == conversation)
        .cloned()
        .unwrap_or_else(|| panic!("{conversation} is listed: {welcome}"))
}

/// The `outcome` of each hand-off in a conversation's detail
/// (`GET /api/conversations/{id}`), oldest first.
pub fn handoff_outcomes(detail: &Value) -> Vec<&str> {
    detail["handoffs"]
        .as_array()
        .expect("handoffs")
        .iter()
        .map(|h| h["outcome"].as_str().expect("outcome"))
        .collect()
}

/// The `kind` of each lifecycle event in a conversation's detail
/// (`GET /api/conversations/{id}`), oldest first.
pub fn event_kinds(detail: &Value) -> Vec<&str> {
    detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pitboss-test")
        .tempdir()
        .unwrap()
}
