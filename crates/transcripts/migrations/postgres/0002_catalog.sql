-- Per-language texts supervisors manage: canned replies, close reasons, rating labels.
-- Keys and languages compare byte-wise (`COLLATE "C"`), as in SQLite, so listings
-- "by language, then key" order the same on both backends.
CREATE TABLE catalog (
    kind     TEXT COLLATE "C" NOT NULL,
    language TEXT COLLATE "C" NOT NULL,
    key      TEXT COLLATE "C" NOT NULL,
    text     TEXT NOT NULL,
    PRIMARY KEY (kind, language, key)
);
