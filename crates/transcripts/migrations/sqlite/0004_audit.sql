-- The audit log: who read a transcript or a player's history, who changed an
-- account or the catalog. Append-only; listed newest first by id, filtered by actor,
-- action, target and time. `detail` is free-form JSON and never holds a password or
-- a message's text.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     BIGINT  NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    detail TEXT    NOT NULL
);

CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_target ON audit_log (target, id);
CREATE INDEX audit_log_at ON audit_log (at);
