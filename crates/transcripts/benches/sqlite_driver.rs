//! What the SQLite driver costs per appended message, apart from SQLite itself.
//!
//! Appends transcript entries to a store file made by the crate's own migrations,
//! the way the SQLite store's writer appends a plain message to a conversation it
//! remembers (one `INSERT INTO entries` and one `UPDATE conversations` of the
//! counters, batches of `--batch` messages per transaction, WAL), four ways:
//!
//! - `sqlx`: as the store does it, one round trip to sqlx's worker thread per
//!   message, plus `BEGIN` and `COMMIT`;
//! - `sqlx-folded`: the whole batch, `BEGIN` to `COMMIT`, in one round trip;
//! - `sqlx-one`: one statement per message, an `INSERT` whose trigger updates the
//!   counters, on its own (its own transaction) when a batch is one message;
//! - `direct`: the first mode's statements through rusqlite on the calling thread,
//!   with cached prepared statements — the same SQLite library, no worker thread.
//!
//! sqlx runs SQLite on a thread of its own and answers each statement over a
//! channel, so the modes tell apart what a round trip costs, what a statement
//! costs, and what SQLite itself costs.
//!
//! For each it prints wall time and the process's CPU time (every thread) per
//! message. Pin it to one core so that the threads share it as on a node:
//!
//! ```sh
//! cargo bench -p pitboss-transcripts --bench sqlite_driver --no-run
//! taskset -c 1 cargo bench -p pitboss-transcripts --bench sqlite_driver -- --batch 1
//! ```
//!
//! Options: `--messages N` (per run, default 20000), `--batch B` (default 1),
//! `--synchronous full|off` (default full, as the store), `--conversations K`
//! (default 500), `--runs R` (default 3; the modes alternate).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite, SqliteConnection};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const INSERT: &str = "INSERT INTO entries (conversation_id, seq, prev_public, kind, \
     sender_role, sender_id, sender_name, body, client_id, event, at) \
     VALUES (?1, ?2, ?3, 'message', 'player', ?4, NULL, ?5, ?6, NULL, ?7)";
const UPDATE: &str = "UPDATE conversations SET last_seq = ?1, last_public_seq = ?2 WHERE id = ?3";
const TRIGGER: &str = "CREATE TRIGGER entries_counters AFTER INSERT ON entries BEGIN \
     UPDATE conversations SET last_seq = NEW.seq, last_public_seq = NEW.seq \
     WHERE id = NEW.conversation_id; END";
const BODY: &str = "Hello, I made a deposit twenty minutes ago and it still does not show in \
     my balance, can you check?";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Sqlx,
    SqlxFolded,
    SqlxOne,
    Direct,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sqlx => "sqlx",
            Mode::SqlxFolded => "sqlx-folded",
            Mode::SqlxOne => "sqlx-one",
            Mode::Direct => "direct",
        }
    }
}

struct Options {
    messages: u64,
    batch: u64,
    full: bool,
    conversations: u64,
    runs: u32,
}

/// One message: its conversation, sequence number, client id and time.
struct Message {
    conversation: String,
    seq: i64,
    client_id: String,
    at: i64,
}

/// Round-robin over the conversations, as many players writing at once.
struct Messages {
    conversations: Vec<String>,
    last_seq: Vec<i64>,
    next: usize,
    count: u64,
}

impl Messages {
    fn new(conversations: Vec<String>) -> Messages {
        let last_seq = vec![0; conversations.len()];
        Messages {
            conversations,
            last_seq,
            next: 0,
            count: 0,
        }
    }

    fn next(&mut self) -> Message {
        let i = self.next;
        self.next = (self.next + 1) % self.conversations.len();
        self.last_seq[i] += 1;
        self.count += 1;
        Message {
            conversation: self.conversations[i].clone(),
            seq: self.last_seq[i],
            client_id: format!("c-{}", self.count),
            at: 1_700_000_000_000 + self.count as i64,
        }
    }
}

fn parse() -> Options {
    let mut options = Options {
        messages: 20_000,
        batch: 1,
        full: true,
        conversations: 500,
        runs: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{arg} needs a value")))
        };
        let number = |v: String| -> u64 {
            v.parse()
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or_else(|| fail(&format!("{arg}: not a positive number: {v}")))
        };
        match arg.as_str() {
            // `cargo bench` passes this to every bench binary.
            "--bench" => {}
            "--messages" => options.messages = number(value()),
            "--batch" => options.batch = number(value()),
            "--conversations" => options.conversations = number(value()),
            "--runs" => options.runs = number(value()) as u32,
            "--synchronous" => {
                options.full = match value().as_str() {
                    "full" => true,
                    "off" => false,
                    other => fail(&format!("--synchronous full|off, not {other}")),
                }
            }
            other => fail(&format!("unknown option {other}")),
        }
    }
    options
}

fn fail(message: &str) -> ! {
    eprintln!("sqlite_driver: {message}");
    std::process::exit(2)
}

/// CPU time so far of each thread of this process, by thread id.
fn thread_cpu() -> HashMap<String, Duration> {
    let mut times = HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").expect("reading /proc/self/task") {
        let task = task.expect("a task entry");
        // A thread that exits between the listing and the read is skipped.
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            if let Some(ns) = text.split_whitespace().next().and_then(|n| n.parse().ok()) {
                times.insert(
                    task.file_name().to_string_lossy().into_owned(),
                    Duration::from_nanos(ns),
                );
            }
        }
    }
    times
}

/// CPU time the process's threads spent between two readings of [`thread_cpu`]:
/// a thread started in between counts whole, one that ended in between (an
/// earlier connection's worker finishing its exit) is left out.
fn cpu_between(start: &HashMap<String, Duration>, end: &HashMap<String, Duration>) -> Duration {
    end.iter()
        .map(|(tid, t)| t.saturating_sub(start.get(tid).copied().unwrap_or_default()))
        .sum()
}

/// A store file with the crate's schema and `count` assigned conversations.
async fn prepare(path: &Path, count: u64, full: bool) -> (SqliteConnection, Vec<String>) {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .foreign_keys(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if full {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Off
        });
    let mut conn = options.connect().await.expect("opening the store file");
    MIGRATOR.run(&mut conn).await.expect("migrating");
    let mut ids = Vec::new();
    for i in 0..count {
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO conversations (id, player_id, player_card, department, language, \
             state, agent_id, created_at) VALUES (?, ?, '{}', 'support', 'en', 'assigned', \
             'agent-1', ?)",
        )
        .bind(&id)
        .bind(format!("player-{i}"))
        .bind(1_700_000_000_000i64)
        .execute(&mut conn)
        .await
        .expect("inserting a conversation");
        ids.push(id);
    }
    (conn, ids)
}

/// Adds one message's two statements, as the store's writer builds them.
fn push_message(writes: &mut QueryBuilder<'_, Sqlite>, m: &Message) {
    writes
        .push(
            "INSERT INTO entries (conversation_id, seq, prev_public, kind, sender_role, \
             sender_id, sender_name, body, client_id, event, at) VALUES (",
        )
        .push_bind(m.conversation.clone())
        .push(", ")
        .push_bind(m.seq)
        .push(", ")
        .push_bind(m.seq - 1)
        .push(", 'message', 'player', ")
        .push_bind("player-1".to_owned())
        .push(", NULL, ")
        .push_bind(BODY.to_owned())
        .push(", ")
        .push_bind(m.client_id.clone())
        .push(", NULL, ")
        .push_bind(m.at)
        .push("); UPDATE conversations SET last_seq = ")
        .push_bind(m.seq)
        .push(", last_public_seq = ")
        .push_bind(m.seq)
        .push(" WHERE id = ")
        .push_bind(m.conversation.clone())
        .push("; ");
}

async fn run_sqlx(
    conn: &mut SqliteConnection,
    messages: &mut Messages,
    options: &Options,
    mode: Mode,
) {
    let batches = options.messages / options.batch;
    for _ in 0..batches {
        if mode == Mode::SqlxOne {
            let single = options.batch == 1;
            if !single {
                sqlx::query("BEGIN")
                    .execute(&mut *conn)
                    .await
                    .expect("BEGIN");
            }
            for _ in 0..options.batch {
                let m = messages.next();
                sqlx::query(INSERT)
                    .bind(&m.conversation)
                    .bind(m.seq)
                    .bind(m.seq - 1)
                    .bind("player-1")
                    .bind(BODY)
                    .bind(&m.client_id)
                    .bind(m.at)
                    .execute(&mut *conn)
                    .await
                    .expect("an insert");
            }
            if !single {
                sqlx::query("COMMIT")
                    .execute(&mut *conn)
                    .await
                    .expect("COMMIT");
            }
        } else if mode == Mode::SqlxFolded {
            let mut writes = QueryBuilder::<Sqlite>::new("BEGIN; ");
            for _ in 0..options.batch {
                push_message(&mut writes, &messages.next());
            }
            writes.push("COMMIT;");
            writes.build().execute(&mut *conn).await.expect("a batch");
        } else {
            sqlx::query("BEGIN")
                .execute(&mut *conn)
                .await
                .expect("BEGIN");
            for _ in 0..options.batch {
                let mut writes = QueryBuilder::<Sqlite>::new("");
                push_message(&mut writes, &messages.next());
                writes.build().execute(&mut *conn).await.expect("a message");
            }
            sqlx::query("COMMIT")
                .execute(&mut *conn)
                .await
                .expect("COMMIT");
        }
    }
}

fn run_direct(conn: &mut rusqlite::Connection, messages: &mut Messages, options: &Options) {
    let batches = options.messages / options.batch;
    for _ in 0..batches {
        let tx = conn.transaction().expect("BEGIN");
        {
            let mut insert = tx.prepare_cached(INSERT).expect("preparing the insert");
            let mut update = tx.prepare_cached(UPDATE).expect("preparing the update");
            for _ in 0..options.batch {
                let m = messages.next();
                insert
                    .execute(rusqlite::params![
                        m.conversation,
                        m.seq,
                        m.seq - 1,
                        "player-1",
                        BODY,
                        m.client_id,
                        m.at
                    ])
                    .expect("an insert");
                update
                    .execute(rusqlite::params![m.seq, m.seq, m.conversation])
                    .expect("an update");
            }
        }
        tx.commit().expect("COMMIT");
    }
}

/// One timed run of `mode` on a fresh store file: wall and CPU time per message.
fn measure(mode: Mode, options: &Options) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bench.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (conn, ids) = runtime.block_on(prepare(&path, options.conversations, options.full));
    let mut messages = Messages::new(ids);
    let count = options.messages / options.batch * options.batch;
    let (wall, cpu) = match mode {
        Mode::Sqlx | Mode::SqlxFolded | Mode::SqlxOne => {
            let mut conn = conn;
            if mode == Mode::SqlxOne {
                runtime
                    .block_on(sqlx::query(TRIGGER).execute(&mut conn))
                    .expect("the trigger");
            }
            let start = (Instant::now(), thread_cpu());
            runtime.block_on(run_sqlx(&mut conn, &mut messages, options, mode));
            let end = (Instant::now(), thread_cpu());
            runtime.block_on(conn.close()).expect("closing");
            (end.0 - start.0, cpu_between(&start.1, &end.1))
        }
        Mode::Direct => {
            runtime.block_on(conn.close()).expect("closing");
            let mut conn = rusqlite::Connection::open(&path).expect("opening with rusqlite");
            let synchronous = if options.full { "FULL" } else { "OFF" };
            conn.execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
                 PRAGMA foreign_keys = ON;"
            ))
            .expect("pragmas");
            let start = (Instant::now(), thread_cpu());
            run_direct(&mut conn, &mut messages, options);
            let end = (Instant::now(), thread_cpu());
            (end.0 - start.0, cpu_between(&start.1, &end.1))
        }
    };
    let (written, counted) = count_entries(&path);
    assert_eq!(written, count, "{}: entries written", mode.name());
    assert_eq!(counted, count, "{}: conversation counters", mode.name());
    let per = |d: Duration| d.as_secs_f64() * 1e6 / count as f64;
    (per(wall), per(cpu))
}

/// The entries written, and the sum of the conversations' counters: both must be
/// the number of messages.
fn count_entries(path: &Path) -> (u64, u64) {
    let conn = rusqlite::Connection::open(path).expect("reopening");
    conn.query_row(
        "SELECT (SELECT count(*) FROM entries), (SELECT sum(last_seq) FROM conversations)",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .expect("counting entries")
}

fn main() {
    let options = parse();
    println!(
        "{} messages per run, batches of {}, synchronous={}, {} conversations",
        options.messages / options.batch * options.batch,
        options.batch,
        if options.full { "FULL" } else { "OFF" },
        options.conversations
    );
    println!(
        "{:<12} {:>4} {:>14} {:>14}",
        "mode", "run", "wall µs/msg", "CPU µs/msg"
    );
    for run in 1..=options.runs {
        for mode in [Mode::Sqlx, Mode::SqlxFolded, Mode::SqlxOne, Mode::Direct] {
            let (wall, cpu) = measure(mode, &options);
            println!(
                "{:<12} {:>4} {:>14.1} {:>14.1}",
                mode.name(),
                run,
                wall,
                cpu
            );
        }
    }
}
