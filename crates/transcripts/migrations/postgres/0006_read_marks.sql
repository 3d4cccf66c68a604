-- Read marks, as in SQLite (migrations/sqlite/0006_read_marks.sql). Adding columns
-- with a constant default does not rewrite the table.
ALTER TABLE conversations ADD COLUMN player_read_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN staff_read_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN staff_read_by TEXT;
