//! What goes over the socket for each target: opening a WebSocket from a chosen
//! loopback source address, the Pitboss `hello`, the Socket.IO (Engine.IO 4)
//! framing, and the one-line encodings of the frames the scenarios send. It keeps
//! no state about conversations; the scenarios do.

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use pitboss_protocol::{Auth, ClientFrame, ServerFrame, PROTOCOL_VERSION};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// How long one step of a handshake (connect, `welcome`, an ack) may take before
/// the connection counts as failed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Client sockets per source address. The kernel gives each local address about
/// 28,000 ephemeral ports; staying well below leaves room for TIME_WAIT.
pub const PER_SOURCE: usize = 10_000;

/// The client socket's buffers, in bytes. Small, because one generator process
/// holds up to 18,000 sockets; a larger frame grows the buffer as needed.
const CLIENT_BUFFER_BYTES: usize = 4 * 1024;

/// The Socket.IO handshake path, WebSocket transport only (no long polling).
pub const SOCKETIO_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// Opens WebSockets to one server, spreading them over loopback source addresses.
#[derive(Debug)]
pub struct Dialer {
    addr: SocketAddr,
    sources: Vec<Ipv4Addr>,
    /// Connections opened so far; picks the source address.
    opened: AtomicUsize,
}

impl Dialer {
    /// A dialer to `addr` from `sources` in turn, `PER_SOURCE` sockets each. An
    /// empty list lets the kernel choose.
    pub fn new(addr: SocketAddr, sources: Vec<Ipv4Addr>) -> Self {
        Self {
            addr,
            sources,
            opened: AtomicUsize::new(0),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens a WebSocket to `path` (such as `/ws`).
    pub async fn connect(&self, path: &str) -> anyhow::Result<Ws> {
        let n = self.opened.fetch_add(1, Ordering::Relaxed);
        let socket = TcpSocket::new_v4()?;
        if !self.sources.is_empty() {
            let source = self.sources[(n / PER_SOURCE) % self.sources.len()];
            socket
                .bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))
                .with_context(|| format!("binding {source}"))?;
        }
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.connect(self.addr))
            .await
            .context("connect timed out")??;
        stream.set_nodelay(true)?;
        let url = format!("ws://{}{}", self.addr, path);
        let (ws, _) = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_tungstenite::client_async_with_config(url, stream, Some(client_config())),
        )
        .await
        .context("WebSocket handshake timed out")??;
        Ok(ws)
    }
}

/// `count` source addresses from 127.0.0.`first` on (all on loopback).
pub fn loopback_sources(first: u8, count: usize) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|i| Ipv4Addr::new(127, 0, 0, first.saturating_add(i as u8)))
        .collect()
}

fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(CLIENT_BUFFER_BYTES)
        .write_buffer_size(CLIENT_BUFFER_BYTES)
        .max_write_buffer_size(64 * 1024 * 1024)
}

/// Sends one text frame now.
pub async fn send_text(ws: &mut Ws, text: String) -> anyhow::Result<()> {
    ws.send(Message::Text(text.into())).await?;
    Ok(())
}

/// The next text frame, answering Socket.IO pings on the way. Fails on close or
/// after `HANDSHAKE_TIMEOUT`: only handshakes use it.
pub async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        let msg = tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.next())
            .await
            .context("timed out waiting for a frame")?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                if t.as_str() == "2" {
                    send_text(ws, "3".into()).await?;
                    continue;
                }
                return Ok(t.as_str().to_string());
            }
            Some(Ok(Message::Close(f))) => bail!("closed by the server: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

/// The next Pitboss frame; an `error` frame fails.
pub async fn next_frame(ws: &mut Ws) -> anyhow::Result<ServerFrame> {
    let text = next_text(ws).await?;
    let frame: ServerFrame =
        serde_json::from_str(&text).with_context(|| format!("undecodable frame: {text}"))?;
    if let ServerFrame::Error { code, message, .. } = &frame {
        bail!("error frame: {} {message}", code.as_str());
    }
    Ok(frame)
}

/// Encodes a client frame.
pub fn encode(frame: &ClientFrame) -> String {
    serde_json::to_string(frame).expect("client frames always serialise")
}

/// Pitboss: `hello` with these credentials, then waits for `welcome`.
pub async fn pitboss_hello(ws: &mut Ws, auth: Auth) -> anyhow::Result<()> {
    send_text(
        ws,
        encode(&ClientFrame::Hello {
            protocol: PROTOCOL_VERSION,
            auth,
        }),
    )
    .await?;
    loop {
        if let ServerFrame::Welcome { .. } = next_frame(ws).await? {
            return Ok(());
        }
    }
}

/// Pitboss: an anonymous visitor's credentials.
pub fn visitor() -> Auth {
    Auth::Visitor {
        token: None,
        name: Some("Load".into()),
        language: Some("en".into()),
    }
}

/// Socket.IO: waits for the Engine.IO open packet, connects to the main
/// namespace, and waits for the namespace's answer.
pub async fn sio_open(ws: &mut Ws) -> anyhow::Result<()> {
    let open = next_text(ws).await?;
    if !open.starts_with('0') {
        bail!("expected an Engine.IO open packet, got {open}");
    }
    send_text(ws, "40".into()).await?;
    let connected = next_text(ws).await?;
    if !connected.starts_with("40") {
        bail!("expected a namespace connect, got {connected}");
    }
    Ok(())
}

/// Socket.IO: an event packet, with an ack id when one is wanted.
pub fn sio_event(ack: Option<u64>, event: &str, args: &[serde_json::Value]) -> String {
    let mut packet = vec![serde_json::Value::String(event.to_string())];
    packet.extend_from_slice(args);
    let body = serde_json::Value::Array(packet).to_string();
    match ack {
        Some(id) => format!("42{id}{body}"),
        None => format!("42{body}"),
    }
}

/// A Socket.IO packet as the scenarios care about it.
#[derive(Debug)]
pub enum SioPacket {
    /// Engine.IO ping: answer `3`.
    Ping,
    /// An event and its first argument.
    Event(String, serde_json::Value),
    /// The server acknowledged the packet with this ack id.
    Ack(u64),
    /// Anything else (namespace packets, noop).
    Other,
}

/// Decodes a Socket.IO text frame.
pub fn sio_parse(text: &str) -> SioPacket {
    if text == "2" {
        return SioPacket::Ping;
    }
    if let Some(rest) = text.strip_prefix("42") {
        // An event from the server carries no ack id here: the body starts at '['.
        if let Ok(serde_json::Value::Array(mut parts)) = serde_json::from_str(rest) {
            if parts.is_empty() {
                return SioPacket::Other;
            }
            let data = if parts.len() > 1 {
                parts.swap_remove(1)
            } else {
                serde_json::Value::Null
            };
            if let serde_json::Value::String(name) = parts.swap_remove(0) {
                return SioPacket::Event(name, data);
            }
        }
        return SioPacket::Other;
    }
    if let Some(rest) = text.strip_prefix("43") {
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(id) = digits.parse() {
            return SioPacket::Ack(id);
        }
    }
    SioPacket::Other
}

/// Socket.IO: emits `join(room)` with an ack and waits for the ack.
pub async fn sio_join(ws: &mut Ws, ack_id: u64, room: &str) -> anyhow::Result<()> {
    send_text(
        ws,
        sio_event(
            Some(ack_id),
            "join",
            &[serde_json::Value::String(room.into())],
        ),
    )
    .await?;
    loop {
        if let SioPacket::Ack(id) = sio_parse(&next_text(ws).await?) {
            if id == ack_id {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketio_packets_decode() {
        assert!(matches!(sio_parse("2"), SioPacket::Ping));
        assert!(matches!(sio_parse("437[]"), SioPacket::Ack(7)));
        match sio_parse(r#"42["message",{"client_id":"a"}]"#) {
            SioPacket::Event(name, data) => {
                assert_eq!(name, "message");
                assert_eq!(data["client_id"], "a");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            sio_event(Some(3), "join", &["r".into()]),
            r#"423["join","r"]"#
        );
    }
}
