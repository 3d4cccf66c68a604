//! The bare reference relay: the limit of the stack Pitboss is built on (tokio and
//! tungstenite) with nothing of Pitboss in it. It pairs two sockets and forwards
//! their frames verbatim, and for the churn scenario it runs the smallest possible
//! FIFO dispatcher. It stores nothing, authenticates nobody and parses no relayed
//! frame: whatever Pitboss costs above it is the price of its guarantees.
//!
//! Routes (the HTTP path of the WebSocket upgrade):
//! - `/pair/{key}`: the first socket with a key waits; the second is paired with it
//!   and from then on every text frame of one is sent to the other.
//! - `/churn`: the first frame says who the socket is. `{"type":"agent","capacity":k}`
//!   makes an agent with `k` slots; `{"type":"start"}` makes a waiting player, who is
//!   told `{"type":"queued",…}` when no slot is free, and `{"type":"assigned",…}`
//!   (as is the agent) when one is. The agent ends a conversation with
//!   `{"type":"close","conversation":…}`, and the player is told `{"type":"closed",…}`.

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Buffers of every socket, in bytes. Small, as Pitboss's are, so that the idle
/// memory comparison is about the servers and not about buffer sizes.
const BUFFER_BYTES: usize = 4 * 1024;

/// Largest frame accepted, as Pitboss's `MAX_FRAME_BYTES`.
const MAX_FRAME_BYTES: usize = pitboss_protocol::limits::MAX_FRAME_BYTES;

/// Frames queued to one churn socket before it counts as a slow consumer. Churn
/// frames are rare (a few per conversation), so a full queue means a stuck client.
const CHURN_QUEUE: usize = 64;

type Socket = WebSocketStream<TcpStream>;

/// What every connection shares.
#[derive(Default)]
struct Relay {
    /// Sockets waiting for their partner, by key. A std mutex: the critical
    /// sections are one map operation and never await.
    waiting: Mutex<HashMap<String, Socket>>,
    /// The churn dispatcher; same reasoning for the std mutex.
    dispatch: Mutex<Dispatch>,
}

/// Serves the relay on an already-bound listener until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let relay = Arc::new(Relay::default());
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // Out of descriptors or a reset before accept: not fatal for a
                // server; the client sees a failed connect and counts it.
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            if let Err(err) = connection(relay, stream).await {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(BUFFER_BYTES)
        .write_buffer_size(BUFFER_BYTES)
        .max_write_buffer_size(BUFFER_BYTES * 16)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

async fn connection(relay: Arc<Relay>, stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut path = String::new();
    let socket = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        // The handshake callback's error type is tungstenite's; nothing is refused here.
        #[allow(clippy::result_large_err)]
        |req: &Request, res: Response| {
            path = req.uri().path().to_string();
            Ok(res)
        },
        Some(config()),
    )
    .await?;
    if let Some(key) = path.strip_prefix("/pair/") {
        pair(&relay, key.to_string(), socket).await;
    } else if path == "/churn" {
        churn(&relay, socket).await;
    }
    Ok(())
}

/// Parks the socket until its partner arrives, or forwards between the two.
async fn pair(relay: &Relay, key: String, socket: Socket) {
    let partner = {
        let mut waiting = relay.waiting.lock().expect("waiting map poisoned");
        match waiting.remove(&key) {
            Some(first) => first,
            None => {
                // The first of a pair: its task ends here and the second one's
                // task will drive both, so a parked socket costs no task.
                waiting.insert(key, socket);
                return;
            }
        }
    };
    let (mut a_tx, mut a_rx) = partner.split();
    let (mut b_tx, mut b_rx) = socket.split();
    // Either direction ending (close or error) ends the pair: the other socket is
    // dropped, which closes it.
    tokio::select! {
        _ = forward(&mut a_rx, &mut b_tx) => {}
        _ = forward(&mut b_rx, &mut a_tx) => {}
    }
}

async fn forward(
    from: &mut futures_util::stream::SplitStream<Socket>,
    to: &mut futures_util::stream::SplitSink<Socket, Message>,
) {
    while let Some(Ok(msg)) = from.next().await {
        if msg.is_close() {
            return;
        }
        // Waiting on the partner's socket is the backpressure: a slow reader
        // slows its sender, and no queue grows in between. Pings are answered by
        // tungstenite itself.
        if (msg.is_text() || msg.is_binary()) && to.send(msg).await.is_err() {
            return;
        }
    }
}

/// The churn dispatcher's state: a FIFO of waiting players and the agents' free
/// slots. It holds only channel ends; nothing in it awaits.
#[derive(Default)]
struct Dispatch {
    next_conversation: u64,
    next_connection: u64,
    waiting: VecDeque<Waiting>,
    agents: HashMap<u64, AgentSlots>,
    /// Open conversations: the player's channel and the owning agent.
    open: HashMap<String, (mpsc::Sender<String>, u64)>,
}

struct Waiting {
    conversation: String,
    connection: u64,
    player: mpsc::Sender<String>,
}

struct AgentSlots {
    tx: mpsc::Sender<String>,
    free: u32,
}

impl Dispatch {
    /// Gives waiting players to free agents, first come first served, each to the
    /// agent with the most free slots.
    fn assign(&mut self) {
        while !self.waiting.is_empty() {
            let Some((&agent, slots)) = self
                .agents
                .iter_mut()
                .filter(|(_, a)| a.free > 0)
                .max_by_key(|(_, a)| a.free)
            else {
                return;
            };
            let Some(w) = self.waiting.pop_front() else {
                return;
            };
            slots.free -= 1;
            let frame = json!({"type": "assigned", "conversation": w.conversation}).to_string();
            deliver(&slots.tx, frame.clone());
            deliver(&w.player, frame);
            self.open.insert(w.conversation, (w.player, agent));
        }
    }
}

/// A full queue means the client stopped reading; the frame is dropped and the
/// load generator, which waits for every frame it is owed, reports the loss.
fn deliver(tx: &mpsc::Sender<String>, frame: String) {
    if tx.try_send(frame).is_err() {
        tracing::warn!("churn client not reading: frame dropped");
    }
}

async fn churn(relay: &Relay, socket: Socket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<String>(CHURN_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
    });
    let me = {
        let mut d = relay.dispatch.lock().expect("dispatch poisoned");
        d.next_connection += 1;
        d.next_connection
    };
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let mut d = relay.dispatch.lock().expect("dispatch poisoned");
        match frame["type"].as_str() {
            Some("agent") => {
                let free = frame["capacity"].as_u64().unwrap_or(1) as u32;
                d.agents.insert(
                    me,
                    AgentSlots {
                        tx: tx.clone(),
                        free,
                    },
                );
                d.assign();
            }
            Some("start") => {
                d.next_conversation += 1;
                let conversation = format!("c{}", d.next_conversation);
                let position = d.waiting.len() + 1;
                deliver(
                    &tx,
                    json!({"type": "queued", "conversation": conversation, "position": position})
                        .to_string(),
                );
                d.waiting.push_back(Waiting {
                    conversation,
                    connection: me,
                    player: tx.clone(),
                });
                d.assign();
            }
            Some("close") => {
                let conversation = frame["conversation"].as_str().unwrap_or_default();
                if let Some((player, agent)) = d.open.remove(conversation) {
                    deliver(
                        &player,
                        json!({"type": "closed", "conversation": conversation}).to_string(),
                    );
                    if let Some(a) = d.agents.get_mut(&agent) {
                        a.free += 1;
                    }
                    d.assign();
                }
            }
            _ => {}
        }
    }
    {
        let mut d = relay.dispatch.lock().expect("dispatch poisoned");
        d.agents.remove(&me);
        d.waiting.retain(|w| w.connection != me);
    }
    drop(tx);
    if writer.await.is_err() {
        tracing::debug!("churn writer panicked");
    }
}
