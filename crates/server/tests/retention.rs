//! Retention and data requests against the real binary: the scheduled purge on a
//! running node, `pitboss purge` and `pitboss player export|erase`, and the REST
//! endpoints for a player's export and erasure.
#![allow(missing_docs)]

mod common;
use common::*;
use serde_json::{json, Value};
use sqlx::{Connection, SqliteConnection};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const DAY_MS: i64 = 86_400_000;

/// A chat of `player` with `agent`: a message each way and a private note, then the
/// agent closes it unless `keep_open`. The conversation id.
async fn chat(player: &mut Client, agent: &mut Client, label: &str, keep_open: bool) -> String {
    // Frames of an earlier chat (its `assigned`) would answer this one's wait.
    player.backlog.clear();
    let conversation = start_chat(player, None).await;
    accept(agent, &conversation).await;
    player
        .say(
            &conversation,
            &format!("{label}-p"),
            &format!("{label}: my deposit"),
        )
        .await;
    agent
        .say(
            &conversation,
            &format!("{label}-a"),
            &format!("{label}: checking"),
        )
        .await;
    agent
        .send(json!({"type":"note","conversation":conversation,"client_id":format!("{label}-n"),"text":format!("{label}: private note")}))
        .await;
    agent
        .expect_where(|v| v["type"] == "ack" && v["client_id"] == format!("{label}-n"))
        .await;
    if !keep_open {
        close(agent, &conversation).await;
    }
    conversation
}

/// The agent closes the conversation and is told so.
async fn close(agent: &mut Client, conversation: &str) {
    agent
        .send(json!({"type":"close","conversation":conversation,"reason":"resolved"}))
        .await;
    agent
        .expect_where(|v| v["type"] == "closed" && v["conversation"] == conversation)
        .await;
}

/// The node's SQLite file, opened beside the running node as a second writer.
async fn database(dir: &Path) -> SqliteConnection {
    let url = format!("sqlite://{}", dir.join("pitboss.db").display());
    SqliteConnection::connect(&url)
        .await
        .expect("open pitboss.db")
}

/// Makes a closed conversation look closed `days` days ago (and created before
/// that): the honest way to age data without waiting for it.
async fn backdate(dir: &Path, conversation: &str, days: i64) {
    let mut db = database(dir).await;
    let changed = sqlx::query(
        "UPDATE conversations SET closed_at = closed_at - ?1, created_at = created_at - ?1 \
         WHERE id = ?2 AND closed_at IS NOT NULL",
    )
    .bind(days * DAY_MS)
    .bind(conversation)
    .execute(&mut db)
    .await
    .expect("backdate")
    .rows_affected();
    assert_eq!(changed, 1, "{conversation} is closed");
}

/// Rows stored under a conversation in each table, straight from the file.
async fn rows_of(dir: &Path, conversation: &str) -> [i64; 4] {
    let mut db = database(dir).await;
    let mut counts = [0; 4];
    for (i, sql) in [
        "SELECT COUNT(*) FROM conversations WHERE id = ?",
        "SELECT COUNT(*) FROM entries WHERE conversation_id = ?",
        "SELECT COUNT(*) FROM lifecycle_events WHERE conversation_id = ?",
        "SELECT COUNT(*) FROM handoffs WHERE conversation_id = ?",
    ]
    .into_iter()
    .enumerate()
    {
        counts[i] = sqlx::query_scalar(sql)
            .bind(conversation)
            .fetch_one(&mut db)
            .await
            .expect("count");
    }
    counts
}

/// One sample of a Prometheus text page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs `pitboss ARGS --data-dir DIR`.
fn pitboss(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run pitboss")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The player id a client was given.
fn player_id(player: &Client) -> String {
    player.welcome["you"]["id"]
        .as_str()
        .expect("player id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_purges_conversations_closed_longer_ago_than_retention() {
    let dir = tempdir();
    let server = Server::start(
        dir.path(),
        &["--retention-days", "30", "--retention-interval-secs", "0.3"],
    );
    server.add_agent("ayla", "en", "general", 3, false);
    server.add_agent("sam", "en", "general", 3, true);
    let sam = server.login("sam").await;
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let old = chat(&mut player, &mut ayla, "old", false).await;
    let recent = chat(&mut player, &mut ayla, "recent", false).await;
    let open = chat(&mut player, &mut ayla, "open", true).await;
    let mut db = database(dir.path()).await;
    let indexed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'conversations_retention'",
    )
    .fetch_one(&mut db)
    .await
    .expect("schema");
    assert_eq!(indexed, 1, "migration 0005 indexes what the purge looks up");
    drop(db);
    let old_rows = rows_of(dir.path(), &old).await;
    // A conversation, its entries and its lifecycle events (no hand-off here).
    assert!(old_rows[..3].iter().all(|&n| n > 0), "{old_rows:?}");

    // Closed 31 days ago: past the 30 days kept. Closed 29 days ago: not yet.
    backdate(dir.path(), &old, 31).await;
    backdate(dir.path(), &recent, 29).await;
    // An open conversation is never purged, however old it is.
    let mut db = database(dir.path()).await;
    sqlx::query("UPDATE conversations SET created_at = created_at - ? WHERE id = ?")
        .bind(400 * DAY_MS)
        .bind(&open)
        .execute(&mut db)
        .await
        .expect("age the open one");
    drop(db);

    let deadline = Instant::now() + WAIT;
    loop {
        let (status, _) = server.get(&format!("/api/conversations/{old}"), &sam).await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "not purged:\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rows_of(dir.path(), &old).await,
        [0, 0, 0, 0],
        "the conversation, its entries, events and hand-offs"
    );
    for kept in [&recent, &open] {
        let (status, body) = server
            .get(&format!("/api/conversations/{kept}"), &sam)
            .await;
        assert_eq!(status, 200, "{kept} is kept: {body}");
        assert!(rows_of(dir.path(), kept).await[1] > 0);
    }
    // The open chat goes on after the purge.
    player.say(&open, "after", "still there?").await;

    let (_, page) = server.get("/metrics", "").await;
    assert_eq!(
        sample(
            &page,
            r#"pitboss_retention_purged_total{kind="conversations"}"#
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, r#"pitboss_retention_purged_total{kind="entries"}"#),
        Some(old_rows[1] as f64),
        "{page}"
    );
    assert!(server.logs().contains("retention purge done"));
}

/// Audit records older than `--audit-retention-days` are purged by a running node;
/// newer ones, and every conversation (no `--retention-days`), are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_purges_audit_records_older_than_audit_retention() {
    let dir = tempdir();
    let server = Server::start(
        dir.path(),
        &[
            "--audit-retention-days",
            "90",
            "--retention-interval-secs",
            "0.3",
        ],
    );
    server.add_agent("ayla", "en", "general", 3, false);
    server.add_agent("sam", "en", "general", 3, true);
    server.add_agent("bora", "en", "general", 3, false);
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let closed = chat(&mut player, &mut ayla, "closed", false).await;
    // A closed conversation as old as the oldest record: only audit retention is on.
    backdate(dir.path(), &closed, 400).await;

    // Every `agent add` wrote an `account.create` record; age two of them.
    let mut db = database(dir.path()).await;
    for (login, days) in [("ayla", 91), ("sam", 400), ("bora", 89)] {
        let changed = sqlx::query(
            "UPDATE audit_log SET at = at - ?1 WHERE action = 'account.create' AND target = ?2",
        )
        .bind(days * DAY_MS)
        .bind(login)
        .execute(&mut db)
        .await
        .expect("age a record")
        .rows_affected();
        assert_eq!(changed, 1, "one record of {login}'s creation");
    }
    let count = |target: &'static str| {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'account.create' AND target = ?",
        )
        .bind(target)
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let left = count("ayla").fetch_one(&mut db).await.expect("count")
            + count("sam").fetch_one(&mut db).await.expect("count");
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not purged:\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count("bora").fetch_one(&mut db).await.expect("count"),
        1,
        "89 days old: kept"
    );
    drop(db);
    assert!(
        rows_of(dir.path(), &closed).await[0] == 1,
        "conversations are kept"
    );
    let (_, page) = server.get("/metrics", "").await;
    assert_eq!(
        sample(
            &page,
            r#"pitboss_retention_purged_total{kind="audit_records"}"#
        ),
        Some(2.0),
        "{page}"
    );
    assert!(server.logs().contains("audit retention purge done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_read_from_the_file_and_flags_win() {
    let dir = tempdir();
    let file = dir.path().join("pitboss.toml");
    std::fs::write(
        &file,
        "retention_days = 45\naudit_retention_days = 400\nretention_interval_secs = 120\n",
    )
    .unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--config",
            file.to_str().unwrap(),
            "--retention-interval-secs",
            "90",
        ],
    );
    let deadline = Instant::now() + WAIT;
    while !server.logs().contains("retention purges scheduled") {
        assert!(Instant::now() < deadline, "{}", server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = server.logs();
    assert!(logs.contains(" retention_days=45"), "{logs}");
    assert!(logs.contains("audit_retention_days=400"), "{logs}");
    assert!(logs.contains("interval_secs=90"), "{logs}");

    // Without the setting nothing is purged, ever: no schedule is logged.
    let plain = tempdir();
    let server = Server::start(plain.path(), &[]);
    assert!(server.healthy().await);
    assert!(!server.logs().contains("retention purges scheduled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_days_must_be_at_least_one() {
    for flag in ["--retention-days", "--audit-retention-days"] {
        let dir = tempdir();
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", flag, "0"])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("run pitboss");
        assert!(!out.status.success(), "{flag} 0 accepted");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{} must be at least 1", &flag[2..])),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_purges_exports_and_erases_beside_a_running_node() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 3, false);
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let mut other = server.visitor("en").await;
    let id = player_id(&player);
    let first = chat(&mut player, &mut ayla, "first", false).await;
    let open = chat(&mut player, &mut ayla, "second", true).await;
    let others = chat(&mut other, &mut ayla, "other", false).await;

    // Export to standard output: the player's two conversations with everything.
    let out = pitboss(dir.path(), &["player", "export", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let export: Value = serde_json::from_str(&stdout(&out)).expect("the export is JSON");
    assert_eq!(export["player"], id.as_str());
    assert_eq!(export["card"]["id"], id.as_str());
    let conversations = export["conversations"].as_array().expect("conversations");
    assert_eq!(conversations.len(), 2, "{export}");
    assert_eq!(conversations[0]["id"], first.as_str());
    assert_eq!(conversations[0]["state"], "closed");
    assert_eq!(conversations[1]["id"], open.as_str());
    let entries = conversations[0]["entries"].as_array().expect("entries");
    let note = entries
        .iter()
        .find(|e| e["kind"] == "note")
        .expect("the private note is exported");
    assert_eq!(note["private"], true);
    assert_eq!(note["text"], "first: private note");
    assert!(entries
        .iter()
        .any(|e| e["text"] == "first: my deposit" && e["private"] == false));
    let events: Vec<&str> = conversations[0]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        events.contains(&"queued") && events.contains(&"closed"),
        "{events:?}"
    );
    assert!(
        !stdout(&out).contains("other: my deposit"),
        "another player's chat"
    );

    // To a file, readable by its owner only: also one that was there before,
    // readable by everyone.
    let file = dir.path().join("export.json");
    std::fs::write(&file, "old").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let out = pitboss(
        dir.path(),
        &[
            "player",
            "export",
            &id,
            "--out",
            file.to_str().expect("path"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let written: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("JSON");
    assert_eq!(written["conversations"].as_array().map(Vec::len), Some(2));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Erasing needs --yes, and is refused while a conversation is open.
    let out = pitboss(dir.path(), &["player", "erase", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    let out = pitboss(dir.path(), &["player", "erase", &id, "--yes"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("open conversation"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        rows_of(dir.path(), &first).await[0],
        1,
        "nothing was erased"
    );

    close(&mut ayla, &open).await;
    let out = pitboss(dir.path(), &["player", "erase", &id, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 conversations"), "{}", stdout(&out));
    for gone in [&first, &open] {
        assert_eq!(rows_of(dir.path(), gone).await, [0, 0, 0, 0]);
    }
    let out = pitboss(dir.path(), &["player", "export", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let export: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(export["conversations"], json!([]));
    assert_eq!(export["card"], Value::Null);
    assert_eq!(
        rows_of(dir.path(), &others).await[0],
        1,
        "the other player stays"
    );

    // Purge: only what closed longer ago than asked.
    let out = pitboss(dir.path(), &["purge", "--older-than-days", "7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("purged 0 conversations"),
        "{}",
        stdout(&out)
    );
    backdate(dir.path(), &others, 8).await;
    let out = pitboss(dir.path(), &["purge", "--older-than-days", "7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("purged 1 conversations"),
        "{}",
        stdout(&out)
    );
    assert_eq!(rows_of(dir.path(), &others).await, [0, 0, 0, 0]);
    let out = pitboss(dir.path(), &["purge", "--older-than-days", "0"]);
    assert!(
        !out.status.success(),
        "0 days would purge everything closed"
    );

    // Audit records: only those older than asked. The CLI's own runs above wrote
    // some (`player.export`, `player.erase`): today's, kept; one aged past 30 days.
    let mut db = database(dir.path()).await;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert!(total >= 2, "the CLI's runs were audited: {total}");
    sqlx::query("UPDATE audit_log SET at = at - ? WHERE id = (SELECT MIN(id) FROM audit_log)")
        .bind(31 * DAY_MS)
        .execute(&mut db)
        .await
        .expect("age a record");
    let out = pitboss(dir.path(), &["purge", "--audit-older-than-days", "30"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "purged 1 audit records older than 30 days",
        "and no conversations line"
    );
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(left, total - 1);
    let out = pitboss(dir.path(), &["purge"]);
    assert!(!out.status.success(), "purge needs a period");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--older-than-days") && err.contains("--audit-older-than-days"),
        "names both ways to give one: {err}"
    );
    let out = pitboss(dir.path(), &["purge", "--audit-older-than-days", "0"]);
    assert!(
        !out.status.success(),
        "0 days would purge every audit record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_export_and_erase_a_player_over_rest() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 3, false);
    server.add_agent("sam", "en", "general", 3, true);
    server.add_with_role("ada", "admin");
    let ayla_token = server.login("ayla").await;
    let sam = server.login("sam").await;
    let ada = server.login("ada").await;
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let id = player_id(&player);
    let closed = chat(&mut player, &mut ayla, "closed", false).await;
    let open = chat(&mut player, &mut ayla, "open", true).await;
    let http = reqwest::Client::new();
    let export_url = server.url(&format!("/api/players/{id}/export"));
    let erase_url = server.url(&format!("/api/players/{id}"));

    // Neither an agent (even the one who served the player) nor a supervisor may.
    for token in [&ayla_token, &sam] {
        let r = http
            .get(&export_url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "forbidden");
        let r = http
            .delete(&erase_url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "forbidden");
    }
    let r = http.get(&export_url).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // An admin downloads the export.
    let r = http
        .get(&export_url)
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let export: Value = r.json().await.unwrap();
    let ids: Vec<&str> = export["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, [closed.as_str(), open.as_str()]);
    let private: Vec<&Value> = export["conversations"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["private"] == true)
        .collect();
    assert_eq!(private.len(), 1);
    assert_eq!(private[0]["text"], "closed: private note");

    // Not while a conversation is open.
    let r = http
        .delete(&erase_url)
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "conflict");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("open conversation"),
        "{body}"
    );
    let (status, _) = server
        .get(&format!("/api/conversations/{closed}"), &sam)
        .await;
    assert_eq!(status, 200, "nothing was erased");

    close(&mut ayla, &open).await;
    let r = http
        .delete(&erase_url)
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["deleted"]["conversations"], 2, "{body}");
    assert!(body["deleted"]["entries"].as_u64().unwrap() >= 6, "{body}");
    for gone in [&closed, &open] {
        let (status, _) = server
            .get(&format!("/api/conversations/{gone}"), &sam)
            .await;
        assert_eq!(status, 404);
    }
    let export: Value = http
        .get(&export_url)
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(export["conversations"], json!([]));
    assert!(server.logs().contains("player data erased"));

    // Both are in the audit log, by whom and about whom.
    let audit = server
        .get_json(&format!("/api/audit?target={id}"), &ada)
        .await;
    let actions: Vec<(&str, &str)> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["actor"].as_str().unwrap(), r["action"].as_str().unwrap()))
        .collect();
    for action in ["player.export", "player.erase"] {
        assert!(
            actions.contains(&("ada", action)),
            "{action} in {actions:?}"
        );
    }
}
