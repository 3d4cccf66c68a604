-- Per-language texts supervisors manage: canned replies, close reasons, rating labels.
CREATE TABLE catalog (
    kind     TEXT NOT NULL,
    language TEXT NOT NULL,
    key      TEXT NOT NULL,
    text     TEXT NOT NULL,
    PRIMARY KEY (kind, language, key)
);
