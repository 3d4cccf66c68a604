//! Configuration: flags over `PITBOSS_*` environment variables over the TOML file.
#![allow(missing_docs)]

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        err.contains("ofer_timeout_secs") && err.contains("line 2"),
        "names the unknown key and its line: {err}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

    // A pattern the regular-expression parser refuses: one line too.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--mask-pattern", "x["])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("mask pattern \"x[\""), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

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

/// How a `pitboss serve` run ended: refused at start (exit code, standard
/// error), or listening (what it logged until then; the process is then killed).
#[derive(Debug)]
enum Start {
    Refused(Option<i32>, String),
    Listening(String),
}

/// Runs `pitboss serve --listen 127.0.0.1:0 --data-dir DIR ARGS…` with `env` on
/// top of an environment without any `PITBOSS_*` setting these tests set, and
/// waits at most 30 s for it to listen or exit.
fn serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Start {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "info");
    for var in [
        "PITBOSS_DEMO",
        "PITBOSS_LOG",
        "PITBOSS_LOG_FORMAT",
        "PITBOSS_CONFIG",
        "PGSSLMODE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pitboss");
    let log = Arc::new(Mutex::new(String::new()));
    let readers = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .map(|stream| {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            for reader in readers {
                reader.join().unwrap();
            }
            let text = log.lock().unwrap().clone();
            return Start::Refused(status.code(), text);
        }
        let text = log.lock().unwrap().clone();
        if text.contains("listening on") || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Start::Listening(text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `serve` with these settings must refuse to start with exit 1 and one `Error:`
/// line saying `says`.
#[track_caller]
fn refused(dir: &Path, args: &[&str], env: &[(&str, &str)], says: &str) {
    match serve(dir, args, env) {
        Start::Refused(code, err) => {
            assert_eq!(code, Some(1), "{args:?} {env:?}: {err}");
            let line = err
                .lines()
                .find(|l| l.starts_with("Error: "))
                .unwrap_or_else(|| panic!("{args:?} {env:?}: no error line: {err}"));
            assert!(line.contains(says), "{args:?} {env:?}: {err}");
        }
        Start::Listening(log) => panic!("{args:?} {env:?} started:\n{log}"),
    }
}

/// Whether a node started with these settings ran the demo.
#[track_caller]
fn runs_the_demo(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> bool {
    match serve(dir, args, env) {
        Start::Listening(log) => {
            assert!(log.contains("listening on"), "{args:?} {env:?}: {log}");
            log.contains("demo agent")
        }
        Start::Refused(code, err) => panic!("{args:?} {env:?} refused ({code:?}): {err}"),
    }
}

/// The demo flag follows the rule of every setting: the flag, else the
/// environment (true/false, 1/0, …), else the file; a `false` from the flag or
/// the environment wins over the file's `true`.
#[test]
fn the_demo_setting_follows_flag_then_environment_then_file() {
    let dir = tempdir();
    let on = dir.path().join("demo-on.toml");
    std::fs::write(&on, "demo = true\n").unwrap();
    let off = dir.path().join("demo-off.toml");
    std::fs::write(&off, "demo = false\n").unwrap();
    let (on, off) = (on.to_str().unwrap(), off.to_str().unwrap());
    for (args, env, demo) in [
        (&["--config", on][..], &[][..], true),
        (
            &["--config", on][..],
            &[("PITBOSS_DEMO", "false")][..],
            false,
        ),
        (&["--config", on][..], &[("PITBOSS_DEMO", "0")][..], false),
        (
            &["--config", off][..],
            &[("PITBOSS_DEMO", "true")][..],
            true,
        ),
        (&[][..], &[("PITBOSS_DEMO", "1")][..], true),
        (&[][..], &[("PITBOSS_DEMO", "false")][..], false),
        (&["--demo"][..], &[("PITBOSS_DEMO", "false")][..], true),
        (&["--config", on, "--demo=false"][..], &[][..], false),
        (&["--config", off, "--demo"][..], &[][..], true),
        (&[][..], &[][..], false),
    ] {
        // A fresh store each time: the demo creates its agents only where none exist.
        let data = tempdir();
        assert_eq!(
            runs_the_demo(data.path(), args, env),
            demo,
            "{args:?} {env:?}"
        );
    }
    // A value that is no boolean is a usage error, not a silent choice.
    match serve(dir.path(), &[], &[("PITBOSS_DEMO", "maybe")]) {
        Start::Refused(code, err) => assert_eq!(code, Some(2), "{err}"),
        Start::Listening(log) => panic!("PITBOSS_DEMO=maybe started:\n{log}"),
    }
}

/// The operator's own accounts that share a demo login (the README's `ayla` and
/// `sam`) are left as they are by `--demo`, with a warning; the other demo
/// agents are created with the demo password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_leaves_existing_accounts_as_they_are() {
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &[]);
    server.add_agent("sam", "en", "payments", 1, false);
    server.kill();
    server
        .args
        .extend(["--demo", "--demo-password", "demo-password"].map(String::from));
    server.spawn();
    // sam keeps the password, role, languages and departments given.
    server.login("sam").await;
    let out = Command::new(BIN)
        .args(["agent", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    let sam = list.lines().find(|l| l.starts_with("sam\t")).unwrap();
    assert_eq!(
        sam,
        "sam\tAgent sam\tagent\tlanguages=en\tdepartments=payments\tcapacity=1"
    );
    assert!(list.contains("olga\tOlga\tagent"), "{list}");
    let logs = server.logs();
    assert!(
        logs.contains("an account named sam exists already: left as it is")
            && logs.contains("the demo password does not apply to it"),
        "{logs}"
    );
    let res = reqwest::Client::new()
        .post(server.url("/api/login"))
        .json(&serde_json::json!({ "login": "olga", "password": "demo-password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the demo password applies to olga");
}

/// The passwords the demo logged for `login`, oldest first.
fn demo_passwords(logs: &str, login: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains("demo agent") && l.contains(&format!("login=\"{login}\"")))
        .filter_map(|l| l.split("password=").nth(1)?.split_whitespace().next())
        .map(|p| p.trim_matches('"').to_owned())
        .collect()
}

/// Without `--demo-password`, the demo's password is made at the first start and
/// kept: a restart logs the same one, and the demo accounts still take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_password_is_kept_across_starts() {
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &["--demo"]);
    server.kill();
    server.spawn();
    let logged = demo_passwords(&server.logs(), "ayla");
    assert_eq!(logged.len(), 2, "{}", server.logs());
    assert_eq!(logged[0], logged[1], "the same password at both starts");
    assert!(logged[0].starts_with("demo-"), "{logged:?}");
    let res = reqwest::Client::new()
        .post(server.url("/api/login"))
        .json(&serde_json::json!({ "login": "ayla", "password": logged[1] }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "the password logged at the restart logs in"
    );
}

/// Test keys, made for this test only (the private halves a casino keeps).
const EC_PRIVATE: &str = include_str!("../../desk/tests/fixtures/es256-private-sec1.pem");
const RSA_PRIVATE: &str = include_str!("../../desk/tests/fixtures/rs256-private-pkcs1.pem");

/// RS256 and ES256 verify with the casino's public key: a node given the private
/// key would refuse every token as "bad signature", so it refuses to start.
#[test]
fn a_private_player_token_key_is_refused_at_start() {
    let dir = tempdir();
    for (alg, pem) in [("ES256", EC_PRIVATE), ("RS256", RSA_PRIVATE)] {
        let file = dir.path().join(format!("{alg}.pem"));
        std::fs::write(&file, pem).unwrap();
        refused(
            dir.path(),
            &[
                "--player-token-alg",
                alg,
                "--player-token-key-file",
                file.to_str().unwrap(),
                "--player-token-issuer",
                "casino",
                "--player-token-audience",
                "pitboss",
            ],
            &[],
            "player-token key file holds a private key: give the public key instead",
        );
    }
}

/// A log format or filter the node cannot use is refused, from the flag, the
/// environment or the file, rather than logging something else than asked.
#[test]
fn a_bad_log_setting_is_refused_at_start() {
    let dir = tempdir();
    let data = dir.path().join("data");
    for (name, text) in [
        ("format.toml", "log_format = \"xml\"\n"),
        ("filter.toml", "log = \"x=[[[\"\n"),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (format_file, filter_file) = (file("format.toml"), file("filter.toml"));
    for (args, env, says) in [
        (
            &["--log-format", "xml"][..],
            &[][..],
            "log-format must be text or json (got \"xml\")",
        ),
        (
            &["--log-format", "JSON"][..],
            &[][..],
            "log-format must be text or json",
        ),
        (
            &[][..],
            &[("PITBOSS_LOG_FORMAT", "xml")][..],
            "log-format must be text or json",
        ),
        (
            &["--config", &format_file][..],
            &[][..],
            "log-format must be text or json",
        ),
        (
            &["--log", "x=[[["][..],
            &[][..],
            "log: \"x=[[[\" is not a filter",
        ),
        (&[][..], &[("PITBOSS_LOG", "x=[[[")][..], "is not a filter"),
        (&["--config", &filter_file][..], &[][..], "is not a filter"),
    ] {
        refused(&data, args, env, says);
    }
    // The documented values start.
    for args in [
        &["--log-format", "json", "--log", "pitboss_desk=debug,info"][..],
        &["--log-format", "text"][..],
    ] {
        assert!(
            matches!(serve(&data, args, &[]), Start::Listening(_)),
            "{args:?}"
        );
    }
}

/// This build speaks plain TCP to Redis and PostgreSQL: a URL that demands TLS is
/// refused at start with what to do instead, not by a driver's cryptic error.
#[test]
fn tls_urls_are_refused_at_start() {
    let dir = tempdir();
    let redis = "redis://127.0.0.1:1/0";
    let postgres = "postgres://pitboss@127.0.0.1:1/pitboss";
    let tls_postgres = format!("{postgres}?sslmode=require");
    let redis_says = "TLS connections to Redis (rediss://) are not supported by this build: \
                      keep the connection on a private network, or run a TLS tunnel";
    let postgres_says = "TLS connections to PostgreSQL (sslmode=require) are not supported by \
                         this build";
    refused(
        dir.path(),
        &[
            "--redis-url",
            "rediss://127.0.0.1:1/0",
            "--database-url",
            postgres,
        ],
        &[],
        redis_says,
    );
    refused(
        dir.path(),
        &["--redis-url", redis, "--database-url", &tls_postgres],
        &[],
        postgres_says,
    );
    refused(
        dir.path(),
        &["--redis-url", redis, "--database-url", postgres],
        &[("PGSSLMODE", "verify-full")],
        "(sslmode=verify-full) are not supported",
    );
    // The commands sharing the cluster's database refuse it the same way.
    let out = Command::new(BIN)
        .args(["agent", "list", "--database-url", &tls_postgres])
        .env_remove("PGSSLMODE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(postgres_says),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
