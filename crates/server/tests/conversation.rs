//! The whole path of a conversation against the real server: queue, offer,
//! accept, chat, transfer, close, rating, transcript.
#![allow(missing_docs)]

mod common;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_offer_accept_chat_transfer_close_transcript() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en,tr", "general", 2, false);
    server.add_agent("boris", "en,ru,tr", "general,payments", 2, false);

    let mut ayla = server.agent("ayla").await;
    assert_eq!(ayla.welcome["you"]["id"], "ayla");
    assert_eq!(ayla.welcome["status"], "online");

    let mut player = server.visitor("tr").await;
    let visitor_token = player.welcome["visitor_token"]
        .as_str()
        .unwrap()
        .to_string();
    let conv = start_chat(&mut player, None).await;

    // Only ayla speaks Turkish: she gets the offer, with the player's card.
    let offer = ayla.expect_where(|v| v["type"] == "offer").await;
    assert_eq!(offer["conversation"], conv.as_str());
    assert_eq!(offer["language"], "tr");
    assert_eq!(offer["player"]["name"], "Player");
    ayla.send(json!({"type":"accept","conversation":conv}))
        .await;
    let assigned = ayla.expect("assigned").await;
    assert_eq!(assigned["player"]["id"], player.welcome["you"]["id"]);
    let (history, _) = ayla.replay(&conv).await;
    assert_eq!(
        history.len(),
        1,
        "the agent sees the 'joined' event: {history:?}"
    );
    assert_eq!(history[0]["event"], "joined");

    let a = player.expect("assigned").await;
    assert_eq!(a["agent"]["name"], "Agent ayla");

    // Chat both ways. Each message is acked to its sender and delivered to the other.
    let s1 = player
        .say(&conv, "p1", "Merhaba, my deposit is missing")
        .await;
    let m = ayla
        .expect_where(|v| v["type"] == "message" && v["client_id"] == "p1")
        .await;
    assert_eq!(m["seq"].as_u64(), Some(s1));
    assert_eq!(m["text"], "Merhaba, my deposit is missing");
    assert_eq!(m["sender"]["role"], "player");

    let s2 = ayla.say(&conv, "a1", "Let me check that for you").await;
    assert_eq!(s2, s1 + 1);
    let m = player
        .expect_where(|v| v["type"] == "message" && v["client_id"] == "a1")
        .await;
    assert_eq!(m["seq"].as_u64(), Some(s2));
    assert_eq!(m["prev"].as_u64(), Some(s1));

    // Typing and read receipts reach the other side.
    player
        .send(json!({"type":"typing","conversation":conv,"active":true}))
        .await;
    let t = ayla.expect("typing").await;
    assert_eq!(t["active"], true);
    player
        .send(json!({"type":"read","conversation":conv,"seq":s2}))
        .await;
    let r = ayla.expect("read").await;
    assert_eq!(r["seq"].as_u64(), Some(s2));

    // A private note: acked to the agent, never shown to the player.
    ayla.send(
        json!({"type":"note","conversation":conv,"client_id":"n1","text":"VIP candidate, be nice"}),
    )
    .await;
    let note_ack = ayla
        .expect_where(|v| v["type"] == "ack" && v["client_id"] == "n1")
        .await;
    let note_seq = note_ack["seq"].as_u64().unwrap();

    // Transfer to boris with a note; until he accepts ayla still owns the chat.
    let mut boris = server.agent("boris").await;
    ayla.send(json!({"type":"transfer","conversation":conv,"to":{"agent":"boris"},"note":"Payments question, deposit 200 EUR"})).await;
    let pending = ayla.expect("transfer_update").await;
    assert_eq!(pending["outcome"], "pending");
    let offer = boris.expect_where(|v| v["type"] == "offer").await;
    assert_eq!(offer["transfer"]["from"]["id"], "ayla");
    assert_eq!(
        offer["transfer"]["note"],
        "Payments question, deposit 200 EUR"
    );
    // The first agent can still write while the transfer is pending.
    let s3 = ayla.say(&conv, "a2", "I am bringing in a colleague").await;

    boris
        .send(json!({"type":"accept","conversation":conv}))
        .await;
    boris
        .expect_where(|v| v["type"] == "assigned" && v["conversation"] == conv.as_str())
        .await;
    let (seen, _) = boris.replay(&conv).await;
    let texts: Vec<&str> = seen.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert!(
        texts.contains(&"Merhaba, my deposit is missing"),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"VIP candidate, be nice"),
        "the receiver sees notes: {texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Payments question, deposit 200 EUR")),
        "{texts:?}"
    );
    let seqs: Vec<u64> = seen.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free and ordered"
    );

    let done = ayla
        .expect_where(|v| v["type"] == "transfer_update" && v["outcome"] == "accepted")
        .await;
    assert_eq!(done["conversation"], conv.as_str());
    ayla.expect("released").await;
    let a = player
        .expect_where(|v| v["type"] == "assigned" && v["agent"]["id"] == "boris")
        .await;
    assert_eq!(a["agent"]["name"], "Agent boris");

    // The former owner can no longer write.
    ayla.send(json!({"type":"send","conversation":conv,"client_id":"a3","text":"still here?"}))
        .await;
    let e = ayla.expect("error").await;
    assert_eq!(e["code"], "forbidden");

    // The player never saw the note, and their `prev` skips it.
    let s4 = boris.say(&conv, "b1", "Found it, refunded").await;
    let m = player
        .expect_where(|v| v["type"] == "message" && v["client_id"] == "b1")
        .await;
    assert_eq!(m["seq"].as_u64(), Some(s4));
    let player_saw: Vec<serde_json::Value> = player
        .backlog
        .iter()
        .filter(|v| v["type"] == "message")
        .cloned()
        .collect();
    assert!(
        player_saw
            .iter()
            .all(|v| v["seq"].as_u64() != Some(note_seq)),
        "player saw a note"
    );
    assert!(s3 > note_seq);

    // Close with a reason; both sides are told; the player rates.
    boris
        .send(json!({"type":"close","conversation":conv,"reason":"resolved"}))
        .await;
    let c = player.expect("closed").await;
    assert_eq!(c["reason"], "resolved");
    assert_eq!(c["by"], "agent");
    boris.expect("closed").await;
    player
        .send(json!({"type":"rate","conversation":conv,"score":5,"comment":"fast and kind"}))
        .await;
    let r = player.expect("rated").await;
    assert_eq!(r["score"], 5);
    player
        .send(json!({"type":"rate","conversation":conv,"score":1}))
        .await;
    assert_eq!(player.expect("error").await["code"], "invalid_state");

    // Transcript over REST: the owner at close may read it; JSON and text.
    let token = server.login("boris").await;
    let t = server
        .get_json(&format!("/api/conversations/{conv}/transcript"), &token)
        .await;
    let msgs = t["messages"].as_array().unwrap();
    assert!(msgs.iter().any(|m| m["text"] == "Found it, refunded"));
    assert!(msgs.iter().any(|m| m["kind"] == "note"));
    let (status, text) = server
        .get(&format!("/api/conversations/{conv}/transcript.txt"), &token)
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("Merhaba, my deposit is missing"), "{text}");
    assert!(text.contains("(note)"), "{text}");
    let detail = server
        .get_json(&format!("/api/conversations/{conv}"), &token)
        .await;
    assert_eq!(detail["conversation"]["rating"], 5);
    assert_eq!(detail["rating_comment"], "fast and kind");
    assert_eq!(detail["close_reason"], "resolved");
    // The list names each conversation's player by its card.
    let list = server
        .get_json("/api/conversations?state=closed", &token)
        .await;
    let player_id = &detail["conversation"]["player"];
    assert!(list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == conv && c["player"] == *player_id));
    assert_eq!(
        list["players"][player_id.as_str().unwrap()]["name"],
        "Player",
        "{list}"
    );
    let kinds = event_kinds(&detail);
    for k in [
        "queued",
        "offered",
        "accepted",
        "assigned",
        "transfer_requested",
        "transferred",
        "closed",
        "rated",
    ] {
        assert!(kinds.contains(&k), "missing lifecycle event {k}: {kinds:?}");
    }
    let handoffs = detail["handoffs"].as_array().unwrap();
    assert!(
        handoffs
            .iter()
            .any(|h| h["outcome"] == "accepted" && h["from"] == "ayla"),
        "{handoffs:?}"
    );

    // ayla no longer owns it: not readable for her.
    let ayla_token = server.login("ayla").await;
    let (status, _) = server
        .get(
            &format!("/api/conversations/{conv}/transcript"),
            &ayla_token,
        )
        .await;
    assert_eq!(status, 404);

    // The returning visitor sees the conversation in their history.
    let mut back = server.visitor_with(Some(&visitor_token), "tr").await;
    assert_eq!(back.welcome["you"]["id"], player.welcome["you"]["id"]);
    back.send(json!({"type":"history"})).await;
    let h = back.expect("history").await;
    assert_eq!(h["conversations"][0]["id"], conv.as_str());
    assert_eq!(h["conversations"][0]["state"], "closed");
    back.send(json!({"type":"resume","conversation":conv,"after":0}))
        .await;
    let (replayed, _) = back.replay(&conv).await;
    assert!(replayed.iter().all(|m| m["kind"] != "note"));
    assert!(replayed.iter().any(|m| m["text"] == "Found it, refunded"));
}
