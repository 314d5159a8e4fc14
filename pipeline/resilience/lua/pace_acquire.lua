-- Take the next paced slot for one call of a (tenant, vendor) pair a vendor has slowed down.
-- KEYS[1] the pair's breaker hash; its pacing fields: pr = allowed calls/s, pu = no call
--   before (ms), pt = next free slot (ms; GCRA's theoretical arrival time), pd = last cut (ms)
-- ARGV: now_ms, max_wait_ms, quiet_ms
-- Returns {wait_ms, taken}:
--   {0, 0}     not paced (never was, or pacing switched itself off: quiet_ms after its hold)
--   {w, 1}     this call's slot is w ms from now (reserved: pt moved on by one interval)
--   {w, 0}     the next slot is further than max_wait_ms away; nothing was reserved
local h = redis.call('HMGET', KEYS[1], 'pr', 'pu', 'pt')
local rate = tonumber(h[1])
if not rate then return {0, 0} end
local now = tonumber(ARGV[1])
local hold = tonumber(h[2]) or 0
if now - hold >= tonumber(ARGV[3]) then
  redis.call('HDEL', KEYS[1], 'pr', 'pu', 'pt', 'pd')
  return {0, 0}
end
local at = math.max(now, hold, tonumber(h[3]) or 0)
local wait = at - now
if wait > tonumber(ARGV[2]) then return {wait, 0} end
redis.call('HSET', KEYS[1], 'pt', at + math.ceil(1000 / rate))
return {wait, 1}
