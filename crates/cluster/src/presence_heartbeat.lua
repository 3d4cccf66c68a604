-- Records one node's heartbeat: the agents it has online, alive until now + ttl.
-- The expiry is computed from Redis's clock, so that the nodes' clocks never matter.
-- Atomic so that a reader never sees a node's expiry without its agents.
--
-- KEYS[1]  hash: node id -> the node's online agents (a JSON array of strings).
-- KEYS[2]  sorted set: node id, scored by when its last heartbeat expires (ms).
-- ARGV[1]  the node id.
-- ARGV[2]  its online agents, a JSON array of strings.
-- ARGV[3]  ttl in milliseconds.
--
-- Returns the expiry it recorded, in Redis's milliseconds.

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expires = now_ms + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], expires, ARGV[1])
return expires
