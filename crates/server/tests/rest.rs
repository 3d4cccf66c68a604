//! The REST API beyond transcripts: catalog management by supervisors,
//! departments, origin checks on the WebSocket, the demo accounts, the KPIs.
#![allow(missing_docs)]

mod common;
use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_manage_canned_replies_and_agents_read_them() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en,tr", "general,payments", 2, false);
    server.add_agent("sam", "en", "general,technical", 2, true);
    let ayla = server.login("ayla").await;
    let sam = server.login("sam").await;
    let http = reqwest::Client::new();
    let item = json!({"kind":"canned_reply","language":"tr","key":"hello","text":"Merhaba!"});

    let r = http
        .put(server.url("/api/catalog"))
        .bearer_auth(&ayla)
        .json(&item)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "agents may not edit the catalog");
    let r = http
        .put(server.url("/api/catalog"))
        .bearer_auth(&sam)
        .json(&item)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for bad in [
        json!({"kind":"canned_reply","language":"tr","key":"","text":"x"}),
        json!({"kind":"canned_reply","language":"../x","key":"k","text":"x"}),
    ] {
        let r = http
            .put(server.url("/api/catalog"))
            .bearer_auth(&sam)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }

    let list = server
        .get_json("/api/catalog?kind=canned_reply&language=tr", &ayla)
        .await;
    assert_eq!(list["items"][0]["text"], "Merhaba!");
    let list = server
        .get_json("/api/catalog?kind=canned_reply&language=en", &ayla)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);

    let r = http
        .delete(server.url("/api/catalog/canned_reply/tr/hello"))
        .bearer_auth(&ayla)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .delete(server.url("/api/catalog/canned_reply/tr/hello"))
        .bearer_auth(&sam)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .delete(server.url("/api/catalog/canned_reply/tr/hello"))
        .bearer_auth(&sam)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let deps = server.get_json("/api/departments", &ayla).await;
    assert_eq!(
        deps["departments"],
        json!(["general", "payments", "technical"])
    );
    let (status, _) = server.get("/api/departments", "not-a-token").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_may_open_a_websocket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--allowed-origins", "https://casino.example"]);
    let connect = |origin: Option<&'static str>| {
        let addr = server.addr.clone();
        async move {
            let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
            if let Some(o) = origin {
                req.headers_mut().insert("origin", o.parse().unwrap());
            }
            tokio_tungstenite::connect_async(req).await
        }
    };
    assert!(connect(Some("https://casino.example")).await.is_ok());
    assert!(
        connect(None).await.is_ok(),
        "non-browser clients send no Origin"
    );
    let own = format!("http://{}", server.addr);
    let own: &'static str = Box::leak(own.into_boxed_str());
    assert!(connect(Some(own)).await.is_ok(), "the server's own pages");
    match connect(Some("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_creates_agents_in_two_languages_and_a_catalog() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--demo"]);
    // The logins and the fresh password are logged.
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| {
            l.contains("demo agent") && l.contains("login=\"ayla\"")
                || l.contains("demo agent") && l.contains("login=ayla")
        })
        .expect("demo login logged");
    let password = line
        .split("password=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
        .to_string();
    let r = reqwest::Client::new()
        .post(server.url("/api/login"))
        .json(&json!({"login":"olga","password":password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let me = server.get_json("/api/me", &token).await;
    assert_eq!(me["languages"], json!(["ru", "az", "en"]));
    for lang in ["en", "tr", "az", "ru"] {
        let list = server
            .get_json(
                &format!("/api/catalog?kind=canned_reply&language={lang}"),
                &token,
            )
            .await;
        assert!(
            !list["items"].as_array().unwrap().is_empty(),
            "canned replies in {lang}"
        );
        let list = server
            .get_json(
                &format!("/api/catalog?kind=close_reason&language={lang}"),
                &token,
            )
            .await;
        assert!(
            !list["items"].as_array().unwrap().is_empty(),
            "close reasons in {lang}"
        );
    }
}

/// The value of one sample line (`name{labels} value`) in a Prometheus text page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_entries_acks_and_queue_waits() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    let mut agent = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conversation = start_chat(&mut player, None).await;
    accept(&mut agent, &conversation).await;
    player.say(&conversation, "m1", "hello").await;
    player.say(&conversation, "m2", "anyone?").await;

    // The ack can reach the client a moment before its latency is recorded.
    let deadline = std::time::Instant::now() + WAIT;
    let page = loop {
        let (status, page) = server.get("/metrics", "").await;
        assert_eq!(status, 200);
        if sample(&page, "pitboss_ack_latency_seconds_count") == Some(2.0) {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        sample(&page, r#"pitboss_connections{role="player"}"#),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, r#"pitboss_connections{role="agent"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, r#"pitboss_entries_total{kind="text"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&page, "pitboss_ack_latency_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &page,
            r#"pitboss_queue_wait_seconds_count{department="general"}"#
        ),
        Some(1.0)
    );
    assert_eq!(sample(&page, "pitboss_routing_leader"), Some(1.0));

    // A refused frame is counted by its code.
    player
        .send(json!({"type":"send","conversation":conversation,"client_id":"","text":"x"}))
        .await;
    player.expect("error").await;
    player.close().await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, page) = server.get("/metrics", "").await;
        let refused = sample(&page, r#"pitboss_refused_total{code="invalid_field"}"#);
        let players = sample(&page, r#"pitboss_connections{role="player"}"#);
        if refused == Some(1.0) && players == Some(0.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The console's page runs only its own code and is never framed by another
/// site; API answers are never cached; the pretend casino exists only in the demo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_not_framed_api_answers_are_not_cached_and_the_demo_page_is_the_demos() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    let console = reqwest::get(server.url("/console")).await.unwrap();
    assert_eq!(console.status(), 200);
    let policy = console.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "frame-ancestors 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(policy.contains(part), "{part} in {policy}");
    }
    assert_eq!(console.headers()["x-frame-options"], "DENY");

    server.add_agent("sam", "en", "general", 1, true);
    let token = server.login("sam").await;
    let api = reqwest::Client::new()
        .get(server.url("/api/departments"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    assert_eq!(api.headers()["cache-control"], "no-store");
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");

    let demo = reqwest::get(server.url("/demo/index.html")).await.unwrap();
    assert_eq!(demo.status(), 404, "the demo page without --demo");
    drop(server);
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--demo"]);
    let demo = reqwest::get(server.url("/demo/index.html")).await.unwrap();
    assert_eq!(demo.status(), 200, "the demo page with --demo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_answers_cors_for_allowed_origins_only() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--allowed-origins", "https://casino.example"]);
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, server.url("/api/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("https://casino.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://casino.example"
    );
    let allowed = ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // A real request from the allowed origin carries the header too.
    let r = http
        .get(server.url("/api/departments"))
        .header("origin", "https://casino.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://casino.example"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpis_count_waiting_first_response_resolution_and_ratings() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 1, false);
    server.add_agent("boris", "en", "general", 1, false);
    server.add_agent("sam", "en", "general", 1, true);
    let started = pitboss_transcripts::now_ms();
    let mut ayla = server.agent("ayla").await;

    // Served: waits, is answered, closed by Ayla and rated 5.
    let mut served = server.visitor("en").await;
    let first = start_chat(&mut served, None).await;
    accept(&mut ayla, &first).await;
    served.expect("assigned").await;
    served.say(&first, "p-1", "my deposit is missing").await;
    ayla.say(&first, "a-1", "let me check").await;

    // Given up: Ayla is full, so it waits, and the player leaves the queue.
    let mut gave_up = server.visitor("en").await;
    let second = start_chat(&mut gave_up, None).await;
    gave_up
        .send(json!({"type":"close","conversation":second}))
        .await;
    gave_up.expect("closed").await;

    ayla.send(json!({"type":"close","conversation":first,"reason":"resolved"}))
        .await;
    served.expect("closed").await;
    served
        .send(json!({"type":"rate","conversation":first,"score":5}))
        .await;
    served.expect("rated").await;

    let sam = server.login("sam").await;
    let window = format!("since={started}");
    let all = server.get_json(&format!("/api/kpis?{window}"), &sam).await;
    assert_eq!(
        all["conversations"],
        json!({"started": 2, "assigned": 1, "answered": 1, "closed": 2,
               "abandoned": 1, "offline": 0, "open": 0}),
        "{all}"
    );
    for figure in ["wait_ms", "first_response_ms", "resolution_ms"] {
        assert_eq!(all[figure]["count"], 1, "{figure}: {all}");
    }
    let ms = |figure: &str| all[figure]["max"].as_u64().expect("a time");
    assert!(ms("wait_ms") <= ms("first_response_ms"), "{all}");
    assert!(ms("first_response_ms") <= ms("resolution_ms"), "{all}");
    assert_eq!(
        all["satisfaction"],
        json!({"rated": 1, "mean": 5.0, "scores": [0, 0, 0, 0, 1]})
    );
    assert_eq!(all["since"], started);
    assert_eq!(all["agent"], Value::Null);

    // An agent sees their own: the conversation nobody took is not Ayla's.
    let ayla_token = server.login("ayla").await;
    let own = server.get_json("/api/kpis", &ayla_token).await;
    assert_eq!(own["agent"], "ayla");
    assert_eq!(own["conversations"]["started"], 1, "{own}");
    let (status, body) = server.get("/api/kpis?agent=boris", &ayla_token).await;
    assert_eq!(status, 403, "{body}");
    let boris = server
        .get_json(&format!("/api/kpis?{window}&agent=boris"), &sam)
        .await;
    assert_eq!(boris["conversations"]["started"], 0);
    // A login nobody has is said so, not shown as an agent with nothing done.
    let (status, body) = server
        .get(&format!("/api/kpis?{window}&agent=borris"), &sam)
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not_found"), "{body}");
    let payments = server
        .get_json(&format!("/api/kpis?{window}&department=payments"), &sam)
        .await;
    assert_eq!(payments["conversations"]["started"], 0);
    assert_eq!(payments["wait_ms"]["mean"], Value::Null);
    // The department is matched as `start` stores it: trimmed and lowercased.
    let general = server
        .get_json(&format!("/api/kpis?{window}&department=general"), &sam)
        .await;
    let shouted = server
        .get_json(
            &format!("/api/kpis?{window}&department=%20GENERAL%20"),
            &sam,
        )
        .await;
    assert_eq!(shouted["department"], "general");
    assert_eq!(shouted["conversations"], general["conversations"]);
    assert_ne!(general["conversations"]["started"], 0, "{general}");
    let (status, body) = server
        .get(&format!("/api/kpis?{window}&department=vip%20desk"), &sam)
        .await;
    assert_eq!(status, 400, "{body}");

    // The window is checked before the token.
    let (status, body) = server.get("/api/kpis?since=2000&until=1000", "").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .get(
            &format!("/api/kpis?since=0&until={}", 32 * 86_400_000u64),
            &sam,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = server.get("/api/kpis", "").await;
    assert_eq!(status, 401);
}

/// Departments' display names are catalog items keyed by the department's tag; a
/// department transfer names the department in the chat's language, else in
/// English, else by its tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn department_names_come_from_the_catalog_in_the_chat_s_language() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en,tr,az", "general", 3, false);
    server.add_agent("boris", "en,tr,az", "payments,vip", 3, false);
    server.add_agent("sam", "en", "general", 1, true);
    let sam = server.login("sam").await;
    let http = reqwest::Client::new();
    let put = |item: Value| {
        http.put(server.url("/api/catalog"))
            .bearer_auth(&sam)
            .json(&item)
            .send()
    };
    let r = put(json!({"kind":"department","language":"tr","key":" Payments ","text":"Ödemeler"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stored: Value = r.json().await.unwrap();
    assert_eq!(
        stored["item"]["key"], "payments",
        "the key is the tag as chats carry it"
    );
    let r = put(json!({"kind":"department","language":"en","key":"payments","text":"Payments"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for bad in [
        json!({"kind":"department","language":"en","key":"vip desk","text":"VIP"}),
        json!({"kind":"department","language":"en","key":"vip","text":"x".repeat(65)}),
        json!({"kind":"department","language":"en","key":"vip","text":"VIP\nsecond line"}),
    ] {
        let r = put(bad.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }

    let mut ayla = server.agent("ayla").await;
    let _boris = server.agent("boris").await;
    // (chat language, department, the name the transfer shows)
    for (language, department, shown) in [
        ("tr", "payments", "Ödemeler"),
        ("az", "payments", "Payments"),
        ("en", "vip", "vip"),
    ] {
        let mut player = server.visitor(language).await;
        let conv = start_chat(&mut player, None).await;
        accept(&mut ayla, &conv).await;
        ayla.send(json!({"type":"transfer","conversation":conv,"to":{"department":department}}))
            .await;
        let event = player
            .expect_where(|v| v["type"] == "message" && v["event"] == "transfer_requested")
            .await;
        assert_eq!(
            event["text"],
            format!("You are being transferred to {shown}. Your conversation stays with you."),
            "{language} chat to {department}"
        );
    }
}
