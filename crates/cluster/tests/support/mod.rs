//! What the Redis tests share: a private `redis-server` per test (in
//! `redis_server.rs`, which other crates' tests include too), and the settings and
//! cluster that the conformance suite runs on.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own part of it

mod redis_server;

pub use redis_server::{signal, signal_quietly, RedisServer};

use pitboss_cluster::conformance::{Cluster, Node};
use pitboss_cluster::redis::{RedisBus, RedisLease, RedisOptions, RedisPresence};
use std::time::Duration;

/// Settings that make the tests quick to notice and recover from failures.
pub fn quick_options() -> RedisOptions {
    RedisOptions {
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_millis(500),
        ping_interval: Duration::from_millis(200),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(300),
        ..RedisOptions::default()
    }
}

/// Nodes on one Redis server, for the conformance suite.
pub struct RedisCluster {
    /// The server's URL.
    pub url: String,
    /// The nodes' settings.
    pub options: RedisOptions,
}

#[async_trait::async_trait]
impl Cluster for RedisCluster {
    async fn node(&self, id: &str) -> Node {
        Node {
            bus: RedisBus::connect(&self.url, id, self.options.clone())
                .await
                .expect("bus"),
            lease: RedisLease::connect(&self.url, id, self.options.clone())
                .await
                .expect("lease"),
            presence: RedisPresence::connect(&self.url, id, self.options.clone())
                .await
                .expect("presence"),
        }
    }
}
