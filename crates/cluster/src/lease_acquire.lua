-- Takes the routing lease if it is free, or renews it for the caller's own term.
-- Atomic because Redis runs a script alone: no other client sees the lease between
-- the read and the write.
--
-- KEYS[1]  the lease: a hash {epoch, node, token} that expires after the ttl
--          (an expired lease is simply absent: Redis deletes it).
-- KEYS[2]  the epoch counter: a plain integer that never expires.
-- ARGV[1]  the caller's token: its node id and its process incarnation, so that a
--          restarted process with the same node id never renews its predecessor's term.
-- ARGV[2]  the caller's node id (stored for operators reading the hash).
-- ARGV[3]  ttl in milliseconds (> 0).
-- ARGV[4]  the epoch the caller believes it holds, "0" if none.
-- ARGV[5]  the epoch floor: a new term's epoch is above it, whatever the counter says
--          (the counter restarts at 0 when Redis restarts empty).
--
-- Returns {status, epoch}:
--   1  renewed: the caller's term, with the epoch it believed, was extended;
--   2  acquired: a new term for the caller (also when the caller's token holds a term
--      with another epoch than it believed: an earlier call of the caller started that
--      term and its reply was lost; the caller adopts it as a new term);
--   0  another holder has the lease; epoch is that holder's.

local held = redis.call('HMGET', KEYS[1], 'token', 'epoch')
if held[1] then
  local epoch = tonumber(held[2])
  if held[1] ~= ARGV[1] then
    return {0, epoch}
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if epoch == tonumber(ARGV[4]) then
    return {1, epoch}
  end
  return {2, epoch}
end

local epoch = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[5])
if epoch <= floor then
  epoch = floor + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('HSET', KEYS[1], 'epoch', epoch, 'node', ARGV[2], 'token', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {2, epoch}
