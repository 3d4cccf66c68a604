//! Retention in a cluster: every node runs the schedule, only the node holding the
//! routing lease purges, and when it goes the next leader carries on.
#![allow(missing_docs)]

mod common;
use common::cluster::*;
use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};

const DAY_MS: i64 = 86_400_000;

/// Stores a conversation closed `days` days ago, with one entry, straight into the
/// cluster's database; its id.
async fn closed_long_ago(database_url: &str, days: i64) -> String {
    let mut db = PgConnection::connect(database_url).await.expect("connect");
    let id = uuid::Uuid::now_v7().to_string();
    let closed_at = now_ms() - days * DAY_MS;
    sqlx::query(
        "INSERT INTO conversations (id, player_id, player_card, department, language, state, \
         last_seq, last_public_seq, created_at, closed_at, close_reason) \
         VALUES ($1, 'v:old', '{\"id\":\"v:old\"}', 'general', 'en', 'closed', 1, 1, $2, $2, 'resolved')",
    )
    .bind(&id)
    .bind(closed_at)
    .execute(&mut db)
    .await
    .expect("insert conversation");
    sqlx::query(
        "INSERT INTO entries (conversation_id, seq, prev_public, kind, sender_role, sender_id, \
         body, at) VALUES ($1, 1, 0, 'text', 'player', 'v:old', 'an old question', $2)",
    )
    .bind(&id)
    .bind(closed_at)
    .execute(&mut db)
    .await
    .expect("insert entry");
    id
}

/// Whether the conversation is still stored.
async fn stored(database_url: &str, id: &str) -> bool {
    let mut db = PgConnection::connect(database_url).await.expect("connect");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversations WHERE id = $1")
        .bind(id)
        .fetch_one(&mut db)
        .await
        .expect("count");
    n > 0
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Waits until the conversation is gone; panics after `SETTLE`.
async fn wait_purged(cluster: &Cluster, id: &str) {
    let deadline = Instant::now() + SETTLE;
    while stored(&cluster.database_url, id).await {
        assert!(Instant::now() < deadline, "{id} was not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Purge log lines of node `i` that deleted a conversation.
fn purges(cluster: &Cluster, i: usize) -> usize {
    cluster
        .log_lines(i, "retention purge done")
        .iter()
        .filter(|l| l.contains("conversations=1"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_routing_node_purges_and_the_next_leader_carries_on() {
    let mut cluster = Cluster::start(Setup {
        node_args: ["--retention-days", "30", "--retention-interval-secs", "0.3"]
            .map(String::from)
            .to_vec(),
        ..Setup::nodes(2)
    })
    .await;
    let leader = cluster.wait_leader(None).await;
    let other = 1 - leader;

    let first = closed_long_ago(&cluster.database_url, 31).await;
    let kept = closed_long_ago(&cluster.database_url, 29).await;
    wait_purged(&cluster, &first).await;
    // Several more intervals: the other node never purges while it does not route.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !cluster.log_lines(leader, "retention purge done").is_empty(),
        "the leader purges"
    );
    assert_eq!(purges(&cluster, leader), 1);
    assert!(
        cluster.log_lines(other, "retention purge done").is_empty(),
        "only the routing node purges"
    );
    assert!(
        stored(&cluster.database_url, &kept).await,
        "29 days is kept"
    );

    cluster.kill(leader);
    assert_eq!(cluster.wait_leader(Some(leader)).await, other);
    let second = closed_long_ago(&cluster.database_url, 40).await;
    wait_purged(&cluster, &second).await;
    assert_eq!(purges(&cluster, other), 1, "the new leader purges");
    assert!(stored(&cluster.database_url, &kept).await);
}
