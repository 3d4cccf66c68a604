//! A three-node cluster behind nginx, as `docs/cluster/local-cluster.sh` starts it
//! with `docs/cluster/nginx.conf`: an agent and a player chat through nginx only,
//! the node holding the player's socket is killed (SIGKILL), and the player,
//! reconnecting through nginx, lands on another node, resumes, gets every message
//! exactly once and keeps chatting. Then `local-cluster.sh stop` must leave none of
//! the recorded processes running.
//!
//! Needs nginx, redis-server and PostgreSQL's server binaries (Debian packages
//! `nginx redis-server postgresql`); without them the test fails with the command
//! that installs them.
#![allow(missing_docs)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const BIN: &str = env!("CARGO_BIN_EXE_pitboss");

/// How long any single expectation may take.
const WAIT: Duration = Duration::from_secs(20);

/// Nodes the script starts.
const NODES: usize = 3;

const PASSWORD: &str = "correct-horse-battery";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cluster/local-cluster.sh")
}

/// nginx on PATH or where Debian puts it; the test fails (never skips) without it.
fn require_nginx() {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join("nginx").is_file()))
        .unwrap_or(false);
    assert!(
        on_path || Path::new("/usr/sbin/nginx").is_file(),
        "nginx is not installed: this test runs a Pitboss cluster behind nginx. \
         Install it (Debian/Ubuntu, as root) with: apt-get install -y nginx"
    );
}

/// `count` distinct loopback ports that were free a moment ago.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether a process runs (an exited one its parent has not reaped yet does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// ESTABLISHED TCP sockets whose local port is each of `ports`: the server side of
/// nginx's connections to each node.
fn established(ports: &[u16]) -> Vec<usize> {
    let mut counts = vec![0; ports.len()];
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(content) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in content.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 || fields[3] != "01" {
                continue;
            }
            let port = fields[1]
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if let Some(i) = port.and_then(|p| ports.iter().position(|q| *q == p)) {
                counts[i] += 1;
            }
        }
    }
    counts
}

/// The cluster the script started in a temporary directory. Dropping it stops the
/// cluster (before the directory goes) and, when the test failed, prints the
/// script's output and every log.
struct Cluster {
    /// Script output so far (start, stop), for failure reports.
    transcript: String,
    /// `cluster.env`: what the script started.
    state: HashMap<String, String>,
    stopped: bool,
    /// Last field: removed after `drop` has stopped the cluster.
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(serve_args: &[&str]) -> Cluster {
        require_nginx();
        let dir = tempfile::Builder::new()
            .prefix("pitboss-nginx")
            .tempdir()
            .expect("temporary directory");
        let mut cluster = Cluster {
            transcript: String::new(),
            state: HashMap::new(),
            stopped: false,
            dir,
        };
        let ports = free_ports(NODES + 3);
        let node_ports: Vec<String> = ports[..NODES].iter().map(u16::to_string).collect();
        let output = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(cluster.path())
            .arg("--")
            .args(serve_args)
            .env("PITBOSS_BIN", BIN)
            .env("NODE_PORTS", node_ports.join(","))
            .env("REDIS_PORT", ports[NODES].to_string())
            .env("PG_PORT", ports[NODES + 1].to_string())
            .env("NGINX_PORT", ports[NODES + 2].to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        cluster.transcript = format!("$ local-cluster.sh start\n{}", text(&output));
        cluster.read_state();
        assert!(
            output.status.success(),
            "local-cluster.sh start failed ({})",
            output.status
        );
        cluster
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn read_state(&mut self) {
        let content = std::fs::read_to_string(self.path().join("cluster.env")).unwrap_or_default();
        self.state = content
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    }

    fn get(&self, key: &str) -> &str {
        self.state
            .get(key)
            .unwrap_or_else(|| panic!("cluster.env has no {key}"))
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> T {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("cluster.env: {key} is not a number"))
    }

    fn node_ports(&self) -> Vec<u16> {
        (1..=NODES)
            .map(|n| self.number(&format!("node{n}_port")))
            .collect()
    }

    /// The entry point, nginx: `127.0.0.1:PORT`.
    fn entry(&self) -> String {
        format!("127.0.0.1:{}", self.number::<u16>("nginx_port"))
    }

    /// Every PID the script recorded, by name.
    fn pids(&self) -> Vec<(String, u32)> {
        let mut pids: Vec<(String, u32)> = self
            .state
            .iter()
            .filter_map(|(k, v)| Some((k.strip_suffix("_pid")?.to_owned(), v.parse().ok()?)))
            .collect();
        pids.sort();
        pids
    }

    fn run_stop(&mut self) -> Output {
        self.stopped = true;
        let output = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.path())
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        self.transcript
            .push_str(&format!("$ local-cluster.sh stop\n{}", text(&output)));
        output
    }

    fn logs(&self) -> String {
        let dir = self.path();
        let mut files: Vec<PathBuf> = (1..=NODES)
            .map(|n| dir.join(format!("node{n}.log")))
            .collect();
        files.extend([
            dir.join("nginx/logs/error.log"),
            dir.join("nginx/logs/access.log"),
            dir.join("redis/redis.log"),
            dir.join("postgres.log"),
        ]);
        if let Some(root) = self.state.get("postgres_dir") {
            files.push(Path::new(root).join("postgres.log"));
        }
        let mut out = format!("---- script ----\n{}", self.transcript);
        for file in files {
            if let Ok(content) = std::fs::read_to_string(&file) {
                out.push_str(&format!("---- {} ----\n{content}\n", file.display()));
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.stopped && self.path().join("cluster.env").exists() {
            let _ = self.run_stop();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// What a client has seen of each conversation, kept across its reconnections.
#[derive(Default)]
struct Seen {
    /// Per conversation, the last seq received (`message`) or acknowledged (`ack`).
    last: HashMap<String, u64>,
}

/// A WebSocket client through nginx that checks, on every frame, that `message`
/// and `ack` come exactly once, in order, without gaps (no notes are written in
/// this test, so a player's `prev` is the previous seq too).
struct Client {
    name: String,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    seen: Seen,
    /// Every frame received on this connection, for failure reports.
    frames: Vec<Value>,
}

/// Per-address limits count players, not nginx: 100 new visitors, each from an
/// address of its own, are all welcomed. Counted as nginx's one address, 30 new
/// visitors a minute per node would turn the last ten away.
async fn visitors_count_as_their_own_addresses(entry: &str) {
    for i in 0..100 {
        let mut request = format!("ws://{entry}/ws")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "X-Forwarded-For",
            format!("198.51.100.{}", i + 1).parse().expect("header"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket through nginx");
        let hello = json!({"type":"hello","protocol":1,"auth":{"kind":"visitor","name":"P","language":"en"}});
        ws.send(Message::Text(hello.to_string().into()))
            .await
            .expect("hello");
        let reply = loop {
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    break serde_json::from_str::<Value>(&t).expect("JSON")
                }
                Ok(Some(Ok(_))) => continue,
                other => panic!("visitor {i}: no answer to hello: {other:?}"),
            }
        };
        assert_eq!(reply["type"], "welcome", "visitor {i}: {reply}");
        let _ = ws.close(None).await;
    }
}

impl Client {
    async fn connect(entry: &str, name: &str, seen: Seen) -> Client {
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async(format!("ws://{entry}/ws")),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: WebSocket through nginx timed out"))
        .unwrap_or_else(|e| panic!("{name}: WebSocket through nginx: {e}"));
        Client {
            name: name.to_owned(),
            ws,
            seen,
            frames: Vec::new(),
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap_or_else(|e| panic!("{}: send: {e}", self.name));
    }

    fn check(&mut self, v: &Value) {
        let ty = v["type"].as_str().unwrap_or("");
        if ty != "message" && ty != "ack" {
            return;
        }
        let conversation = v["conversation"].as_str().unwrap_or("").to_owned();
        let seq = v["seq"].as_u64().expect("seq");
        let prev = v["prev"].as_u64().expect("prev");
        let last = self.seen.last.get(&conversation).copied().unwrap_or(0);
        assert!(
            seq > last,
            "{}: {ty} seq {seq} arrived again (already had up to {last}): {v}",
            self.name
        );
        assert_eq!(
            prev, last,
            "{}: {ty} seq {seq} has prev {prev} but the last one seen was {last}: {v}",
            self.name
        );
        self.seen.last.insert(conversation, seq);
    }

    /// The next frame, `None` once the connection is closed. Panics after `WAIT`.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let read = tokio::time::timeout(WAIT, self.ws.next()).await;
            let Ok(read) = read else {
                panic!(
                    "{}: no frame for {WAIT:?}; received so far: {:#?}",
                    self.name, self.frames
                );
            };
            match read {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("a JSON frame");
                    self.check(&v);
                    self.frames.push(v.clone());
                    return Some(v);
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads until a frame matches; the others are checked and skipped.
    async fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.next().await {
                Some(v) if pred(&v) => return v,
                Some(_) => continue,
                None => panic!(
                    "{}: connection closed while waiting for {what}; received: {:#?}",
                    self.name, self.frames
                ),
            }
        }
    }

    async fn expect_type(&mut self, ty: &str) -> Value {
        self.expect(ty, |v| v["type"] == ty).await
    }

    /// Sends a message and waits for its ack; returns the seq.
    async fn say(&mut self, conversation: &str, client_id: &str, text: &str) -> u64 {
        self.send(
            json!({"type":"send","conversation":conversation,"client_id":client_id,"text":text}),
        )
        .await;
        let ack = self
            .expect(&format!("the ack of {client_id}"), |v| {
                v["type"] == "ack" || (v["type"] == "error" && v["client_id"] == client_id)
            })
            .await;
        assert_eq!(
            ack["type"], "ack",
            "{}: {client_id} refused: {ack}",
            self.name
        );
        assert_eq!(ack["duplicate"], false, "{}: {ack}", self.name);
        ack["seq"].as_u64().expect("seq")
    }

    /// Waits for the `message` carrying this client_id; returns its seq.
    async fn receive(&mut self, conversation: &str, client_id: &str) -> u64 {
        let v = self
            .expect(&format!("message {client_id}"), |v| {
                v["type"] == "message"
                    && v["conversation"] == conversation
                    && v["client_id"] == client_id
            })
            .await;
        v["seq"].as_u64().expect("seq")
    }

    /// Reads for `quiet`, and fails on any `message` or `ack` (nothing is owed).
    async fn expect_nothing_more(&mut self, quiet: Duration) {
        let until = tokio::time::Instant::now() + quiet;
        loop {
            let Ok(read) = tokio::time::timeout_at(until, self.ws.next()).await else {
                return;
            };
            match read {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("a JSON frame");
                    assert!(
                        v["type"] != "message" && v["type"] != "ack",
                        "{}: unexpected {v}",
                        self.name
                    );
                }
                Some(Ok(_)) => continue,
                _ => panic!("{}: connection closed", self.name),
            }
        }
    }

    /// Waits until the connection is closed (by nginx, when its node is gone).
    async fn expect_closed(&mut self) {
        while self.next().await.is_some() {}
    }

    async fn close(mut self) -> Seen {
        let _ = self.ws.close(None).await;
        self.seen
    }
}

/// Which node gained an ESTABLISHED connection from nginx between two counts.
fn node_gained(ports: &[u16], before: &[usize], after: &[usize]) -> usize {
    let gained: Vec<usize> = (0..ports.len()).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(
        gained.len(),
        1,
        "expected exactly one node to gain a connection from nginx: ports {ports:?}, \
         before {before:?}, after {after:?}"
    );
    gained[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_whose_node_dies_resumes_through_nginx_on_another_node() {
    let mut cluster = Cluster::start(&["--offer-timeout-secs", "60"]);
    let entry = cluster.entry();
    let ports = cluster.node_ports();

    // The printed database URL is the one the script recorded.
    let database_url = cluster.get("database_url").to_owned();
    assert!(
        cluster
            .transcript
            .split_whitespace()
            .any(|word| word == database_url),
        "start did not print the database URL {database_url}"
    );
    assert!(cluster.transcript.contains(&format!("http://{entry}/")));

    // An account, through the CLI, in the cluster's PostgreSQL.
    let mut add = Command::new(BIN)
        .args(["agent", "add", "ayla", "--password-stdin", "--name", "Ayla"])
        .args([
            "--languages",
            "en",
            "--departments",
            "general",
            "--capacity",
            "3",
        ])
        .args(["--database-url", &database_url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pitboss agent add");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write the password");
    let added = add.wait_with_output().expect("pitboss agent add");
    assert!(added.status.success(), "agent add: {}", text(&added));

    // Health and login, through nginx.
    let http = reqwest::Client::new();
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let res = http
            .get(format!("http://{entry}{path}"))
            .send()
            .await
            .expect(path);
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.text().await.expect(path), body, "{path}");
    }
    let res = http
        .post(format!("http://{entry}/api/login"))
        .json(&json!({"login": "ayla", "password": PASSWORD}))
        .send()
        .await
        .expect("POST /api/login");
    assert_eq!(res.status(), 200, "POST /api/login");
    let login: Value = res.json().await.expect("login JSON");
    let token = login["token"].as_str().expect("token").to_owned();

    // The agent, then the player; least_conn puts them on different nodes.
    let before = established(&ports);
    let mut agent = Client::connect(&entry, "agent", Seen::default()).await;
    agent
        .send(json!({"type":"hello","protocol":1,"auth":{"kind":"agent","token":token}}))
        .await;
    let welcome = agent.expect_type("welcome").await;
    assert_eq!(welcome["status"], "online", "{welcome}");
    let agent_node = node_gained(&ports, &before, &established(&ports));

    let before = established(&ports);
    let mut player = Client::connect(&entry, "player", Seen::default()).await;
    player
        .send(json!({"type":"hello","protocol":1,"auth":{"kind":"visitor","name":"Deniz","language":"en"}}))
        .await;
    let welcome = player.expect_type("welcome").await;
    let visitor_token = welcome["visitor_token"]
        .as_str()
        .expect("visitor_token")
        .to_owned();
    let player_node = node_gained(&ports, &before, &established(&ports));
    assert_ne!(
        agent_node,
        player_node,
        "least_conn put the player on the agent's node (node{})",
        agent_node + 1
    );
    eprintln!(
        "agent on node{}, player on node{}",
        agent_node + 1,
        player_node + 1
    );

    // The chat starts across nodes: the player's node queues it, the agent's node
    // offers it.
    player
        .send(json!({"type":"start","department":"general"}))
        .await;
    let queued = player
        .expect("queued or no_agents", |v| {
            v["type"] == "queued" || v["type"] == "no_agents"
        })
        .await;
    assert_eq!(
        queued["type"], "queued",
        "the agent (online on another node) was not seen: {queued}"
    );
    let conv = queued["conversation"]
        .as_str()
        .expect("conversation")
        .to_owned();
    agent
        .expect("the offer", |v| {
            v["type"] == "offer" && v["conversation"] == conv.as_str()
        })
        .await;
    agent
        .send(json!({"type":"accept","conversation":conv}))
        .await;
    agent
        .expect("assigned", |v| {
            v["type"] == "assigned" && v["conversation"] == conv.as_str()
        })
        .await;
    agent
        .expect("resumed", |v| {
            v["type"] == "resumed" && v["conversation"] == conv.as_str()
        })
        .await;
    player
        .expect("assigned", |v| {
            v["type"] == "assigned" && v["conversation"] == conv.as_str()
        })
        .await;
    assert_eq!(player.seen.last.get(&conv), Some(&1), "the joined event");

    // Both ways.
    assert_eq!(player.say(&conv, "p-1", "Hi, my deposit is late").await, 2);
    assert_eq!(agent.receive(&conv, "p-1").await, 2);
    assert_eq!(agent.say(&conv, "a-1", "Let me check").await, 3);
    assert_eq!(player.receive(&conv, "a-1").await, 3);

    // The player's node dies.
    let victim = format!("node{}", player_node + 1);
    let victim_pid: u32 = cluster.number(&format!("{victim}_pid"));
    let killed = Command::new("kill")
        .args(["-KILL", &victim_pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -KILL {victim_pid}");
    eprintln!("killed {victim} (pid {victim_pid})");
    player.expect_closed().await;
    let seen = player.close().await;

    // nginx's access log, written when that socket closed, names the same node.
    let access_log = cluster.path().join("nginx/logs/access.log");
    let victim_addr = format!("upstream=127.0.0.1:{}", ports[player_node]);
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(&access_log).unwrap_or_default();
        let sockets: Vec<&str> = log.lines().filter(|l| l.contains("\"GET /ws ")).collect();
        if let Some(line) = sockets.first() {
            assert_eq!(sockets.len(), 1, "one closed socket so far: {log}");
            assert!(
                line.contains(" 101 ") && line.contains(&victim_addr),
                "the player's socket was served by {victim}: {line}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no /ws line in {access_log:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Passive failover of the REST API: nginx still sends some requests to the
    // dead node first (nothing told it yet), and retries them on a live one.
    for _ in 0..2 * NODES {
        let res = http
            .get(format!("http://{entry}/api/me"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET /api/me");
        assert_eq!(res.status(), 200, "GET /api/me with {victim} dead");
    }
    let log = std::fs::read_to_string(&access_log).unwrap_or_default();
    let dead_first = format!("upstream=127.0.0.1:{}, ", ports[player_node]);
    assert!(
        log.lines()
            .any(|l| l.contains("\"GET /api/me ") && l.contains(&dead_first)),
        "no /api/me was retried after trying {victim}:\n{log}"
    );

    // The agent, on a surviving node, keeps writing meanwhile.
    assert_eq!(agent.say(&conv, "a-2", "Found it: card deposit").await, 4);
    assert_eq!(agent.say(&conv, "a-3", "It is credited now").await, 5);

    // The player reconnects through nginx and lands on a surviving node.
    let before = established(&ports);
    let mut player = Client::connect(&entry, "player (reconnected)", seen).await;
    player
        .send(json!({"type":"hello","protocol":1,"auth":{"kind":"visitor","token":visitor_token,"name":"Deniz","language":"en"}}))
        .await;
    let welcome = player.expect_type("welcome").await;
    let listed = welcome["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .find(|c| c["id"] == conv.as_str())
        .unwrap_or_else(|| panic!("welcome does not list {conv}: {welcome}"));
    assert_eq!(listed["state"], "active", "{listed}");
    let new_node = node_gained(&ports, &before, &established(&ports));
    assert_ne!(new_node, player_node, "reconnected to the killed node");
    assert!(!running(victim_pid), "{victim} still runs");
    eprintln!("player reconnected on node{}", new_node + 1);

    // Resume from the last seq it had: 4 and 5, each once.
    player
        .send(json!({"type":"resume","conversation":conv,"after":3}))
        .await;
    let resumed = player
        .expect("resumed", |v| {
            v["type"] == "resumed" && v["conversation"] == conv.as_str()
        })
        .await;
    assert_eq!(resumed["last_seq"], 5, "{resumed}");
    let replayed: Vec<&str> = player
        .frames
        .iter()
        .filter(|v| v["type"] == "message")
        .filter_map(|v| v["client_id"].as_str())
        .collect();
    assert_eq!(replayed, ["a-2", "a-3"]);

    // And the chat goes on.
    assert_eq!(player.say(&conv, "p-2", "Thanks, I see it").await, 6);
    assert_eq!(agent.receive(&conv, "p-2").await, 6);
    assert_eq!(agent.say(&conv, "a-4", "Anything else?").await, 7);
    assert_eq!(player.receive(&conv, "a-4").await, 7);
    player.expect_nothing_more(Duration::from_secs(1)).await;
    agent.expect_nothing_more(Duration::from_millis(200)).await;
    assert_eq!(player.seen.last.get(&conv), Some(&7));
    assert_eq!(agent.seen.last.get(&conv), Some(&7));
    player.close().await;
    agent.close().await;

    visitors_count_as_their_own_addresses(&entry).await;

    // stop ends every process the script recorded.
    let pids = cluster.pids();
    assert_eq!(pids.len(), NODES + 3, "recorded PIDs: {pids:?}");
    let stopped = cluster.run_stop();
    assert!(stopped.status.success(), "local-cluster.sh stop failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, pid) in &pids {
        while running(*pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!running(*pid), "{name} (pid {pid}) still runs after stop");
    }
}
