-- The transcript store's schema. Plain types only (TEXT, BIGINT, INTEGER, BLOB) so the
-- PostgreSQL backend can mirror it table for table: there BIGINT stays BIGINT, BLOB
-- becomes BYTEA, and the `INTEGER PRIMARY KEY` row ids become
-- `BIGINT GENERATED ALWAYS AS IDENTITY`. Enums are stored as their snake_case serde
-- names, JSON as TEXT, ids as TEXT, times as Unix milliseconds.

-- One row per conversation. `last_seq` and `last_public_seq` live here so that an
-- append reads and bumps one row in the same transaction that inserts the entry:
-- that is what makes sequence numbers gap-free without a table scan.
CREATE TABLE conversations (
    id              TEXT    NOT NULL PRIMARY KEY,
    player_id       TEXT    NOT NULL,
    -- The whole PlayerCard as JSON: its attributes are the casino's, not ours.
    player_card     TEXT    NOT NULL,
    department      TEXT    NOT NULL,
    language        TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    agent_id        TEXT,
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
    conversation_id TEXT    NOT NULL REFERENCES conversations (id),
    seq             BIGINT  NOT NULL,
    prev_public     BIGINT  NOT NULL,
    kind            TEXT    NOT NULL,
    sender_role     TEXT    NOT NULL,
    sender_id       TEXT    NOT NULL,
    sender_name     TEXT,
    body            TEXT    NOT NULL,
    client_id       TEXT,
    event           TEXT,
    at              BIGINT  NOT NULL,
    -- Gap-free, one entry per sequence number; also the paging index.
    PRIMARY KEY (conversation_id, seq)
);

-- Idempotent resends: one entry per (conversation, sender, client id), with no time
-- window. Server-written events carry no client id and are not constrained.
CREATE UNIQUE INDEX entries_client_id
    ON entries (conversation_id, sender_id, client_id)
    WHERE client_id IS NOT NULL;

-- KPI lifecycle events (queued, offered, assigned, closed…), oldest first by id.
CREATE TABLE lifecycle_events (
    id              INTEGER NOT NULL PRIMARY KEY,
    conversation_id TEXT    NOT NULL REFERENCES conversations (id),
    kind            TEXT    NOT NULL,
    agent_id        TEXT,
    -- Free-form JSON.
    detail          TEXT    NOT NULL,
    at              BIGINT  NOT NULL
);

CREATE INDEX lifecycle_events_conversation ON lifecycle_events (conversation_id, kind, at);

-- Hand-offs from one agent to another agent or a department, oldest first by id.
CREATE TABLE handoffs (
    id              INTEGER NOT NULL PRIMARY KEY,
    conversation_id TEXT    NOT NULL REFERENCES conversations (id),
    from_agent      TEXT    NOT NULL,
    to_target       TEXT    NOT NULL,
    note            TEXT,
    outcome         TEXT    NOT NULL,
    at              BIGINT  NOT NULL
);

CREATE INDEX handoffs_conversation ON handoffs (conversation_id, id);

-- Agent and supervisor accounts.
CREATE TABLE agents (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    -- Argon2 PHC string.
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    -- JSON arrays of strings.
    languages     TEXT    NOT NULL,
    departments   TEXT    NOT NULL,
    capacity      INTEGER NOT NULL,
    created_at    BIGINT  NOT NULL
);

-- The server's signing secrets, created once and shared by every node.
CREATE TABLE secrets (
    name       TEXT   NOT NULL PRIMARY KEY,
    value      BLOB   NOT NULL,
    created_at BIGINT NOT NULL
);
