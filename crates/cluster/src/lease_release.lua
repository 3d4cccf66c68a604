-- Gives the routing lease up, only if the caller holds it: a holder whose term
-- already expired and went to another node must not delete the new holder's term.
--
-- KEYS[1]  the lease hash (see lease_acquire.lua).
-- ARGV[1]  the caller's token.
--
-- Returns 1 if the caller's term was deleted, 0 otherwise.

if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
