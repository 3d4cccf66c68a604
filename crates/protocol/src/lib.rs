//! The Pitboss wire protocol: every frame a client and the server exchange over the
//! WebSocket, the ids they carry, the stable error and close codes, and the limits.
//!
//! This crate owns the shape of the wire and nothing else: no I/O, no policy. Both
//! the server and the load generator decode and encode through it, and
//! `docs/protocol.md` is its human-readable twin.

mod codes;
mod frames;
#[doc(hidden)]
pub mod fuzzing;
mod ids;
pub mod limits;

pub use codes::{CloseCode, ErrorCode};
pub use frames::*;
pub use ids::{AgentId, ConversationId, PlayerId, Seq};

/// The protocol version this build speaks. A client names the version it speaks in
/// its `hello`; a server that does not speak it answers `unsupported_version` and
/// closes with [`CloseCode::ProtocolError`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a text frame could not be turned into a [`ClientFrame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// `bad_frame` for malformed JSON or a missing field, `unknown_type` for a
    /// well-formed frame whose `type` this version does not know.
    pub code: ErrorCode,
    /// A human-readable explanation, safe to show to the client.
    pub message: String,
    /// The refused frame's `type`, when it is a known one.
    pub frame: Option<String>,
    /// Its `conversation`, when that field is a conversation id.
    pub conversation: Option<ConversationId>,
    /// Its `client_id`, when that field is a string of 1 to
    /// [`MAX_CLIENT_ID_BYTES`](limits::MAX_CLIENT_ID_BYTES) bytes: a client can
    /// tell which of its pending sends was refused.
    pub client_id: Option<String>,
}

impl DecodeError {
    fn new(code: ErrorCode, message: String) -> Self {
        DecodeError {
            code,
            message,
            frame: None,
            conversation: None,
            client_id: None,
        }
    }

    /// The `error` frame that answers the refused frame, naming what it can.
    pub fn into_frame(self) -> ServerFrame {
        ServerFrame::Error {
            code: self.code,
            message: self.message,
            frame: self.frame,
            conversation: self.conversation,
            client_id: self.client_id,
        }
    }
}

/// Decodes one client text frame. Never panics, whatever the input.
pub fn decode_client(text: &str) -> Result<ClientFrame, DecodeError> {
    // A frame is one JSON object. Without this check a JSON array would decode too
    // (serde takes `["ping"]` for a tagged enum), and `["fly"]` would pass for a
    // well-formed frame of an unknown type.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(DecodeError::new(
            ErrorCode::BadFrame,
            "a frame must be one JSON object".into(),
        ));
    }
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(frame) => Ok(frame),
        Err(err) => {
            // Tell an unknown `type` apart from broken JSON: a client talking to a
            // newer or older server wants to know which of the two it did.
            let code = match serde_json::from_str::<TypeOnly>(text) {
                Ok(t) if !ClientFrame::KNOWN_TYPES.contains(&t.kind.as_str()) => {
                    ErrorCode::UnknownType
                }
                _ => ErrorCode::BadFrame,
            };
            let mut refused = DecodeError::new(code, err.to_string());
            // What can still be read of it, each field on its own (the others
            // skipped, whatever they hold).
            if let Ok(named) = serde_json::from_str::<Named>(text) {
                let string = |v: Option<serde_json::Value>| match v {
                    Some(serde_json::Value::String(s)) => Some(s),
                    _ => None,
                };
                refused.frame =
                    string(named.kind).filter(|k| ClientFrame::KNOWN_TYPES.contains(&k.as_str()));
                refused.conversation = string(named.conversation).and_then(|c| c.parse().ok());
                refused.client_id = string(named.client_id)
                    .filter(|c| !c.is_empty() && c.len() <= limits::MAX_CLIENT_ID_BYTES);
            }
            Err(refused)
        }
    }
}

/// Encodes one server frame as JSON text.
pub fn encode_server(frame: &ServerFrame) -> String {
    // Serialising these plain data types cannot fail: no maps with non-string keys,
    // no custom serialisers that return errors.
    serde_json::to_string(frame).expect("server frames always serialise")
}

/// The fields an `error` frame echoes, read leniently.
#[derive(serde::Deserialize)]
struct Named {
    #[serde(rename = "type", default)]
    kind: Option<serde_json::Value>,
    #[serde(default)]
    conversation: Option<serde_json::Value>,
    #[serde(default)]
    client_id: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: String,
}
