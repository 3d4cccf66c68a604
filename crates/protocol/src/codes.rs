//! Stable error codes (in `error` frames) and WebSocket close codes. Their spelling
//! and numbers never change within a protocol version.

use serde::{Deserialize, Serialize};

/// Why a client frame was refused. The connection stays open after an `error`
/// frame unless a close frame follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, or lacks a field its type requires.
    BadFrame,
    /// The frame's `type` is not one this protocol version knows.
    UnknownType,
    /// The first frame was not `hello`, or `hello` came twice.
    HelloRequired,
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion,
    /// The credentials in `hello` are missing, forged, or for no known account.
    Unauthorized,
    /// The player token has expired: fetch a fresh one and reconnect.
    TokenExpired,
    /// The caller may not do this (someone else's conversation, a player command
    /// from an agent, a supervisor command from an agent…).
    Forbidden,
    /// No such conversation, no such agent (transfer target), or no agent serves
    /// that department.
    NotFound,
    /// The conversation is not in a state that allows this (closed, not offered to
    /// you, already rated…).
    InvalidState,
    /// A message or note is longer than `max_text_chars` (empty text is
    /// `invalid_field`).
    TextTooLong,
    /// A field is out of range: empty text, an empty or over-long client id, a
    /// score outside 1–5, an over-long note or reason, a malformed department or
    /// language tag.
    InvalidField,
    /// This client id was already used in this conversation with other text.
    Conflict,
    /// Too many frames: this one was dropped. Slow down.
    RateLimited,
    /// The server cannot take this now (its write queue is full, or its store is
    /// unavailable); nothing was stored: retry later with the same client id.
    Overloaded,
    /// The player already has as many open conversations as allowed.
    TooManyConversations,
    /// An unexpected server fault. Nothing was acknowledged. (Reserved: this
    /// version reports store failures as `overloaded`.)
    Internal,
}

impl ErrorCode {
    /// The code as it is spelled on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::TooManyConversations => "too_many_conversations",
            ErrorCode::Internal => "internal",
        }
    }
}

/// WebSocket close codes the server uses. 1000–1015 are RFC 6455's; 4000–4999 are
/// Pitboss's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// The client asked to close, or the server is done with the connection.
    Normal = 1000,
    /// A frame larger than `max_frame_bytes`.
    MessageTooBig = 1009,
    /// The node is shutting down or draining: reconnect (to any node) and resume.
    Restart = 1012,
    /// The node holds as many connections as it may: reconnect after a backoff
    /// (to another node, if there is one).
    Overloaded = 1013,
    /// `hello` missing, malformed, late, or of an unsupported version.
    ProtocolError = 4000,
    /// Credentials refused in `hello`.
    AuthFailed = 4001,
    /// The player token expired: fetch a fresh one, reconnect, resume.
    TokenExpired = 4002,
    /// The agent signed out (`sign_out`, on this connection or another of
    /// theirs): do not reconnect; show the login.
    SignedOut = 4003,
    /// The connection did not read its frames fast enough and its outbound queue
    /// filled: reconnect and resume from the last sequence seen.
    SlowConsumer = 4008,
    /// The client broke a rule that is not about rate: it sent a binary frame, or
    /// a frame that breaks the WebSocket protocol (invalid UTF-8 in a text frame,
    /// bad framing).
    PolicyViolation = 4009,
    /// The client kept sending after `rate_limited` errors.
    RateLimited = 4029,
}

impl CloseCode {
    /// The numeric code sent in the close frame.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The short reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::Restart => "restart",
            CloseCode::Overloaded => "overloaded",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::AuthFailed => "auth_failed",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::SignedOut => "signed_out",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::PolicyViolation => "policy_violation",
            CloseCode::RateLimited => "rate_limited",
        }
    }
}
