-- Lists the nodes whose last heartbeat has not expired, with their agents, and
-- removes the expired ones on the way (so the two keys stay as small as the set of
-- live nodes).
--
-- KEYS[1]  hash: node id -> agents (see presence_heartbeat.lua).
-- KEYS[2]  sorted set: node id scored by expiry (ms, Redis's clock).
--
-- Returns a flat array: node, agents, node, agents, ... in expiry order.

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

-- A node is alive while its expiry is strictly in the future.
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)
for _, node in ipairs(gone) do
  redis.call('HDEL', KEYS[1], node)
end
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
end

local out = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now_ms, '+inf')) do
  out[#out + 1] = node
  out[#out + 1] = redis.call('HGET', KEYS[1], node) or '[]'
end
return out
