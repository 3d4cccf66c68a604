-- The routing fence, as in SQLite (migrations/sqlite/0003_routing_fence.sql): the
-- highest routing lease epoch any router has written under (or raised to on taking
-- over the lease). One row, always present. Every fenced change and every raise locks
-- it (`FOR UPDATE`, or the UPDATE's own lock) after the batch's conversation rows, so
-- fenced changes from different nodes serialise on it: a deposed router's decisions
-- fail, and two routers' capacity checks cannot both pass on the same state.
CREATE TABLE routing_fence (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch BIGINT  NOT NULL CHECK (epoch >= 0)
);

INSERT INTO routing_fence (id, epoch) VALUES (1, 0);
