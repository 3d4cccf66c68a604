//! The operator's one-shot commands (`agent`, `purge`, `player`): they work on the
//! database a node made, never on one of their own, and `agent update` changes
//! only what it is given.
#![allow(missing_docs)]

mod common;
use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `pitboss ARGS…` with `stdin` as standard input and without the
/// environment's own `PITBOSS_DATA_DIR` or `PITBOSS_DATABASE_URL`.
fn pitboss(args: &[&str], stdin: &str) -> Output {
    pitboss_in(None, args, stdin)
}

/// [`pitboss`] run from directory `cwd`, if given.
fn pitboss_in(cwd: Option<&Path>, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("PITBOSS_DATA_DIR")
        .env_remove("PITBOSS_DATABASE_URL")
        .env_remove("PITBOSS_AGENT_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().expect("run pitboss");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every command that opens the store, as run on a data directory.
const COMMANDS: &[&[&str]] = &[
    &["agent", "list"],
    &["agent", "add", "ayla", "--password-stdin"],
    &["agent", "update", "ayla", "--capacity", "2"],
    &["agent", "remove", "ayla"],
    &["purge", "--older-than-days", "30"],
    &["purge", "--audit-older-than-days", "30"],
    &["player", "export", "p:casino-1"],
    &["player", "erase", "p:casino-1", "--yes"],
];

/// A mistyped `--data-dir`, or the relative default from another directory, must
/// not make an empty database and report success on it: each command refuses
/// with exit 1, naming the directory, and leaves nothing behind.
#[test]
fn commands_refuse_a_data_directory_without_a_database() {
    let root = tempdir();
    let missing = root.path().join("typo");
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for dir in [&missing, &empty] {
        for command in COMMANDS {
            let mut args = command.to_vec();
            args.extend(["--data-dir", dir.to_str().unwrap()]);
            let out = pitboss(&args, "correct-horse-battery\n");
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(
                err.contains(&format!(
                    "no Pitboss database in {} (pitboss.db)",
                    dir.display()
                )) && err.contains("pitboss serve"),
                "{args:?}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(!dir.join("pitboss.db").exists(), "{args:?} made a database");
        }
    }
    assert!(!missing.exists(), "a missing directory stays missing");

    // The same through PITBOSS_DATA_DIR, and through the default ./pitboss-data
    // of another working directory.
    let out = Command::new(BIN)
        .args(["agent", "list"])
        .env("PITBOSS_DATA_DIR", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = pitboss_in(Some(root.path()), &["agent", "list"], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no Pitboss database in pitboss-data"),
        "{}",
        stderr(&out)
    );
    assert!(!root.path().join("pitboss-data").exists());
}

/// The README's order: `serve` once makes the database, then the commands work on
/// it, while the node runs and after it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_work_on_the_database_serve_made() {
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &[]);
    let data_dir = dir.path().to_str().unwrap();
    let out = pitboss(
        &[
            "agent",
            "add",
            "ayla",
            "--password-stdin",
            "--data-dir",
            data_dir,
        ],
        "correct-horse-battery\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "added ayla\n");
    server.kill();
    for command in COMMANDS {
        let mut args = command.to_vec();
        args.extend(["--data-dir", data_dir]);
        let out = pitboss(&args, "correct-horse-battery\n");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
}

/// The `agent list` line of `login`, split at its tabs.
fn listed(dir: &Path, login: &str) -> Vec<String> {
    let out = pitboss(&["agent", "list", "--data-dir", dir.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .find(|l| l.starts_with(&format!("{login}\t")))
        .unwrap_or_else(|| panic!("{login} listed: {}", stdout(&out)))
        .split('\t')
        .map(str::to_owned)
        .collect()
}

/// Runs `pitboss agent update ARGS… --data-dir DIR` with `stdin`.
fn update(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut all = vec!["agent", "update"];
    all.extend(args);
    all.extend(["--data-dir", dir.to_str().unwrap()]);
    pitboss(&all, stdin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_update_changes_only_the_fields_given() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en,tr", "general,payments", 2, false);
    server.add_with_role("root", "admin");
    let session = server.login("ayla").await;

    let out = update(dir.path(), &["ayla", "--capacity", "5"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "updated ayla\n");
    assert_eq!(
        listed(dir.path(), "ayla"),
        [
            "ayla",
            "Agent ayla",
            "agent",
            "languages=en,tr",
            "departments=general,payments",
            "capacity=5"
        ]
    );
    let out = update(
        dir.path(),
        &["ayla", "--languages", "EN,az", "--departments", "vip"],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        listed(dir.path(), "ayla")[1..],
        [
            "Agent ayla",
            "agent",
            "languages=en,az",
            "departments=vip",
            "capacity=5"
        ]
    );
    let out = update(dir.path(), &["ayla", "--name", "Ayla K."], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listed(dir.path(), "ayla")[1], "Ayla K.");
    // A profile change keeps the session; the change is audited as the CLI's.
    assert_eq!(server.get("/api/me", &session).await.0, 200);
    let root = server.login("root").await;
    let log = server
        .get_json("/api/audit?target=ayla&action=account.update", &root)
        .await;
    let records = log["records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "{log}");
    assert!(records.iter().all(|r| r["actor"] == "cli"), "{log}");

    // The same rules as everywhere: a refused field changes nothing (exit 1).
    for (args, says) in [
        (&["ayla", "--capacity", "101"][..], "capacity is 0 to 100"),
        (
            &["ayla", "--name", "  "][..],
            "a name is 1 to 100 characters",
        ),
        (&["ayla", "--languages", "e n"][..], "languages"),
        (
            &["ghost", "--capacity", "1"][..],
            "no account ghost: nothing changed",
        ),
    ] {
        let out = update(dir.path(), args, "");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(listed(dir.path(), "ayla")[5], "capacity=5");
    // Nothing to change is a usage error.
    assert_eq!(update(dir.path(), &["ayla"], "").status.code(), Some(2));

    // A role: the shortcut as in `agent add`, or --role.
    let out = update(dir.path(), &["ayla", "--supervisor"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listed(dir.path(), "ayla")[2], "supervisor");
    let out = update(dir.path(), &["ayla", "--role", "agent"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listed(dir.path(), "ayla")[2], "agent");

    // A new password ends the sessions begun under the old one.
    let out = update(
        dir.path(),
        &["ayla", "--password-stdin"],
        "a-new-password\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.get("/api/me", &session).await.0, 401);
    let res = reqwest::Client::new()
        .post(server.url("/api/login"))
        .json(&serde_json::json!({ "login": "ayla", "password": "a-new-password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(listed(dir.path(), "ayla")[1], "Ayla K.", "name kept");

    // `agent add` over the login still replaces the whole account.
    let out = pitboss(
        &[
            "agent",
            "add",
            "ayla",
            "--password-stdin",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        "correct-horse-battery\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("replaced ayla"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        listed(dir.path(), "ayla")[1..],
        [
            "ayla",
            "agent",
            "languages=en",
            "departments=general",
            "capacity=3"
        ]
    );
}

/// A capacity lowered with `agent update` while the agent works takes effect
/// without their reconnecting: within the account check (every 5 s), routing
/// offers them no more than the new capacity allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_changed_from_the_cli_reaches_routing_while_the_agent_works() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    let mut ayla = server.agent("ayla").await;
    let mut first = server.visitor("en").await;
    let conv = start_chat(&mut first, None).await;
    accept(&mut ayla, &conv).await;

    let out = update(dir.path(), &["ayla", "--capacity", "1"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    tokio::time::sleep(std::time::Duration::from_millis(6_500)).await;

    let mut second = server.visitor("en").await;
    let waiting = start_chat(&mut second, None).await;
    let offered = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        ayla.expect_where(|v| v["type"] == "offer"),
    )
    .await;
    assert!(
        offered.is_err(),
        "offered {waiting} beyond the new capacity: {offered:?}"
    );
}
