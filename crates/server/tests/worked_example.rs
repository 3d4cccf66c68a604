//! The worked example of `docs/protocol.md` (§8.1–8.8), replayed against a real
//! server as a reader of that document would: the frames its clients send are sent,
//! and every frame it shows them receiving must arrive, with the same fields and
//! values. So the document cannot drift from what the server does.
//!
//! The document shortens what differs from run to run, and the replay reads it the
//! same way: `C`, and any string ending in `…` (a visitor id, a token), stands for
//! the value first received in its place and must be the same value wherever it
//! appears again, including in frames sent; a timestamp or a waiting time (`at`,
//! `created_at`, `closed_at`, `waited_ms`, `expires_in_ms`, `estimated_wait_secs`)
//! may be any number. `queue_snapshot` frames are droppable (the document says so)
//! and are neither required nor refused. Only the order within one connection is
//! guaranteed, and the replay asks no more: each expected frame is looked for among
//! what that connection has received, and nothing the document does not show may be
//! left over once the example is done.

mod common;

use common::{Client, Server};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// The password of the example's accounts (the document shows `…`).
const PASSWORD: &str = "secret-password";

/// Keys whose values are times or waits: any number matches.
const ANY_NUMBER: [&str; 6] = [
    "at",
    "created_at",
    "closed_at",
    "waited_ms",
    "expires_in_ms",
    "estimated_wait_secs",
];

/// One line of the example.
#[derive(Debug)]
enum Step {
    /// `POST path body` and the `→ status body` line after it.
    Post {
        path: String,
        body: Value,
        status: u16,
        answer: Value,
    },
    /// `who > frame`.
    Send { who: String, frame: Value },
    /// `who < frame`.
    Receive { who: String, frame: Value },
    /// `who # connection lost`: the client goes away without a close frame.
    Lost { who: String },
}

/// What the document says after the frames: the transcript as text and the
/// conversation's summary.
struct Afterwards {
    transcript: Vec<String>,
    summary: Value,
}

/// Stands for values that differ between runs: `C`, and strings ending in `…`.
fn is_placeholder(s: &str) -> bool {
    s == "C" || s.ends_with('…')
}

/// The example's code blocks between `## 8. Worked example` and `### 8.9`.
fn example() -> (Vec<Step>, Afterwards) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md");
    let start = doc.find("## 8. Worked example").expect("§8 in protocol.md");
    let end = start + doc[start..].find("### 8.9").expect("§8.9 in protocol.md");
    let mut blocks: Vec<(String, Vec<&str>)> = Vec::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    for line in doc[start..end].lines() {
        match (line.strip_prefix("```"), open.take()) {
            (Some(lang), None) => open = Some((lang.to_string(), Vec::new())),
            (Some(_), Some(block)) => blocks.push(block),
            (None, Some((lang, mut lines))) => {
                lines.push(line);
                open = Some((lang, lines));
            }
            (None, None) => {}
        }
    }
    let mut steps = Vec::new();
    let mut transcript = Vec::new();
    let mut summary = Value::Null;
    for (lang, lines) in blocks {
        if lang == "json" {
            // Abridged in the document: `[…]` and `{…}` stand for anything.
            let text = lines
                .join("\n")
                .replace("[…]", "\"…\"")
                .replace("{…}", "\"…\"");
            summary = serde_json::from_str(&text).expect("the summary in §8.8 is JSON");
            continue;
        }
        if lines
            .first()
            .is_some_and(|l| l.starts_with("Conversation "))
        {
            transcript = lines.iter().map(|l| l.to_string()).collect();
            continue;
        }
        let mut lines = lines.into_iter().peekable();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("POST ") {
                let (path, body) = rest.split_once(' ').expect("POST path body");
                let answer = lines.next().expect("an answer after POST");
                let answer = answer
                    .trim_start()
                    .strip_prefix("→ ")
                    .expect("→ status body");
                let (status, answer) = answer.split_once(' ').expect("status body");
                steps.push(Step::Post {
                    path: path.to_string(),
                    body: serde_json::from_str(body).expect("POST body is JSON"),
                    status: status.parse().expect("status"),
                    answer: serde_json::from_str(answer).expect("answer is JSON"),
                });
                continue;
            }
            let (who, rest) = line.split_once(' ').expect("who and what");
            let rest = rest.trim_start();
            let step = if let Some(frame) = rest.strip_prefix("> ") {
                Step::Send {
                    who: who.to_string(),
                    frame: serde_json::from_str(frame).expect("a sent frame is JSON"),
                }
            } else if let Some(frame) = rest.strip_prefix("< ") {
                Step::Receive {
                    who: who.to_string(),
                    frame: serde_json::from_str(frame).expect("a received frame is JSON"),
                }
            } else if rest.starts_with("# connection lost") {
                Step::Lost {
                    who: who.to_string(),
                }
            } else {
                panic!("a line of §8 the replay does not know: {line}");
            };
            steps.push(step);
        }
    }
    (
        steps,
        Afterwards {
            transcript,
            summary,
        },
    )
}

/// Whether `actual` is what the document shows as `expected`, with the
/// placeholders bound so far; on a match, the bindings it adds. With `subset`,
/// `actual`'s objects may have keys the document leaves out (an abridged value).
fn matches(
    expected: &Value,
    actual: &Value,
    key: Option<&str>,
    bound: &HashMap<String, Value>,
    subset: bool,
) -> Option<HashMap<String, Value>> {
    let mut new = HashMap::new();
    if matches_into(expected, actual, key, bound, subset, &mut new) {
        Some(new)
    } else {
        None
    }
}

fn matches_into(
    expected: &Value,
    actual: &Value,
    key: Option<&str>,
    bound: &HashMap<String, Value>,
    subset: bool,
    new: &mut HashMap<String, Value>,
) -> bool {
    match (expected, actual) {
        (Value::String(s), _) if s == "…" => true,
        (Value::String(s), Value::String(_)) if is_placeholder(s) => {
            match bound.get(s).or_else(|| new.get(s)) {
                Some(value) => value == actual,
                None => {
                    new.insert(s.clone(), actual.clone());
                    true
                }
            }
        }
        (Value::Number(_), Value::Number(_)) if key.is_some_and(|k| ANY_NUMBER.contains(&k)) => {
            true
        }
        (Value::Object(e), Value::Object(a)) => {
            (subset || e.len() == a.len())
                && e.iter().all(|(k, ev)| {
                    a.get(k)
                        .is_some_and(|av| matches_into(ev, av, Some(k), bound, subset, new))
                })
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len()
                && e.iter()
                    .zip(a)
                    .all(|(ev, av)| matches_into(ev, av, key, bound, subset, new))
        }
        _ => expected == actual,
    }
}

/// `frame` with every bound placeholder replaced by its value.
fn substitute(frame: &Value, bound: &HashMap<String, Value>, key: Option<&str>) -> Value {
    match frame {
        Value::String(s) if key == Some("password") => json!(if s == "…" { PASSWORD } else { s }),
        Value::String(s) if is_placeholder(s) => bound
            .get(s)
            .cloned()
            .unwrap_or_else(|| panic!("{s} is sent before the server gave its value")),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), substitute(v, bound, Some(k))))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, bound, key)).collect()),
        other => other.clone(),
    }
}

/// The example's server: default settings (the harness's raised test limits are
/// not wanted here: `welcome` shows the limits) and its three accounts.
fn start(dir: &std::path::Path) -> Server {
    let config = dir.join("example.toml");
    std::fs::write(&config, "").expect("write an empty config");
    let config = config.to_str().expect("utf-8 path");
    let server = Server::start(
        &dir.join("data"),
        &[
            "--config",
            config,
            "--frames-per-second",
            "20",
            "--burst-frames",
            "40",
        ],
    );
    for args in [
        &[
            "--name",
            "Ayla",
            "--languages",
            "en",
            "--departments",
            "general,payments",
        ][..],
        &[
            "--name",
            "Boris",
            "--languages",
            "en,ru",
            "--departments",
            "payments",
        ],
        &["--name", "Sam", "--role", "supervisor"],
    ] {
        let login = args[1].to_lowercase();
        let mut all = vec!["add", login.as_str(), "--password", PASSWORD];
        all.extend_from_slice(args);
        let (ok, _, err) = server.agent_command(&all);
        assert!(ok, "agent add {login}: {err}");
    }
    server
}

/// Waits for a frame `expected` describes on `client`; frames received meanwhile
/// stay in its backlog for later lines.
async fn receive(
    client: &mut Client,
    who: &str,
    expected: &Value,
    bound: &mut HashMap<String, Value>,
) {
    let found = client
        .backlog
        .iter()
        .position(|v| matches(expected, v, None, bound, false).is_some());
    let frame = match found {
        Some(i) => client.backlog.remove(i),
        None => loop {
            // Shorter than the harness's own wait, to name what was awaited.
            let read = tokio::time::timeout(common::WAIT / 2, client.read()).await;
            let read = read.unwrap_or_else(|_| {
                panic!(
                    "{who}: no frame like {expected}; received: {:?}",
                    client.backlog
                )
            });
            let frame = read.unwrap_or_else(|code| {
                panic!(
                    "{who}: closed ({code:?}) while waiting for {expected}; received: {:?}",
                    client.backlog
                )
            });
            if matches(expected, &frame, None, bound, false).is_some() {
                break frame;
            }
            client.backlog.push(frame);
        },
    };
    let new = matches(expected, &frame, None, bound, false).expect("matched");
    bound.extend(new);
}

#[tokio::test]
async fn the_worked_example_of_the_protocol_document_holds() {
    let (steps, afterwards) = example();
    assert!(steps.len() > 60, "§8 has its frames: {}", steps.len());
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let http = reqwest::Client::new();
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut bound: HashMap<String, Value> = HashMap::new();
    let mut tokens: HashMap<String, String> = HashMap::new();

    for step in &steps {
        match step {
            Step::Post {
                path,
                body,
                status,
                answer,
            } => {
                let res = http
                    .post(server.url(path))
                    .json(&substitute(body, &bound, None))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), *status, "POST {path} {body}");
                let got: Value = res.json().await.unwrap();
                let new = matches(answer, &got, None, &bound, false)
                    .unwrap_or_else(|| panic!("POST {path}: expected {answer}, got {got}"));
                bound.extend(new);
                if let (Some(login), Some(token)) = (body["login"].as_str(), got["token"].as_str())
                {
                    tokens.insert(login.to_string(), token.to_string());
                }
            }
            Step::Send { who, frame } => {
                if !clients.contains_key(who) {
                    clients.insert(who.clone(), Client::connect(&server.addr).await);
                }
                let frame = substitute(frame, &bound, None);
                clients.get_mut(who).expect("connected").send(frame).await;
            }
            Step::Receive { who, frame } => {
                if frame["type"] == "queue_snapshot" {
                    continue;
                }
                let client = clients
                    .get_mut(who)
                    .unwrap_or_else(|| panic!("{who} receives before connecting"));
                receive(client, who, frame, &mut bound).await;
            }
            Step::Lost { who } => {
                // Dropped: the TCP connection ends without a close frame.
                drop(clients.remove(who).expect("connected"));
            }
        }
    }

    // Nothing the document does not show, droppable queue views aside.
    for (who, client) in &mut clients {
        // Frames already on their way when the example ended.
        while let Ok(Ok(frame)) =
            tokio::time::timeout(std::time::Duration::from_millis(300), client.read()).await
        {
            client.backlog.push(frame);
        }
        let extra: Vec<&Value> = client
            .backlog
            .iter()
            .filter(|v| v["type"] != "queue_snapshot")
            .collect();
        assert!(
            extra.is_empty(),
            "{who} received frames §8 does not show: {extra:?}"
        );
    }

    // What Boris, the last owner, reads over REST afterwards.
    let conversation = bound["C"]
        .as_str()
        .expect("C is a conversation id")
        .to_string();
    let boris = &tokens["boris"];
    let (status, text) = server
        .get(
            &format!("/api/conversations/{conversation}/transcript.txt"),
            boris,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let player = bound["v:45798260-…"].as_str().expect("the visitor id");
    let shown_conversation = afterwards.transcript[0]
        .strip_prefix("Conversation ")
        .expect("the transcript names its conversation");
    let shown_player = afterwards.transcript[1]
        .strip_prefix("Player: ")
        .and_then(|p| p.split_once(' '))
        .expect("the transcript names its player")
        .0;
    let timeless = |line: &str| match (line.find('['), line.find("Z]")) {
        (Some(open), Some(close)) if open < close => {
            format!("{}[time]{}", &line[..open], &line[close + 2..])
        }
        _ => line.to_string(),
    };
    let expected: Vec<String> = afterwards
        .transcript
        .iter()
        .map(|l| {
            timeless(
                &l.replace(shown_conversation, &conversation)
                    .replace(shown_player, player),
            )
        })
        .collect();
    let got: Vec<String> = text.lines().map(timeless).collect();
    assert_eq!(got, expected, "transcript.txt as §8.8 shows it");

    let summary = server
        .get_json(&format!("/api/conversations/{conversation}"), boris)
        .await;
    assert!(
        matches(&afterwards.summary, &summary, None, &bound, true).is_some(),
        "GET /api/conversations/C: §8.8 shows {}, the server answered {summary}",
        afterwards.summary
    );
}
