//! Bad input gets its typed error or close code, the server stays up, and nothing
//! already acknowledged is lost.
#![allow(missing_docs)]

mod common;
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn jwt(sub: &str, exp_offset: i64, aud: &str, secret: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({ "sub": sub, "iss": "casino", "aud": aud, "exp": now + exp_offset });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn server(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--player-token-alg",
        "HS256",
        "--player-token-secret",
        SECRET,
        "--player-token-issuer",
        "casino",
        "--player-token-audience",
        "pitboss",
        "--player-token-leeway-secs",
        "0",
    ];
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

async fn hello_refused(server: &Server, hello: Value) -> (Value, Option<u16>) {
    let mut c = Client::connect(&server.addr).await;
    c.send(hello).await;
    let err = c.expect("error").await;
    let code = c.expect_close().await;
    (err, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_in_hello() {
    let dir = tempdir();
    let server = server(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);

    // Forged visitor token.
    let (e, code) = hello_refused(&server, json!({"type":"hello","protocol":1,"auth":{"kind":"visitor","token":"v1.00000000-0000-0000-0000-000000000000.AAAA"}})).await;
    assert_eq!(e["code"], "unauthorized");
    assert_eq!(code, Some(4001));

    // Player tokens: expired, wrong audience, wrong key, alg none.
    let (e, code) = hello_refused(&server, json!({"type":"hello","protocol":1,"auth":{"kind":"player","token":jwt("p1", -120, "pitboss", SECRET)}})).await;
    assert_eq!(e["code"], "token_expired");
    assert_eq!(code, Some(4002));
    let (e, code) = hello_refused(&server, json!({"type":"hello","protocol":1,"auth":{"kind":"player","token":jwt("p1", 300, "someone-else", SECRET)}})).await;
    assert_eq!(e["code"], "unauthorized");
    assert_eq!(code, Some(4001));
    let (e, _) = hello_refused(&server, json!({"type":"hello","protocol":1,"auth":{"kind":"player","token":jwt("p1", 300, "pitboss", "another-secret-of-at-least-32-bytes!!")}})).await;
    assert_eq!(e["code"], "unauthorized");
    // An unsigned token ("alg": "none") is refused: the algorithm comes from configuration.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(
            json!({"sub":"p1","iss":"casino","aud":"pitboss","exp":now+300,"vip_tier":5})
                .to_string()
        )
    );
    let (e, _) = hello_refused(
        &server,
        json!({"type":"hello","protocol":1,"auth":{"kind":"player","token":none}}),
    )
    .await;
    assert_eq!(e["code"], "unauthorized");

    // Forged agent session, and a session of a removed account.
    let (e, code) = hello_refused(&server, json!({"type":"hello","protocol":1,"auth":{"kind":"agent","token":"a1.YXlsYQ.99999999999999.AAAA"}})).await;
    assert_eq!(e["code"], "unauthorized");
    assert_eq!(code, Some(4001));
    let token = server.login("ayla").await;
    let out = std::process::Command::new(BIN)
        .args(["agent", "remove", "ayla", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let (e, _) = hello_refused(
        &server,
        json!({"type":"hello","protocol":1,"auth":{"kind":"agent","token":token}}),
    )
    .await;
    assert_eq!(e["code"], "unauthorized");
    let (status, _) = server.get("/api/me", &token).await;
    assert_eq!(status, 401);

    // Wrong protocol version, and a first frame that is not hello.
    let (e, code) = hello_refused(
        &server,
        json!({"type":"hello","protocol":99,"auth":{"kind":"visitor"}}),
    )
    .await;
    assert_eq!(e["code"], "unsupported_version");
    assert_eq!(code, Some(4000));
    let (e, code) = hello_refused(&server, json!({"type":"ping"})).await;
    assert_eq!(e["code"], "hello_required");
    assert_eq!(code, Some(4000));

    // A valid token works.
    let mut ok = Client::connect(&server.addr).await;
    ok.send(json!({"type":"hello","protocol":1,"auth":{"kind":"player","token":jwt("p1", 300, "pitboss", SECRET)}})).await;
    assert_eq!(ok.expect("welcome").await["you"]["id"], "p:p1");
    assert!(server.healthy().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_typed_errors_and_lose_nothing() {
    let dir = tempdir();
    let server = server(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    let acked = player
        .say(&conv, "before", "acked before the bad input")
        .await;

    player.send_raw("{not json").await;
    assert_eq!(player.expect("error").await["code"], "bad_frame");
    player.send_raw(r#"{"type":"launch_rocket"}"#).await;
    assert_eq!(player.expect("error").await["code"], "unknown_type");
    player
        .send_raw(r#"{"type":"send","conversation":"nope"}"#)
        .await;
    assert_eq!(player.expect("error").await["code"], "bad_frame");
    // A refused send still names itself, so the client knows which one failed:
    // text cut inside a surrogate pair, and text of the wrong type.
    for text in [r#""\ud83d""#, "5"] {
        player
            .send_raw(&format!(
                r#"{{"type":"send","conversation":"{conv}","client_id":"cut","text":{text}}}"#
            ))
            .await;
        let e = player.expect("error").await;
        assert_eq!(e["code"], "bad_frame", "{e}");
        assert_eq!(
            (&e["frame"], &e["conversation"], &e["client_id"]),
            (&json!("send"), &json!(conv), &json!("cut")),
            "{e}"
        );
    }
    let long = "x".repeat(4001);
    player
        .send(json!({"type":"send","conversation":conv,"client_id":"long","text":long}))
        .await;
    let e = player.expect("error").await;
    assert_eq!(e["code"], "text_too_long");
    assert_eq!(e["client_id"], "long");
    player
        .send(json!({"type":"send","conversation":conv,"client_id":"","text":"hi"}))
        .await;
    assert_eq!(player.expect("error").await["code"], "invalid_field");
    // Text that would show as an empty bubble: spaces, a zero-width space and joiner.
    player
        .send(json!({"type":"send","conversation":conv,"client_id":"blank","text":" \u{200B}\u{200D}\u{061C}\u{2066}\n "}))
        .await;
    let e = player.expect("error").await;
    assert_eq!(e["code"], "invalid_field", "{e}");
    assert_eq!(e["client_id"], "blank");
    player
        .send(json!({"type":"rate","conversation":conv,"score":9}))
        .await;
    assert_eq!(player.expect("error").await["code"], "invalid_field");
    // Agent-only commands from a player.
    player
        .send(json!({"type":"accept","conversation":conv}))
        .await;
    assert_eq!(player.expect("error").await["code"], "forbidden");

    // Someone else's conversation: another player can neither read nor write it.
    let mut other = server.visitor("en").await;
    other
        .send(json!({"type":"resume","conversation":conv,"after":0}))
        .await;
    assert_eq!(other.expect("error").await["code"], "forbidden");
    other
        .send(json!({"type":"send","conversation":conv,"client_id":"x","text":"let me in"}))
        .await;
    assert_eq!(other.expect("error").await["code"], "forbidden");
    other.send(json!({"type":"resume","conversation":"01890a5d-ac96-774b-bcce-b302099a8057","after":0})).await;
    assert_eq!(other.expect("error").await["code"], "not_found");

    // The connection still works and nothing was lost.
    let after = player.say(&conv, "after", "still here").await;
    assert_eq!(after, acked + 1);

    // An oversized frame closes that connection with 1009; the server stays up.
    let huge = format!(
        r#"{{"type":"send","conversation":"{conv}","client_id":"big","text":"{}"}}"#,
        "y".repeat(64 * 1024)
    );
    player.send_raw(&huge).await;
    assert_eq!(player.expect_close().await, Some(1009));
    assert!(server.healthy().await);
    let mut back = server.agent("ayla").await;
    back.send(json!({"type":"resume","conversation":conv,"after":0}))
        .await;
    let (msgs, _) = back.replay(&conv).await;
    let ids: Vec<&str> = msgs
        .iter()
        .filter_map(|m| m["client_id"].as_str())
        .collect();
    assert!(ids.contains(&"before") && ids.contains(&"after"), "{ids:?}");
    assert!(!ids.contains(&"big") && !ids.contains(&"long"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_refused_not_queued_then_disconnected() {
    let dir = tempdir();
    // The real default limits: 20 frames/s, bursts of 40.
    let server = Server::start(
        dir.path(),
        &["--frames-per-second", "20", "--burst-frames", "40"],
    );
    let mut flooder = server.visitor("en").await;
    for _ in 0..200 {
        flooder.send(json!({"type":"ping"})).await;
    }
    let code = flooder.expect_close().await;
    assert_eq!(code, Some(4029));
    let pongs = flooder
        .backlog
        .iter()
        .filter(|v| v["type"] == "pong")
        .count();
    let limited = flooder
        .backlog
        .iter()
        .filter(|v| v["code"] == "rate_limited")
        .count();
    assert!(
        (40..=60).contains(&pongs),
        "about a burst answered, got {pongs}"
    );
    assert!(limited >= 50, "refusals were sent: {limited}");
    // Each refusal names the frame it dropped.
    assert!(
        flooder
            .backlog
            .iter()
            .filter(|v| v["code"] == "rate_limited")
            .all(|v| v["frame"] == "ping"),
        "{:?}",
        flooder.backlog
    );
    assert!(server.healthy().await);
    // Other clients are unaffected.
    let mut calm = server.visitor("en").await;
    calm.send(json!({"type":"ping"})).await;
    calm.expect("pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_dropped_for_rate_is_named_in_its_refusal() {
    let dir = tempdir();
    // One frame a second, bursts of three: the fourth frame sent at once is dropped.
    let server = Server::start(
        dir.path(),
        &["--frames-per-second", "1", "--burst-frames", "3"],
    );
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    player
        .send(json!({"type":"send","conversation":conv,"client_id":"m1","text":"hi"}))
        .await;
    player.send(json!({"type":"ping"})).await;
    player
        .send(json!({"type":"send","conversation":conv,"client_id":"m2","text":"again"}))
        .await;
    let refused = player
        .expect_where(|v| v["type"] == "error" && v["code"] == "rate_limited")
        .await;
    assert_eq!(refused["frame"], "send", "{refused}");
    assert_eq!(refused["conversation"], conv.as_str(), "{refused}");
    assert_eq!(refused["client_id"], "m2", "{refused}");
    // A refused `start` says so, so a client waiting for its answer can retry.
    player.send(json!({"type":"start"})).await;
    let refused = player
        .expect_where(|v| v["type"] == "error" && v["code"] == "rate_limited")
        .await;
    assert_eq!(refused["frame"], "start", "{refused}");
    assert!(refused.get("conversation").is_none(), "{refused}");
    // Once the budget has refilled, the message sent again is stored.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let seq = player.say(&conv, "m2", "again").await;
    assert!(seq > 0);
    assert!(server.healthy().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_says_hello_is_closed() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &["--hello-timeout-secs", "1"]);
    let mut silent = Client::connect(&server.addr).await;
    let started = std::time::Instant::now();
    let err = silent
        .read()
        .await
        .expect("an error frame before the close");
    assert_eq!(err["code"], "hello_required");
    assert_eq!(silent.expect_close().await, Some(4000));
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
}

/// A client that closes before `hello` has its close answered, as after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_before_hello_is_answered() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    let mut early = Client::connect(&server.addr).await;
    early
        .ws
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    assert_eq!(early.expect_close().await, Some(1000));
    assert!(server.healthy().await);
}
