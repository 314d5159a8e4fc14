-- Decide, atomically, whether one call may go to the vendor.
-- KEYS[1] breaker hash (s=state, f=failures, ok=half-open successes, at=opened at ms, g=generation)
-- KEYS[2] probe leases (zset: probe id -> lease expiry ms)
-- ARGV: now_ms, cool_off_ms, half_open_max_calls, probe_lease_ms, probe_id
-- Returns {verdict, generation, n, from_state}
--   verdict 0: call (closed; n = consecutive failures so far)
--   verdict 1: call as a half-open probe
--   verdict 2: reject (n = ms until the next probe may go, 0 if probes are busy)
--   from_state: 'open' when this call moved the breaker open -> half-open, else ''
local h = redis.call('HMGET', KEYS[1], 's', 'f', 'at', 'g')
local state = h[1] or 'closed'
local gen = tonumber(h[4]) or 0
if state == 'closed' then
  return {0, gen, tonumber(h[2]) or 0, ''}
end
local now = tonumber(ARGV[1])
local from_state = ''
if state == 'open' then
  local reopen_at = (tonumber(h[3]) or 0) + tonumber(ARGV[2])
  if now < reopen_at then
    return {2, gen, reopen_at - now, ''}
  end
  gen = gen + 1
  redis.call('HSET', KEYS[1], 's', 'half-open', 'ok', 0, 'g', gen)
  redis.call('DEL', KEYS[2])
  from_state = 'open'
end
-- half-open: at most half_open_max_calls leases alive at once, across every process
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[5])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) * 2)
  return {1, gen, 0, from_state}
end
return {2, gen, 0, from_state}
