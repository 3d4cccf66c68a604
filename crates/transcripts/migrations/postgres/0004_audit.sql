-- The audit log, as in SQLite (migrations/sqlite/0004_audit.sql): who read a
-- transcript or a player's history, who changed an account or the catalog.
-- Append-only; listed newest first by id, filtered by actor, action, target and
-- time. `detail` is free-form JSON and never holds a password or a message's text.
CREATE TABLE audit_log (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     BIGINT NOT NULL,
    actor  TEXT COLLATE "C" NOT NULL,
    action TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    detail TEXT   NOT NULL
);

CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_target ON audit_log (target, id);
CREATE INDEX audit_log_at ON audit_log (at);
