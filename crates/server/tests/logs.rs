//! Structured logs against the real binary: with `--log-format json`, the lines
//! written while a chat runs carry the node, the player or agent, and the
//! conversation, from the connection's and the frame's spans.
#![allow(missing_docs)]

mod common;
use common::*;
use serde_json::Value;

/// Whether any of a JSON log line's spans (the innermost, `span`, and the list of
/// enclosing ones, `spans`) has `field` equal to `value`.
fn span_has(line: &Value, field: &str, value: &str) -> bool {
    let spans = line["spans"].as_array().cloned().unwrap_or_default();
    spans
        .iter()
        .chain(std::iter::once(&line["span"]))
        .any(|s| s[field].as_str() == Some(value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_node_player_agent_and_conversation() {
    let dir = tempdir();
    let server = Server::start(
        dir.path(),
        &[
            "--log-format",
            "json",
            "--log",
            "debug,sqlx=warn,hyper=info,tungstenite=info,tokio_tungstenite=info",
            "--node",
            "logs-node-7",
        ],
    );
    server.add_agent("ayla", "en", "general", 3, false);
    let mut agent = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let player_id = player.welcome["you"]["id"].as_str().unwrap().to_string();
    let conv = start_chat(&mut player, None).await;
    accept(&mut agent, &conv).await;
    player.say(&conv, "p1", "hello").await;
    agent.say(&conv, "a1", "hi, how can I help?").await;
    player.close().await;
    agent.close().await;

    // Every line the node wrote is one JSON object (stdout; stderr lines are
    // prefixed by the harness).
    let lines: Vec<Value> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| !l.starts_with("stderr: "))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let player_lines = lines
        .iter()
        .filter(|l| span_has(l, "player", &player_id) && span_has(l, "node", "logs-node-7"))
        .count();
    let agent_lines = lines
        .iter()
        .filter(|l| span_has(l, "agent", "ayla") && span_has(l, "node", "logs-node-7"))
        .count();
    // The player's own frames about the conversation (its start included: the
    // conversation is recorded once it exists) and the agent's.
    let player_conversation = lines
        .iter()
        .filter(|l| span_has(l, "player", &player_id) && span_has(l, "conversation", &conv))
        .count();
    let agent_conversation = lines
        .iter()
        .filter(|l| span_has(l, "agent", "ayla") && span_has(l, "conversation", &conv))
        .count();
    let started = lines.iter().any(|l| {
        l["fields"]["message"] == "conversation started" && span_has(l, "conversation", &conv)
    });
    let logs = server.logs();
    assert!(
        player_lines > 0,
        "no line names the player and node:\n{logs}"
    );
    assert!(agent_lines > 0, "no line names the agent and node:\n{logs}");
    assert!(
        player_conversation >= 2,
        "the player's start and send name the conversation:\n{logs}"
    );
    assert!(
        agent_conversation >= 2,
        "the agent's accept and send name the conversation:\n{logs}"
    );
    assert!(
        started,
        "the start's own line names the new conversation:\n{logs}"
    );
    // Spans name the role and id as separate fields, never as one debug string.
    assert!(
        !lines
            .iter()
            .any(|l| span_has(l, "user", &format!("Player(PlayerId(\"{player_id}\"))"))),
        "{logs}"
    );
}
