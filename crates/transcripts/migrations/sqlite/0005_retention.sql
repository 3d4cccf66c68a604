-- Retention: the purge asks for the closed conversations that closed before a cutoff,
-- longest closed first, a chunk at a time (`state = 'closed' AND closed_at < ?
-- ORDER BY closed_at, id LIMIT ?`). Without this index SQLite answers from
-- `conversations_state` and sorts every closed conversation for each chunk; with it,
-- each chunk reads only the ids it deletes, from the index alone.
CREATE INDEX IF NOT EXISTS conversations_retention ON conversations (state, closed_at, id);
