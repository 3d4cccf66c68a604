-- How far each side of a conversation has said it read (`read` frames), so that a
-- client that reloads shows its messages as read again. Only ever raised; the
-- staff side also keeps who read last, as a Participant in JSON.
ALTER TABLE conversations ADD COLUMN player_read_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN staff_read_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN staff_read_by TEXT;
