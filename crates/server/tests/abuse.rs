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
