//! The Pitboss load generator: drives real WebSocket clients against a Pitboss node
//! and against two reference servers (a bare tokio-tungstenite relay and a
//! Socket.IO relay) under the same load, and reports latency, throughput, loss,
//! and the server's CPU and memory, as ratios between the three.
//!
//! Scenarios: [`idle`] (memory per held connection, several worker processes),
//! [`relay`] (open-loop messaging at a rate or a sweep), [`churn`] (queue
//! arrivals and assignment), and [`cluster`] (relay and churn across three nodes
//! sharing Redis, and for Pitboss PostgreSQL, started privately by [`backing`]).
//! [`site`] tells a scenario where its clients connect and whose CPU counts;
//! [`suite`] runs the scenarios per server; [`report`] writes the JSON, the
//! summary and the plot.

pub mod backing;
pub mod bare;
pub mod churn;
pub mod clock;
pub mod cluster;
pub mod idle;
pub mod procstat;
pub mod progress;
pub mod relay;
pub mod report;
pub mod site;
pub mod stats;
pub mod suite;
pub mod target;
pub mod wire;
