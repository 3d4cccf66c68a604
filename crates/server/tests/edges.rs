//! Edge cases of the lifecycle: competing transfers, department moves, what an
//! agent stops seeing, resends after close, limits on connections and frames.
#![allow(missing_docs)]

mod common;
use common::*;
use serde_json::json;

async fn chat(server: &Server, agent: &str) -> (Client, Client, String) {
    let mut a = server.agent(agent).await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    accept(&mut a, &conv).await;
    player.expect("assigned").await;
    (a, player, conv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_second_transfer_leaves_the_first_intact() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_agent("boris", "en", "general", 2, false);
    server.add_agent("cem", "en", "general", 2, false);
    let (mut ayla, _player, conv) = chat(&server, "ayla").await;
    let mut boris = server.agent("boris").await;
    let _cem = server.agent("cem").await;

    ayla.send(json!({"type":"transfer","conversation":conv,"to":{"agent":"boris"},"note":"first"}))
        .await;
    ayla.expect_where(|v| v["type"] == "transfer_update" && v["outcome"] == "pending")
        .await;
    ayla.send(json!({"type":"transfer","conversation":conv,"to":{"agent":"cem"},"note":"second"}))
        .await;
    assert_eq!(ayla.expect("error").await["code"], "invalid_state");
    ayla.send(json!({"type":"transfer","conversation":conv,"to":{"agent":"nobody"}}))
        .await;
    assert_eq!(ayla.expect("error").await["code"], "not_found");

    let offer = boris.expect("offer").await;
    assert_eq!(offer["transfer"]["note"], "first");
    boris
        .send(json!({"type":"accept","conversation":conv}))
        .await;
    let done = ayla
        .expect_where(|v| v["type"] == "transfer_update" && v["outcome"] != "pending")
        .await;
    assert_eq!(done["outcome"], "accepted");
    let sam = {
        server.add_agent("sam", "en", "general", 2, true);
        server.login("sam").await
    };
    let detail = server
        .get_json(&format!("/api/conversations/{conv}"), &sam)
        .await;
    assert_eq!(handoff_outcomes(&detail), ["requested", "accepted"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_transfer_moves_the_conversation_to_that_department() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_agent("paula", "en", "payments", 2, false);
    let (mut ayla, mut player, conv) = chat(&server, "ayla").await;
    ayla.send(json!({"type":"transfer","conversation":conv,"to":{"department":"vip-lounge"}}))
        .await;
    assert_eq!(
        ayla.expect("error").await["code"],
        "not_found",
        "no agent serves it"
    );
    // Paula serves payments but is not connected: refused at once, and the
    // player is told nothing.
    ayla.send(json!({"type":"transfer","conversation":conv,"to":{"department":"payments"}}))
        .await;
    let refused = ayla.expect("error").await;
    assert_eq!(refused["code"], "invalid_state", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("online"),
        "{refused}"
    );
    let mut paula = server.agent("paula").await;
    ayla.send(json!({"type":"transfer","conversation":conv,"to":{"department":"payments"}}))
        .await;
    let offer = paula.expect("offer").await;
    assert_eq!(
        offer["department"], "payments",
        "offered where it goes: {offer}"
    );
    paula
        .send(json!({"type":"accept","conversation":conv}))
        .await;
    paula.expect_where(|v| v["type"] == "assigned").await;
    // The player heard of one transfer only: the one that happened.
    let first = player
        .expect_where(|v| v["type"] == "message" && v["event"] == "transfer_requested")
        .await;
    let joined = player
        .expect_where(|v| v["type"] == "message" && v["event"] != "read")
        .await;
    assert_ne!(
        joined["event"], "transfer_requested",
        "{first} then {joined}"
    );
    let token = server.login("paula").await;
    let detail = server
        .get_json(&format!("/api/conversations/{conv}"), &token)
        .await;
    assert_eq!(detail["conversation"]["department"], "payments");
    assert_eq!(detail["conversation"]["agent"], "paula");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_who_read_an_offer_stops_receiving_it_after_declining() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_agent("boris", "en", "general", 2, false);
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    player
        .say(&conv, "early", "I wrote before anyone came")
        .await;
    ayla.expect_where(|v| v["type"] == "offer").await;
    // ayla reads it before deciding, then declines.
    ayla.send(json!({"type":"resume","conversation":conv,"after":0}))
        .await;
    let (seen, _) = ayla.replay(&conv).await;
    assert!(seen.iter().any(|m| m["client_id"] == "early"));
    ayla.send(json!({"type":"decline","conversation":conv}))
        .await;
    ayla.expect("offer_withdrawn").await;
    let mut boris = server.agent("boris").await;
    accept(&mut boris, &conv).await;
    boris
        .say(&conv, "secret-note-free", "Hello from Boris")
        .await;
    boris
        .send(json!({"type":"note","conversation":conv,"client_id":"n1","text":"private"}))
        .await;
    boris
        .expect_where(|v| v["type"] == "ack" && v["client_id"] == "n1")
        .await;
    ayla.send(json!({"type":"ping"})).await;
    ayla.expect("pong").await;
    assert!(
        !ayla.backlog.iter().any(|v| v["type"] == "message"
            && v["conversation"] == conv.as_str()
            && v["seq"].as_u64() > Some(seen.len() as u64)),
        "ayla still receives the conversation: {:?}",
        ayla.backlog
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_after_close_are_acked_and_new_text_refused() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_agent("sam", "en", "general", 2, true);
    let (_ayla, mut player, conv) = chat(&server, "ayla").await;
    let seq = player.say(&conv, "last", "thanks, bye").await;
    // A supervisor closes someone else's chat and is told.
    let mut sam = server.agent("sam").await;
    sam.send(json!({"type":"close","conversation":conv,"reason":"resolved"}))
        .await;
    let c = sam.expect("closed").await;
    assert_eq!(c["by"], "supervisor");
    player.expect("closed").await;

    player
        .send(json!({"type":"send","conversation":conv,"client_id":"last","text":"thanks, bye"}))
        .await;
    let ack = player.expect("ack").await;
    assert_eq!(ack["seq"].as_u64(), Some(seq));
    assert_eq!(ack["duplicate"], true);
    player
        .send(json!({"type":"send","conversation":conv,"client_id":"new","text":"one more"}))
        .await;
    assert_eq!(player.expect("error").await["code"], "invalid_state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_conversations_cannot_be_rated_and_resume_ranges_are_checked() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    let mut player = server.visitor("en").await;
    player.send(json!({"type":"start"})).await;
    let conv = player.expect("no_agents").await["conversation"]
        .as_str()
        .unwrap()
        .to_string();
    player
        .send(json!({"type":"rate","conversation":conv,"score":5}))
        .await;
    assert_eq!(player.expect("error").await["code"], "invalid_state");
    player.say(&conv, "m1", "hello?").await;
    player
        .send(json!({"type":"resume","conversation":conv,"after":5}))
        .await;
    let c = player.expect("cannot_resume").await;
    assert_eq!(c["reason"], "ahead");
    assert_eq!(c["last_seq"], 1);

    // Closed before any agent answered it: still nothing to rate.
    player
        .send(json!({"type":"close","conversation":conv}))
        .await;
    player.expect("closed").await;
    player
        .send(json!({"type":"rate","conversation":conv,"score":3}))
        .await;
    let refused = player.expect("error").await;
    assert_eq!(refused["code"], "invalid_state", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_and_connections_over_the_cap_are_closed_with_their_codes() {
    use futures_util::SinkExt;
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--max-connections", "2"]);
    let b = server.visitor("en").await;
    let _c = server.visitor("en").await;
    let mut d = Client::connect(&server.addr).await;
    assert_eq!(d.expect_close().await, Some(1013), "over the cap");
    drop(d);
    // The refused socket holds the cap's one spare place until the node has
    // closed it: until then a plain request is turned away too, so retry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let metrics = loop {
        match reqwest::get(server.url("/metrics")).await {
            Ok(res) if res.status() == 200 => break res.text().await.unwrap(),
            _ => assert!(std::time::Instant::now() < deadline, "/metrics refused"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(r#"pitboss_rate_limited_total{limit="connections"} "#)),
        "the refusal is counted: {metrics}"
    );
    // A place frees when a connection ends.
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut a = loop {
        // Until the closed sockets are gone, the node's socket cap may still turn
        // a new one away before the upgrade: that is a retry too.
        if let Ok(mut c) = Client::try_connect(&server.addr).await {
            c.send(json!({"type":"hello","protocol":1,"auth":{"kind":"visitor"}}))
                .await;
            if matches!(c.read().await, Ok(v) if v["type"] == "welcome") {
                break c;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no place freed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    a.ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![1u8, 2, 3].into(),
    ))
    .await
    .unwrap();
    assert_eq!(a.expect_close().await, Some(4009));
    assert!(server.healthy().await);
}

/// A text frame that is not UTF-8 breaks the WebSocket protocol: after
/// `welcome` the connection is closed with 4009, not as a normal end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_that_is_not_utf8_closes_with_4009() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    let mut player = server.visitor("en").await;
    let bad = Frame::message(
        b"{\"type\":\"ping\",\"x\":\"\xc3\x28\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    player
        .ws
        .send(tokio_tungstenite::tungstenite::Message::Frame(bad))
        .await
        .unwrap();
    assert_eq!(player.expect_close().await, Some(4009));
    assert!(server.healthy().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_errors_are_json_even_for_unparseable_requests() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    let r = reqwest::Client::new()
        .post(server.url("/api/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    let r = reqwest::Client::new()
        .post(server.url("/api/login"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_media_type");
    let r = reqwest::Client::new()
        .post(server.url("/api/login"))
        .header("content-type", "application/json")
        .body(format!("{{\"login\":\"{}\"}}", "a".repeat(3 << 20)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_console_connection_is_shown_the_offers_still_open() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    let mut first = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    first.expect_where(|v| v["type"] == "offer").await;
    // A second tab (or a reload that connects before the old socket closed).
    let mut second = server.agent("ayla").await;
    let offer = second.expect_where(|v| v["type"] == "offer").await;
    assert_eq!(offer["conversation"], conv.as_str());
    assert!(offer["expires_in_ms"].as_u64().unwrap() > 0);
    // The agents list shows who is online, and how full: the open offer counts
    // against ayla's capacity of 2.
    let token = server.login("ayla").await;
    let agents = server.get_json("/api/agents", &token).await;
    assert_eq!(agents["agents"][0]["status"], "online");
    assert_eq!(agents["agents"][0]["load"], 1, "{agents}");
    first
        .send(json!({"type":"accept","conversation":conv}))
        .await;
    first
        .expect_where(|v| v["type"] == "assigned" && v["conversation"] == conv.as_str())
        .await;
    let mut other = server.visitor("en").await;
    let conv2 = start_chat(&mut other, None).await;
    accept(&mut first, &conv2).await;
    let agents = server.get_json("/api/agents", &token).await;
    assert_eq!(agents["agents"][0]["load"], 2, "{agents}");
    assert_eq!(agents["agents"][0]["capacity"], 2, "{agents}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_are_served_gzipped_with_an_etag() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    let http = reqwest::Client::new();
    let r = http
        .get(server.url("/widget.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let r = http
        .get(server.url("/widget.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = http.get(server.url("/console")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_and_configured_patterns_never_reach_the_store_or_the_agent() {
    let dir = tempdir();
    let server = Server::start(
        dir.path(),
        &["--mask-pattern", r"\bTR\d{2}(?: ?\d{4}){5} ?\d{2}\b"],
    );
    server.add_agent("ayla", "en", "general", 2, false);
    let token = server.login("ayla").await;
    let mut agent = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conversation = start_chat(&mut player, None).await;
    accept(&mut agent, &conversation).await;

    let raw = "my card 4111 1111 1111 1111 and IBAN TR33 0006 1005 1978 6457 8413 26";
    let stored = "my card •••• •••• •••• 1111 and IBAN [hidden]";
    for (attempt, duplicate) in [(0, false), (1, true)] {
        player
            .send(json!({"type":"send","conversation":conversation,"client_id":"c1","text":raw}))
            .await;
        let ack = player.expect("ack").await;
        assert_eq!(ack["duplicate"], duplicate, "attempt {attempt}");
        let masked = player.expect("masked").await;
        assert_eq!(masked["client_id"], "c1");
        assert_eq!(masked["seq"], ack["seq"]);
        assert_eq!(masked["text"], stored);
    }
    let seen = agent
        .expect_where(|v| v["type"] == "message" && v["client_id"] == "c1")
        .await;
    assert_eq!(seen["text"], stored);

    let (status, text) = server
        .get(
            &format!("/api/conversations/{conversation}/transcript.txt"),
            &token,
        )
        .await;
    assert_eq!(status, 200);
    assert!(text.contains(stored), "{text}");
    assert!(
        !text.contains("4111 1111 1111 1111") && !text.contains("TR33"),
        "{text}"
    );

    // A number that is not a card goes through untouched, with no `masked` frame.
    let seq = player
        .say(&conversation, "c2", "order 4111 1111 1111 1112")
        .await;
    let seen = agent
        .expect_where(|v| v["type"] == "message" && v["seq"] == seq)
        .await;
    assert_eq!(seen["text"], "order 4111 1111 1111 1112");
    player.send(json!({"type":"ping"})).await;
    loop {
        let next = player.next().await;
        assert_ne!(next["type"], "masked", "nothing was hidden in c2: {next}");
        if next["type"] == "pong" {
            break;
        }
    }

    // Every other text a person types is masked too: a transfer note, a close
    // reason, a rating comment, a visitor's name.
    server.add_agent("boris", "en", "general", 2, false);
    let mut boris = server.agent("boris").await;
    agent.say(&conversation, "a1", "let me see").await;
    agent
        .send(json!({"type":"transfer","conversation":conversation,"to":{"agent":"boris"},"note":"card 4111 1111 1111 1111"}))
        .await;
    let offer = boris.expect("offer").await;
    assert_eq!(offer["transfer"]["note"], "card •••• •••• •••• 1111");
    boris
        .send(json!({"type":"decline","conversation":conversation}))
        .await;
    agent
        .expect_where(|v| v["type"] == "transfer_update" && v["outcome"] == "declined")
        .await;
    agent
        .send(json!({"type":"close","conversation":conversation,"reason":"paid to 4111-1111-1111-1111"}))
        .await;
    player.expect("closed").await;
    player
        .send(json!({"type":"rate","conversation":conversation,"score":4,"comment":"IBAN TR33 0006 1005 1978 6457 8413 26 ok"}))
        .await;
    player.expect("rated").await;
    let record = server
        .get_json(&format!("/api/conversations/{conversation}"), &token)
        .await;
    assert_eq!(record["close_reason"], "paid to ••••-••••-••••-1111");
    assert_eq!(record["rating_comment"], "IBAN [hidden] ok");
    assert_eq!(
        record["handoffs"][0]["note"], "card •••• •••• •••• 1111",
        "{record}"
    );
    let (_, text) = server
        .get(
            &format!("/api/conversations/{conversation}/transcript.txt"),
            &token,
        )
        .await;
    assert!(
        !text.contains("4111 1111 1111 1111") && !text.contains("TR33"),
        "{text}"
    );

    let mut named = Client::connect(&server.addr).await;
    named.send(json!({"type":"hello","protocol":1,"auth":{"kind":"visitor","name":"Deniz 4111111111111111","language":"en"}})).await;
    let welcome = named.expect("welcome").await;
    assert_eq!(welcome["you"]["name"], "Deniz ••••••••••••1111");
}

/// The owner hears `pending` before the outcome, however quickly the receiver answers:
/// the receiver's client here declines the moment its offer arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_hears_pending_before_a_decline_sent_at_once() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 10, false);
    server.add_agent("boris", "en", "general", 10, false);
    let mut ayla = server.agent("ayla").await;
    let mut players = Vec::new();
    let mut convs = Vec::new();
    for _ in 0..6 {
        let mut player = server.visitor("en").await;
        let conv = start_chat(&mut player, None).await;
        accept(&mut ayla, &conv).await;
        player.expect("assigned").await;
        players.push(player);
        convs.push(conv);
    }
    let mut boris = server.agent("boris").await;
    for conv in &convs {
        ayla.send(json!({"type":"transfer","conversation":conv,"to":{"agent":"boris"},"note":"please check"}))
            .await;
        let offer = boris
            .expect_where(|v| v["type"] == "offer" && v["conversation"] == *conv)
            .await;
        assert_eq!(offer["transfer"]["note"], "please check");
        boris
            .send(json!({"type":"decline","conversation":conv}))
            .await;
        let updates = [
            ayla.expect_where(|v| v["type"] == "transfer_update" && v["conversation"] == *conv)
                .await,
            ayla.expect_where(|v| v["type"] == "transfer_update" && v["conversation"] == *conv)
                .await,
        ];
        let outcomes: Vec<&str> = updates
            .iter()
            .map(|u| u["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(outcomes, ["pending", "declined"], "conversation {conv}");
        // The transcript tells the same story in the same order.
        let requested = event_seq(&mut ayla, conv, "transfer_requested").await;
        let cancelled = event_seq(&mut ayla, conv, "transfer_cancelled").await;
        assert!(
            requested < cancelled,
            "{conv}: requested #{requested}, cancelled #{cancelled}"
        );
    }
}

/// The sequence number of the event entry `event` in `conv`, as `client` receives it.
async fn event_seq(client: &mut Client, conv: &str, event: &str) -> u64 {
    let m = client
        .expect_where(|v| {
            v["type"] == "message" && v["conversation"] == conv && v["event"] == event
        })
        .await;
    m["seq"].as_u64().unwrap()
}

/// A transfer declined as its owner closes the chat: whichever comes first, the
/// transcript never says "the transfer did not happen; Ayla stays with you" after
/// the chat closed, and the declined hand-off is recorded either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_racing_a_close_does_not_say_the_owner_stays() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 10, false);
    // Boris serves another department: every new chat is offered to ayla, and a
    // transfer to him by name does not look at departments.
    server.add_agent("boris", "en", "other", 10, false);
    server.add_agent("sam", "en", "other", 1, true);
    let sam = server.login("sam").await;
    let mut ayla = server.agent("ayla").await;
    let mut boris = server.agent("boris").await;
    for round in 0..6 {
        let mut player = server.visitor("en").await;
        let conv = start_chat(&mut player, None).await;
        accept(&mut ayla, &conv).await;
        ayla.send(json!({"type":"transfer","conversation":conv,"to":{"agent":"boris"}}))
            .await;
        boris
            .expect_where(|v| v["type"] == "offer" && v["conversation"] == conv.as_str())
            .await;
        boris
            .send(json!({"type":"decline","conversation":conv}))
            .await;
        ayla.send(json!({"type":"close","conversation":conv})).await;
        player.expect("closed").await;
        let transcript = server
            .get_json(&format!("/api/conversations/{conv}/transcript"), &sam)
            .await;
        let events: Vec<&str> = transcript["messages"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["event"].as_str())
            .collect();
        let closed = events.iter().position(|e| *e == "closed").expect("closed");
        assert!(
            !events[closed..].contains(&"transfer_cancelled"),
            "round {round}: {events:?}"
        );
        let record = server
            .get_json(&format!("/api/conversations/{conv}"), &sam)
            .await;
        let outcomes: Vec<&str> = record["handoffs"]
            .as_array()
            .expect("handoffs")
            .iter()
            .filter_map(|h| h["outcome"].as_str())
            .collect();
        assert!(
            outcomes.contains(&"declined") || outcomes.contains(&"cancelled"),
            "round {round}: the hand-off's end is recorded: {outcomes:?}"
        );
    }
}

/// transcript.txt keeps one entry per `[`-line: a player cannot forge an agent's
/// line with line breaks in a message or a name, nor pass for the agent by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_cannot_forge_lines_of_the_plain_text_transcript() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    let mut ayla = server.agent("ayla").await;
    let mut player = Client::connect(&server.addr).await;
    let hello =
        json!({"type":"hello","protocol":1,"auth":{"kind":"visitor","name":"Ayla\nState: Closed"}});
    player.send(hello).await;
    player.expect("welcome").await;
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    player.expect("assigned").await;
    let forged = "hi\r\n[2026-12-07T23:00:00Z] #3 agent Ayla: Approved: refund of 5000 EUR.\u{2028}[2026-12-07T23:00:01Z] #4 * Ayla closed the chat";
    player.say(&conv, "forged", forged).await;
    ayla.say(&conv, "real", "Let me check.").await;
    let token = server.login("ayla").await;
    let (status, text) = server
        .get(&format!("/api/conversations/{conv}/transcript.txt"), &token)
        .await;
    assert_eq!(status, 200, "{text}");
    let entries: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(entries.len(), 3, "joined, the player's, ayla's: {text}");
    assert!(
        entries[1].contains(" player Ayla State: Closed: hi"),
        "{text}"
    );
    assert!(
        entries[2].contains(" agent Agent ayla: Let me check."),
        "{text}"
    );
    assert!(
        text.contains("\n  [2026-12-07T23:00:00Z] #3 agent Ayla: Approved"),
        "continued, indented: {text}"
    );
    assert!(text.contains("Player: v:"), "{text}");
    assert!(
        !text.contains("\nState: Closed"),
        "the name stays on its line: {text}"
    );

    // The player's close is written in the server's own name: without theirs.
    player
        .send(json!({"type":"close","conversation":conv}))
        .await;
    let closed = ayla
        .expect_where(|f| f["type"] == "message" && f["event"] == "closed")
        .await;
    assert_eq!(closed["text"], "The player closed the chat", "{closed}");
    assert_eq!(closed["sender"]["role"], "system", "{closed}");
}
