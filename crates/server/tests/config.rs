//! Configuration: flags over `PITBOSS_*` environment variables over the TOML file.
#![allow(missing_docs)]

mod common;
use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_beat_environment_which_beats_the_file() {
    let dir = tempdir();
    let file = dir.path().join("pitboss.toml");
    std::fs::write(
        &file,
        "frames_per_second = 3\nburst_frames = 4\nhello_timeout_secs = 5\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    // The harness passes --listen 127.0.0.1:0, which must win over the file's port 1.
    std::env::set_var("PITBOSS_BURST_FRAMES", "9");
    let server = Server::start(
        dir.path(),
        &[
            "--config",
            file.to_str().unwrap(),
            "--frames-per-second",
            "7",
            "--player-messages-per-minute",
            "12",
        ],
    );
    std::env::remove_var("PITBOSS_BURST_FRAMES");
    let client = server.visitor("en").await;
    let limits = &client.welcome["limits"];
    assert_eq!(limits["frames_per_second"], 7, "flag over file");
    assert_eq!(limits["burst_frames"], 9, "environment over file");
    assert_eq!(limits["max_frame_bytes"], 16384);
    // A player is told their own message budget; an agent is not.
    assert_eq!(limits["player_messages_per_minute"], 12, "{limits}");
    assert_eq!(limits["player_message_burst"], 10, "{limits}");
    server.add_agent("ayla", "en", "general", 2, false);
    let agent = server.agent("ayla").await;
    let limits = &agent.welcome["limits"];
    assert_eq!(limits["frames_per_second"], 7, "{limits}");
    assert!(
        limits.get("player_messages_per_minute").is_none(),
        "{limits}"
    );
    assert!(dir.path().join("pitboss.db").exists(), "data dir used");
}

#[test]
fn a_bad_configuration_is_refused_with_a_clear_message() {
    let dir = tempdir();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nofer_timeout_secs = 3\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ofer_timeout_secs"),
        "names the unknown key: {err}"
    );

    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--offer-timeout-secs=-1",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("offer-timeout-secs"));

    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--player-token-alg",
            "HS256",
            "--player-token-secret",
            "short",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an incomplete player-token setup must not start"
    );

    // A default department or language that is no tag would refuse every start
    // relying on it; an origin without its scheme would never match a browser's
    // Origin; a mask pattern matching empty text would hide the gap between every
    // two characters. Each is refused at start-up (exit 1), naming what is wrong.
    for (flag, value, says) in [
        ("--default-language", "e n", "default-language"),
        ("--default-department", "e n", "default-department"),
        ("--allowed-origins", "casino.example", "not an origin"),
        ("--mask-pattern", "x*", "empty text"),
    ] {
        let out = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                flag,
                value,
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{flag} {value} must not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}

/// Two single nodes on one data directory would each route the same queue: the
/// second is refused at start-up, naming the directory; the first goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_serves_one_node() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second node on the same directory");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another `pitboss serve` is running on")
            && err.contains("one node per data directory"),
        "{err}"
    );
    assert!(server.healthy().await, "the first node carries on");
    // Commands beside a running node still work.
    server.add_agent("emre", "tr", "general", 1, false);
}

/// A default given in capitals is the lowercase tag agents serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_are_normalised_like_every_tag() {
    let dir = tempdir();
    let server = Server::start(
        dir.path(),
        &["--default-language", " TR ", "--default-department", "VIP"],
    );
    server.add_agent("emre", "tr", "vip", 1, false);
    let mut emre = server.agent("emre").await;
    let mut player = server.visitor("").await;
    let conv = start_chat(&mut player, None).await;
    accept(&mut emre, &conv).await;
    let boss = {
        server.add_agent("boss", "tr", "vip", 1, true);
        server.login("boss").await
    };
    let detail = server
        .get_json(&format!("/api/conversations/{conv}"), &boss)
        .await;
    assert_eq!(detail["conversation"]["language"], "tr", "{detail}");
    assert_eq!(detail["conversation"]["department"], "vip", "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_agents_keep_a_given_password_across_starts() {
    let dir = tempdir();
    // The harness logs in with "secret-password".
    let mut server = Server::start(
        dir.path(),
        &["--demo", "--demo-password", "secret-password"],
    );
    let ayla = server.login("ayla").await;
    // Restarted on the same store (as a second node would start): still the same,
    // and the session begun before the restart goes on.
    server.kill();
    server.spawn();
    server.login("sam").await;
    assert_eq!(
        server.get("/api/me", &ayla).await.0,
        200,
        "ayla's session survives"
    );
    let logs = server.logs();
    assert!(logs.contains("demo agent"), "{logs}");
    assert!(
        !logs.contains("secret-password"),
        "a given password is not logged: {logs}"
    );

    for (args, says) in [
        (&["--demo", "--demo-password", "short"][..], "at least 8"),
        (&["--demo-password", "long-enough"][..], "--demo only"),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
