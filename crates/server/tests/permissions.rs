//! Roles against the real binary: what an agent, a supervisor and an admin may
//! and may not read or change over REST, the accounts API, and the audit log that
//! records transcript reads and account changes.
#![allow(missing_docs)]

mod common;
use common::*;
use serde_json::{json, Value};

/// A request with an optional JSON body; returns the status and the JSON answer
/// (`Null` for an empty body).
async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// The audit records matching a query string, oldest first, as
/// (actor, action, target).
async fn audit(server: &Server, admin: &str, query: &str) -> Vec<(String, String, String)> {
    let log = server.get_json(&format!("/api/audit?{query}"), admin).await;
    let mut records: Vec<(String, String, String)> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_owned(),
                r["action"].as_str().unwrap().to_owned(),
                r["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    records.reverse();
    records
}

fn rec(actor: &str, action: &str, target: &str) -> (String, String, String) {
    (actor.into(), action.into(), target.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_refused_what_it_may_not_do() {
    use reqwest::Method;
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_agent("boris", "en", "general", 2, false);
    server.add_with_role("sam", "supervisor");
    server.add_with_role("root", "admin");
    let (ayla_t, boris_t, sam_t, root_t) = (
        server.login("ayla").await,
        server.login("boris").await,
        server.login("sam").await,
        server.login("root").await,
    );
    // boris never connects, so the chat is offered to ayla alone.
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let player_id = player.welcome["you"]["id"].as_str().unwrap().to_owned();
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    player.say(&conv, "m1", "my card number is secret").await;

    let transcript = format!("/api/conversations/{conv}/transcript");
    let text = format!("/api/conversations/{conv}/transcript.txt");
    let detail = format!("/api/conversations/{conv}");
    let history = format!(
        "/api/players/{}/conversations",
        player_id.replace(':', "%3A")
    );

    // Another agent's conversation: not readable, indistinguishable from unknown.
    for path in [&transcript, &text, &detail] {
        let (status, body) = call(&server, Method::GET, path, &boris_t, None).await;
        assert_eq!(status, 404, "boris GET {path}: {body}");
    }
    // Another agent's player: no history.
    let (status, body) = call(&server, Method::GET, &history, &boris_t, None).await;
    assert_eq!((status, body["error"].clone()), (403, json!("forbidden")));
    let list = server.get_json("/api/conversations", &boris_t).await;
    assert_eq!(
        list["conversations"],
        json!([]),
        "agents list their own only"
    );

    // Agents and supervisors: no accounts API, no audit log.
    for token in [&ayla_t, &boris_t, &sam_t] {
        for (method, path, body) in [
            (Method::GET, "/api/accounts", None),
            (
                Method::POST,
                "/api/accounts",
                Some(json!({"login":"eve","password":"long-enough-secret","role":"admin"})),
            ),
            (
                Method::PATCH,
                "/api/accounts/ayla",
                Some(json!({"role":"admin"})),
            ),
            (Method::DELETE, "/api/accounts/root", None),
            (Method::GET, "/api/audit", None),
        ] {
            let (status, answer) = call(&server, method.clone(), path, token, body).await;
            assert_eq!(
                (status, answer["error"].clone()),
                (403, json!("forbidden")),
                "{method} {path}"
            );
        }
    }
    // Nothing changed behind the refusals.
    let me = server.get_json("/api/me", &ayla_t).await;
    assert_eq!(me["role"], "agent");
    assert_eq!(server.get_json("/api/me", &root_t).await["role"], "admin");

    // The owner, a supervisor and an admin read it.
    for token in [&ayla_t, &sam_t, &root_t] {
        for path in [&transcript, &text, &detail, &history] {
            let (status, body) = call(&server, Method::GET, path, token, None).await;
            assert_eq!(status, 200, "GET {path}: {body}");
        }
    }
    let list = server.get_json("/api/conversations", &root_t).await;
    assert_eq!(
        list["conversations"][0]["id"],
        conv.as_str(),
        "admins list all"
    );
    // The admin's role is shown as it is; accounts never carry a password hash.
    assert_eq!(server.get_json("/api/me", &root_t).await["role"], "admin");
    let accounts = server.get_json("/api/accounts", &root_t).await;
    let logins: Vec<&str> = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(logins, ["ayla", "boris", "root", "sam"]);
    let raw = accounts.to_string();
    assert!(
        !raw.contains("password") && !raw.contains("argon2"),
        "{raw}"
    );
    let (status, _) = call(&server, Method::GET, "/api/audit", &root_t, None).await;
    assert_eq!(status, 200);

    // Once the conversation is closed, its last owner still reads the transcript,
    // but the player's history is only for an agent serving the player now.
    ayla.send(json!({"type":"close","conversation":conv,"reason":"resolved"}))
        .await;
    player.expect("closed").await;
    let (status, _) = call(&server, Method::GET, &transcript, &ayla_t, None).await;
    assert_eq!(status, 200);
    let (status, body) = call(&server, Method::GET, &history, &ayla_t, None).await;
    assert_eq!((status, body["error"].clone()), (403, json!("forbidden")));
    let (status, _) = call(&server, Method::GET, &history, &sam_t, None).await;
    assert_eq!(status, 200, "supervisors read any player's history");

    // An admin acts as a supervisor in conversations: takes one over (no agent
    // could, and an agent is refused), and appears as a supervisor.
    let mut other = server.visitor("en").await;
    let conv2 = start_chat(&mut other, None).await;
    let mut boris = server.agent("boris").await;
    boris
        .send(json!({"type":"take","conversation":conv2}))
        .await;
    assert_eq!(boris.expect("error").await["code"], "forbidden");
    let mut root = server.agent("root").await;
    assert_eq!(root.welcome["you"]["role"], "supervisor");
    root.send(json!({"type":"take","conversation":conv2})).await;
    root.expect_where(|v| v["type"] == "assigned" && v["conversation"] == conv2.as_str())
        .await;
    let joined = other
        .expect_where(|v| v["type"] == "message" && v["event"] == "joined")
        .await;
    assert_eq!(joined["sender"]["role"], "system");
    root.say(&conv2, "r1", "Hello, I am the admin").await;
    let hello = other
        .expect_where(|v| v["type"] == "message" && v["client_id"] == "r1")
        .await;
    assert_eq!(hello["sender"]["role"], "supervisor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_and_history_reads_are_audited_with_reader_and_target() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_with_role("sam", "supervisor");
    server.add_with_role("root", "admin");
    let sam_t = server.login("sam").await;
    let root_t = server.login("root").await;
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let player_id = player.welcome["you"]["id"].as_str().unwrap().to_owned();
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    player
        .say(&conv, "m1", "a message nobody should find in the log")
        .await;

    server
        .get_json(&format!("/api/conversations/{conv}/transcript"), &sam_t)
        .await;
    server
        .get(&format!("/api/conversations/{conv}/transcript.txt"), &sam_t)
        .await;
    server
        .get_json(&format!("/api/conversations/{conv}"), &sam_t)
        .await;
    server
        .get_json(
            &format!(
                "/api/players/{}/conversations",
                player_id.replace(':', "%3A")
            ),
            &sam_t,
        )
        .await;
    // A refused read is not a read.
    let (status, _) = server
        .get(
            &format!("/api/conversations/{conv}/transcript"),
            "forged-token",
        )
        .await;
    assert_eq!(status, 401);

    assert_eq!(
        audit(&server, &root_t, "actor=sam").await,
        [
            rec("sam", "transcript.read", &conv),
            rec("sam", "transcript.read", &conv),
            rec("sam", "conversation.read", &conv),
            rec("sam", "player_history.read", &player_id),
        ]
    );
    assert_eq!(
        audit(
            &server,
            &root_t,
            &format!("action=transcript.read&target={conv}")
        )
        .await,
        [
            rec("sam", "transcript.read", &conv),
            rec("sam", "transcript.read", &conv),
        ]
    );
    let log = server.get_json("/api/audit?limit=500", &root_t).await;
    let raw = log.to_string();
    assert!(
        !raw.contains("nobody should find"),
        "message text in the audit log: {raw}"
    );
    let first = &log["records"][0];
    assert!(first["id"].is_u64() && first["at"].is_u64(), "{first}");
    let since = first["at"].as_u64().unwrap() + 1;
    let later = server
        .get_json(&format!("/api/audit?since={since}"), &root_t)
        .await;
    assert_eq!(later["records"], json!([]));
    let one = server.get_json("/api/audit?limit=1", &root_t).await;
    assert_eq!(one["records"].as_array().unwrap().len(), 1);
    let (status, body) = server.get("/api/audit?since=yesterday", &root_t).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_accounts_and_every_change_is_audited() {
    use reqwest::Method;
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_with_role("root", "admin");
    let root_t = server.login("root").await;

    let nina = json!({
        "login": "nina", "name": "Nina", "role": "agent", "languages": ["en", "TR"],
        "departments": ["payments"], "capacity": 4, "password": "first-password"
    });
    let (status, body) = call(
        &server,
        Method::POST,
        "/api/accounts",
        &root_t,
        Some(nina.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["account"],
        json!({"id":"nina","name":"Nina","role":"agent","languages":["en","tr"],
               "departments":["payments"],"capacity":4})
    );
    let (status, body) = call(&server, Method::POST, "/api/accounts", &root_t, Some(nina)).await;
    assert_eq!((status, body["error"].clone()), (409, json!("conflict")));
    for bad in [
        json!({"login":"bad login","password":"long-enough-secret"}),
        json!({"login":"short","password":"short"}),
        json!({"login":"tags","password":"long-enough-secret","languages":["e n"]}),
        json!({"login":"role","password":"long-enough-secret","role":"player"}),
        json!({"login":"cap","password":"long-enough-secret","capacity":1000}),
    ] {
        let (status, body) = call(
            &server,
            Method::POST,
            "/api/accounts",
            &root_t,
            Some(bad.clone()),
        )
        .await;
        assert_eq!(
            (status, body["error"].clone()),
            (400, json!("bad_request")),
            "{bad}"
        );
    }
    let login = |password: &'static str| {
        let url = server.url("/api/login");
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({"login":"nina","password":password}))
                .send()
                .await
                .unwrap()
        }
    };
    let r = login("first-password").await;
    assert_eq!(r.status(), 200);
    let nina_t = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // A new password replaces the old one.
    let (status, body) = call(
        &server,
        Method::PATCH,
        "/api/accounts/nina",
        &root_t,
        Some(json!({"password":"second-password"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(login("first-password").await.status(), 401);
    // ... and ends the sessions begun under the old one.
    assert_eq!(server.get("/api/me", &nina_t).await.0, 401);
    let r = login("second-password").await;
    assert_eq!(r.status(), 200);
    let nina_t = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Profile and role. A console opened under the old role is closed: what a
    // connection may do was fixed when it said hello.
    let hello = json!({"type":"hello","protocol":1,"auth":{"kind":"agent","token":nina_t}});
    let mut old_console = Client::connect(&server.addr).await;
    old_console.send(hello.clone()).await;
    assert_eq!(old_console.expect("welcome").await["you"]["role"], "agent");
    let (status, body) = call(
        &server,
        Method::PATCH,
        "/api/accounts/nina",
        &root_t,
        Some(json!({"role":"supervisor","capacity":2})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["account"]["role"], "supervisor");
    assert_eq!(body["account"]["capacity"], 2);
    assert_eq!(body["account"]["name"], "Nina", "fields not given stay");
    assert_eq!(old_console.expect_close().await, Some(4001));
    assert_eq!(
        server.get_json("/api/me", &nina_t).await["role"],
        "supervisor"
    );
    for (method, path, body) in [
        (Method::PATCH, "/api/accounts/nina", json!({"capacity":-1})),
        (
            Method::PATCH,
            "/api/accounts/nina",
            json!({"pasword":"typo-in-field"}),
        ),
        (Method::PATCH, "/api/accounts/nina", json!({"role":"owner"})),
    ] {
        let (status, answer) = call(&server, method, path, &root_t, Some(body.clone())).await;
        assert!(status == 400 || status == 422, "{body}: {status}");
        assert_eq!(answer["error"], "bad_request", "{body}");
    }
    let (status, body) = call(
        &server,
        Method::PATCH,
        "/api/accounts/nobody",
        &root_t,
        Some(json!({"capacity":1})),
    )
    .await;
    assert_eq!((status, body["error"].clone()), (404, json!("not_found")));

    // Removal: the token stops working and the open console is closed.
    let mut console = Client::connect(&server.addr).await;
    console.send(hello).await;
    assert_eq!(console.expect("welcome").await["you"]["role"], "supervisor");
    let (status, _) = call(&server, Method::DELETE, "/api/accounts/nina", &root_t, None).await;
    assert_eq!(status, 204);
    let (status, body) = server.get("/api/me", &nina_t).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(console.expect_close().await, Some(4001));
    let (status, body) = call(&server, Method::DELETE, "/api/accounts/nina", &root_t, None).await;
    assert_eq!((status, body["error"].clone()), (404, json!("not_found")));

    // The CLI's changes are audited too, with the actor `cli`.
    server.add_agent("ayla", "en", "general", 2, false);
    let (ok, _, err) = server.agent_command(&["remove", "ayla"]);
    assert!(ok, "{err}");

    assert_eq!(
        audit(&server, &root_t, "target=nina").await,
        [
            rec("root", "account.create", "nina"),
            rec("root", "account.password", "nina"),
            rec("root", "account.update", "nina"),
            rec("root", "account.remove", "nina"),
        ]
    );
    assert_eq!(
        audit(&server, &root_t, "actor=cli").await,
        [
            rec("cli", "account.create", "root"),
            rec("cli", "account.create", "ayla"),
            rec("cli", "account.remove", "ayla"),
        ]
    );
    let log = server.get_json("/api/audit?limit=500", &root_t).await;
    let raw = log.to_string();
    for secret in [
        "first-password",
        "second-password",
        "secret-password",
        "argon2",
    ] {
        assert!(!raw.contains(secret), "{secret} in the audit log: {raw}");
    }
    let update = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "account.update")
        .unwrap();
    assert_eq!(update["detail"]["role"], "supervisor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_cannot_remove_or_demote_themself() {
    use reqwest::Method;
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_with_role("root", "admin");
    let root_t = server.login("root").await;

    let (status, body) = call(&server, Method::DELETE, "/api/accounts/root", &root_t, None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("conflict")),
        "{body}"
    );
    let (status, body) = call(
        &server,
        Method::PATCH,
        "/api/accounts/root",
        &root_t,
        Some(json!({"role":"supervisor"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("conflict")),
        "{body}"
    );
    let (ok, _, err) = server.agent_command(&["remove", "root"]);
    assert!(!ok, "the CLI may not remove the last admin either");
    assert!(err.contains("last admin"), "{err}");
    assert_eq!(server.get_json("/api/me", &root_t).await["role"], "admin");
    // Nothing was recorded for the refused changes.
    assert_eq!(audit(&server, &root_t, "target=root").await.len(), 1);

    // With a second admin, the first may step down.
    let (status, _) = call(
        &server,
        Method::POST,
        "/api/accounts",
        &root_t,
        Some(json!({"login":"ada","role":"admin","password":"long-enough-secret"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(
        &server,
        Method::PATCH,
        "/api/accounts/root",
        &root_t,
        Some(json!({"role":"supervisor"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&server, Method::GET, "/api/accounts", &root_t, None).await;
    assert_eq!((status, body["error"].clone()), (403, json!("forbidden")));
}

/// Checks that a session token is refused over REST (401) and in `hello`
/// (`unauthorized`, then 4001); returns the `hello`'s error frame.
async fn session_refused(server: &Server, token: &str) -> Value {
    let (status, body) = server.get("/api/me", token).await;
    assert_eq!(status, 401, "{body}");
    let mut again = Client::connect(&server.addr).await;
    again
        .send(json!({"type":"hello","protocol":1,"auth":{"kind":"agent","token":token}}))
        .await;
    let refused = again.expect("error").await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    assert_eq!(again.expect_close().await, Some(4001));
    refused
}

/// A new password ends the account's sessions: its open consoles close (4001),
/// and the old session token is refused over REST and in `hello`. Other changes
/// keep them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_password_ends_the_accounts_sessions() {
    use reqwest::Method;
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_with_role("root", "admin");
    let root_t = server.login("root").await;
    let ayla_t = server.login("ayla").await;
    let mut console = server.agent("ayla").await;

    let (status, body) = call(
        &server,
        Method::PATCH,
        "/api/accounts/ayla",
        &root_t,
        Some(json!({"name":"Ayla K."})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get_json("/api/me", &ayla_t).await["name"], "Ayla K.");

    let (status, body) = call(
        &server,
        Method::PATCH,
        "/api/accounts/ayla",
        &root_t,
        Some(json!({"password":"a-brand-new-secret"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(console.expect_close().await, Some(4001));
    session_refused(&server, &ayla_t).await;

    let res = reqwest::Client::new()
        .post(server.url("/api/login"))
        .json(&json!({"login":"ayla","password":"a-brand-new-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the new password logs in");
}

/// Signing out ends every session of the agent, not only the connections open
/// then: a token from another browser, or a copy of the one signed out with, is
/// refused over REST and in `hello` afterwards. Logging in again works, and the
/// other accounts' sessions are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_every_session_of_the_agent() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_agent("boris", "en", "general", 2, false);
    let other_browser = server.login("ayla").await;
    let boris_t = server.login("boris").await;
    let mut console = server.agent("ayla").await;
    assert_eq!(server.get("/api/me", &other_browser).await.0, 200);

    console.send(json!({"type":"sign_out"})).await;
    assert_eq!(console.expect_close().await, Some(4003));
    let refused = session_refused(&server, &other_browser).await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains("signed out"),
        "{refused}"
    );

    assert_eq!(
        server.get("/api/me", &boris_t).await.0,
        200,
        "boris is untouched"
    );
    let fresh = server.login("ayla").await;
    assert_eq!(server.get_json("/api/me", &fresh).await["id"], "ayla");
    let console = server.agent("ayla").await;
    assert_eq!(console.welcome["type"], "welcome");
}

/// A console that missed being told of its agent's sign-out (recorded by
/// another node, say, while the bus was down) is closed by the periodic account
/// check, with 4003 as a sign-out closes it, not as a failed login. The sign-out
/// is written into the store with the `sqlite3` tool, as another node would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_that_missed_its_sign_out_is_closed_as_signed_out() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    let mut console = server.agent("ayla").await;
    sqlite(
        dir.path(),
        "UPDATE agents SET sessions_ended_at = 1 WHERE id = 'ayla'",
    );
    // The account check runs every 5 s.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(15), console.expect_close())
        .await
        .expect("closed within the account check");
    assert_eq!(closed, Some(4003));
}

/// When the audit log cannot be written, the read it would record is refused with
/// 503 `unavailable` rather than let through unrecorded. The failure is made with
/// the `sqlite3` tool (a trigger refusing inserts into `audit_log`), which the test
/// suite's set-up installs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_audit_record_cannot_be_written_is_refused() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_with_role("root", "admin");
    let ayla_t = server.login("ayla").await;
    let root_t = server.login("root").await;
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    let transcript = format!("/api/conversations/{conv}/transcript");
    assert_eq!(server.get(&transcript, &ayla_t).await.0, 200);

    let refuse = "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log \
                  BEGIN SELECT RAISE(FAIL, 'audit log refused'); END;";
    sqlite(dir.path(), refuse);

    for path in [
        transcript.clone(),
        format!("/api/conversations/{conv}/transcript.txt"),
        format!("/api/conversations/{conv}"),
    ] {
        let (status, body) = server.get(&path, &ayla_t).await;
        assert_eq!(status, 503, "GET {path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "unavailable");
        assert!(
            !body.to_string().contains("\"messages\""),
            "no transcript in the refusal: {body}"
        );
    }
    let (status, body) = server.get("/api/me", &ayla_t).await;
    assert_eq!(status, 200, "what is not audited still works: {body}");

    sqlite(dir.path(), "DROP TRIGGER audit_refused;");
    assert_eq!(server.get(&transcript, &ayla_t).await.0, 200);
    // Only the reads that happened are in the log.
    assert_eq!(
        audit(&server, &root_t, "action=transcript.read").await,
        [
            rec("ayla", "transcript.read", &conv),
            rec("ayla", "transcript.read", &conv),
        ]
    );
}

/// The `detail` of the audit records matching a query string, oldest first.
async fn audit_details(server: &Server, admin: &str, query: &str) -> Vec<Value> {
    let log = server.get_json(&format!("/api/audit?{query}"), admin).await;
    let mut details: Vec<Value> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["detail"].clone())
        .collect();
    details.reverse();
    details
}

/// Sends `resume` from 0 and returns the texts replayed.
async fn resume_texts(client: &mut Client, conv: &str) -> Vec<String> {
    client
        .send(json!({"type":"resume","conversation":conv,"after":0}))
        .await;
    let (seen, _) = client.replay(conv).await;
    seen.iter()
        .filter_map(|m| m["text"].as_str().map(str::to_owned))
        .collect()
}

/// Runs one statement on a server's SQLite database with the `sqlite3` tool, as
/// another process writing to the node's file would (waiting up to 5 s for the
/// node's writer).
fn sqlite(dir: &std::path::Path, sql: &str) {
    let out = std::process::Command::new("sqlite3")
        .arg(dir.join("pitboss.db"))
        .arg(".timeout 5000")
        .arg(sql)
        .output()
        .expect("the sqlite3 tool (Debian package sqlite3; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A supervisor who receives someone else's transcript over the WebSocket is in
/// the audit log (`transcript.read`, with how): once per connection for
/// `resume`, however often that connection resumes, and once per take-over. The
/// owner's own resume is not recorded, nor the supervisor's once the
/// conversation is theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisory_websocket_reads_are_audited_once_per_connection() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_with_role("sam", "supervisor");
    server.add_with_role("root", "admin");
    let root_t = server.login("root").await;
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    player.say(&conv, "m1", "my deposit is missing").await;
    let query = format!("target={conv}");

    // The owner reads their own conversation: no record.
    assert!(resume_texts(&mut ayla, &conv)
        .await
        .contains(&"my deposit is missing".to_owned()));
    assert_eq!(audit(&server, &root_t, &query).await, []);

    // A supervisor resumes it (connected after the offer, so none reaches them):
    // one record, however often this connection resumes.
    let mut sam = server.agent("sam").await;
    assert!(resume_texts(&mut sam, &conv)
        .await
        .contains(&"my deposit is missing".to_owned()));
    sam.send(json!({"type":"resume","conversation":conv,"after":1}))
        .await;
    sam.replay(&conv).await;
    resume_texts(&mut sam, &conv).await;
    assert_eq!(
        audit(&server, &root_t, &query).await,
        [rec("sam", "transcript.read", &conv)]
    );
    assert_eq!(
        audit_details(&server, &root_t, &query).await,
        [json!({"via": "resume", "after": 0})]
    );

    // A console that reconnects attaches anew: recorded again.
    let mut sam_again = server.agent("sam").await;
    resume_texts(&mut sam_again, &conv).await;
    assert_eq!(audit(&server, &root_t, &query).await.len(), 2);

    // A take-over sends the whole transcript with `assigned`: recorded.
    sam.send(json!({"type":"take","conversation":conv})).await;
    sam.expect_where(|v| v["type"] == "assigned" && v["conversation"] == conv.as_str())
        .await;
    sam.replay(&conv).await;
    ayla.expect_where(|v| v["type"] == "released" && v["conversation"] == conv.as_str())
        .await;
    assert_eq!(
        audit(&server, &root_t, &query).await,
        [
            rec("sam", "transcript.read", &conv),
            rec("sam", "transcript.read", &conv),
            rec("sam", "transcript.read", &conv),
        ]
    );
    assert_eq!(
        audit_details(&server, &root_t, &query).await[2],
        json!({"via": "take_over", "from": "ayla"})
    );

    // Now it is sam's own: a new connection's resume is not recorded.
    let mut sam_third = server.agent("sam").await;
    resume_texts(&mut sam_third, &conv).await;
    assert_eq!(audit(&server, &root_t, &query).await.len(), 3);

    // Once closed, an admin (a supervisor in conversations) reading it is recorded;
    // its last owner is not.
    sam.send(json!({"type":"close","conversation":conv})).await;
    player.expect("closed").await;
    resume_texts(&mut sam_third, &conv).await;
    let mut root = server.agent("root").await;
    assert!(resume_texts(&mut root, &conv)
        .await
        .contains(&"my deposit is missing".to_owned()));
    assert_eq!(
        audit(&server, &root_t, &query).await[3..],
        [rec("root", "transcript.read", &conv)]
    );
    assert_eq!(audit(&server, &root_t, "actor=ayla").await, []);
}

/// When the audit log cannot be written, a supervisor's `resume` of someone
/// else's conversation and a take-over are refused (`overloaded`, the
/// WebSocket's "cannot store now") and nothing of the transcript is sent; the
/// connection stays open, and the owner, whose reads are not recorded, goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisory_websocket_read_whose_record_cannot_be_written_is_refused() {
    let dir = tempdir();
    let server = Server::start(dir.path(), &[]);
    server.add_agent("ayla", "en", "general", 2, false);
    server.add_with_role("sam", "supervisor");
    server.add_with_role("root", "admin");
    let root_t = server.login("root").await;
    let mut ayla = server.agent("ayla").await;
    let mut player = server.visitor("en").await;
    let conv = start_chat(&mut player, None).await;
    accept(&mut ayla, &conv).await;
    player.say(&conv, "m1", "my deposit is missing").await;
    let mut sam = server.agent("sam").await;

    sqlite(
        dir.path(),
        "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(FAIL, 'audit log refused'); END;",
    );
    for frame in [
        json!({"type":"resume","conversation":conv,"after":0}),
        json!({"type":"take","conversation":conv}),
    ] {
        sam.send(frame.clone()).await;
        let error = sam.expect("error").await;
        assert_eq!(error["code"], "overloaded", "{frame}: {error}");
        assert_eq!(error["frame"], frame["type"]);
        assert_eq!(error["conversation"], conv.as_str());
    }
    // Still open, and nothing of the conversation arrived.
    sam.send(json!({"type":"ping"})).await;
    sam.expect("pong").await;
    player.say(&conv, "m2", "are you there?").await;
    assert!(resume_texts(&mut ayla, &conv)
        .await
        .contains(&"are you there?".to_owned()));
    sam.send(json!({"type":"ping"})).await;
    sam.expect("pong").await;
    let leaked: Vec<&Value> = sam
        .backlog
        .iter()
        .filter(|v| v["conversation"] == conv.as_str() && v["type"] != "queue_snapshot")
        .collect();
    assert!(leaked.is_empty(), "sent without a record: {leaked:?}");

    sqlite(dir.path(), "DROP TRIGGER audit_refused;");
    assert!(resume_texts(&mut sam, &conv)
        .await
        .contains(&"are you there?".to_owned()));
    // Only the read that happened is in the log.
    assert_eq!(
        audit(&server, &root_t, &format!("target={conv}")).await,
        [rec("sam", "transcript.read", &conv)]
    );
}
