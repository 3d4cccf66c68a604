//! The Pitboss load generator: drives real WebSocket clients against a Pitboss node
//! and against two reference servers (a bare tokio-tungstenite relay and a
//! Socket.IO relay) under the same load, and reports latency, throughput, loss,
//! and the server's CPU and memory, as ratios between the three.
//!
//! Scenarios: [`idle`] (memory per held connection, several worker processes),
//! [`relay`] (open-loop messaging at a rate or a sweep), [`churn`] (queue
//! arrivals and assignment). [`suite`] runs them per server; [`report`] writes
//! the JSON, the summary and the plot. A cluster scenario (three nodes sharing
//! Redis) waits for the cluster; the Socket.IO relay already takes `REDIS_URL`.

pub mod bare;
pub mod churn;
pub mod idle;
pub mod procstat;
pub mod progress;
pub mod relay;
pub mod report;
pub mod stats;
pub mod suite;
pub mod target;
pub mod wire;
