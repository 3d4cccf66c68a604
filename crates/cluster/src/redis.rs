//! The Redis implementations of the bus, the lease and presence, for several nodes
//! behind a load balancer. It owns what Redis holds and how it is spoken to; it
//! does not own any state that must survive Redis: everything here is rebuilt from
//! the transcript store and from the live nodes after Redis restarts empty.
//!
//! # What Redis holds
//!
//! With the default prefix `pitboss:` ([`RedisOptions::prefix`]):
//!
//! | key / channel               | type          | what                                   |
//! |-----------------------------|---------------|----------------------------------------|
//! | `pitboss:events`            | pub/sub       | the bus: every node publishes and subscribes |
//! | `pitboss:router-lease`      | hash + expiry | `{epoch, node, token}` of the lease term |
//! | `pitboss:router-epoch`      | integer       | the epoch counter (never expires)      |
//! | `pitboss:presence:agents`   | hash          | node id → its online agents (JSON array) |
//! | `pitboss:presence:expiry`   | sorted set    | node id scored by heartbeat expiry (ms, Redis clock) |
//!
//! Every multi-step update is a Lua script kept beside this file
//! (`lease_acquire.lua`, `lease_release.lua`, `presence_*.lua`); each says what
//! it does and why it must be atomic. One Redis server (or a primary with
//! replicas) is assumed, not Redis Cluster; Redis 6 or later, since the subscriber
//! speaks RESP3.
//!
//! # The bus
//!
//! [`RedisBus::publish`] never waits: it puts the event on a bounded queue
//! ([`RedisOptions::publish_queue`]) and returns, or fails with
//! [`ClusterError::Full`] and counts the event in [`Bus::dropped`]. One publisher
//! task drains the queue in batches, PUBLISHing them in one pipeline on one
//! connection, so one node's events reach Redis, and every subscriber, in the
//! order they were queued.
//!
//! One subscriber task per node holds a dedicated RESP3 connection subscribed to
//! the channel. Its incoming messages go through a bounded inbox
//! ([`RedisOptions::inbox`]); an overflowing inbox means this node fell behind.
//! It ends the connection and subscribes again when:
//! - Redis closes the connection (restart, crash, or `client-output-buffer-limit
//!   pubsub` cutting off a node that stopped reading, e.g. a stopped process),
//! - a PING sent every [`RedisOptions::ping_interval`] gets no answer within
//!   [`RedisOptions::response_timeout`] (a hung Redis, a dead network path),
//! - its own inbox overflowed.
//!
//! It retries with jittered exponential backoff
//! ([`RedisOptions::reconnect_min`]..[`RedisOptions::reconnect_max`]) and, after
//! every successful SUBSCRIBE (the first one included), calls
//! [`BusHandler::lost`]: pub/sub is at-most-once, anything published while the node
//! was not subscribed is gone and the desk recovers it from the store.
//!
//! Events can also be lost with the subscription intact: the publisher's queue was
//! full, or its PUBLISH failed. The publisher then marks the next event it manages
//! to send with a gap flag, and every subscriber calls [`BusHandler::lost`] before
//! delivering a flagged event. (A sequence gap alone would not do: a subscriber
//! cannot tell a gap before the first event it sees from one publisher from events
//! published before it subscribed.) Every event also carries its publisher's
//! process incarnation and a sequence number, and a subscriber that sees a gap in a
//! publisher's sequence calls [`BusHandler::lost`] too, and skips an event it has
//! already seen. A node ignores events whose sender is its own node id.
//!
//! ## Wire format of an event
//!
//! One PUBLISH message per event, not JSON: the payload is usually the desk's JSON
//! already, and wrapping it in JSON would escape every quote of it. A header line of
//! six space-separated ASCII fields, a newline, then three strings back to back,
//! measured by the header:
//!
//! ```text
//! PB1 <incarnation> <seq> <gap> <from length> <topic length>\n<from><topic><payload>
//! ```
//!
//! - `incarnation`: 16 lowercase hex digits, random per publishing process;
//! - `seq`: decimal, 1 for the process's first event, +1 for each later one;
//! - `gap`: `1` if the publisher lost events since the last one it sent, else `0`;
//! - lengths: decimal, in bytes.
//!
//! e.g. `PB1 00c0ffee00c0ffee 42 0 6 14\nnode-aconversation-7{"type":"typing"}`.
//! `PB1` is the format's version; all strings are UTF-8; the payload runs to the end
//! of the message. A message that does not parse is logged and skipped.
//!
//! # The lease and its epoch
//!
//! [`RedisLease`] keeps one term in `pitboss:router-lease`, expiring after the ttl
//! (Redis's clock). A term belongs to one process (its token is node id and process
//! incarnation): acquire takes a free lease with a new epoch from `INCR
//! pitboss:router-epoch`, renew extends only the caller's own term, release deletes
//! only the caller's own term.
//!
//! What the epoch guarantees:
//! - While Redis keeps its data, every new term has a greater epoch than every
//!   earlier term, and at most one term exists at a time.
//! - A handle's new term always has an epoch above every epoch this handle has
//!   seen (its own terms, and the other holders' epochs it was refused with: a
//!   contending node sees the current epoch on every attempt) and above the floor
//!   given to [`Lease::raise_epoch_floor`].
//! - A holder's [`Lease::current_epoch`] ends no later than Redis expires the term:
//!   it counts the ttl from before the request was sent, Redis from when it ran it.
//!
//! What it does not guarantee:
//! - If Redis restarts empty, the counter starts again at 0. A node that never saw
//!   the old epochs and was given no floor can then start a term with an epoch
//!   that was already used. The desk closes that hole by raising the floor to the
//!   highest epoch the store has recorded before it tries to acquire.
//! - Mutual exclusion is by time: a holder that is paused (GC, a stopped VM) past
//!   its ttl may act on a term that has ended. Its writes are fenced by the store's
//!   compare-and-set on the epoch, not by Redis.
//!
//! # Presence
//!
//! [`RedisPresence::heartbeat`] stores the node's full list of online agents and
//! an expiry computed from Redis's clock; [`RedisPresence::alive`] lists the
//! unexpired nodes and deletes the expired ones. After Redis restarts empty,
//! presence is complete again one heartbeat period later.

use crate::{
    Bus, BusHandler, ClusterError, Envelope, Epoch, Lease, NodeId, NodePresence, Presence,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, PushKind, Script, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The key prefix used unless [`RedisOptions::prefix`] says otherwise.
pub const DEFAULT_PREFIX: &str = "pitboss:";
/// Events a node may have queued for publishing before [`Bus::publish`] fails with
/// [`ClusterError::Full`].
pub const PUBLISH_QUEUE: usize = 8192;
/// Incoming messages a node may hold before it counts as fallen behind.
pub const INBOX: usize = 8192;
/// Events sent to Redis in one pipeline: large enough to amortise a round trip,
/// small enough that one failed pipeline loses little.
const PUBLISH_BATCH: usize = 256;
/// Publishers whose sequence a subscriber tracks. Far above any real cluster; past
/// it the table is cleared, which only costs gap detection for one event each.
const MAX_TRACKED_PUBLISHERS: usize = 1024;
/// The version tag that starts every event on the wire.
const WIRE_VERSION: &str = "PB1";

/// Connection and naming settings shared by the bus, the lease and presence.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prefix of every key and of the channel. Nodes of one cluster share it; two
    /// clusters (or test cases) on one Redis use different prefixes.
    pub prefix: String,
    /// Capacity of the publish queue (see [`PUBLISH_QUEUE`]).
    pub publish_queue: usize,
    /// Capacity of the subscriber's inbox (see [`INBOX`]).
    pub inbox: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// How long any command may take before the connection is presumed dead.
    pub response_timeout: Duration,
    /// How often the subscriber checks that its connection is alive.
    pub ping_interval: Duration,
    /// First delay before reconnecting after a failure.
    pub reconnect_min: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            publish_queue: PUBLISH_QUEUE,
            inbox: INBOX,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(1),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
        }
    }
}

impl RedisOptions {
    /// The pub/sub channel of the bus.
    pub fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
    }
}

fn unavailable(err: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(err.to_string())
}

/// A random number that tells this process apart from any other process that runs
/// (or ran) with the same node id.
fn new_incarnation() -> u64 {
    rand::random()
}

// ---------------------------------------------------------------------------------
// One reconnecting command connection.

/// A command connection that is opened on first use and again after any failure.
/// Written here rather than using the crate's `ConnectionManager`, whose retries
/// make a call wait through a whole backoff sequence while Redis is down: here a
/// call fails within the connect or response timeout, and the caller (a tick, the
/// publisher task) decides when to try again.
struct Link {
    client: Client,
    config: AsyncConnectionConfig,
    /// The open connection, if any. A std mutex held only to clone or replace the
    /// handle, never across an await.
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl Link {
    fn open(url: &str, options: &RedisOptions) -> Result<Self, ClusterError> {
        Ok(Self {
            client: Client::open(url).map_err(unavailable)?,
            config: options.connection_config(),
            conn: Mutex::new(None),
        })
    }

    /// The open connection, or a new one; and whether it is new.
    async fn connection(&self) -> Result<(MultiplexedConnection, bool), ClusterError> {
        if let Some(conn) = self.conn.lock().expect("link lock poisoned").clone() {
            return Ok((conn, false));
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(unavailable)?;
        *self.conn.lock().expect("link lock poisoned") = Some(conn.clone());
        Ok((conn, true))
    }

    /// Forgets the connection after a failed call. Any error counts: a timeout may be
    /// a dead peer, and a fresh connection costs one round trip.
    fn failed(&self) {
        *self.conn.lock().expect("link lock poisoned") = None;
    }

    /// Runs one request (a script, a pipeline), opening a connection if needed.
    /// A connection that had been idle may have died unnoticed (Redis restarted
    /// since its last use): if it turns out closed, the request is sent once more on
    /// a new one. Every request here may run twice: the scripts are idempotent for
    /// their caller, and a subscriber skips an event it has already seen. A timeout
    /// is not retried: Redis may be hung, and the caller should hear so promptly.
    async fn request<T, F, Fut>(&self, send: F) -> Result<T, ClusterError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (conn, fresh) = self.connection().await?;
        match send(conn).await {
            Ok(value) => return Ok(value),
            Err(err) => {
                self.failed();
                let stale = !fresh
                    && !err.is_timeout()
                    && (err.is_io_error()
                        || err.is_connection_dropped()
                        || err.is_unrecoverable_error());
                if !stale {
                    return Err(unavailable(err));
                }
            }
        }
        let (conn, _) = self.connection().await?;
        send(conn).await.map_err(|err| {
            self.failed();
            unavailable(err)
        })
    }

    /// Runs a script (see [`Link::request`]).
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        self.request(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    async fn ping(&self) -> Result<(), ClusterError> {
        self.request(
            |mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await },
        )
        .await
    }
}

/// Jittered exponential backoff between reconnection attempts: many nodes that lost
/// Redis at the same instant do not all come back at the same instant.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(options: &RedisOptions) -> Self {
        let min = options.reconnect_min.max(Duration::from_millis(1));
        Self {
            min,
            max: options.reconnect_max.max(min),
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay to wait now: between half and all of the current step.
    fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

// ---------------------------------------------------------------------------------
// Wire format.

/// An event as it travels: the envelope plus what a receiver needs to detect gaps.
#[derive(Debug, PartialEq)]
struct Wire {
    incarnation: u64,
    seq: u64,
    /// The publisher lost events just before this one.
    gap: bool,
    envelope: Envelope,
}

fn encode(
    incarnation: u64,
    seq: u64,
    gap: bool,
    from: &str,
    topic: &str,
    payload: &str,
) -> Vec<u8> {
    let header = format!(
        "{WIRE_VERSION} {incarnation:016x} {seq} {} {} {}\n",
        u8::from(gap),
        from.len(),
        topic.len()
    );
    let mut out = Vec::with_capacity(header.len() + from.len() + topic.len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(from.as_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload.as_bytes());
    out
}

fn decode(message: &[u8]) -> Result<Wire, &'static str> {
    let newline = message
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&message[..newline]).map_err(|_| "header not UTF-8")?;
    let mut fields = header.split(' ');
    if fields.next() != Some(WIRE_VERSION) {
        return Err("unknown version");
    }
    let mut number = |radix| {
        fields
            .next()
            .and_then(|f| u64::from_str_radix(f, radix).ok())
            .ok_or("bad header field")
    };
    let incarnation = number(16)?;
    let seq = number(10)?;
    let gap = match number(10)? {
        0 => false,
        1 => true,
        _ => return Err("bad gap flag"),
    };
    let from_len = usize::try_from(number(10)?).map_err(|_| "bad length")?;
    let topic_len = usize::try_from(number(10)?).map_err(|_| "bad length")?;
    if fields.next().is_some() {
        return Err("extra header field");
    }
    let body = std::str::from_utf8(&message[newline + 1..]).map_err(|_| "body not UTF-8")?;
    let topic_end = from_len.checked_add(topic_len).ok_or("bad length")?;
    if !body.is_char_boundary(from_len) || !body.is_char_boundary(topic_end) {
        return Err("lengths do not match the body");
    }
    // `is_char_boundary` is also false past the end, so these slices are in range.
    Ok(Wire {
        incarnation,
        seq,
        gap,
        envelope: Envelope {
            from: body[..from_len].to_owned(),
            topic: body[from_len..topic_end].to_owned(),
            payload: Arc::from(&body[topic_end..]),
        },
    })
}

/// What a subscriber makes of an event's place in its publisher's sequence.
#[derive(Debug, PartialEq)]
enum Place {
    /// The next one, or the first one seen from this publisher.
    Next,
    /// Events are missing before this one.
    AfterGap,
    /// Already seen (cannot happen with one publisher task per process; skipped
    /// rather than delivered out of order).
    Stale,
}

/// The last sequence number seen from each publishing process.
#[derive(Default)]
struct Sequences {
    last: HashMap<NodeId, (u64, u64)>,
}

impl Sequences {
    fn place(&mut self, from: &str, incarnation: u64, seq: u64) -> Place {
        if let Some((known, last)) = self.last.get_mut(from) {
            let place = if *known != incarnation {
                // A new process under that node id: it numbers from 1.
                if seq == 1 {
                    Place::Next
                } else {
                    Place::AfterGap
                }
            } else if seq == *last + 1 {
                Place::Next
            } else if seq > *last + 1 {
                Place::AfterGap
            } else {
                return Place::Stale;
            };
            *known = incarnation;
            *last = seq;
            return place;
        }
        if self.last.len() >= MAX_TRACKED_PUBLISHERS {
            self.last.clear();
        }
        self.last.insert(from.to_owned(), (incarnation, seq));
        Place::Next
    }
}

// ---------------------------------------------------------------------------------
// The bus.

/// An event waiting in the publish queue.
struct Outgoing {
    topic: String,
    payload: Arc<str>,
}

/// Counters shared by a bus handle and its tasks.
#[derive(Default)]
struct BusCounters {
    /// Events refused because the publish queue was full.
    dropped: AtomicU64,
    /// Events taken from the queue whose PUBLISH failed.
    unsent: AtomicU64,
    /// Successful SUBSCRIBEs, the first one included.
    subscriptions: AtomicU64,
}

/// One node's handle on the Redis bus. See the module docs for how it behaves.
pub struct RedisBus {
    node: NodeId,
    options: RedisOptions,
    /// Tells this process's events apart from an earlier process with the same id.
    incarnation: u64,
    /// For the subscriber's connections; the publisher has its own.
    client: Client,
    /// The publisher task's queue. Bounded: a full queue refuses the event.
    queue: mpsc::Sender<Outgoing>,
    counters: Arc<BusCounters>,
    /// Set once by `subscribe`; later calls are ignored.
    subscribed: OnceLock<()>,
    /// Tells the subscriber task to stop when this handle is dropped.
    shutdown: watch::Sender<bool>,
}

impl RedisBus {
    /// Connects to Redis at `url` (`redis://[user:password@]host:port[/db]`) as
    /// `node`, checks that Redis answers, and starts the publisher task. Must be
    /// called within a tokio runtime. Later outages are handled in the background:
    /// this is the only call that fails because Redis is down.
    pub async fn connect(
        url: &str,
        node: impl Into<NodeId>,
        options: RedisOptions,
    ) -> Result<Arc<Self>, ClusterError> {
        let node = node.into();
        let link = Link::open(url, &options)?;
        link.ping().await?;
        // The subscriber speaks RESP3 so that its messages arrive through a push
        // sender we bound ourselves (the crate's RESP2 pub/sub buffers without limit).
        let info = link.client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings)).map_err(unavailable)?;

        let (queue, rx) = mpsc::channel(options.publish_queue.max(1));
        let counters = Arc::new(BusCounters::default());
        let incarnation = new_incarnation();
        let publisher = Publisher {
            link,
            channel: options.channel(),
            from: node.clone(),
            incarnation,
            counters: counters.clone(),
            backoff: Backoff::new(&options),
        };
        let (shutdown, _) = watch::channel(false);
        tokio::spawn(publisher.run(rx, shutdown.subscribe()));
        Ok(Arc::new(Self {
            node,
            options,
            incarnation,
            client,
            queue,
            counters,
            subscribed: OnceLock::new(),
            shutdown,
        }))
    }

    /// Stops the bus: the subscriber unsubscribes and stops, the publisher sends what
    /// is already queued (one attempt) and stops, and later [`Bus::publish`] calls
    /// fail with [`ClusterError::Unavailable`]. Dropping the last handle does the
    /// same; this is for when a handler keeps the handle alive.
    pub fn close(&self) {
        self.shutdown.send_replace(true);
    }

    /// Events taken from the publish queue whose PUBLISH failed (Redis was down).
    /// Receivers learn of them through the gap they leave.
    pub fn unsent(&self) -> u64 {
        self.counters.unsent.load(Ordering::Relaxed)
    }

    /// How many times the subscriber has (re)subscribed: 1 after the first
    /// subscription, one more after every reconnection.
    pub fn subscriptions(&self) -> u64 {
        self.counters.subscriptions.load(Ordering::Relaxed)
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.close();
    }
}

impl Bus for RedisBus {
    fn node(&self) -> &NodeId {
        &self.node
    }

    fn publish(&self, topic: &str, payload: Arc<str>) -> Result<(), ClusterError> {
        let outgoing = Outgoing {
            topic: topic.to_owned(),
            payload,
        };
        match self.queue.try_send(outgoing) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The publisher turns this count into a gap in the sequence, so
                // receivers learn that they missed something.
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                Err(ClusterError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ClusterError::Unavailable(
                "the bus publisher has stopped".into(),
            )),
        }
    }

    fn subscribe(&self, handler: Arc<dyn BusHandler>) {
        if self.subscribed.set(()).is_err() {
            tracing::warn!(node = %self.node, "bus subscribed twice; the second handler is ignored");
            return;
        }
        let subscriber = Subscriber {
            client: self.client.clone(),
            options: self.options.clone(),
            node: self.node.clone(),
            incarnation: self.incarnation,
            handler,
            counters: self.counters.clone(),
            shutdown: self.shutdown.subscribe(),
        };
        tokio::spawn(subscriber.run());
    }

    fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }
}

/// The task that drains the publish queue into Redis.
struct Publisher {
    link: Link,
    channel: String,
    from: NodeId,
    incarnation: u64,
    counters: Arc<BusCounters>,
    backoff: Backoff,
}

impl Publisher {
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Outgoing>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut seq = 0u64;
        let mut dropped_seen = 0u64;
        // Events were lost (refused by a full queue, or their PUBLISH failed) and no
        // event has reached Redis since to say so.
        let mut gap = false;
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        // Once closing, the queue refuses new events and what it holds is sent once.
        let mut closing = false;
        loop {
            let received = if closing {
                queue.recv_many(&mut batch, PUBLISH_BATCH).await
            } else {
                tokio::select! {
                    received = queue.recv_many(&mut batch, PUBLISH_BATCH) => received,
                    _ = shutdown.changed() => {
                        closing = true;
                        queue.close();
                        continue;
                    }
                }
            };
            if received == 0 {
                break;
            }
            // Events refused since the last batch was taken were queued after
            // those of that batch and before these: the gap is before this batch.
            let dropped = self.counters.dropped.load(Ordering::Relaxed);
            if dropped != dropped_seen {
                dropped_seen = dropped;
                gap = true;
            }
            let mut pipe = redis::pipe();
            for (i, event) in batch.iter().enumerate() {
                seq += 1;
                pipe.cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(encode(
                        self.incarnation,
                        seq,
                        gap && i == 0,
                        &self.from,
                        &event.topic,
                        &event.payload,
                    ))
                    .ignore();
            }
            let pipe = &pipe;
            let sent = self
                .link
                .request(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
                .await;
            match sent {
                Ok(()) => {
                    gap = false;
                    self.backoff.reset();
                }
                Err(err) => {
                    // At-most-once: these events are gone; the next event sent
                    // carries the gap flag.
                    gap = true;
                    self.link.failed();
                    self.counters
                        .unsent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::warn!(node = %self.from, %err, events = batch.len(), "cannot publish on the bus");
                    if closing || queue.is_closed() {
                        // The bus was closed: do not linger retrying for nobody.
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(self.backoff.delay()) => {}
                        _ = shutdown.changed() => {
                            closing = true;
                            queue.close();
                        }
                    }
                }
            }
            batch.clear();
        }
    }
}

/// Why a subscription ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    Broken(String),
}

/// The task that keeps this node subscribed and hands events to the handler.
struct Subscriber {
    client: Client,
    options: RedisOptions,
    node: NodeId,
    incarnation: u64,
    handler: Arc<dyn BusHandler>,
    counters: Arc<BusCounters>,
    shutdown: watch::Receiver<bool>,
}

impl Subscriber {
    async fn run(mut self) {
        let mut backoff = Backoff::new(&self.options);
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            match self.subscribe_once(&mut backoff).await {
                Ended::Shutdown => return,
                Ended::Broken(why) => {
                    tracing::warn!(node = %self.node, %why, "bus subscription lost; reconnecting");
                }
            }
            let delay = backoff.delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.changed() => return,
            }
        }
    }

    /// Opens one subscription and delivers from it until it ends.
    async fn subscribe_once(&mut self, backoff: &mut Backoff) -> Ended {
        let (tx, mut inbox) = mpsc::channel::<PushInfo>(self.options.inbox.max(1));
        // Set by the connection's reader when the inbox was full: this node fell
        // behind, and the message was dropped.
        let overflowed = Arc::new(AtomicBool::new(false));
        let flag = overflowed.clone();
        let config = self
            .options
            .connection_config()
            .set_push_sender(move |info: PushInfo| {
                tx.try_send(info).map_err(|_| {
                    flag.store(true, Ordering::Relaxed);
                })
            });
        let channel = self.options.channel();
        let client = &self.client;
        let opened = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            conn.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let mut conn = tokio::select! {
            opened = opened => match opened {
                Ok(conn) => conn,
                Err(err) => return Ended::Broken(err.to_string()),
            },
            _ = self.shutdown.changed() => return Ended::Shutdown,
        };
        backoff.reset();
        self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(node = %self.node, %channel, "subscribed to the bus");
        // Live from here: whatever was published before is not coming.
        let mut sequences = Sequences::default();
        self.handler.lost();

        // A zero interval would make `interval` panic.
        let mut ping =
            tokio::time::interval(self.options.ping_interval.max(Duration::from_millis(1)));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                info = inbox.recv() => {
                    let Some(info) = info else {
                        return Ended::Broken("connection closed".into());
                    };
                    if let Err(why) = self.on_push(info, &channel, &mut sequences) {
                        return Ended::Broken(why);
                    }
                    if overflowed.load(Ordering::Relaxed) {
                        return Ended::Broken("fell behind: inbox full".into());
                    }
                }
                _ = ping.tick() => {
                    // The response timeout bounds this wait; a dead peer shows here.
                    if let Err(err) = redis::cmd("PING").query_async::<()>(&mut conn).await {
                        return Ended::Broken(format!("ping failed: {err}"));
                    }
                    if overflowed.load(Ordering::Relaxed) {
                        return Ended::Broken("fell behind: inbox full".into());
                    }
                }
                _ = self.shutdown.changed() => return Ended::Shutdown,
            }
        }
    }

    fn on_push(
        &self,
        info: PushInfo,
        channel: &str,
        sequences: &mut Sequences,
    ) -> Result<(), String> {
        match info.kind {
            PushKind::Message => {}
            PushKind::Disconnection => return Err("disconnected by Redis".into()),
            // Subscription confirmations and the like.
            _ => return Ok(()),
        }
        let mut data = info.data.into_iter();
        let (Some(Value::BulkString(on)), Some(Value::BulkString(message))) =
            (data.next(), data.next())
        else {
            tracing::warn!(node = %self.node, "unexpected message shape on the bus");
            return Ok(());
        };
        if on != channel.as_bytes() {
            return Ok(());
        }
        let wire = match decode(&message) {
            Ok(wire) => wire,
            Err(why) => {
                tracing::warn!(node = %self.node, why, "undecodable event on the bus");
                return Ok(());
            }
        };
        if wire.envelope.from == self.node {
            if wire.incarnation != self.incarnation {
                tracing::warn!(node = %self.node, "another process publishes under this node id");
            }
            return Ok(());
        }
        match sequences.place(&wire.envelope.from, wire.incarnation, wire.seq) {
            Place::Next if wire.gap => self.handler.lost(),
            Place::Next => {}
            Place::AfterGap => self.handler.lost(),
            Place::Stale => {
                tracing::warn!(node = %self.node, from = %wire.envelope.from, seq = wire.seq, "stale event skipped");
                return Ok(());
            }
        }
        self.handler.deliver(wire.envelope);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The lease.

static LEASE_ACQUIRE: OnceLock<Script> = OnceLock::new();
static LEASE_RELEASE: OnceLock<Script> = OnceLock::new();

fn script(cell: &'static OnceLock<Script>, source: &str) -> &'static Script {
    cell.get_or_init(|| Script::new(source))
}

/// One node's handle on the Redis routing lease. See the module docs for what its
/// epochs guarantee.
pub struct RedisLease {
    link: Link,
    node: NodeId,
    /// Node id and process incarnation: what the lease hash records as holder.
    token: String,
    lease_key: String,
    epoch_key: String,
    /// The highest epoch seen or given as floor: new terms start above it.
    floor: AtomicU64,
    /// The term held and until when, by this process's clock. A std mutex held only
    /// to read or replace it.
    held: Mutex<Option<(Epoch, Instant)>>,
}

impl RedisLease {
    /// Connects to Redis at `url` as `node` and checks that Redis answers.
    pub async fn connect(
        url: &str,
        node: impl Into<NodeId>,
        options: RedisOptions,
    ) -> Result<Arc<Self>, ClusterError> {
        let node = node.into();
        let link = Link::open(url, &options)?;
        link.ping().await?;
        Ok(Arc::new(Self {
            link,
            token: format!("{node}/{:016x}", new_incarnation()),
            node,
            lease_key: options.key("router-lease"),
            epoch_key: options.key("router-epoch"),
            floor: AtomicU64::new(0),
            held: Mutex::new(None),
        }))
    }

    /// The epoch of the last term this handle was granted, even if its ttl has run
    /// out by our clock: Redis may still hold it for us, and then it is a renewal.
    fn last_epoch(&self) -> u64 {
        self.held
            .lock()
            .expect("lease lock poisoned")
            .map_or(0, |(epoch, _)| epoch.0)
    }
}

#[async_trait::async_trait]
impl Lease for RedisLease {
    async fn acquire_or_renew(&self, ttl_ms: u64) -> Result<Option<Epoch>, ClusterError> {
        // PEXPIRE 0 would delete the lease outright.
        let ttl_ms = ttl_ms.max(1);
        // Counted from before the request: Redis starts its ttl later than this.
        let started = Instant::now();
        let mut invocation =
            script(&LEASE_ACQUIRE, include_str!("lease_acquire.lua")).key(&self.lease_key);
        invocation
            .key(&self.epoch_key)
            .arg(&self.token)
            .arg(&self.node)
            .arg(ttl_ms)
            .arg(self.last_epoch())
            .arg(self.floor.load(Ordering::Relaxed));
        let (status, epoch): (u8, u64) = self.link.invoke(&invocation).await?;
        self.floor.fetch_max(epoch, Ordering::Relaxed);
        let mut held = self.held.lock().expect("lease lock poisoned");
        if status == 0 {
            *held = None;
            return Ok(None);
        }
        if status == 2 {
            tracing::info!(node = %self.node, epoch, "routing lease acquired");
        }
        *held = Some((Epoch(epoch), started + Duration::from_millis(ttl_ms)));
        Ok(Some(Epoch(epoch)))
    }

    async fn release(&self) -> Result<(), ClusterError> {
        // Stop acting as holder first: if the call fails, the term still ends by ttl.
        *self.held.lock().expect("lease lock poisoned") = None;
        let mut invocation =
            script(&LEASE_RELEASE, include_str!("lease_release.lua")).key(&self.lease_key);
        invocation.arg(&self.token);
        let _deleted: u8 = self.link.invoke(&invocation).await?;
        Ok(())
    }

    fn current_epoch(&self) -> Option<Epoch> {
        match *self.held.lock().expect("lease lock poisoned") {
            Some((epoch, until)) if until > Instant::now() => Some(epoch),
            _ => None,
        }
    }

    fn raise_epoch_floor(&self, floor: Epoch) {
        self.floor.fetch_max(floor.0, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------
// Presence.

static PRESENCE_HEARTBEAT: OnceLock<Script> = OnceLock::new();
static PRESENCE_ALIVE: OnceLock<Script> = OnceLock::new();
static PRESENCE_LEAVE: OnceLock<Script> = OnceLock::new();

/// One node's handle on presence in Redis.
pub struct RedisPresence {
    link: Link,
    node: NodeId,
    agents_key: String,
    expiry_key: String,
}

impl RedisPresence {
    /// Connects to Redis at `url` as `node` and checks that Redis answers.
    pub async fn connect(
        url: &str,
        node: impl Into<NodeId>,
        options: RedisOptions,
    ) -> Result<Arc<Self>, ClusterError> {
        let link = Link::open(url, &options)?;
        link.ping().await?;
        Ok(Arc::new(Self {
            link,
            node: node.into(),
            agents_key: options.key("presence:agents"),
            expiry_key: options.key("presence:expiry"),
        }))
    }
}

#[async_trait::async_trait]
impl Presence for RedisPresence {
    async fn heartbeat(&self, agents_online: Vec<String>, ttl_ms: u64) -> Result<(), ClusterError> {
        let agents = serde_json::to_string(&agents_online).map_err(unavailable)?;
        let mut invocation = script(&PRESENCE_HEARTBEAT, include_str!("presence_heartbeat.lua"))
            .key(&self.agents_key);
        invocation
            .key(&self.expiry_key)
            .arg(&self.node)
            .arg(agents)
            .arg(ttl_ms);
        let _expires: u64 = self.link.invoke(&invocation).await?;
        Ok(())
    }

    async fn alive(&self) -> Result<Vec<NodePresence>, ClusterError> {
        let mut invocation =
            script(&PRESENCE_ALIVE, include_str!("presence_alive.lua")).key(&self.agents_key);
        invocation.key(&self.expiry_key);
        let flat: Vec<String> = self.link.invoke(&invocation).await?;
        let mut nodes: Vec<NodePresence> = flat
            .chunks_exact(2)
            .map(|pair| NodePresence {
                node: pair[0].clone(),
                agents: serde_json::from_str(&pair[1]).unwrap_or_else(|err| {
                    tracing::warn!(node = %pair[0], %err, "unreadable presence entry");
                    Vec::new()
                }),
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(nodes)
    }

    async fn leave(&self) -> Result<(), ClusterError> {
        let mut invocation =
            script(&PRESENCE_LEAVE, include_str!("presence_leave.lua")).key(&self.agents_key);
        invocation.key(&self.expiry_key).arg(&self.node);
        let _: u8 = self.link.invoke(&invocation).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_keeps_every_field() {
        for (from, topic, payload) in [
            ("node-a", "conversation-7", r#"{"type":"typing"}"#),
            ("node a/1", "with space\nand newline", "line one\nline two"),
            ("ñodé", "", ""),
            ("", "t", "😀 payload with PB1 0 0 0 0\n inside"),
        ] {
            let bytes = encode(0xc0ffee, 42, true, from, topic, payload);
            let wire = decode(&bytes).expect("decodes");
            assert_eq!(wire.incarnation, 0xc0ffee);
            assert_eq!(wire.seq, 42);
            assert!(wire.gap);
            assert_eq!(wire.envelope.from, from);
            assert_eq!(wire.envelope.topic, topic);
            assert_eq!(&*wire.envelope.payload, payload);
        }
    }

    #[test]
    fn wire_format_is_the_documented_one() {
        let bytes = encode(
            0x00c0ffee00c0ffee,
            42,
            false,
            "node-a",
            "conversation-7",
            "{}",
        );
        assert_eq!(
            bytes,
            b"PB1 00c0ffee00c0ffee 42 0 6 14\nnode-aconversation-7{}".to_vec()
        );
    }

    #[test]
    fn malformed_events_are_refused() {
        for bad in [
            &b""[..],
            b"PB1 1 1 0 1 1",
            b"PB2 1 1 0 0 0\n",
            b"PB1 zz 1 0 0 0\n",
            b"PB1 1 1 2 0 0\n",
            b"PB1 1 1 0 5 0\nabc",
            b"PB1 1 1 0 0 0 0\n",
            b"PB1 1 1 0 1 0\n\xc3\xb1",
            b"PB1 1 1 0 0 0\n\xff",
            b"PB1 1 1 0 18446744073709551615 18446744073709551615\nab",
        ] {
            assert!(decode(bad).is_err(), "{:?} should not decode", bad);
        }
    }

    #[test]
    fn sequences_find_gaps_and_new_processes() {
        let mut seqs = Sequences::default();
        assert_eq!(
            seqs.place("a", 1, 7),
            Place::Next,
            "first seen sets the baseline"
        );
        assert_eq!(seqs.place("a", 1, 8), Place::Next);
        assert_eq!(seqs.place("a", 1, 10), Place::AfterGap);
        assert_eq!(seqs.place("a", 1, 10), Place::Stale);
        assert_eq!(seqs.place("a", 1, 11), Place::Next);
        assert_eq!(
            seqs.place("b", 5, 3),
            Place::Next,
            "publishers are tracked apart"
        );
        assert_eq!(
            seqs.place("a", 2, 1),
            Place::Next,
            "a restarted process starts at 1"
        );
        assert_eq!(
            seqs.place("a", 3, 4),
            Place::AfterGap,
            "missed the start of a new process"
        );
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let options = RedisOptions {
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(400),
            ..RedisOptions::default()
        };
        let mut backoff = Backoff::new(&options);
        let steps: Vec<Duration> = (0..5).map(|_| backoff.delay()).collect();
        for (delay, step) in steps.iter().zip([100, 200, 400, 400, 400]) {
            let step = Duration::from_millis(step);
            assert!(
                *delay >= step / 2 && *delay <= step,
                "{delay:?} not in {step:?}/2..={step:?}"
            );
        }
        backoff.reset();
        assert!(backoff.delay() <= Duration::from_millis(100));
    }
}
