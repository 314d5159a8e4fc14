-- Count one success: ends a failure streak when closed, closes after enough probes.
-- KEYS[1] breaker hash, KEYS[2] probe leases
-- ARGV: generation seen at admit, success_threshold, probe_id ('' if none)
-- Returns {state_after, from_state}
local h = redis.call('HMGET', KEYS[1], 's', 'g')
local state = h[1] or 'closed'
local gen = tonumber(h[2]) or 0
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
if tonumber(ARGV[1]) ~= gen then return {state, ''} end
if state == 'closed' then
  redis.call('HSET', KEYS[1], 'f', 0)
  return {'closed', ''}
end
if state == 'half-open' and ARGV[3] ~= '' then
  local ok = redis.call('HINCRBY', KEYS[1], 'ok', 1)
  if ok >= tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 's', 'closed', 'f', 0, 'ok', 0, 'g', gen + 1)
    redis.call('DEL', KEYS[2])
    return {'closed', 'half-open'}
  end
end
return {state, ''}
