//! Per-address abuse limits and the idle timeout, against the real binary: open
//! connections per address, connection attempts and visitor tokens per minute,
//! `X-Forwarded-For` only from trusted proxies, and ping/pong liveness.
#![allow(missing_docs)]

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket to the server, claiming `xff` in `X-Forwarded-For`.
async fn connect(server: &Server, xff: Option<&str>) -> Client {
    let mut request = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    if let Some(xff) = xff {
        request
            .headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    Client {
        ws,
        welcome: Value::Null,
        backlog: Vec::new(),
    }
}

/// A new visitor: `Ok` with `welcome`, or the close code it got instead (`None`:
/// the connection went away without one).
async fn visitor(server: &Server, xff: Option<&str>) -> Result<Client, Option<u16>> {
    let mut c = connect(server, xff).await;
    let hello = json!({"type":"hello","protocol":1,"auth":{"kind":"visitor","language":"en"}});
    if c.ws
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return Err(None);
    }
    match c.read().await {
        Ok(v) if v["type"] == "welcome" => {
            c.welcome = v;
            Ok(c)
        }
        Ok(v) => {
            c.backlog.push(v);
            Err(c.expect_close().await)
        }
        Err(code) => Err(code),
    }
}

/// A connection refused right after the upgrade: its close code, read without
/// sending anything (an accepted one would only answer after the hello timeout).
async fn refused(server: &Server, xff: Option<&str>) -> Option<u16> {
    let mut c = connect(server, xff).await;
    match c.read().await {
        Ok(v) => panic!("the connection was accepted: {v}"),
        Err(code) => code,
    }
}

/// Polls until a new visitor is accepted (a slot freed by a closed connection).
async fn visitor_eventually(server: &Server, xff: Option<&str>) -> Client {
    let deadline = Instant::now() + WAIT;
    loop {
        match visitor(server, xff).await {
            Ok(c) => return c,
            Err(code) => assert!(
                Instant::now() < deadline,
                "still refused ({code:?}) after {WAIT:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn counter(server: &Server, name: &str) -> f64 {
    let (status, page) = server.get("/metrics", "").await;
    assert_eq!(status, 200);
    page.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_capped_per_address() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--max-connections-per-address", "3"]);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(visitor(&server, None).await.expect("under the cap"));
    }
    assert_eq!(refused(&server, None).await, Some(1013));
    // Other connections of the address are unaffected.
    open[0].send(json!({"type":"ping"})).await;
    open[0].expect("pong").await;
    // Closing one frees a slot.
    open.pop().unwrap().close().await;
    let mut again = visitor_eventually(&server, None).await;
    again.send(json!({"type":"ping"})).await;
    again.expect("pong").await;
    assert!(
        counter(
            &server,
            "pitboss_rate_limited_total{limit=\"connections_per_address\""
        )
        .await
            >= 1.0
    );
    assert!(server.healthy().await);
}

/// A node whose file-descriptor limit is below what `--max-connections` needs
/// says so at start-up and lowers its cap to fit: a client over it is refused
/// with 1013, not left hanging for want of a descriptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_descriptor_limit_are_refused_not_hung() {
    let dir = tempdir();
    // 96 descriptors: 64 kept for the node's own files, 32 sockets, of which 26
    // WebSockets (the rest for plain HTTP and refusals).
    let server = Server::start_with_fd_limit(dir.path(), &[], 96);
    assert!(
        server.logs().contains("leaves room for 26 connections"),
        "{}",
        server.logs()
    );
    let mut open = Vec::new();
    for _ in 0..26 {
        open.push(visitor(&server, None).await.expect("within the limit"));
    }
    for _ in 0..3 {
        assert_eq!(refused(&server, None).await, Some(1013));
    }
    open[0].send(json!({"type":"ping"})).await;
    open[0].expect("pong").await;
    assert!(server.healthy().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    // An untrusted peer's X-Forwarded-For is ignored: one budget, whatever it says.
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--max-connections-per-address", "2"]);
    let _a = visitor(&server, Some("198.51.100.1")).await.unwrap();
    let _b = visitor(&server, Some("198.51.100.2")).await.unwrap();
    assert_eq!(refused(&server, Some("198.51.100.3")).await, Some(1013));
    assert_eq!(refused(&server, None).await, Some(1013));
    drop(server);

    // From a trusted proxy, each forwarded address has its own budget.
    let dir = tempdir();
    let server = Server::start(
        dir.path(),
        &[
            "--max-connections-per-address",
            "2",
            "--trusted-proxies",
            "127.0.0.1",
        ],
    );
    let _a1 = visitor(&server, Some("198.51.100.1")).await.unwrap();
    let _a2 = visitor(&server, Some("6.6.6.6, 198.51.100.1"))
        .await
        .unwrap();
    assert_eq!(
        refused(&server, Some("198.51.100.1")).await,
        Some(1013),
        "the rightmost untrusted entry is the client, not what it wrote left of it"
    );
    let _b1 = visitor(&server, Some("198.51.100.2")).await.unwrap();
    let _b2 = visitor(&server, Some("198.51.100.2")).await.unwrap();
    let _p1 = visitor(&server, None)
        .await
        .expect("the proxy's own budget");
    assert!(server.healthy().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_attempts_are_rate_limited_per_address() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--connects-per-minute-per-address", "3"]);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(visitor(&server, None).await.expect("within the burst"));
    }
    assert_eq!(refused(&server, None).await, Some(4029));
    open[0].send(json!({"type":"ping"})).await;
    open[0].expect("pong").await;
    assert!(
        counter(
            &server,
            "pitboss_rate_limited_total{limit=\"connects_per_address\""
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_tokens_are_rate_limited_per_address() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--visitors-per-minute-per-address", "3"]);
    let first = visitor(&server, None).await.expect("within the burst");
    let token = first.welcome["visitor_token"].as_str().unwrap().to_string();
    for _ in 0..2 {
        visitor(&server, None).await.expect("within the burst");
    }
    // The fourth new visitor: an error frame, then 4029.
    let mut c = connect(&server, None).await;
    c.send(json!({"type":"hello","protocol":1,"auth":{"kind":"visitor","language":"en"}}))
        .await;
    let err = c.expect("error").await;
    assert_eq!(err["code"], "rate_limited");
    assert_eq!(c.expect_close().await, Some(4029));
    // A returning visitor presenting its token is not minting one.
    let back = server.visitor_with(Some(&token), "en").await;
    assert_eq!(back.welcome["you"]["id"], first.welcome["you"]["id"]);
    assert!(
        counter(
            &server,
            "pitboss_rate_limited_total{limit=\"visitors_per_address\""
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed() {
    let dir = tempdir();
    let server = Server::start(
        dir.path(),
        &["--ws-ping-secs", "0.2", "--idle-timeout-secs", "1"],
    );
    let mut keeper = visitor(&server, None).await.unwrap();
    // Says hello, then never reads again: tungstenite answers pings only while
    // the socket is read.
    let mut idle = visitor(&server, None).await.unwrap();
    let started = Instant::now();
    let deadline = started + WAIT;
    // The keeper reads (and so answers the pings) until the idle one was closed
    // and well past the idle timeout.
    let mut pings = 0;
    while counter(&server, "pitboss_idle_disconnects_total").await < 1.0
        || started.elapsed() < Duration::from_millis(2500)
    {
        assert!(
            Instant::now() < deadline,
            "the idle connection was not closed"
        );
        if let Ok(msg) = tokio::time::timeout(Duration::from_millis(100), keeper.ws.next()).await {
            match msg {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Text(t))) => {
                    keeper.backlog.push(serde_json::from_str(&t).unwrap())
                }
                other => panic!("the reading client was closed: {other:?}"),
            }
        }
    }
    assert!(pings >= 3, "the server pings: {pings}");
    keeper.send(json!({"type":"ping"})).await;
    keeper.expect("pong").await;
    assert_eq!(idle.expect_close().await, Some(1000));
    assert_eq!(
        counter(&server, "pitboss_idle_disconnects_total").await,
        1.0,
        "only the idle one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_read_the_toml_file_and_refuse_bad_values() {
    let dir = tempdir();
    let file = dir.path().join("pitboss.toml");
    std::fs::write(
        &file,
        "trusted_proxies = [\"10.0.0.0/8\"]\nvisitors_per_minute_per_address = 1\nws_ping_secs = 5\nidle_timeout_secs = 20\n",
    )
    .unwrap();
    let server = Server::start(dir.path(), &["--config", file.to_str().unwrap()]);
    visitor(&server, None).await.expect("the first visitor");
    let mut c = connect(&server, None).await;
    c.send(json!({"type":"hello","protocol":1,"auth":{"kind":"visitor"}}))
        .await;
    assert_eq!(c.expect("error").await["code"], "rate_limited");
    assert_eq!(c.expect_close().await, Some(4029));
    drop(server);

    for bad in [
        &["--trusted-proxies", "10.0.0.0/8,proxy.example"][..],
        &["--ws-ping-secs", "30", "--idle-timeout-secs", "30"][..],
    ] {
        let out = std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?} must not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("trusted-proxies") || err.contains("idle-timeout-secs"),
            "names the setting: {err}"
        );
    }
}

/// Reads frames until one matching each of `marks` arrived (in any order: they
/// may come from different connections); returns everything read.
async fn read_until_all(c: &mut Client, marks: &[&dyn Fn(&Value) -> bool]) -> Vec<Value> {
    let mut seen: Vec<Value> = c.backlog.drain(..).collect();
    while !marks.iter().all(|m| seen.iter().any(m)) {
        seen.push(c.read().await.expect("the connection stays open"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_limits_are_shared_by_every_connection_of_the_player() {
    let dir = tempdir();
    // The message budget from the TOML file, the typing budget from flags: a
    // burst of 3 messages and of 2 typing indicators, refilled once a minute
    // (so nothing refills while the test runs).
    let file = dir.path().join("pitboss.toml");
    std::fs::write(
        &file,
        "player_messages_per_minute = 1\nplayer_message_burst = 3\n",
    )
    .unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--config",
            file.to_str().unwrap(),
            "--player-typing-per-minute",
            "1",
            "--player-typing-burst",
            "2",
        ],
    );
    server.add_agent("ayla", "en", "general", 3, false);
    let mut agent = server.agent("ayla").await;
    let mut tab_a = server.visitor("en").await;
    let token = tab_a.welcome["visitor_token"].as_str().unwrap().to_string();
    let mut tab_b = server.visitor_with(Some(&token), "en").await;
    assert_eq!(tab_a.welcome["you"]["id"], tab_b.welcome["you"]["id"]);
    let conv = start_chat(&mut tab_a, None).await;
    accept(&mut agent, &conv).await;
    tab_b
        .send(json!({"type":"resume","conversation":conv,"after":0}))
        .await;
    tab_b
        .expect_where(|v| v["type"] == "resumed" && v["conversation"] == conv)
        .await;

    // Three messages over two tabs spend the player's burst ...
    tab_a.say(&conv, "a1", "hello").await;
    tab_b.say(&conv, "b1", "anyone there?").await;
    tab_a.say(&conv, "a2", "hello?").await;
    // ... so the fourth is refused, whichever tab sends it: not stored, not acked.
    for (tab, id) in [(&mut tab_b, "b2"), (&mut tab_a, "a3")] {
        tab.send(json!({"type":"send","conversation":conv,"client_id":id,"text":"spam"}))
            .await;
        let err = tab
            .expect_where(|v| v["type"] == "error" || (v["type"] == "ack" && v["client_id"] == id))
            .await;
        assert_eq!(err["type"], "error", "{err}");
        assert_eq!(err["code"], "rate_limited");
        assert_eq!(err["frame"], "send");
        assert_eq!(err["client_id"], id);
        assert_eq!(err["conversation"], conv.as_str());
    }
    // The agent is not limited by the player's budget.
    for i in 0..6 {
        agent.say(&conv, &format!("ag{i}"), "how can I help?").await;
    }
    let token = server.login("ayla").await;
    let transcript = server
        .get_json(&format!("/api/conversations/{conv}/transcript"), &token)
        .await;
    let entries = transcript["messages"].as_array().unwrap();
    let from_player: Vec<&str> = entries
        .iter()
        .filter(|e| e["sender"]["role"] == "player")
        .filter_map(|e| e["client_id"].as_str())
        .collect();
    assert_eq!(from_player, ["a1", "b1", "a2"], "{transcript}");
    let from_agent = entries
        .iter()
        .filter(|e| e["sender"]["role"] == "agent")
        .count();
    assert_eq!(from_agent, 6, "{transcript}");
    assert_eq!(
        counter(
            &server,
            "pitboss_rate_limited_total{limit=\"player_messages\""
        )
        .await,
        2.0
    );

    // Typing: two indicators over both tabs pass, the rest are dropped without
    // an error. A read receipt after them on each tab marks where they end.
    for (tab, seq) in [(&mut tab_a, 1), (&mut tab_b, 2)] {
        for active in [true, false] {
            tab.send(json!({"type":"typing","conversation":conv,"active":active}))
                .await;
        }
        tab.send(json!({"type":"read","conversation":conv,"seq":seq}))
            .await;
    }
    agent.backlog.clear();
    let seen = read_until_all(
        &mut agent,
        &[
            &|v: &Value| v["type"] == "read" && v["seq"] == 1,
            &|v: &Value| v["type"] == "read" && v["seq"] == 2,
        ],
    )
    .await;
    let typing_seen = seen.iter().filter(|v| v["type"] == "typing").count();
    assert_eq!(typing_seen, 2, "typing the agent received: {seen:?}");
    for tab in [&mut tab_a, &mut tab_b] {
        tab.send(json!({"type":"ping"})).await;
        tab.expect("pong").await;
        assert!(
            !tab.backlog.iter().any(|v| v["type"] == "error"),
            "dropped typing is not answered: {:?}",
            tab.backlog
        );
    }
    assert_eq!(
        counter(
            &server,
            "pitboss_rate_limited_total{limit=\"player_typing\""
        )
        .await,
        2.0
    );

    // A client that keeps going past the limit meets the one strike rule of every
    // rate limit: 50 refused frames in a row are answered, the 51st closes.
    for i in 0..51 {
        tab_b
            .send(json!({"type":"send","conversation":conv,"client_id":format!("flood{i}"),"text":"spam"}))
            .await;
    }
    assert_eq!(tab_b.expect_close().await, Some(4029));
    let refused = tab_b
        .backlog
        .iter()
        .filter(|v| v["type"] == "error" && v["code"] == "rate_limited")
        .count();
    assert_eq!(refused, 50, "{:?}", tab_b.backlog);
    // The other tab and the agent carry on.
    tab_a.send(json!({"type":"ping"})).await;
    tab_a.expect("pong").await;
    agent.say(&conv, "ag-after", "still here").await;
}

/// Sends `start` until it is answered by something other than `overloaded`
/// (the protocol's "retry shortly"); returns that answer.
async fn start_answer(tab: &mut Client, department: &str) -> Value {
    loop {
        let answer = tab
            .expect_where(|v| {
                v["type"] == "error"
                    || v["type"] == "no_agents"
                    || v["type"] == "queued"
                    || v["type"] == "assigned"
            })
            .await;
        if answer["code"] != "overloaded" {
            return answer;
        }
        tab.send(json!({"type":"start","department":department}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_conversations_are_capped_per_player_across_connections() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--max-open-per-player", "1"]);
    let mut tab_a = server.visitor("en").await;
    let token = tab_a.welcome["visitor_token"].as_str().unwrap().to_string();
    let mut tab_b = server.visitor_with(Some(&token), "en").await;
    // Both tabs start a chat (in different departments) at the same moment.
    tab_a
        .send(json!({"type":"start","department":"general"}))
        .await;
    tab_b
        .send(json!({"type":"start","department":"payments"}))
        .await;
    let a = start_answer(&mut tab_a, "general").await;
    let b = start_answer(&mut tab_b, "payments").await;
    let answers = [&a, &b];
    let opened = answers.iter().filter(|v| v["type"] == "no_agents").count();
    let refused = answers
        .iter()
        .filter(|v| v["code"] == "too_many_conversations")
        .count();
    assert_eq!((opened, refused), (1, 1), "{a} / {b}");
    // Both tabs reconnecting send `start` for the open conversation at the same
    // moment: each is told where it stands, neither is refused.
    let (department, conversation) = if a["type"] == "no_agents" {
        ("general", &a["conversation"])
    } else {
        ("payments", &b["conversation"])
    };
    for tab in [&mut tab_a, &mut tab_b] {
        tab.send(json!({"type":"start","department":department}))
            .await;
    }
    for tab in [&mut tab_a, &mut tab_b] {
        let answer = tab
            .expect_where(|v| v["type"] == "error" || v["type"] == "no_agents")
            .await;
        assert_eq!(answer["type"], "no_agents", "{answer}");
        assert_eq!(&answer["conversation"], conversation);
    }
    // A third connection of the player sees one open conversation.
    let mut tab_c = server.visitor_with(Some(&token), "en").await;
    tab_c.send(json!({"type":"history"})).await;
    let history = tab_c.expect("history").await;
    let open = history["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] != "closed")
        .count();
    assert_eq!(open, 1, "{history}");
}

/// Reads from a raw socket until the server closes it; how long that took, or
/// `None` if it was still open after `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let begun = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return begun.elapsed(),
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
}

/// Sockets that never send a request, send one a byte at a time, or stay idle
/// after one are closed after the hello timeout: they do not hold descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_send_no_request_in_time_are_closed() {
    use tokio::io::AsyncWriteExt;
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--hello-timeout-secs", "1"]);
    let connect = || tokio::net::TcpStream::connect(server.addr.clone());

    let mut silent = connect().await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(900)),
        "silent: {took:?}"
    );

    // A header every 300 ms: the request is never complete within the second.
    let mut drip = connect().await.unwrap();
    drip.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let dripping = async {
        for n in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if drip
                .write_all(format!("X-{n}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
        }
        false
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(7), dripping)
            .await
            .unwrap_or(false),
        "the dripping request was not cut off"
    );

    // A complete request is answered; the connection, kept alive and idle, closes.
    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(took.is_some(), "an idle kept-alive connection stayed open");
    assert!(server.healthy().await);
}

/// One address holds at most its WebSocket cap plus 32 sockets; those over it
/// are closed at once, and other addresses are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_capped_per_address_before_any_request() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--max-connections-per-address", "2"]);
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let mut held = Vec::new();
    for _ in 0..34 {
        held.push(
            tokio::net::TcpStream::connect(server.addr.clone())
                .await
                .unwrap(),
        );
    }
    let mut over = tokio::net::TcpStream::connect(server.addr.clone())
        .await
        .unwrap();
    let took = closed_within(&mut over, Duration::from_secs(3)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(1)),
        "over the cap: {took:?}"
    );
    let still = closed_within(&mut held[0], Duration::from_millis(300)).await;
    assert_eq!(still, None, "the held ones stay open");
    // Another address is served.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
}

/// The node's threads, from `/proc`.
fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// A flood of logins (each an argon2 check: CPU and memory on purpose) is
/// checked on a few threads of its own: what does not fit in their queue is
/// refused at once with 503, the node starts no thread per request, and a right
/// password still gets in afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_bounded() {
    let dir = tempdir();
    // From many addresses (through a trusted proxy), each within its own budget
    // of failed logins.
    let server = Server::start(dir.path(), &["--trusted-proxies", "127.0.0.1"]);
    server.add_agent("ayla", "en", "general", 1, false);
    let pid = server.pid();
    let before = threads(pid);
    let http = reqwest::Client::new();
    let attempts = (0..80).map(|n| {
        let http = http.clone();
        let url = server.url("/api/login");
        async move {
            let r = http
                .post(url)
                .header("x-forwarded-for", format!("198.51.100.{n}"))
                .json(&json!({"login": "ayla", "password": format!("wrong-{n}")}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }
    });
    let watch = async {
        let mut most = 0;
        for _ in 0..40 {
            most = most.max(threads(pid));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        most
    };
    let (answers, most) = tokio::join!(futures_util::future::join_all(attempts), watch);
    let busy = answers.iter().filter(|(s, _)| *s == 503).count();
    assert!(busy > 0, "80 logins at once all waited");
    for (status, body) in &answers {
        match status {
            401 => assert_eq!(body["error"], "unauthorized"),
            503 => assert_eq!(body["error"], "unavailable", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        most <= before + 4,
        "threads grew from {before} to {most} during the flood"
    );
    // The right password works once the flood is over.
    let token = server.login("ayla").await;
    assert!(!token.is_empty());
}

/// `POST /api/login` from `xff` (through a trusted proxy): its status, and its
/// `Retry-After` if any.
async fn login_from(server: &Server, xff: &str, password: &str) -> (u16, Option<u64>) {
    let res = reqwest::Client::new()
        .post(server.url("/api/login"))
        .header("x-forwarded-for", xff)
        .json(&json!({ "login": "ayla", "password": password }))
        .send()
        .await
        .unwrap();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (res.status().as_u16(), retry)
}

/// Password guessing: an address that failed ten logins in a minute is refused
/// (429, with when to try again) before any password check, the right one
/// included; other addresses are not, and successful logins spend nothing, so a
/// whole office behind one address signs in at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_address_and_good_ones_are_not() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--trusted-proxies", "127.0.0.1"]);
    server.add_agent("ayla", "en", "general", 2, false);
    // Ten failures spend the budget; one attempt comes back every six seconds,
    // so a slow machine may see one or two more checked before the refusal.
    let mut failures = 0;
    let retry = loop {
        match login_from(&server, "198.51.100.1", "wrong-password").await {
            (401, None) => failures += 1,
            (429, retry) => break retry,
            other => panic!("after {failures} failures: {other:?}"),
        }
        assert!(failures <= 12, "{failures} failed logins and no refusal");
    };
    assert!(failures >= 10, "refused after {failures} failures");
    assert!(retry.is_some_and(|s| (1..=6).contains(&s)), "{retry:?}");
    assert_eq!(
        login_from(&server, "198.51.100.1", "secret-password")
            .await
            .0,
        429,
        "the right password is not even checked"
    );
    for i in 0..15 {
        let got = login_from(&server, "198.51.100.2", "secret-password").await;
        assert_eq!(got.0, 200, "office login {i}");
    }
    // One attempt's worth comes back after six seconds.
    tokio::time::sleep(Duration::from_secs(retry.unwrap())).await;
    assert_eq!(
        login_from(&server, "198.51.100.1", "secret-password")
            .await
            .0,
        200
    );
}

/// A request whose body never arrives (headers sent, then one byte of a
/// hundred) is answered 408 within the header timeout, and its socket closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_never_arrives_is_answered_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--hello-timeout-secs", "1"]);
    let mut socket = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let head = "POST /api/login HTTP/1.1\r\nHost: pitboss\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), socket.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "still open after 8 s: {answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(server.healthy().await);
}
