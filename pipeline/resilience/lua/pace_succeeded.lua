-- A paced call succeeded: raise the pair's rate (AIMD's AI); at the ceiling pacing is off.
-- KEYS[1] the pair's breaker hash (pacing fields: see pace_acquire.lua)
-- ARGV: increase_per_s, ceiling_per_s
-- rate += increase / rate: at full use, about `increase` calls/s more each second.
-- Returns the rate now allowed, as a string ('0': pacing switched off).
local rate = tonumber(redis.call('HGET', KEYS[1], 'pr'))
if not rate then return '0' end
rate = rate + tonumber(ARGV[1]) / rate
if rate >= tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], 'pr', 'pu', 'pt', 'pd')
  return '0'
end
redis.call('HSET', KEYS[1], 'pr', rate)
return tostring(rate)
