-- The transcript store's schema on PostgreSQL, table for table the SQLite one
-- (migrations/sqlite/0001_transcripts.sql): enums as their snake_case serde names, JSON
-- as TEXT, ids as TEXT, times as Unix milliseconds. Where the types differ, why:
--   * ids, logins and keys are `COLLATE "C"`: byte order, like SQLite's BINARY, so
--     "ordered by id/login/key" means the same on both backends whatever locale the
--     database was created with (and the writer locks conversations in that order);
--   * row ids are `BIGINT GENERATED ALWAYS AS IDENTITY` (SQLite's INTEGER PRIMARY KEY),
--     with the default CACHE 1 so ids follow insertion order across sessions: every
--     insert for a conversation happens under its row lock, so "oldest first by id"
--     holds across nodes;
--   * `capacity` is BIGINT: an account's capacity is a u32, which INTEGER cannot hold
--     in full; BLOB is BYTEA.

-- One row per conversation. `last_seq` and `last_public_seq` live here so that an
-- append bumps one row (`UPDATE … SET last_seq = last_seq + 1 … RETURNING`) in the same
-- transaction that inserts the entry: the row lock that UPDATE takes serialises
-- appends to one conversation across every node, which keeps numbering gap-free.
CREATE TABLE conversations (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    player_id       TEXT COLLATE "C" NOT NULL,
    -- The whole PlayerCard as JSON: its attributes are the casino's, not ours.
    player_card     TEXT    NOT NULL,
    department      TEXT    NOT NULL,
    language        TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    agent_id        TEXT COLLATE "C",
    last_seq        BIGINT  NOT NULL DEFAULT 0,
    last_public_seq BIGINT  NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    closed_at       BIGINT,
    close_reason    TEXT,
    rating          INTEGER,
    rating_comment  TEXT
);

-- A player's history, newest first.
CREATE INDEX conversations_player ON conversations (player_id, created_at);
-- Open conversations after a restart, and listings by state.
CREATE INDEX conversations_state ON conversations (state, created_at);
-- An agent's conversations.
CREATE INDEX conversations_agent ON conversations (agent_id, created_at);
-- Unfiltered listings, newest first.
CREATE INDEX conversations_created ON conversations (created_at);
-- Recent handle times, newest close first.
CREATE INDEX conversations_closed ON conversations (closed_at);

-- Transcript entries: messages, private notes and lifecycle events shown in the chat.
CREATE TABLE entries (
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    seq             BIGINT  NOT NULL,
    prev_public     BIGINT  NOT NULL,
    kind            TEXT    NOT NULL,
    sender_role     TEXT    NOT NULL,
    sender_id       TEXT COLLATE "C" NOT NULL,
    sender_name     TEXT,
    body            TEXT    NOT NULL,
    client_id       TEXT COLLATE "C",
    event           TEXT,
    at              BIGINT  NOT NULL,
    -- Gap-free, one entry per sequence number; also the paging index.
    PRIMARY KEY (conversation_id, seq)
);

-- Idempotent resends: one entry per (conversation, sender, client id), with no time
-- window. Server-written events carry no client id and are not constrained. The
-- writer relies on this name to tell a resend that raced past its check apart from
-- any other unique violation.
CREATE UNIQUE INDEX entries_client_id
    ON entries (conversation_id, sender_id, client_id)
    WHERE client_id IS NOT NULL;

-- KPI lifecycle events (queued, offered, assigned, closed…), oldest first by id.
CREATE TABLE lifecycle_events (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    kind            TEXT    NOT NULL,
    agent_id        TEXT COLLATE "C",
    -- Free-form JSON.
    detail          TEXT    NOT NULL,
    at              BIGINT  NOT NULL
);

CREATE INDEX lifecycle_events_conversation ON lifecycle_events (conversation_id, kind, at);

-- Hand-offs from one agent to another agent or a department, oldest first by id.
CREATE TABLE handoffs (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    from_agent      TEXT COLLATE "C" NOT NULL,
    to_target       TEXT    NOT NULL,
    note            TEXT,
    outcome         TEXT    NOT NULL,
    at              BIGINT  NOT NULL
);

CREATE INDEX handoffs_conversation ON handoffs (conversation_id, id);

-- Agent and supervisor accounts.
CREATE TABLE agents (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    -- Argon2 PHC string.
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    -- JSON arrays of strings.
    languages     TEXT    NOT NULL,
    departments   TEXT    NOT NULL,
    capacity      BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL
);

-- The server's signing secrets, created once and shared by every node.
CREATE TABLE secrets (
    name       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    value      BYTEA  NOT NULL,
    created_at BIGINT NOT NULL
);
