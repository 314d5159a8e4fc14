-- Put the breaker in a state by hand (operator reset / maintenance open).
-- KEYS[1] breaker hash, KEYS[2] probe leases
-- ARGV: state, now_ms
-- Returns the state before.
local before = redis.call('HGET', KEYS[1], 's') or 'closed'
local gen = tonumber(redis.call('HGET', KEYS[1], 'g')) or 0
redis.call('HSET', KEYS[1], 's', ARGV[1], 'f', 0, 'ok', 0, 'at', ARGV[2], 'g', gen + 1)
redis.call('DEL', KEYS[2])
return before
