//! Limits every client must respect. The server enforces each one; the numbers are
//! part of the protocol and are repeated in the `welcome` frame.

/// Largest text frame the server reads, in bytes. A larger frame closes the
/// connection with [`crate::CloseCode::MessageTooBig`].
pub const MAX_FRAME_BYTES: usize = 16 * 1024;

/// Longest chat message or note, in Unicode scalar values. Longer text is refused
/// with `text_too_long`; the connection stays open.
pub const MAX_TEXT_CHARS: usize = 4000;

/// Longest client message id, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 64;

/// Longest close reason, rating comment, transfer note, department or language tag.
pub const MAX_SHORT_TEXT_CHARS: usize = 1000;

/// Messages a resume replays per page. Gaps larger than this arrive as several
/// pages, one after the other, before `resumed`.
pub const RESUME_PAGE: usize = 200;

/// Frames a connection may send per second, sustained; see [`BURST_FRAMES`].
pub const FRAMES_PER_SECOND: u32 = 20;

/// Frames a connection may send in one burst above the sustained rate.
pub const BURST_FRAMES: u32 = 40;

/// Frames refused for rate in a row before the connection is closed with
/// [`crate::CloseCode::RateLimited`].
pub const MAX_RATE_STRIKES: u32 = 50;

/// How long a fresh connection has to send `hello`, in milliseconds.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;

/// Chat messages one player may send per minute, sustained, over all of their
/// connections to one node; see [`PLAYER_MESSAGE_BURST`]. A person chatting writes
/// a line every few seconds at most; one every two seconds leaves room for that
/// while a bot opening five tabs still gets one player's budget, not five.
pub const PLAYER_MESSAGES_PER_MINUTE: u32 = 30;

/// Chat messages one player may send at once above the sustained rate: several
/// short lines in a row, or the unacknowledged messages a client resends after a
/// reconnect.
pub const PLAYER_MESSAGE_BURST: u32 = 10;

/// Typing indicators one player may send per minute, sustained, over all of their
/// connections to one node. The widget sends one every three seconds at most while
/// the player types, and one when they stop; one a second leaves room for several
/// tabs. Over the limit they are dropped silently: they are droppable anyway.
pub const PLAYER_TYPING_PER_MINUTE: u32 = 60;

/// Typing indicators one player may send at once above the sustained rate.
pub const PLAYER_TYPING_BURST: u32 = 10;
