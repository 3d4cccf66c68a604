//! Routing against the real server: capacity, language, VIP priority, offer
//! expiry, nobody online (offline messages), queue position.
#![allow(missing_docs)]

mod common;
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn jwt_args() -> Vec<&'static str> {
    vec![
        "--player-token-alg",
        "HS256",
        "--player-token-secret",
        SECRET,
        "--player-token-issuer",
        "casino",
        "--player-token-audience",
        "pitboss",
    ]
}

pub fn player_jwt(sub: &str, claims: Value, exp_offset: i64, aud: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut c = json!({ "sub": sub, "iss": "casino", "aud": aud, "exp": now + exp_offset });
    for (k, v) in claims.as_object().unwrap() {
        c[k] = v.clone();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &c,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn verified(server: &Server, token: &str) -> Client {
    let mut c = Client::connect(&server.addr).await;
    c.send(json!({"type":"hello","protocol":1,"auth":{"kind":"player","token":token}}))
        .await;
    c.welcome = c.expect("welcome").await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_and_language_decide_who_is_offered() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("emre", "tr", "general", 1, false);
    server.add_agent("olga", "ru", "general", 1, false);
    let mut emre = server.agent("emre").await;
    let mut olga = server.agent("olga").await;

    // A Russian speaker goes to olga, a Turkish one to emre.
    let mut ru = server.visitor("ru").await;
    let ru_conv = start_chat(&mut ru, None).await;
    accept(&mut olga, &ru_conv).await;
    let mut tr1 = server.visitor("tr").await;
    let tr1_conv = start_chat(&mut tr1, None).await;
    accept(&mut emre, &tr1_conv).await;

    // emre is full (capacity 1): a second Turkish player queues, at position 1.
    let mut tr2 = server.visitor("tr").await;
    tr2.send(json!({"type":"start"})).await;
    let q = tr2.expect("queued").await;
    assert_eq!(q["position"], 1);
    // Nothing closed yet, so no estimate; but a Turkish agent is online.
    assert_eq!(q["estimated_wait_secs"], Value::Null, "{q}");
    assert_eq!(q["agents_online"], true, "{q}");
    let tr2_conv = q["conversation"].as_str().unwrap().to_string();
    // olga does not speak Turkish and is full anyway; nobody is offered it.
    emre.send(json!({"type":"ping"})).await;
    emre.expect("pong").await;
    assert!(
        !emre.backlog.iter().any(|v| v["type"] == "offer"),
        "offered beyond capacity"
    );
    assert!(!olga
        .backlog
        .iter()
        .any(|v| v["type"] == "offer" && v["conversation"] == tr2_conv.as_str()));

    // With emre away nobody online serves the Turkish line, and the waiting
    // player is told so; back online, told again.
    for (status, online) in [("away", false), ("online", true)] {
        emre.send(json!({"type":"set_status","status":status}))
            .await;
        let q = tr2.expect("queued").await;
        assert_eq!(
            (q["position"].clone(), q["agents_online"].clone()),
            (json!(1), json!(online)),
            "{q}"
        );
    }

    // When emre's chat closes, the freed slot goes at once to the waiting player.
    emre.send(json!({"type":"close","conversation":tr1_conv,"reason":"resolved"}))
        .await;
    accept(&mut emre, &tr2_conv).await;
    tr2.expect("assigned").await;
}

/// A player's language from `hello` or from a player token is a tag like any
/// other: `EN` and ` TR ` reach the agents who serve `en` and `tr`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_players_language_is_matched_whatever_its_case() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &jwt_args());
    server.add_agent("ayla", "en,tr", "general", 2, false);
    server.add_agent("boss", "en", "general", 1, true);
    let mut ayla = server.agent("ayla").await;

    let mut visitor = server.visitor("EN").await;
    let en = start_chat(&mut visitor, None).await;
    accept(&mut ayla, &en).await;
    let token = player_jwt("c-77", json!({"lang": " TR "}), 300, "pitboss");
    let mut player = verified(&server, &token).await;
    let tr = start_chat(&mut player, None).await;
    accept(&mut ayla, &tr).await;

    let boss = server.login("boss").await;
    for (conv, language) in [(&en, "en"), (&tr, "tr")] {
        let detail = server
            .get_json(&format!("/api/conversations/{conv}"), &boss)
            .await;
        assert_eq!(detail["conversation"]["language"], language, "{detail}");
        assert_eq!(detail["conversation"]["state"], "active", "{detail}");
    }
}

/// An HS256 secret read from a file that ends in a line break (as `echo` or an
/// editor writes it) is the secret without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_ending_in_a_line_break_verifies_players() {
    let dir = tempdir();
    let key = dir.path().join("casino.key");
    std::fs::write(&key, format!("{SECRET}\r\n")).unwrap();
    let key = key.to_str().unwrap().to_owned();
    let mut args = jwt_args();
    let at = args
        .iter()
        .position(|a| *a == "--player-token-secret")
        .unwrap();
    args[at] = "--player-token-key-file";
    args[at + 1] = &key;
    let server = Server::start(dir.path(), &args);
    let token = player_jwt("c-41", json!({"name": "Deniz"}), 300, "pitboss");
    let player = verified(&server, &token).await;
    assert_eq!(player.welcome["you"]["id"], "p:c-41", "{}", player.welcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_players_go_first_and_unsigned_claims_do_not() {
    let dir = tempdir();
    let mut args = jwt_args();
    args.extend(["--vip-aging-secs", "600"]);
    let server = Server::start(dir.path(), &args);
    server.add_agent("ayla", "en", "general", 1, false);
    let mut ayla = server.agent("ayla").await;

    // ayla is busy with a first player.
    let mut first = server.visitor("en").await;
    let first_conv = start_chat(&mut first, None).await;
    accept(&mut ayla, &first_conv).await;

    // Then: a regular visitor, a visitor claiming VIP in an unsigned field (which
    // the protocol has no place for, so it is ignored), and a signed VIP tier 3.
    let mut regular = server.visitor("en").await;
    let regular_conv = start_chat(&mut regular, None).await;
    let mut vip = verified(
        &server,
        &player_jwt(
            "p-77",
            json!({"vip_tier": 3, "name": "Vera", "language": "en"}),
            300,
            "pitboss",
        ),
    )
    .await;
    assert_eq!(vip.welcome["you"]["id"], "p:p-77");
    vip.send(json!({"type":"start"})).await;
    let q = vip.expect("queued").await;
    assert_eq!(
        q["position"], 1,
        "a VIP tier 3 goes ahead of a regular player who waited less than 3 aging periods"
    );
    let vip_conv = q["conversation"].as_str().unwrap().to_string();
    let q = regular
        .expect_where(|v| v["type"] == "queued" && v["position"] == 2)
        .await;
    assert_eq!(q["conversation"], regular_conv.as_str());
    // A visitor who slips a VIP claim into hello gains nothing: only a signed token counts.
    let mut claimer = Client::connect(&server.addr).await;
    claimer.send(json!({"type":"hello","protocol":1,"auth":{"kind":"visitor","language":"en","vip_tier":5}})).await;
    claimer.expect("welcome").await;
    claimer.send(json!({"type":"start"})).await;
    let q = claimer.expect("queued").await;
    assert_eq!(
        q["position"], 3,
        "an unsigned claim must not raise priority"
    );

    ayla.send(json!({"type":"close","conversation":first_conv}))
        .await;
    let offer = ayla.expect_where(|v| v["type"] == "offer").await;
    assert_eq!(offer["conversation"], vip_conv.as_str());
    assert_eq!(offer["player"]["vip_tier"], 3);
    assert_eq!(offer["player"]["verified"], true);
    assert_eq!(offer["player"]["name"], "Vera");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_offer_expires_and_moves_to_the_next_agent() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--offer-timeout-secs", "1"]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_agent("boris", "en", "general", 2, false);
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    ayla.expect_where(|v| v["type"] == "offer" && v["conversation"] == conv.as_str())
        .await;

    let mut boris = server.agent("boris").await;
    // ayla does not answer: after a second the offer is withdrawn and she is set away.
    let w = ayla.expect("offer_withdrawn").await;
    assert_eq!(w["reason"], "expired");
    let s = ayla.expect("status").await;
    assert_eq!(s["status"], "away");
    accept(&mut boris, &conv).await;
    let a = player.expect("assigned").await;
    assert_eq!(a["agent"]["id"], "boris");

    // Accepting an expired offer is refused.
    ayla.send(json!({"type":"accept","conversation":conv}))
        .await;
    assert_eq!(ayla.expect("error").await["code"], "invalid_state");

    // A declined offer moves on too, and the decliner is told.
    let mut p2 = server.visitor("en").await;
    ayla.send(json!({"type":"set_status","status":"online"}))
        .await;
    ayla.expect_where(|v| v["type"] == "status" && v["status"] == "online")
        .await;
    let conv2 = start_chat(&mut p2, None).await;
    // boris has 1 chat, ayla 0: the least loaded gets it.
    ayla.expect_where(|v| v["type"] == "offer" && v["conversation"] == conv2.as_str())
        .await;
    ayla.send(json!({"type":"decline","conversation":conv2}))
        .await;
    let w = ayla
        .expect_where(|v| v["type"] == "offer_withdrawn" && v["conversation"] == conv2.as_str())
        .await;
    assert_eq!(w["reason"], "declined");
    accept(&mut boris, &conv2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nobody_online_the_player_leaves_a_message_that_an_agent_answers() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);

    let mut player = server.visitor("en").await;
    let token = player.welcome["visitor_token"]
        .as_str()
        .unwrap()
        .to_string();
    player.send(json!({"type":"start"})).await;
    let n = player.expect("no_agents").await;
    let conv = n["conversation"].as_str().unwrap().to_string();
    player
        .say(&conv, "off-1", "Please call me back about my withdrawal")
        .await;
    player.close().await;

    // An agent comes online, finds it in the offline list, takes and answers it.
    let token_a = server.login("ayla").await;
    let list = server.get_json("/api/offline", &token_a).await;
    let item = list["offline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["conversation"]["id"] == conv.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(
        item["messages"][0]["text"],
        "Please call me back about my withdrawal"
    );
    let mut ayla = server.agent("ayla").await;
    ayla.send(json!({"type":"take","conversation":conv})).await;
    ayla.expect("assigned").await;
    let (seen, _) = ayla.replay(&conv).await;
    assert!(seen.iter().any(|m| m["client_id"] == "off-1"));
    ayla.say(&conv, "ans-1", "Your withdrawal was approved")
        .await;
    ayla.send(json!({"type":"close","conversation":conv,"reason":"answered"}))
        .await;
    ayla.expect("closed").await;
    let list = server.get_json("/api/offline", &token_a).await;
    assert!(list["offline"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["conversation"]["id"] != conv.as_str()));

    // The player returns and finds the answer waiting.
    let mut back = server.visitor_with(Some(&token), "en").await;
    back.send(json!({"type":"history"})).await;
    let h = back.expect("history").await;
    assert_eq!(h["conversations"][0]["id"], conv.as_str());
    back.send(json!({"type":"resume","conversation":conv,"after":0}))
        .await;
    let (msgs, _) = back.replay(&conv).await;
    assert!(
        msgs.iter()
            .any(|m| m["text"] == "Your withdrawal was approved"),
        "{msgs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn department_transfer_waits_at_the_head_and_supervisor_takes_over() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_agent("paula", "en", "payments", 1, false);
    server.add_agent("sam", "en", "general", 1, true);
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;

    // Transfer to payments while paula is busy: it waits, ayla keeps the chat.
    let mut paula = server.agent("paula").await;
    let mut payer = server.visitor("en").await;
    let busy = start_chat(&mut payer, Some("payments")).await;
    accept(&mut paula, &busy).await;
    let mut later = server.visitor("en").await;
    let later_conv = start_chat(&mut later, Some("payments")).await;

    ayla.send(json!({"type":"transfer","conversation":conv,"to":{"department":"payments"},"note":"card declined"})).await;
    ayla.expect_where(|v| v["type"] == "transfer_update" && v["outcome"] == "pending")
        .await;
    ayla.say(&conv, "still-mine", "One moment please").await;

    // paula frees her slot: the transfer (at the head) comes before the later arrival.
    paula
        .send(json!({"type":"close","conversation":busy}))
        .await;
    let offer = paula.expect_where(|v| v["type"] == "offer").await;
    assert_eq!(offer["conversation"], conv.as_str());
    assert_eq!(offer["transfer"]["note"], "card declined");
    paula
        .send(json!({"type":"accept","conversation":conv}))
        .await;
    paula
        .expect_where(|v| v["type"] == "assigned" && v["conversation"] == conv.as_str())
        .await;
    ayla.expect_where(|v| v["type"] == "transfer_update" && v["outcome"] == "accepted")
        .await;
    player
        .expect_where(|v| v["type"] == "assigned" && v["agent"]["id"] == "paula")
        .await;
    assert!(!paula
        .backlog
        .iter()
        .any(|v| v["type"] == "offer" && v["conversation"] == later_conv.as_str()));

    // A supervisor takes over; paula is released and the player told.
    let mut sam = server.agent("sam").await;
    sam.send(json!({"type":"take","conversation":conv})).await;
    sam.expect_where(|v| v["type"] == "assigned" && v["conversation"] == conv.as_str())
        .await;
    paula
        .expect_where(|v| v["type"] == "released" && v["conversation"] == conv.as_str())
        .await;
    player
        .expect_where(|v| v["type"] == "assigned" && v["agent"]["id"] == "sam")
        .await;
    let (seen, _) = sam.replay(&conv).await;
    assert!(seen.iter().any(|m| m["client_id"] == "still-mine"));

    // A plain agent may not take over.
    ayla.send(json!({"type":"take","conversation":later_conv}))
        .await;
    assert_eq!(ayla.expect("error").await["code"], "forbidden");
}

/// An agent who connects while a chat waits is offered it once: the offer made as
/// they come online is not repeated from the list of offers still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_who_connects_is_offered_a_waiting_chat_once() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 1, false);
    server.add_agent("boris", "en", "general", 1, false);
    let mut ayla = server.agent("ayla").await;
    let mut busy = server.visitor("en").await;
    let busy_conv = start_chat(&mut busy, None).await;
    accept(&mut ayla, &busy_conv).await;
    // ayla is full: this chat waits until boris comes online.
    let mut waiting = server.visitor("en").await;
    waiting.send(json!({"type":"start"})).await;
    let queued = waiting.expect("queued").await;
    let conv = queued["conversation"].as_str().unwrap().to_owned();

    let mut boris = server.agent("boris").await;
    let mut offers = boris
        .backlog
        .iter()
        .filter(|f| f["type"] == "offer" && f["conversation"] == conv.as_str())
        .count();
    let quiet = std::time::Duration::from_millis(1_500);
    while let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) =
        tokio::time::timeout(quiet, futures_util::StreamExt::next(&mut boris.ws)).await
    {
        let f: Value = serde_json::from_str(&t).unwrap();
        if f["type"] == "offer" && f["conversation"] == conv.as_str() {
            offers += 1;
        }
    }
    assert_eq!(offers, 1, "offers of {conv} to boris");
}
