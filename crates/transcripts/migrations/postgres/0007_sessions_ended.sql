-- When each account last signed out (`sign_out`), Unix ms; 0 if never. Session
-- tokens issued before it are refused: signing out ends every session, not only
-- the connections open at the time.
ALTER TABLE agents ADD COLUMN sessions_ended_at BIGINT NOT NULL DEFAULT 0;
