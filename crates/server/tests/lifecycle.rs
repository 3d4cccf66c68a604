//! Presence and process lifecycle: graceful shutdown, an agent's grace period, a
//! queued player who leaves, a client that stops reading.
#![allow(missing_docs)]

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

/// A connection still sending its request's headers, or idle between requests,
/// does not hold shutdown back until its header timeout: the node exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_requests_that_never_finish_arriving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &[]);
    let mut idle = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: pitboss\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 256];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    let mut half = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: pitboss\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = server.signal_term();
    let took = exited_cleanly(&mut server, signalled).await;
    assert!(
        took < Duration::from_secs(3),
        "shutdown took {took:?} with a request half sent (the header timeout is 10 s)"
    );
}

/// Waits for the SIGTERM'd node to exit, checks it exited with success, and
/// returns how long after the signal it did.
async fn exited_cleanly(server: &mut Server, signalled: std::time::Instant) -> Duration {
    let status = server.wait_exit().await;
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        server.logs()
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_clients_to_reconnect_and_exits_promptly_keeping_everything() {
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let token = player.welcome["visitor_token"]
        .as_str()
        .unwrap()
        .to_string();
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    let mut acked = Vec::new();
    for i in 0..50 {
        acked.push(player.say(&conv, &format!("m{i}"), "before shutdown").await);
    }

    // A connection that has not said `hello` yet.
    let mut silent = Client::connect(&server.addr).await;

    let signalled = server.signal_term();
    assert_eq!(player.expect_close().await, Some(1012), "told to reconnect");
    assert_eq!(ayla.expect_close().await, Some(1012));
    assert_eq!(
        silent.expect_close().await,
        Some(1012),
        "not left to its hello timeout"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the silent connection was closed after {:?}",
        signalled.elapsed()
    );
    let took = exited_cleanly(&mut server, signalled).await;
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");

    server.spawn();
    let mut back = server.visitor_with(Some(&token), "en").await;
    back.send(json!({"type":"resume","conversation":conv,"after":0}))
        .await;
    let (msgs, _) = back.replay(&conv).await;
    let seqs: Vec<u64> = msgs
        .iter()
        .filter(|m| m["kind"] == "text")
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_who_does_not_come_back_loses_the_chat_to_the_head_of_the_queue() {
    let dir = tempdir();
    // Long enough for a reconnect (a debug build's argon2 login is slow on a
    // loaded machine), short enough to wait out.
    let server = Server::start(dir.path(), &["--agent-grace-secs", "4"]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_agent("boris", "en", "general", 1, false);
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    player.expect("assigned").await;

    // A quick reconnect within the grace period keeps the chat.
    ayla.close().await;
    let mut ayla = server.agent("ayla").await;
    let open = ayla.welcome["conversations"].as_array().unwrap();
    assert!(
        open.iter().any(|c| c["id"] == conv.as_str()),
        "kept across a quick reconnect"
    );

    // boris is busy with another player, so the requeued chat must wait for him.
    let mut boris = server.agent("boris").await;
    let mut other = server.visitor("en").await;
    let other_conv = start_chat(&mut other, None).await;
    // ayla has the lower load (1 of 2 vs 0 of 1: equal count, so longest idle);
    // whoever is offered, accept it so that boris ends up busy.
    let offered_to_boris = tokio::select! {
        v = boris.expect_where(|v| v["type"] == "offer") => v["conversation"] == other_conv.as_str(),
        _ = ayla.expect_where(|v| v["type"] == "offer") => false,
    };
    if offered_to_boris {
        boris
            .send(json!({"type":"accept","conversation":other_conv}))
            .await;
    } else {
        ayla.send(json!({"type":"accept","conversation":other_conv}))
            .await;
    }

    // ayla leaves for good: after the grace period her chat goes back to the queue.
    ayla.close().await;
    let ev = player
        .expect_where(|v| v["type"] == "message" && v["event"] == "requeued")
        .await;
    assert_eq!(ev["kind"], "event");
    player
        .expect_where(|v| v["type"] == "queued" && v["position"] == 1)
        .await;
    if !offered_to_boris {
        // ayla owned both; both are requeued, and boris takes the first to arrive.
        let offer = boris.expect_where(|v| v["type"] == "offer").await;
        boris
            .send(json!({"type":"accept","conversation":offer["conversation"]}))
            .await;
    } else {
        boris
            .send(json!({"type":"close","conversation":other_conv}))
            .await;
        let offer = boris.expect_where(|v| v["type"] == "offer").await;
        assert_eq!(
            offer["conversation"],
            conv.as_str(),
            "the requeued chat is first"
        );
        boris
            .send(json!({"type":"accept","conversation":conv}))
            .await;
        player
            .expect_where(|v| v["type"] == "assigned" && v["agent"]["id"] == "boris")
            .await;
    }
}

/// A restart keeps the queue's order: a chat put back at the head of the queue
/// (its agent went away) stays ahead of one that arrived before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_a_requeued_chat_at_the_head_of_the_queue() {
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &["--agent-grace-secs", "4"]);
    server.add_agent("boris", "en,tr", "general", 1, false);
    server.add_agent("ayla", "en", "general", 1, false);
    let mut boris = server.agent("boris").await;
    let mut busy = server.visitor("en").await;
    let busy_conv = start_chat(&mut busy, None).await;
    accept(&mut boris, &busy_conv).await;
    // Only boris speaks Turkish, and he is busy: this chat waits.
    let mut early = server.visitor("tr").await;
    early.send(json!({"type":"start"})).await;
    let queued = early
        .expect_where(|v| matches!(v["type"].as_str(), Some("queued" | "no_agents")))
        .await;
    assert_eq!(queued["position"], 1, "{queued}");
    let early_conv = queued["conversation"].as_str().unwrap().to_owned();
    // A later chat goes to ayla, who then leaves for good: it goes back to
    // the head of the queue, ahead of the earlier one (positions count within
    // a department and language; the order between lines shows in whom a
    // freed slot goes to).
    let mut ayla = server.agent("ayla").await;
    let mut late = server.visitor("en").await;
    let late_conv = start_chat(&mut late, None).await;
    accept(&mut ayla, &late_conv).await;
    ayla.close().await;
    late.expect_where(|v| v["type"] == "message" && v["event"] == "requeued")
        .await;
    late.expect_where(|v| v["type"] == "queued" && v["position"] == 1)
        .await;

    server.kill();
    server.spawn();
    let mut boris = server.agent("boris").await;
    let open = boris.welcome["conversations"].as_array().unwrap();
    assert!(
        open.iter().any(|c| c["id"] == busy_conv.as_str()),
        "boris keeps his chat across the restart: {open:?}"
    );
    // His slot frees: the head of the queue is offered first.
    boris
        .send(json!({"type":"close","conversation":busy_conv}))
        .await;
    let offer = boris.expect_where(|v| v["type"] == "offer").await;
    assert_eq!(
        offer["conversation"],
        late_conv.as_str(),
        "the chat put back at the head is first after the restart (the other: {early_conv})"
    );
}

/// ayla (general) owns a chat and asks for a transfer `to`, which waits; boris
/// (payments) is connected meanwhile and offered it; sam is a supervisor. Then the
/// server is killed, with the offer unanswered, and started again. Returns the chat.
async fn transfer_pending_across_a_restart(server: &mut Server, to: serde_json::Value) -> String {
    server.add_agent("sam", "en", "general", 1, true);
    server.add_agent("ayla", "en", "general", 1, false);
    server.add_agent("boris", "en", "payments", 1, false);
    let mut ayla = server.agent("ayla").await;
    let mut boris = server.agent("boris").await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    ayla.send(
        json!({"type":"transfer","conversation":conv,"to":to,"note":"Deposit of 200 EUR missing"}),
    )
    .await;
    let pending = transfer_update(&mut ayla, &conv).await;
    assert_eq!(pending["outcome"], "pending", "{pending}");
    let offer = boris.expect_where(|v| v["type"] == "offer").await;
    assert_eq!(offer["conversation"], conv.as_str(), "{offer}");
    server.kill();
    server.spawn();
    conv
}

/// The next `transfer_update` about `conv`.
async fn transfer_update(agent: &mut Client, conv: &str) -> serde_json::Value {
    agent
        .expect_where(|v| v["type"] == "transfer_update" && v["conversation"] == conv)
        .await
}

/// After the restart, ayla and boris connect: boris is offered the transfer, with
/// ayla's note, accepts it, and ayla hears so.
async fn transfer_goes_on_after_the_restart(server: &Server, conv: &str) {
    let mut ayla = server.agent("ayla").await;
    let mut boris = server.agent("boris").await;
    let offer = boris.expect_where(|v| v["type"] == "offer").await;
    assert_eq!(offer["conversation"], conv, "{offer}");
    assert_eq!(offer["transfer"]["from"]["id"], "ayla", "{offer}");
    assert_eq!(
        offer["transfer"]["note"], "Deposit of 200 EUR missing",
        "the note survives the restart: {offer}"
    );
    boris.backlog.push(offer);
    accept(&mut boris, conv).await;
    let done = transfer_update(&mut ayla, conv).await;
    assert_eq!(done["outcome"], "accepted", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_a_department_transfer_waiting_with_its_note() {
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &[]);
    // Boris of payments is offered it, and the server dies before he answers:
    // the transfer waits across the restart, and is offered again once he is back.
    let conv =
        transfer_pending_across_a_restart(&mut server, json!({"department":"payments"})).await;
    transfer_goes_on_after_the_restart(&server, &conv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_a_transfer_to_a_named_agent_who_comes_back() {
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &[]);
    // boris is back within an offer's timeout: offered it again.
    let conv = transfer_pending_across_a_restart(&mut server, json!({"agent":"boris"})).await;
    transfer_goes_on_after_the_restart(&server, &conv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_ends_a_transfer_to_a_named_agent_who_stays_away() {
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &["--offer-timeout-secs", "3"]);
    let conv = transfer_pending_across_a_restart(&mut server, json!({"agent":"boris"})).await;
    // boris does not come back: after an offer's timeout (3 s here) the transfer
    // ends, on the record, and the chat stays with ayla.
    let token = server.login("sam").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let detail = loop {
        let detail = server
            .get_json(&format!("/api/conversations/{conv}"), &token)
            .await;
        let kinds = event_kinds(&detail);
        let requested = kinds.iter().rposition(|k| *k == "transfer_requested");
        let failed = kinds.iter().rposition(|k| *k == "transfer_failed");
        if requested.is_some() && failed > requested {
            break detail;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the transfer did not end: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(detail["conversation"]["agent"], "ayla", "{detail}");
    // ayla may ask again once boris is back.
    let mut ayla = server.agent("ayla").await;
    let mut boris = server.agent("boris").await;
    ayla.send(json!({"type":"transfer","conversation":conv,"to":{"agent":"boris"}}))
        .await;
    let again = transfer_update(&mut ayla, &conv).await;
    assert_eq!(
        again["outcome"], "pending",
        "a new transfer may start: {again}"
    );
    let offer = boris.expect_where(|v| v["type"] == "offer").await;
    assert_eq!(offer["conversation"], conv.as_str(), "{offer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_player_who_stays_away_is_marked_abandoned() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--abandon-after-secs", "1"]);
    server.add_agent("sam", "en", "general", 1, true);
    server.add_agent("ayla", "en", "general", 1, false);
    let mut ayla = server.agent("ayla").await;
    let mut busy = server.visitor("en").await;
    let busy_conv = start_chat(&mut busy, None).await;
    accept(&mut ayla, &busy_conv).await;

    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    player.close().await;

    let token = server.login("sam").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let detail = server
            .get_json(&format!("/api/conversations/{conv}"), &token)
            .await;
        if detail["conversation"]["state"] == "closed" {
            assert_eq!(detail["close_reason"], "abandoned");
            let kinds = event_kinds(&detail);
            assert!(kinds.contains(&"abandoned"), "{kinds:?}");
            let events = detail["events"].as_array().expect("events");
            let abandoned = events.iter().find(|e| e["kind"] == "abandoned").unwrap();
            assert_eq!(abandoned["detail"]["by"], "timeout", "{abandoned}");
            let closed = events.iter().find(|e| e["kind"] == "closed").unwrap();
            assert_eq!(
                closed["detail"],
                json!({"reason": "abandoned", "by": "system"}),
                "{closed}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not abandoned in time: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ayla's slot frees: the abandoned chat is not offered to her.
    ayla.send(json!({"type":"close","conversation":busy_conv}))
        .await;
    ayla.send(json!({"type":"ping"})).await;
    ayla.expect("pong").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ayla.send(json!({"type":"ping"})).await;
    ayla.expect("pong").await;
    assert!(!ayla
        .backlog
        .iter()
        .any(|v| v["type"] == "offer" && v["conversation"] == conv.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_as_a_slow_consumer() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--outbound-queue", "16"]);
    server.add_agent("ayla", "en", "general", 2, false);
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let token = player.welcome["visitor_token"]
        .as_str()
        .unwrap()
        .to_string();
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    player.expect("assigned").await;

    // The player stops reading; the agent keeps writing large messages. The
    // agent is never slowed down: every message is acked.
    let text = "z".repeat(3900);
    let mut last = 0;
    for i in 0..3000 {
        last = ayla.say(&conv, &format!("big-{i}"), &text).await;
        if server.logs().contains("slow consumer disconnected") {
            break;
        }
    }
    assert!(
        server.logs().contains("slow consumer disconnected"),
        "never detected"
    );
    // Now the player reads what reached it, then the close code.
    assert_eq!(player.expect_close().await, Some(4008));

    // Reconnecting and resuming from the last message it saw recovers the rest.
    let seen = player
        .backlog
        .iter()
        .filter(|v| v["type"] == "message")
        .filter_map(|v| v["seq"].as_u64())
        .max()
        .unwrap_or(0);
    let mut back = server.visitor_with(Some(&token), "en").await;
    back.send(json!({"type":"resume","conversation":conv,"after":seen}))
        .await;
    let (rest, last_seq) = back.replay(&conv).await;
    assert_eq!(last_seq, last);
    let mut expect = seen;
    for m in &rest {
        assert_eq!(m["prev"].as_u64(), Some(expect));
        expect = m["seq"].as_u64().unwrap();
    }
    assert_eq!(expect, last);
    assert!(server.healthy().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_account_closes_its_open_sessions_and_refuses_its_token() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("leaver", "en", "general", 2, false);
    let token = server.login("leaver").await;
    let mut agent = server.agent("leaver").await;

    let out = std::process::Command::new(BIN)
        .args(["agent", "remove", "leaver", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The open console is told and closed (the check runs every few seconds).
    let error = agent.expect("error").await;
    assert_eq!(error["code"], "unauthorized", "{error}");
    assert_eq!(agent.expect_close().await, Some(4001));
    // The token no longer opens anything.
    let (status, _) = server.get("/api/me", &token).await;
    assert_eq!(status, 401);
    let mut again = Client::connect(&server.addr).await;
    again
        .send(json!({"type":"hello","protocol":1,"auth":{"kind":"agent","token":token}}))
        .await;
    assert_eq!(again.expect("error").await["code"], "unauthorized");
}

/// An agent's account removed while the server was down (`pitboss agent remove`):
/// at the restart their chat goes back to the head of the queue, on the record and
/// for the player, as when an agent's grace period runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_whose_agent_was_removed_while_down_is_requeued_at_the_restart() {
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &[]);
    server.add_agent("boris", "en", "general", 1, false);
    let (_ayla, player, conv) = ayla_serving_a_player(&server).await;
    let token = player.welcome["visitor_token"]
        .as_str()
        .expect("visitor_token")
        .to_owned();

    server.kill();
    let (ok, _, err) = server.agent_command(&["remove", "ayla"]);
    assert!(ok, "{err}");
    server.spawn();

    let mut player = server.visitor_with(Some(&token), "en").await;
    let listed = listed(&player.welcome, &conv);
    assert_eq!(listed["state"], "queued", "{listed}");
    assert!(listed["agent"].is_null(), "{listed}");
    player
        .send(json!({"type":"resume","conversation":conv,"after":0}))
        .await;
    let (entries, _) = player.replay(&conv).await;
    let requeued: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["event"] == "requeued")
        .collect();
    assert_eq!(requeued.len(), 1, "one requeued event: {entries:?}");

    // The next agent free takes it, and the record shows how it got there.
    let mut boris = server.agent("boris").await;
    accept(&mut boris, &conv).await;
    player
        .expect_where(|v| v["type"] == "assigned" && v["agent"]["id"] == "boris")
        .await;
    let boris_token = server.login("boris").await;
    let detail = server
        .get_json(&format!("/api/conversations/{conv}"), &boris_token)
        .await;
    let kinds = event_kinds(&detail);
    let requeued_at = kinds.iter().position(|k| *k == "requeued");
    let reassigned_at = kinds.iter().rposition(|k| *k == "assigned");
    assert!(
        requeued_at.is_some() && reassigned_at > requeued_at,
        "requeued, then assigned again: {kinds:?}"
    );
    let requeue = &detail["events"][requeued_at.unwrap()];
    assert_eq!(requeue["agent"], "ayla", "{requeue}");
    assert_eq!(requeue["detail"]["reason"], "account_removed", "{requeue}");
    assert_eq!(detail["conversation"]["agent"], "boris", "{detail}");
}

/// An agent's account removed while the server runs: their console is closed, and
/// once their grace period runs out their chat goes back to the head of the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_agents_chat_is_requeued_after_the_grace_period() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--agent-grace-secs", "2"]);
    let (mut ayla, mut player, conv) = ayla_serving_a_player(&server).await;

    let (ok, _, err) = server.agent_command(&["remove", "ayla"]);
    assert!(ok, "{err}");
    assert_eq!(ayla.expect_close().await, Some(4001));
    let ev = player
        .expect_where(|v| v["type"] == "message" && v["event"] == "requeued")
        .await;
    assert_eq!(ev["conversation"], conv.as_str(), "{ev}");
    player
        .expect_where(|v| v["type"] == "queued" && v["position"] == 1)
        .await;
}

/// An agent who signs out: every console of theirs closes with 4003, and their
/// chat goes back to the head of the queue at once (no grace period), where the
/// next agent is offered it; the record says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_who_signs_out_hands_their_chats_back_at_once() {
    let dir = tempdir();
    // A grace period far longer than the test: only the sign-out can requeue.
    let server = Server::start(dir.path(), &["--agent-grace-secs", "600"]);
    server.add_agent("boris", "en", "general", 1, false);
    let (mut ayla, mut player, conv) = ayla_serving_a_player(&server).await;
    let mut ayla_tab = server.agent("ayla").await;
    let mut boris = server.agent("boris").await;

    // A player cannot sign out.
    player.send(json!({"type":"sign_out"})).await;
    let refused = player.expect("error").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    ayla.send(json!({"type":"sign_out"})).await;
    assert_eq!(ayla.expect_close().await, Some(4003));
    assert_eq!(ayla_tab.expect_close().await, Some(4003));
    let ev = player
        .expect_where(|v| v["type"] == "message" && v["event"] == "requeued")
        .await;
    assert_eq!(ev["conversation"], conv.as_str(), "{ev}");
    assert!(
        ev["text"].as_str().unwrap_or("").contains("signed off"),
        "{ev}"
    );
    accept(&mut boris, &conv).await;
    player
        .expect_where(|v| v["type"] == "assigned" && v["agent"]["id"] == "boris")
        .await;

    let token = server.login("boris").await;
    let detail = server
        .get_json(&format!("/api/conversations/{conv}"), &token)
        .await;
    let requeue = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "requeued")
        .cloned()
        .unwrap_or_else(|| panic!("a requeued event: {detail}"));
    assert_eq!(requeue["agent"], "ayla", "{requeue}");
    assert_eq!(requeue["detail"]["reason"], "signed_out", "{requeue}");

    // Signing in again is a fresh start: online, and offered chats again.
    let again = server.agent("ayla").await;
    assert_eq!(again.welcome["status"], "online", "{}", again.welcome);
}

/// A transfer still waiting for its receiver when the chat is closed ends on the
/// record: a `cancelled` hand-off and a `transfer_failed` event, and the
/// receiver's offer is withdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_pending_when_the_chat_closes_is_recorded_as_cancelled() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("boris", "en", "general", 1, false);
    let (mut ayla, _player, conv) = ayla_serving_a_player(&server).await;
    let mut boris = server.agent("boris").await;
    ayla.send(json!({"type":"transfer","conversation":conv,"to":{"agent":"boris"},"note":"VIP"}))
        .await;
    boris
        .expect_where(|v| v["type"] == "offer" && v["conversation"] == conv.as_str())
        .await;
    ayla.send(json!({"type":"close","conversation":conv,"reason":"resolved"}))
        .await;
    let withdrawn = boris
        .expect_where(|v| v["type"] == "offer_withdrawn" && v["conversation"] == conv.as_str())
        .await;
    assert_eq!(withdrawn["reason"], "cancelled", "{withdrawn}");

    let token = server.login("ayla").await;
    let begun = std::time::Instant::now();
    let detail = loop {
        let detail = server
            .get_json(&format!("/api/conversations/{conv}"), &token)
            .await;
        if detail["handoffs"].as_array().map_or(0, |h| h.len()) == 2 {
            break detail;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(10),
            "the transfer's end is not on record: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        handoff_outcomes(&detail),
        ["requested", "cancelled"],
        "{detail}"
    );
    assert_eq!(detail["handoffs"][1]["note"], "VIP", "{detail}");
    let failed = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "transfer_failed")
        .cloned()
        .unwrap_or_else(|| panic!("a transfer_failed event: {detail}"));
    assert_eq!(
        failed["detail"],
        json!({"to": "agent:boris", "reason": "cancelled"}),
        "{failed}"
    );
    assert_eq!(failed["agent"], "ayla", "{failed}");
}

/// ayla (English, general, capacity 2) serving a new player: her console, the
/// player's connection and the chat.
async fn ayla_serving_a_player(server: &Server) -> (Client, Client, String) {
    server.add_agent("ayla", "en", "general", 2, false);
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    player.expect("assigned").await;
    (ayla, player, conv)
}

/// A player queued before a restart keeps their whole wait: the offer made after
/// it counts from when they arrived, not from when the node started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_from_before_a_restart_is_counted_whole() {
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 1, false);
    server.add_agent("boris", "en", "general", 1, false);
    // Ayla online and full: the next player waits in the queue.
    let mut ayla = server.agent("ayla").await;
    let mut served = server.visitor("en").await;
    let first = start_chat(&mut served, None).await;
    accept(&mut ayla, &first).await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    let token = player.welcome["visitor_token"]
        .as_str()
        .expect("visitor_token")
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    server.kill();
    server.spawn();
    let mut back = server.visitor_with(Some(&token), "en").await;
    back.send(json!({"type":"resume","conversation":conv,"after":0}))
        .await;
    let mut boris = server.agent("boris").await;
    let offer = boris
        .expect_where(|v| v["type"] == "offer" && v["conversation"] == conv.as_str())
        .await;
    let waited = offer["waited_ms"].as_u64().expect("waited_ms");
    assert!(waited >= 4_000, "waited {waited} ms: {offer}");
}
