-- Withdraws one node from presence at once (on shutdown).
--
-- KEYS[1]  hash: node id -> agents.
-- KEYS[2]  sorted set: node id scored by expiry.
-- ARGV[1]  the node id.

redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
