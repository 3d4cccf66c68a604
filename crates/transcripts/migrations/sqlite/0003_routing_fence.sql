-- The routing fence: the highest routing lease epoch any router has written under (or
-- raised to on taking over the lease). One row, always present: a fenced change reads
-- it, fails if its own epoch is lower, and otherwise records its epoch here in the
-- same transaction, so a deposed router's decisions cannot be written.
CREATE TABLE routing_fence (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch BIGINT  NOT NULL CHECK (epoch >= 0)
);

INSERT INTO routing_fence (id, epoch) VALUES (1, 0);
